"""Positions from the particle fields themselves: rotary encodings of time in seconds and grid row/column.

Nothing here is a table indexed by position, so any frame rate, clip length, resolution or aspect ratio
works as is. Time enters as real seconds (never floored to an index); the ``index`` mode, which uses the
tubelet's index along time instead, exists as the ablation that shows why seconds matter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TIME_MODES = ("seconds", "index")


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
    def rotate(q: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate (N, heads, head_dim) by (N, head_dim/2) angles; channel pairs are (2i, 2i+1)."""
        cos = angles.cos()[:, None, :].to(q.dtype)  # (N, 1, d/2)
        sin = angles.sin()[:, None, :].to(q.dtype)
        even, odd = q[..., 0::2], q[..., 1::2]
        out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (N, h, d/2, 2)
        return out.flatten(-2)


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
