"""Positions from the particle fields themselves: rotary encodings of time in seconds and grid row/column.

Nothing here is a table indexed by position, so any frame rate, clip length, resolution or aspect ratio
works as is. Time enters as real seconds (never floored to an index); the ``index`` mode, which uses the
tubelet's index along time instead, exists as the ablation that shows why seconds matter.

The one exception is `grid_sinusoids`, VideoMAE's fixed 1-D sin-cos embedding of the flattened grid index, kept
for imported VideoMAE checkpoints (``EncoderConfig.positions = "videomae"``): its values are computed on the fly
from each particle's (ti, y, x) and its clip's grid, but what an index means still depends on that grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TIME_MODES = ("seconds", "index")
POSITIONS = ("rope", "videomae")  # rotary over (seconds, row, column), or VideoMAE's sin-cos of the grid index


class RotaryPositions(nn.Module):
    """Rotary position embedding (RoPE) over three axes: time, row, column.

    The head dimension is split into three even parts (time gets the remainder); each part rotates pairs of
    channels by ``coordinate * frequency`` with geometric frequencies. Attention between two particles then
    depends on their difference in seconds and in grid cells only.

    Args:
        head_dim: channels per attention head (even).
        time_mode: ``seconds`` rotates by real time; ``index`` by tubelet index (the ablation).
        min_period_s, max_period_s: shortest and longest wavelengths of the time axis, in seconds.
        max_grid: longest wavelength of the row/column axes, in grid cells.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        time_mode: str = "seconds",
        min_period_s: float = 0.05,
        max_period_s: float = 200.0,
        max_grid: float = 256.0,
    ):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {head_dim}")
        if time_mode not in TIME_MODES:
            raise ValueError(f"unknown time mode {time_mode!r}; choose one of {', '.join(TIME_MODES)}")
        self.time_mode = time_mode
        pairs = head_dim // 2
        space_pairs = pairs // 3
        time_pairs = pairs - 2 * space_pairs
        # Angular frequencies (radians per unit) with geometric wavelengths.
        time_freqs = _geometric_freqs(time_pairs, min_period_s, max_period_s)
        if time_mode == "index":  # same number of channels, in tubelet units (about 0.07 s at 30 fps)
            time_freqs = _geometric_freqs(time_pairs, 1.0, max_period_s / 0.0667)
        space_freqs = _geometric_freqs(space_pairs, 2.0, max_grid)
        self.register_buffer("time_freqs", time_freqs, persistent=False)
        self.register_buffer("space_freqs", space_freqs, persistent=False)

    def angles(self, t: torch.Tensor, ti: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N, head_dim/2) rotation angles from (N,) particle coordinates."""
        time = t.float() if self.time_mode == "seconds" else ti.float()
        parts = [
            time[:, None] * self.time_freqs,
            y.float()[:, None] * self.space_freqs,
            x.float()[:, None] * self.space_freqs,
        ]
        return torch.cat(parts, dim=1)

    @staticmethod
    def cos_sin(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, head_dim/2) angles -> (N, 1, head_dim) cosines and sines, each half repeated for `rotate_with`.

        A forward pass computes them once and every block reuses them.
        """
        cos, sin = angles.cos(), angles.sin()
        return torch.cat((cos, cos), dim=-1)[:, None, :], torch.cat((sin, sin), dim=-1)[:, None, :]

    @staticmethod
    def rotate(q: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate (N, heads, head_dim) by (N, head_dim/2) angles."""
        return RotaryPositions.rotate_with(q, *RotaryPositions.cos_sin(angles))

    @staticmethod
    def rotate_with(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate (N, heads, head_dim) by `cos_sin` output.

        Channel i is paired with channel i + head_dim/2 ("rotate half", as in GPT-NeoX and Llama): contiguous
        halves instead of interleaved pairs, so no strided copies on the hot path.
        """
        half = q.shape[-1] // 2
        rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)  # (N, h, d)
        return q * cos.to(q.dtype) + rotated * sin.to(q.dtype)


def _geometric_freqs(count: int, min_period: float, max_period: float) -> torch.Tensor:
    if count == 0:
        return torch.zeros(0)
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), count)
    return 2 * math.pi / periods


class SpanEmbedding(nn.Module):
    """A learned embedding of how many tubelets a particle stands for, bucketed by powers of two.

    Buckets: span 1, 2, 3-4, 5-8, ... up to `buckets` - 1 (longer runs share the last bucket).
    """

    def __init__(self, dim: int, buckets: int = 12):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)  # starts as a no-op: an unpruned model sees span 1 everywhere

    def forward(self, span: torch.Tensor) -> torch.Tensor:
        bucket = torch.ceil(torch.log2(span.float().clamp(min=1))).long().clamp(max=self.buckets - 1)
        return self.embed(bucket)


def grid_index(
    ti: torch.Tensor, y: torch.Tensor, x: torch.Tensor, seq: torch.Tensor, grids: list[tuple[int, int, int]]
) -> torch.Tensor:
    """(N,) int64 row-major index ``ti * H' * W' + y * W' + x`` of each particle in its own clip's grid.

    Args:
        ti, y, x: (N,) tubelet index along time, grid row and column.
        seq: (N,) clip of each particle, indexing `grids`.
        grids: (T', H', W') of each clip of the batch.
    """
    sizes = torch.tensor([(h * w, w) for _, h, w in grids], dtype=torch.long, device=ti.device)  # (B, 2)
    per_particle = sizes[seq]  # (N, 2)
    return ti.long() * per_particle[:, 0] + y.long() * per_particle[:, 1] + x.long()


def grid_sinusoids(index: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, dim) float32 rows of VideoMAE's fixed sin-cos table at (N,) integer positions, without building the table.

    Channel j of position n is ``sin(n / 10000 ** (2 * (j // 2) / dim))`` for even j and ``cos(...)`` for odd j,
    as transformers' ``get_sinusoid_encoding_table``. Computed in float64 (as that table is) where the device has it,
    so index ~1500 angles keep their precision.
    """
    dtype = torch.float32 if index.device.type == "mps" else torch.float64
    channel = torch.arange(dim, dtype=dtype, device=index.device)  # (dim,)
    periods = 10000.0 ** (2 * torch.floor(channel / 2) / dim)  # (dim,) radians per position, inverted
    angles = index.to(dtype)[:, None] / periods  # (N, dim)
    out = torch.empty_like(angles)  # (N, dim)
    out[:, 0::2] = angles[:, 0::2].sin()
    out[:, 1::2] = angles[:, 1::2].cos()
    return out.float()


TOKEN_POSITION_SCALE = 0.02  # text token positions, at the token embeddings' init std (CLIP: 0.02 tokens, 0.01 pos)


def token_positions(ti: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, dim) fixed positions of text tokens at (N,) indices in their caption, scaled to the token embeddings.

    Unscaled sin-cos rows have norm ~sqrt(dim/2) and drown token embeddings initialised at std 0.02: captions of one
    length then pool to nearly the same vector (cosine 0.9998 at dim 128) and training stalls.
    """
    return TOKEN_POSITION_SCALE * grid_sinusoids(ti, dim)
