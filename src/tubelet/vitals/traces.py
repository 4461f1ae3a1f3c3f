"""Per-frame measurements of a video, kept instead of its frames (memory grows by a few numbers per frame).

For every frame: its time in seconds, the mean RGB of the face's skin (NaN when no skin was found), the number of
skin pixels, and the vertical displacement in pixels of the chest box and of the face box since the first frame,
summed from frame-to-frame phase correlations. A box is held fixed between frames (both frames of a pair are cut at
the same place) and moved only when the face has moved by more than a quarter of its size, so a box that jitters
with the skin mask adds no false motion.

The skin mask is held too: re-thresholding every frame lets sensor noise flip the pixels at its edge (skin against
hair or background, tens of levels apart) in and out, a broadband flicker of the mean far larger than a pulse under
one level. The held mask follows the face by the face box's tracked motion (whole pixels) and is replaced by a fresh
detection only when it overlaps the frame's skin by less than `MIN_OVERLAP` (intersection over union).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from tubelet.vitals.regions import Box, Regions, find_regions

MIN_MOTION_SIDE = 8  # a box narrower or shorter than this gives no motion estimate
MIN_OVERLAP = 0.5  # a held skin mask is replaced when its IoU with the frame's skin falls below this


@dataclass
class Trace:
    """Arrays of equal length N, one entry per frame (see the module docstring)."""

    times: np.ndarray  # (N,) seconds
    rgb: np.ndarray  # (N, 3) mean skin colour, NaN rows where no skin was found
    skin_pixels: np.ndarray  # (N,)
    chest_y: np.ndarray  # (N,) pixels, summed vertical motion of the chest box
    face_y: np.ndarray  # (N,) pixels, summed vertical motion of the face box

    def __len__(self) -> int:
        return len(self.times)

    def between(self, start: float, end: float) -> Trace:
        """The frames with ``start <= t <= end`` (a few microseconds of slack for container rounding)."""
        keep = (self.times >= start - 1e-6) & (self.times <= end + 1e-6)
        return Trace(self.times[keep], self.rgb[keep], self.skin_pixels[keep], self.chest_y[keep], self.face_y[keep])


@dataclass
class Tracer:
    """Turns frames into a `Trace`, one frame at a time.

    Args:
        keep_seconds: drop measurements older than this behind the newest frame (a live source); None keeps all.
    """

    keep_seconds: float | None = None
    times: list = field(default_factory=list)
    rgb: list = field(default_factory=list)
    skin_pixels: list = field(default_factory=list)
    chest_y: list = field(default_factory=list)
    face_y: list = field(default_factory=list)
    first: Regions | None = None  # the regions of the first frame with skin, for the picture of them
    first_frame: np.ndarray | None = None
    _grey: np.ndarray | None = None
    _face_box: Box | None = None
    _chest_box: Box | None = None
    _mask: np.ndarray | None = None  # the held skin mask, (H, W) bool
    _offset: tuple[float, float] = (0.0, 0.0)  # the face's tracked motion (x, y) since the mask was taken

    def add(self, frame: np.ndarray, t: float) -> Regions | None:
        """Measure one (H, W, 3) uint8 RGB frame shown at `t` seconds; returns the regions found in it."""
        regions = find_regions(frame)
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
        _, chest_dy = _shift(self._grey, grey, self._chest_box)
        face_dx, face_dy = _shift(self._grey, grey, self._face_box)
        if regions is None:
            self.rgb.append((np.nan, np.nan, np.nan))
            self.skin_pixels.append(0)
            self._face_box = self._chest_box = self._mask = None
        else:
            mask = self._held(regions, face_dx, face_dy)
            self.rgb.append(tuple(frame[mask].mean(axis=0)))
            self.skin_pixels.append(int(mask.sum()))
            if self.first is None:
                self.first, self.first_frame = regions, frame.copy()
            if _moved(self._face_box, regions.face):
                self._face_box, self._chest_box = regions.face, regions.chest
        self.chest_y.append((self.chest_y[-1] if self.chest_y else 0.0) + chest_dy)
        self.face_y.append((self.face_y[-1] if self.face_y else 0.0) + face_dy)
        self.times.append(float(t))
        self._grey = grey
        if self.keep_seconds is not None:
            while self.times and self.times[-1] - self.times[0] > self.keep_seconds:
                for column in (self.times, self.rgb, self.skin_pixels, self.chest_y, self.face_y):
                    del column[0]
        return regions

    def _held(self, regions: Regions, dx: float, dy: float) -> np.ndarray:
        """The held skin mask moved with the face, or the fresh one when the held one no longer fits."""
        if self._mask is not None:
            self._offset = (self._offset[0] + dx, self._offset[1] + dy)
            shift = np.float32([[1, 0, round(self._offset[0])], [0, 1, round(self._offset[1])]])
            h, w = self._mask.shape
            moved = cv2.warpAffine(self._mask.astype(np.uint8), shift, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
            union = (moved | regions.skin).sum()
            if (
                moved.sum() >= len(regions.skin) // 1000 + 1
                and union
                and (moved & regions.skin).sum() / union >= (MIN_OVERLAP)
            ):
                return moved
        self._mask, self._offset = regions.skin, (0.0, 0.0)
        return regions.skin

    def trace(self) -> Trace:
        return Trace(
            np.asarray(self.times, np.float64), np.asarray(self.rgb, np.float64).reshape(-1, 3),
            np.asarray(self.skin_pixels, np.int64), np.asarray(self.chest_y), np.asarray(self.face_y),
        )  # fmt: skip


def _moved(box: Box | None, face: Box) -> bool:
    """Whether the held boxes must follow the face: none held yet, or the face's centre moved a quarter of its size."""
    if box is None:
        return True
    x0, y0, x1, y1 = box
    a0, b0, a1, b1 = face
    size = max(x1 - x0, y1 - y0, 1)
    return max(abs((x0 + x1) - (a0 + a1)), abs((y0 + y1) - (b0 + b1))) / 2 > size / 4


def _shift(previous: np.ndarray | None, current: np.ndarray, box: Box | None) -> tuple[float, float]:
    """Displacement (x, y) in pixels of the content of `box` from `previous` to `current` (0, 0 when unknown).

    One Lucas-Kanade step over the whole box (least squares on the brightness-constancy equation, Hann-weighted,
    on lightly blurred crops): linear for the sub-pixel motion of breathing (hundredths of a pixel per frame), where
    phase correlation rounds towards whole pixels and OpenCV's ``phaseCorrelate`` even reads 0.5 px between two
    identical crops (its sub-pixel centroid is cut at the surface's edge).
    """
    if previous is None or box is None:
        return 0.0, 0.0
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    if w < MIN_MOTION_SIDE or h < MIN_MOTION_SIDE:
        return 0.0, 0.0
    a = cv2.GaussianBlur(previous[y0:y1, x0:x1], (5, 5), 1.0)  # (h, w)
    b = cv2.GaussianBlur(current[y0:y1, x0:x1], (5, 5), 1.0)
    gy, gx = np.gradient((a + b) / 2)  # (h, w) each
    change = b - a
    weight = np.outer(np.hanning(h), np.hanning(w))  # (h, w): edges, where content enters and leaves, count less
    m = np.array([[np.sum(weight * gx * gx), np.sum(weight * gx * gy)],
                  [np.sum(weight * gx * gy), np.sum(weight * gy * gy)]])  # fmt: skip
    rhs = -np.array([np.sum(weight * gx * change), np.sum(weight * gy * change)])
    if np.linalg.det(m) <= 1e-9 * max(np.trace(m) ** 2, 1e-30):  # a flat crop: no texture to follow
        return 0.0, 0.0
    dx, dy = np.linalg.solve(m, rhs)
    if not (np.isfinite(dx) and np.isfinite(dy)) or abs(dy) > h / 4 or abs(dx) > w / 4:
        return 0.0, 0.0
    return float(dx), float(dy)
