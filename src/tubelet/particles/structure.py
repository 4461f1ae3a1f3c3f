"""The particle: a spacetime patch of video that knows when (seconds) and where (grid row/column) it is."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

# Per-particle fields, all indexed by particle; everything else in the dataclasses is per clip.
PER_PARTICLE = ("values", "t", "ti", "y", "x", "span", "seq", "modality")

# The `modality` tag of a particle. Video is 0 so that every particle made before tags existed is video.
MODALITIES = {"video": 0, "audio": 1, "text": 2}
VIDEO, AUDIO, TEXT = MODALITIES["video"], MODALITIES["audio"], MODALITIES["text"]


def _fill_modality(obj) -> None:
    """Default an untagged structure's (N,) int64 `modality` to video, on the device of its times."""
    if obj.modality is None:
        obj.modality = torch.full((len(obj.t),), VIDEO, dtype=torch.int64, device=obj.t.device)


@dataclass
class Particles:
    """The particles of one clip.

    Attributes:
        values: (N, D) float32: pixels of the tubelet, flattened as ``(t p q c)`` (or features inside a model).
        t: (N,) float32 seconds of the tubelet's centre, from the decoder's timestamps.
        ti: (N,) int64 index of the tubelet along time (grid position, for inverting to pixels).
        y, x: (N,) int64 row and column on the patch grid.
        span: (N,) int64 tubelets this particle stands for (>1 when a static run was collapsed into it).
        seq: (N,) int64 clip id (0 for a lone clip; the batch position after `pack`).
        grid: (T', H', W') tubelets along time, rows, columns of the full (unpruned) grid.
        tubelet: (t, p, q) frames, rows, columns per tubelet.
        frame_shape: (T, H, W) of the video before padding to whole tubelets (`unpatchify` crops back to it).
        channels: colour channels C per pixel.
        modality: (N,) int64 tag from `MODALITIES` (video 0, audio 1, text 2); None at construction means video.

    The same structure holds the other modalities (see `tubelet.particles.audio` and `tubelet.particles.text`):
    one clip's audio is a `Particles` of log-mel patches (grid over time patches x mel bands x 1), its text a
    `Particles` of token ids. Only particles of one modality share a `values` width, so `pack` batches one
    modality at a time; each modality has its own embedding to (N, D), after which particles of all modalities
    of a clip can share one sequence.
    """

    values: torch.Tensor
    t: torch.Tensor
    ti: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    span: torch.Tensor
    seq: torch.Tensor
    grid: tuple[int, int, int]
    tubelet: tuple[int, int, int]
    frame_shape: tuple[int, int, int]
    channels: int = 3
    modality: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _fill_modality(self)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def total(self) -> int:
        """Tubelets in the full grid (before pruning or masking)."""
        return self.grid[0] * self.grid[1] * self.grid[2]

    def select(self, index: torch.Tensor) -> Particles:
        """The particles at `index` ((K,) int64 or (N,) bool), keeping the clip's grid metadata."""
        return replace(self, **{name: getattr(self, name)[index] for name in PER_PARTICLE})

    def with_values(self, values: torch.Tensor) -> Particles:
        """The same particles carrying other values, e.g. (N, D) features or (N, 1) scores."""
        if values.shape[0] != len(self):
            raise ValueError(f"values has {values.shape[0]} rows for {len(self)} particles")
        return replace(self, values=values)

    def to(self, device: torch.device | str) -> Particles:
        return replace(self, **{name: getattr(self, name).to(device) for name in PER_PARTICLE})


@dataclass
class PackedParticles:
    """Particles of several clips concatenated clip after clip, with no padding.

    Attributes:
        values, t, ti, y, x, span, seq: as in `Particles`, (N, ...) over all clips; `seq` is the clip's
            position in the batch.
        cu_seqlens: (B+1,) int32 clip boundaries: clip b is ``cu_seqlens[b]:cu_seqlens[b+1]``.
        max_seqlen: particles in the longest clip (for varlen attention kernels).
        grids, frame_shapes: per clip, as in `Particles`.
        tubelet, channels: shared by every clip of the batch.
        modality: (N,) int64 as in `Particles`.
    """

    values: torch.Tensor
    t: torch.Tensor
    ti: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    span: torch.Tensor
    seq: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    grids: list[tuple[int, int, int]]
    frame_shapes: list[tuple[int, int, int]]
    tubelet: tuple[int, int, int]
    channels: int = 3
    modality: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _fill_modality(self)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def num_clips(self) -> int:
        return len(self.grids)

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) particles per clip."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    def with_values(self, values: torch.Tensor) -> PackedParticles:
        if values.shape[0] != len(self):
            raise ValueError(f"values has {values.shape[0]} rows for {len(self)} particles")
        return replace(self, values=values)

    def to(self, device: torch.device | str) -> PackedParticles:
        moved = {name: getattr(self, name).to(device) for name in (*PER_PARTICLE, "cu_seqlens")}
        return replace(self, **moved)


def field_names() -> list[str]:
    """Names of the fields of `Particles` (for serializers)."""
    return [f.name for f in fields(Particles)]
