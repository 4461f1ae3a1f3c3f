"""The motion crop: a window's frames cut to the square around what moves in it (``Preprocessing.crop = "motion"``).

A person 30-50 px tall in a 320x240 room is one or two 16-px patches at a short side of 64: a classifier sees a
smudge. Cutting each window to the square around its moving pixels (frame differencing, the union over the whole
window) and resizing that square to a fixed side puts the person at the scale the patches can read, whatever the
camera's distance. The box is the union over the window, and the same for every frame, so the motion's trajectory
(a body going down and staying down, a walk across the crop) stays in the crop and in the particles' rows and
columns. A window where nothing moves (an empty room, a person lying still) keeps the whole frame, squeezed to the
same square.

Pure functions of decoded frames: `tubelet.data.pipeline.to_particles` calls `motion_crop` for every window a model
reads (training, evaluation, ``predict``, ``watch``), so a checkpoint trained on crops is always served crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MOTION_LEVELS = 18.0  # a pixel moved when its (blurred) grey level changed by more than this between frames
MIN_MOVED = 0.002  # fewer moved pixels than this fraction of the frame (after opening) is "nothing moves"
MARGIN = 0.25  # the square's side is the box's longer side times 1 + MARGIN (room for the limbs' edges)
QUANTILES = (0.03, 0.97)  # the moving mass's box: these quantiles of its rows and of its columns
MIN_SIDE = 0.3  # the square is at least this fraction of the frame's short side (a twitch is not zoomed 10x)


def motion_box(frames: torch.Tensor) -> tuple[int, int, int] | None:
    """The square (top, left, side) in pixels around what moves in `frames`, or None when nothing does.

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        A square inside the frame (side at most the short side), centred as far as the frame allows on the moving
        pixels' box: the 3rd to 97th percentile of their rows and columns over the window, each pixel counted once
        per frame it moved in.
    """
    T, H, W, _ = frames.shape
    if T < 2:
        return None
    grey = frames.float().mean(-1)[:, None]  # (T, 1, H, W)
    grey = F.avg_pool2d(grey, 5, stride=1, padding=2, count_include_pad=False)  # sensor noise and H.264 blocks
    moved = ((grey[1:] - grey[:-1]).abs() > MOTION_LEVELS).float()  # (T-1, 1, H, W)
    # Opening (erode then dilate, 3x3) drops isolated flickering pixels and keeps blobs.
    moved = F.max_pool2d(-F.max_pool2d(-moved, 3, stride=1, padding=1), 3, stride=1, padding=1)
    count = moved.sum((0, 1))  # (H, W) frames each pixel moved in
    if (count > 0).sum() < max(8, MIN_MOVED * H * W):
        return None
    # Percentiles of the moved pixels counted once per frame they moved in: the body, moving all window long,
    # outweighs textured background that a camera shake stirs now and then.
    y0, y1 = _quantiles(count.sum(1), QUANTILES)
    x0, x1 = _quantiles(count.sum(0), QUANTILES)
    short = min(H, W)
    side = round(min(short, max(MIN_SIDE * short, (1.0 + MARGIN) * max(y1 - y0 + 1, x1 - x0 + 1))))
    top = min(max(round((y0 + y1) / 2 - side / 2), 0), H - side)
    left = min(max(round((x0 + x1) / 2 - side / 2), 0), W - side)
    return top, left, side


def _quantiles(weights: torch.Tensor, q: tuple[float, float]) -> tuple[float, float]:
    """The `q` quantiles of the positions 0..n-1 weighted by `weights` (n,)."""
    cdf = weights.cumsum(0) / weights.sum()
    lo, hi = (int(torch.searchsorted(cdf, torch.tensor(v, dtype=cdf.dtype))) for v in q)
    return float(lo), float(hi)


def motion_crop(frames: torch.Tensor, side: int) -> torch.Tensor:
    """`frames` cut to their `motion_box` (the whole frame when nothing moves) and resized to `side` x `side`.

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (T, side, side, 3) uint8.
    """
    T, H, W, _ = frames.shape
    box = motion_box(frames)
    if box is not None:
        top, left, s = box
        frames = frames[:, top : top + s, left : left + s]
    x = frames.permute(0, 3, 1, 2).float()  # (T, 3, h, w)
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (T, side, side, 3)


def frame_differences(frames: torch.Tensor) -> torch.Tensor:
    """Each frame's grey level's absolute change from the frame before (the first frame's: from the second), in all
    three channels: a body's moving outline, whatever its clothes and the room (``Preprocessing.pixels``).

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (T, H, W, 3) uint8; all zero for a single frame.
    """
    grey = frames.float().mean(-1)  # (T, H, W)
    if len(grey) < 2:
        return torch.zeros_like(frames)
    change = (grey[1:] - grey[:-1]).abs()  # (T-1, H, W)
    change = torch.cat([change[:1], change])  # (T, H, W)
    return change.round().clamp(0, 255).to(torch.uint8)[..., None].expand(-1, -1, -1, 3).contiguous()
