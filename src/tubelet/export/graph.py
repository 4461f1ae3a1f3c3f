"""A classifier's forward pass over plain tensors, traced to ONNX with a dynamic particle count and clip count.

`PackedGraph` wraps an `Encoder` so that everything it reads is a tensor input (`GRAPH_INPUTS`): the per-particle
fields and the clip boundaries. Nothing inside depends on a Python number taken from tensor values: the clip of each
particle comes from comparing positions with the boundaries, attention runs on the "dense" backend (one SDPA call
with a block-diagonal mask, `tubelet.nn.attention`), and pooling is a (B, N) membership matrix, so the number of clips
is the boundaries' length. The eager encoder keeps its faster per-clip paths; the parity check (`tubelet.export
.parity`) holds the two together.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from tubelet.errors import ConfigError
from tubelet.models.encoder import Encoder
from tubelet.models.onnx_model import GRAPH_INPUTS, GRAPH_OUTPUT, graph_inputs
from tubelet.nn.attention import clip_ids_traceable
from tubelet.particles.structure import PackedParticles

# The exporter's own opset; `export_onnx` reports the one the written graph declares.
OPSET = 18


class PackedGraph(nn.Module):
    """(values, t, ti, y, x, span, cu_seqlens) -> (B, num_classes) logits of an `Encoder` with a head.

    Args:
        encoder: an `Encoder` with ``positions="rope"`` (its weights are shared, not copied). Its attention backend
            is set to "dense" for tracing by `exportable_encoder`.
    """

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, values, t, ti, y, x, span, cu_seqlens) -> torch.Tensor:
        """values (N, t*p*q*C) normalized pixels; t (N,) seconds; ti, y, x, span (N,) int64; cu_seqlens (B+1,)."""
        seq = clip_ids_traceable(cu_seqlens, values.shape[0])  # (N,)
        packed = PackedParticles(
            values, t, ti, y, x, span, seq, cu_seqlens,
            max_seqlen=0,  # unused by the dense backend
            grids=[],  # not known inside the graph: only rotary positions (from t, y, x) are supported
            frame_shapes=[],
            tubelet=self.encoder.config.tubelet,
            channels=self.encoder.config.channels,
            modality=torch.zeros_like(seq),
        )  # fmt: skip
        features = self.encoder.forward_features(packed)  # (N, D)
        pooled = self.pool(features, seq, cu_seqlens.shape[0] - 1)  # (B, D)
        if self.encoder.config.final_norm == "pooled":
            pooled = self.encoder.norm(pooled)
        return self.encoder.forward_head(pooled)

    def pool(self, features: torch.Tensor, seq: torch.Tensor, num_clips) -> torch.Tensor:
        """(N, D) -> (B, D): the encoder's pooling (mean or attention) written with a (B, N) membership matrix."""
        member = seq[None, :] == torch.arange(num_clips, device=seq.device)[:, None]  # (B, N)
        attn = self.encoder.attn_pool
        if attn is None:
            weights = member.to(features.dtype)
            return weights @ features / weights.sum(dim=1, keepdim=True)  # (B, D)
        k, v = attn.kv(features).unflatten(1, (2, attn.heads, -1)).unbind(1)  # each (N, h, d)
        q = attn.query.view(attn.heads, -1)  # (h, d)
        scores = (k * q).sum(-1) * k.shape[-1] ** -0.5  # (N, h)
        scores = scores.transpose(0, 1)[:, None, :].masked_fill(~member[None], float("-inf"))  # (h, B, N)
        weights = scores.softmax(dim=-1)  # (h, B, N): softmax within each clip
        pooled = weights @ v.transpose(0, 1)  # (h, B, d)
        return attn.proj(pooled.transpose(0, 1).flatten(1))  # (B, D)


def exportable_encoder(encoder: Encoder, *, source: str) -> Encoder:
    """`encoder` on the "dense" attention backend, in eval mode, after checking the graph can express it.

    Raises:
        ConfigError: no classifier head, or positions the graph cannot compute (an imported VideoMAE's table).
    """
    config = encoder.config
    if not config.num_classes:
        raise ConfigError(f"{source}: the encoder has no classifier head (num_classes 0); export a fine-tuned one")
    if config.positions != "rope":
        raise ConfigError(
            f"{source}: positions {config.positions!r} (an imported VideoMAE's sin-cos table) are not supported by "
            "export yet; fine-tune it with --positions rope or export a tubelet-trained classifier"
        )
    exported = Encoder(config.replace(attention="dense", dropout=0.0, attn_dropout=0.0, drop_path=0.0))
    exported.load_state_dict(encoder.state_dict())
    return exported.eval()


def example_inputs(packed: PackedParticles) -> tuple[torch.Tensor, ...]:
    """The graph's inputs of a packed batch as CPU tensors, in `GRAPH_INPUTS` order."""
    return tuple(torch.from_numpy(array) for array in graph_inputs(packed).values())


def export_onnx(graph: PackedGraph, example: PackedParticles, path: Path) -> int:
    """Trace `graph` on `example` (at least 2 clips) with torch.export (torch.onnx's dynamo exporter) and write it as
    ONNX to `path`.

    The particle count and the clip count stay dynamic: any number of clips of any length runs through the graph.

    Returns:
        The opset the written graph declares.
    """
    import onnx

    # torch.export guards on sizes above 1 (a size of 1 broadcasts); the ONNX graph has no such guard and runs one
    # particle or one clip as well (tests/export/test_graph.py).
    particles = torch.export.Dim("particles", min=2)
    boundaries = torch.export.Dim("boundaries", min=3)  # clips + 1
    shapes = {name: {0: boundaries if name == "cu_seqlens" else particles} for name in GRAPH_INPUTS}
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(
            graph,
            example_inputs(example),
            dynamic_shapes=shapes,
            input_names=list(GRAPH_INPUTS),
            output_names=[GRAPH_OUTPUT],
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's progress lines, its optimizer's INFO logs and its warnings off the user's terminal (and
    off stdout, which ``--json`` keeps for the report); an error still propagates with its message."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
