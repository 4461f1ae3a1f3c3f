"""The MAE decoder over particles: encoder features of the visible particles in, pixels of hidden ones out.

After VideoMAE (and MAE): a light transformer that sees the encoder's features of the visible particles plus one
learned mask token per particle to reconstruct, each placed by that particle's own seconds, grid cell and span
(rotary positions as in the encoder, so no position table). With VideoMAE V2's decoder masking, only a subset of
the hidden particles is given as queries and the decoder attends over the visible ones and that subset alone.

The decoder returns raw predictions; targets, pixel normalization and the loss live in `tasks.reconstruction`.

The same decoder restores video (`tubelet.tasks.restoration`: frame interpolation, denoising) when its queries carry
a pixel ESTIMATE (``estimate=True``): a frame blended or flow-warped to the missing time, or the noisy pixels
themselves. A query's token is then the mask token plus an embedding of its estimate, and the correction added to
the estimate is the head's output plus a linear filter of the estimate itself (a learned patch filter: the part of a
correction that needs no context, such as smoothing grain, is learned at once). Both start at zero, so an untrained
restorer returns its estimate. The correction is scaled by 1/sqrt(patch_dim) (a readout scaled like muP's): its
layers start at zero, and without it one Adam step moves every value of a patch at once by about lr x patch_dim,
levels of error that a flow-warped estimate does not have to begin with.

Interface as every model kind's (`tubelet.models.kinds`), except that a decoder reads encoder features beside the
particles: `forward_features(features, visible, queries) -> (Nq, dim)` (the queries' decoder features),
`pool(decoded, queries) -> (B, dim)` (their per-clip mean), `forward_head(decoded) -> (Nq, patch_dim)` (pixels).
A pretraining checkpoint stores it beside the encoder: its config under ``decoder`` in ``config.json``, its weights
in ``decoder.safetensors`` (`tubelet.models.load_decoder`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from tubelet.models.encoder import _init_weights, mean_pool
from tubelet.nn.layers import AttentionContext, Block
from tubelet.nn.position import TIME_MODES, RotaryPositions, SpanEmbedding
from tubelet.particles.structure import PackedParticles
from tubelet.typed import check_range, from_dict


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of a `MaskedDecoder`. Stored under ``decoder`` in a pretraining checkpoint's ``config.json``."""

    encoder_dim: int  # width of the encoder features it reads
    patch_dim: int  # pixels per particle it predicts: t*p*q*C
    dim: int = 128  # decoder width
    depth: int = 4  # decoder blocks
    heads: int = 4  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    time_mode: str = "seconds"  # rotary time from seconds or from tubelet index (as the encoder's)
    attention: str = "auto"  # attention backend (see tubelet.nn.attention)
    norm_eps: float = 1e-6  # LayerNorm epsilon
    estimate: bool = False  # queries carry a pixel estimate and the head predicts its correction (restoration)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        config = from_dict(cls, data, what="decoder config")
        config.validate()
        return config

    def validate(self) -> None:
        check_range(self, "encoder_dim", "patch_dim", "dim", "depth", "heads", low=1)
        check_range(self, "mlp_ratio", "norm_eps", low=0, strict=True)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim: expected {self.heads} heads of an even width (rotary), got {self.dim}")
        if self.time_mode not in TIME_MODES:
            raise ValueError(f"time_mode must be one of {TIME_MODES}, got {self.time_mode!r}")

    def replace(self, **changes) -> DecoderConfig:
        config = replace(self, **changes)
        config.validate()
        return config


class MaskedDecoder(nn.Module):
    """Reconstructs hidden particles from the visible ones' features.

    Args:
        config: a `DecoderConfig`.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Linear(config.encoder_dim, config.dim)
        self.mask_token = nn.Parameter(torch.zeros(config.dim))
        self.span_embed = SpanEmbedding(config.dim)
        self.rope = RotaryPositions(config.dim // config.heads, time_mode=config.time_mode)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, mlp_ratio=config.mlp_ratio, norm_eps=config.norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.head = nn.Linear(config.dim, config.patch_dim)
        # A restorer embeds each query's estimate; a correction head of zeros starts it at "return the estimate".
        self.estimate_embed = nn.Linear(config.patch_dim, config.dim) if config.estimate else None
        self.estimate_filter = nn.Linear(config.patch_dim, config.patch_dim) if config.estimate else None
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if config.estimate:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.estimate_filter.weight)
        self.correction_gain = config.patch_dim**-0.5

    def forward_features(
        self, features: torch.Tensor, visible: PackedParticles, queries: PackedParticles
    ) -> torch.Tensor:
        """The decoder's features of the query particles, after its final norm.

        Args:
            features: (Nv, encoder_dim) encoder features of the `visible` particles, in their packed order.
            visible: the particles the encoder saw (positions are read; values are not).
            queries: the particles to reconstruct, packed in the same clip order (positions; with ``estimate``
                their values (Nq, patch_dim) are the estimates, normalized as the encoder's input).

        Returns:
            (Nq, dim), one row per query in `queries` order.
        """
        if features.shape[0] != len(visible):
            raise ValueError(f"{features.shape[0]} feature rows for {len(visible)} visible particles")
        if queries.num_clips != visible.num_clips:
            raise ValueError(f"queries have {queries.num_clips} clips, visible particles {visible.num_clips}")
        num_clips = visible.num_clips
        embedded = self.embed(features)  # (Nv, dim)
        asked = self.mask_token.expand(len(queries), -1).to(embedded.dtype)  # (Nq, dim)
        if self.estimate_embed is not None:
            asked = asked + self.estimate_embed(queries.values.to(embedded.dtype))
        tokens = torch.cat([embedded, asked])  # (Nv+Nq, dim)
        fields = {name: torch.cat([getattr(visible, name), getattr(queries, name)]) for name in _POSITIONS}
        # Regroup clip by clip (visible first, then queries, within each clip): attention runs per clip.
        order = torch.argsort(fields["seq"], stable=True)  # (Nv+Nq,)
        x = tokens[order] + self.span_embed(fields["span"][order])  # (Nv+Nq, dim)
        seq, t, ti, y, x_pos = (fields[name][order] for name in ("seq", "t", "ti", "y", "x"))
        lengths = torch.bincount(seq, minlength=num_clips)  # (B,)
        cu_seqlens = torch.zeros(num_clips + 1, dtype=torch.int32, device=x.device)
        cu_seqlens[1:] = lengths.cumsum(0)
        ctx = AttentionContext(
            cu_seqlens,
            int(lengths.max()),
            seq,
            num_clips,
            self.rope.angles(t, ti, y, x_pos),
            backend=self.config.attention,
        )
        for block in self.blocks:
            x = block(x, ctx)
        # Row k of the regrouped sequence came from row order[k] of [visible; queries]: keep the queries' rows.
        is_query = order >= len(visible)
        out = torch.empty_like(x[: len(queries)])
        out[order[is_query] - len(visible)] = x[is_query]
        return self.norm(out)  # (Nq, dim)

    def pool(self, decoded: torch.Tensor, queries: PackedParticles) -> torch.Tensor:
        """(Nq, dim) -> (B, dim): the mean of each clip's query features (a decoder predicts per particle; this is
        for probing and for the interface every model kind shares)."""
        return mean_pool(decoded, queries.seq, queries.num_clips)

    def forward_head(self, decoded: torch.Tensor) -> torch.Tensor:
        """(Nq, dim) -> (Nq, patch_dim) predicted pixels, laid out as the particles' values ``(t p q c)``."""
        return self.head(decoded)

    def reset_head(self, num_classes: int) -> None:
        """A decoder's head predicts a particle's pixels (patch_dim outputs); it has no classes to reset."""
        raise NotImplementedError("a decoder's head predicts pixels (patch_dim outputs); it has no classes to reset")

    def forward(self, features: torch.Tensor, visible: PackedParticles, queries: PackedParticles) -> torch.Tensor:
        """Predict the pixels of the query particles.

        Args:
            features: (Nv, encoder_dim) encoder features of the `visible` particles, in their packed order.
            visible: the particles the encoder saw (positions are read; values are not).
            queries: the particles to reconstruct, packed in the same clip order (positions only).

        Returns:
            (Nq, patch_dim) predictions, one row per query in `queries` order, laid out as the particles'
            values ``(t p q c)``; with ``estimate``, the queries' values plus the predicted correction.
        """
        pred = self.forward_head(self.forward_features(features, visible, queries))
        if self.estimate_embed is not None:
            estimate = queries.values.to(pred.dtype)
            return estimate + self.correction_gain * (self.estimate_filter(estimate) + pred)
        return pred


_POSITIONS = ("seq", "t", "ti", "y", "x", "span")
