"""Cutting video into tubelets and putting it back. Defined once; every caller uses these two functions.

Sizes that are not whole multiples of the tubelet are PADDED, never cropped: the last frame, row and
column are repeated up to a whole tubelet, and `unpatchify` crops back to the original (T, H, W), so the
round trip is exact and no pixel at the frame edges is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

# One tubelet's pixels are flattened frames-major, channels last: (t p q c).
PATCH_PATTERN = "(T t) (H p) (W q) c -> T H W (t p q c)"
UNPATCH_PATTERN = "T H W (t p q c) -> (T t) (H p) (W q) c"


def grid_shape(frame_shape: tuple[int, int, int], tubelet: tuple[int, int, int]) -> tuple[int, int, int]:
    """(T', H', W') tubelets covering (T, H, W) frames, rounding up (partial tubelets are padded)."""
    return tuple(-(-size // step) for size, step in zip(frame_shape, tubelet))


def patchify(video: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """Cut a video into tubelets.

    Args:
        video: (T, H, W, C) any dtype.
        tubelet: (t, p, q) frames, rows, columns per tubelet.

    Returns:
        (T', H', W', t*p*q*C) with T' = ceil(T / t) etc.; the padded part repeats the last frame/row/column.
    """
    t, p, q = tubelet
    T, H, W, C = video.shape
    Tp, Hp, Wp = grid_shape((T, H, W), tubelet)
    pad_t, pad_h, pad_w = Tp * t - T, Hp * p - H, Wp * q - W
    if pad_t or pad_h or pad_w:
        # replicate padding needs a float (1, C, T, H, W) tensor; integers round-trip exactly through float64.
        dtype = video.dtype
        padded = rearrange(video.to(torch.float64), "T H W c -> 1 c T H W")
        padded = F.pad(padded, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")
        video = rearrange(padded, "1 c T H W -> T H W c").to(dtype)
    return rearrange(video, PATCH_PATTERN, t=t, p=p, q=q)


def unpatchify(
    patches: torch.Tensor, tubelet: tuple[int, int, int], frame_shape: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """Inverse of `patchify`.

    Args:
        patches: (T', H', W', t*p*q*C).
        tubelet: (t, p, q).
        frame_shape: (T, H, W) to crop the padding back off; None keeps whole tubelets.

    Returns:
        (T, H, W, C).
    """
    t, p, q = tubelet
    video = rearrange(patches, UNPATCH_PATTERN, t=t, p=p, q=q)
    if frame_shape is not None:
        T, H, W = frame_shape
        video = video[:T, :H, :W]
    return video


def to_grid(particles, values: torch.Tensor | None = None, *, fill: float = 0.0) -> torch.Tensor:
    """Scatter one clip's particles back onto its full tubelet grid.

    A particle whose `span` is s fills its own tubelet and the s-1 static tubelets after it at its (y, x).
    Grid cells no particle covers (masked out) get `fill`.

    Args:
        particles: a `Particles` of one clip.
        values: (N, D) to scatter instead of ``particles.values``.

    Returns:
        (T', H', W', D).
    """
    values = particles.values if values is None else values
    Tp, Hp, Wp = particles.grid
    grid = torch.full((Tp, Hp, Wp, values.shape[1]), fill, dtype=values.dtype, device=values.device)
    # Expand each particle over its run: particle i covers ti .. ti + span - 1.
    owner = torch.repeat_interleave(torch.arange(len(particles), device=values.device), particles.span)
    start = torch.repeat_interleave(particles.span.cumsum(0) - particles.span, particles.span)
    ti = particles.ti[owner] + torch.arange(len(owner), device=values.device) - start
    grid[ti, particles.y[owner], particles.x[owner]] = values[owner]
    return grid
