"""Classical video-to-video baselines: frame interpolation at any time t and multi-frame denoising.

Interpolation builds a frame at fractional time ``t`` in (0, 1) between frames ``a`` (t = 0) and ``b`` (t = 1):

- ``repeat``: the nearer frame (``a`` for t < 0.5).
- ``blend``: ``(1 - t) a + t b``.
- ``flow``: OpenCV DIS optical flow both ways; ``a`` is warped backward by ``t`` of the flow from the new frame to
  ``a`` and ``b`` by ``1 - t`` of the flow to ``b``, and the two warps are blended with weights ``1 - t`` and ``t``.

Denoising maps each frame to a clean estimate from a temporal window of noisy frames around it:

- ``median``: the per-pixel median over the window.
- ``nlm``: OpenCV's multi-frame non-local means (``fastNlMeansDenoisingColoredMulti``), filter strength from sigma.

Every function takes and returns uint8 RGB frames, (H, W, 3) or (T, H, W, 3).
"""

from __future__ import annotations

import cv2
import numpy as np

INTERPOLATIONS = ("repeat", "blend", "flow")
DENOISERS = ("median", "nlm")


def interpolate(a: np.ndarray, b: np.ndarray, t: float, method: str = "blend") -> np.ndarray:
    """The frame at fraction `t` of the way from `a` to `b` (both (H, W, 3) uint8) by `method` (`INTERPOLATIONS`)."""
    t = float(t)  # a NumPy float64 would turn float32 flow fields into float64
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    if method == "repeat":
        return (a if t < 0.5 else b).copy()
    if method == "blend":
        return _mix(a.astype(np.float32), b.astype(np.float32), t)
    if method == "flow":
        return flow_interpolate(a, b, t)
    raise ValueError(f"unknown interpolation method {method!r}; use one of {', '.join(INTERPOLATIONS)}")


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return np.clip((1.0 - t) * a + t * b + 0.5, 0, 255).astype(np.uint8)  # + 0.5: round half up


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 DIS optical flow from `a` to `b`: pixel (x, y) of `a` moves to (x, y) + flow in `b`."""
    # A fresh instance per pair: a reused one carries buffers between calls and its result then depends on the
    # pairs before (a window boundary changed the output by a few levels).
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey_a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    grey_b = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
    return dis.calc(grey_a, grey_b, None)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: output (x, y) samples `image` at (x, y) + flow(x, y), bilinear, edges replicated."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = (xs + flow[..., 0]).astype(np.float32), (ys + flow[..., 1]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_interpolate(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Flow warping at fraction `t`: both frames warped to time t along the flows between them, then blended.

    Linear motion is assumed: a pixel at x in the new frame came from about x - t * F_ab(x) in `a` and goes to about
    x + (1 - t) * F_ab(x) in `b`. The flow at the new frame is approximated by the flow at the same pixel of the
    source frame (F_ab for `a`'s side, F_ba for `b`'s), the usual first-order approximation.
    """
    if t == 0.0:
        return a.copy()
    if t == 1.0:
        return b.copy()
    forward = optical_flow(a, b)  # (H, W, 2) a -> b
    backward = optical_flow(b, a)  # (H, W, 2) b -> a
    from_a = _warp(a, t * backward)  # x + t * F_ba(x) ~ x - t * F_ab(x)
    from_b = _warp(b, (1.0 - t) * forward)
    return _mix(from_a.astype(np.float32), from_b.astype(np.float32), t)


def denoise(frames: np.ndarray, index: int, method: str = "median", *, window: int = 5, sigma: float = 25.0):
    """A clean estimate of ``frames[index]`` from the `window` frames around it (fewer at the ends of `frames`).

    Args:
        frames: (T, H, W, 3) uint8 noisy frames.
        index: the frame to denoise.
        method: `DENOISERS`.
        window: odd number of frames the estimate reads, centred on `index` (median: shifted inside at the ends;
            nlm: shrunk at the ends, as OpenCV needs the frame at the centre).
        sigma: the noise's standard deviation in 0-255 levels (nlm's filter strength follows it).

    Returns:
        (H, W, 3) uint8.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and positive, got {window}")
    size = min(window, len(frames) if len(frames) % 2 else len(frames) - 1)
    start = int(np.clip(index - size // 2, 0, len(frames) - size))
    if method == "median":
        block = frames[start : start + size]  # (w, H, W, 3)
        return np.median(block, axis=0).round().astype(np.uint8)  # an even-split median rounds its mean
    if method == "nlm":
        # OpenCV's guide: h about 0.4-1 x sigma; 0.6 x sigma keeps texture at 25-50 and still removes the grain.
        h = max(1.0, 0.6 * sigma)
        # OpenCV wants the frame at the window's centre: near the ends the window shrinks instead of shifting.
        half = min(size // 2, index, len(frames) - 1 - index)
        if half == 0:
            frame = np.ascontiguousarray(frames[index])
            return cv2.fastNlMeansDenoisingColored(frame, None, h, h, 7, 21)
        block = [np.ascontiguousarray(f) for f in frames[index - half : index + half + 1]]
        return cv2.fastNlMeansDenoisingColoredMulti(
            block, half, 2 * half + 1, None, h=h, hColor=h, templateWindowSize=7, searchWindowSize=21
        )
    raise ValueError(f"unknown denoising method {method!r}; use one of {', '.join(DENOISERS)}")


def cuts(frames: np.ndarray, *, ratio: float = 3.0, floor: float = 12.0, context: int = 4) -> np.ndarray:
    """Indices i where a hard scene cut falls between ``frames[i-1]`` and ``frames[i]``.

    The change between consecutive frames is the mean absolute difference of their 32x32 grey thumbnails (robust to
    noise and small motion). A cut is a change above `floor` levels that is also `ratio` times the median change of
    the `context` steps before and after it: a pan changes every frame a little, a cut changes one frame a lot.

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (C,) int64 sorted indices in 1..T-1 (the first frame of each new shot).
    """
    if len(frames) < 2:
        return np.zeros(0, np.int64)
    thumbs = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                       for f in frames]).astype(np.float32)  # fmt: skip
    change = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))  # (T-1,) change[i-1] is between i-1 and i
    found = []
    for j, value in enumerate(change):
        around = np.concatenate([change[max(0, j - context) : j], change[j + 1 : j + 1 + context]])
        typical = float(np.median(around)) if len(around) else 0.0
        if value > floor and value > ratio * max(typical, 1.0):
            found.append(j + 1)
    return np.asarray(found, np.int64)


def same_shot(cut_indices: np.ndarray, left: int, right: int) -> bool:
    """Whether frames `left` < `right` lie in one shot (no cut index in (left, right])."""
    return not np.any((cut_indices > left) & (cut_indices <= right))
