"""An exported classifier run by onnxruntime, with the interface the inference path reads from a model.

``tubelet export`` (`tubelet.export`) writes a directory with ``model.onnx``, a graph over packed particles, and a
``config.json`` that names its kind (``model_type: tubelet-onnx``) and carries the checkpoint's encoder config,
preprocessing, labels and task. `tubelet.models.load` reads such a directory into a `Loaded` whose model is an
`OnnxModel`: called on a `PackedParticles` it returns (B, C) logits as the `Encoder` it was exported from, so
``predict`` and ``evaluate`` run it unchanged. It has no parameters: it cannot train, and explanations that need
gradients or attention maps still need the checkpoint.

The graph's inputs are the per-particle fields and the clip boundaries (`GRAPH_INPUTS`), with the particle count and
the clip count dynamic; decoding, tokenizing and pruning happen before it, as for the eager model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tubelet.models.encoder import EncoderConfig
from tubelet.particles.structure import PackedParticles

MODEL_TYPE = "tubelet-onnx"  # config.json's model_type of an export directory
GRAPH_FILE = "model.onnx"
REPORT_FILE = "export_report.json"
# The graph's inputs, in order, and their dtypes: (N, t*p*q*C) values and (N,) fields, then (B+1,) boundaries.
GRAPH_INPUTS = {
    "values": np.float32,
    "t": np.float32,
    "ti": np.int64,
    "y": np.int64,
    "x": np.int64,
    "span": np.int64,
    "cu_seqlens": np.int64,
}
GRAPH_OUTPUT = "logits"
# Particles per onnxruntime call: the graph's attention is one (N, N) product over the whole batch (clips masked
# off each other), so a large batch costs N^2; `OnnxModel` runs whole clips in groups up to this many particles.
GROUP_PARTICLES = 2048


def clip_groups(cu_seqlens: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive clips [first, last) whose particles add up to at most `limit` (a longer clip alone).

    Args:
        cu_seqlens: (B+1,) clip boundaries.
    """
    groups, first = [], 0
    for b in range(1, len(cu_seqlens) - 1):
        if cu_seqlens[b + 1] - cu_seqlens[first] > limit:
            groups.append((first, b))
            first = b
    return groups + [(first, len(cu_seqlens) - 1)]


def graph_inputs(packed: PackedParticles, names=tuple(GRAPH_INPUTS)) -> dict[str, np.ndarray]:
    """The graph's inputs `names` (of `GRAPH_INPUTS`) of a packed batch, as contiguous numpy arrays on the CPU."""
    return {
        name: np.ascontiguousarray(getattr(packed, name).detach().cpu().numpy().astype(GRAPH_INPUTS[name], copy=False))
        for name in names
    }


class OnnxModel(nn.Module):
    """An exported `Encoder` classifier run by onnxruntime on the CPU.

    Args:
        path: the ``model.onnx`` file.
        config: the `EncoderConfig` it was exported from (read for ``tubelet``, ``num_classes``, ``channels``).
        threads: onnxruntime's intra-op threads (None: its default, every core).
        group_particles: particles per onnxruntime call (whole clips; see `GROUP_PARTICLES`).
    """

    def __init__(
        self,
        path: str | Path,
        config: EncoderConfig,
        *,
        threads: int | None = None,
        group_particles: int = GROUP_PARTICLES,
    ):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
        self.path = Path(path)
        self.config = config
        self.group_particles = group_particles
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # An exporter may drop an input the model does not read (ti, when time is in seconds).
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = sorted(set(self.inputs) - set(GRAPH_INPUTS))
        if unknown or "cu_seqlens" not in self.inputs:
            expected = ", ".join(GRAPH_INPUTS)
            raise ValueError(f"{path}: inputs {self.inputs} are not a graph over packed particles ({expected})")

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, packed: PackedParticles) -> torch.Tensor:
        """(B, num_classes) float32 logits of a packed batch, on the device of its values.

        Clips never attend to each other, so running them in groups (`clip_groups`) gives the same logits.
        """
        feeds = graph_inputs(packed, self.inputs)
        cu = feeds["cu_seqlens"]  # (B+1,)
        parts = []
        for first, last in clip_groups(cu, self.group_particles):
            start, end = cu[first], cu[last]
            group = {name: array[start:end] for name, array in feeds.items() if name != "cu_seqlens"}
            group["cu_seqlens"] = cu[first : last + 1] - start  # (clips + 1,) from 0
            parts.append(self.session.run([GRAPH_OUTPUT], group)[0])  # (clips, C)
        return torch.from_numpy(np.concatenate(parts)).to(packed.values.device)
