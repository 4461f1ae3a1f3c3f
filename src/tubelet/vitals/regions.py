"""Where to measure in a frame: the skin of the face (for the pulse) and a chest/shoulder box below it (for breathing).

Skin is found by colour, not by a face detector: OpenCV 5's wheels ship no Haar cascades and the deep detectors need
downloaded weights, while skin chrominance is a classic, dependency-free cue (Chai & Ngan 1999). A pixel is skin when
its YCrCb value lies in `SKIN_LOW`..`SKIN_HIGH`; the face is the largest connected skin component (after a small
opening that removes speckle). The bounds are tighter than Chai & Ngan's Cr >= 133, Cb <= 127: those also take the
grey-violet backgrounds of indoor photographs (Cr about 133, Cb about 123, and a warm white balance lifts them to
Cr 138), which then swallow the face.

The chest box sits below the face box (from a quarter to a full face height under the chin, twice the face's width),
where the shoulders and collar rise and fall with each breath.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SKIN_LOW = (40, 140, 80)  # (Y, Cr, Cb) lower bounds: not too dark, reddish, not bluish
SKIN_HIGH = (255, 175, 120)
MIN_SKIN_FRACTION = 0.002  # a skin component smaller than this share of the frame is noise, not a face
MIN_SKIN_PIXELS = 40

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, x1 and y1 exclusive


@dataclass
class Regions:
    """The measuring regions of one frame.

    Attributes:
        face: the box around the largest skin component.
        skin: (H, W) bool, that component's pixels, eroded by one pixel (edge pixels mix skin and background).
        chest: the box below the face, or None when the frame has no room below it.
    """

    face: Box
    skin: np.ndarray
    chest: Box | None


def skin_mask(frame: np.ndarray) -> np.ndarray:
    """(H, W) uint8 (0 or 255): skin-coloured pixels of an (H, W, 3) uint8 RGB frame, speckle removed."""
    ycrcb = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YCrCb)
    mask = cv2.inRange(ycrcb, SKIN_LOW, SKIN_HIGH)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def chest_box(face: Box, height: int, width: int) -> Box | None:
    """The chest/shoulder box below `face` in a frame of `height` x `width` (None when it would be under 4 rows)."""
    x0, y0, x1, y1 = face
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    top, bottom = int(y1 + 0.25 * fh), int(y1 + 1.0 * fh)
    left, right = int(cx - fw), int(cx + fw)
    top, bottom = max(top, 0), min(bottom, height)
    left, right = max(left, 0), min(right, width)
    if bottom - top < 4 or right - left < 4:
        return None
    return left, top, right, bottom


def find_regions(frame: np.ndarray) -> Regions | None:
    """The face's skin and the chest box in an (H, W, 3) uint8 RGB frame, or None when no skin component is large
    enough to be a face."""
    height, width = frame.shape[:2]
    mask = skin_mask(frame)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[best, cv2.CC_STAT_AREA])
    if area < max(MIN_SKIN_PIXELS, MIN_SKIN_FRACTION * height * width):
        return None
    x, y, w, h = (int(v) for v in stats[best, :4])
    skin = cv2.erode((labels == best).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if skin.sum() < MIN_SKIN_PIXELS // 2:  # a thin component: use it whole rather than nothing
        skin = labels == best
    face = (x, y, x + w, y + h)
    return Regions(face=face, skin=skin, chest=chest_box(face, height, width))


def draw(frame: np.ndarray, regions: Regions | None) -> np.ndarray:
    """A copy of `frame` (H, W, 3) uint8 with the skin tinted green, the face box in green and the chest box in blue."""
    out = frame.copy()
    if regions is None:
        return out
    tint = out[regions.skin].astype(np.float32)
    out[regions.skin] = (0.5 * tint + 0.5 * np.array([0, 255, 0])).astype(np.uint8)
    x0, y0, x1, y1 = regions.face
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 200, 0), 1)
    if regions.chest is not None:
        x0, y0, x1, y1 = regions.chest
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 120, 255), 1)
    return out
