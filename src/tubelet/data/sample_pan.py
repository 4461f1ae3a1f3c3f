"""Camera pans over real photographs: motion speed and direction on real texture, rendered by time.

Each clip is a window (about 112 px, varying size and aspect) moving over a photograph shipped with scikit-image
at a speed in pixels per SECOND: static, slow or fast, to the left or to the right. The photograph's scale, the
window's start, a lighting ramp and sensor noise vary per clip, and every file is H.264. Positions are functions of
seconds, so the same scene rendered at 15, 30 or 60 fps moves the same distance in the same second: what a model
that reads time in seconds must recognise at any rate, and what a model that counts frames confuses.

Photographs are split: `TRAIN_PHOTOS` for training and validation, `TEST_PHOTOS` (never seen in training) for the
test split, so a model is measured on texture it never saw.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tubelet.io.write import write_video
from tubelet.progress import each

CLASSES = ("static", "slow_left", "slow_right", "fast_left", "fast_right")
# Pixels per second of the rendered clip; slow and fast are a factor 2 apart at their nearest, so a resize of the
# clip by the model (short side 112 from 96-128 px clips: 0.88-1.17x) never carries one into the other.
SPEEDS = {"static": (0.0, 0.0), "slow": (12.0, 24.0), "fast": (48.0, 96.0)}
TRAIN_PHOTOS = (
    "astronaut", "coffee", "rocket", "hubble_deep_field", "retina", "camera", "grass", "moon", "coins", "clock",
)  # fmt: skip
TEST_PHOTOS = ("chelsea", "immunohistochemistry", "stereo_motorcycle", "brick", "gravel")
# (width, height) of the clips: around 112 px, wider and taller than square, all even (H.264 4:2:0).
SIZES = ((112, 112), (128, 96), (96, 128), (144, 112), (112, 144), (128, 112), (120, 104))


@dataclass
class Pan:
    """Everything needed to render one clip.

    Attributes:
        label: the class (`CLASSES`).
        photo: the scikit-image photograph's name.
        scale: the photograph is resized by this factor before the window moves over it.
        width, height: clip size in pixels.
        speed: pixels per second, signed (negative: the view moves left, so the content moves right).
        x0, y0: the window's top-left corner at t = 0, in pixels of the scaled photograph.
        gain0, gain1: brightness factor at the first and the last second (a lighting ramp).
        noise: sensor noise standard deviation, 0-255 levels.
        duration: seconds.
        seed: seed of the noise.
    """

    label: str
    photo: str
    scale: float
    width: int
    height: int
    speed: float
    x0: float
    y0: float
    gain0: float
    gain1: float
    noise: float
    duration: float
    seed: int


@lru_cache(maxsize=32)
def photograph(name: str) -> np.ndarray:
    """(H, W, 3) uint8: a photograph shipped with scikit-image (grey ones as three equal channels)."""
    try:
        from skimage import data
    except ImportError as exc:  # a clear error, not a traceback from deep inside the generator
        raise ImportError("camera pans over photographs need scikit-image: pip install scikit-image") from exc
    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def make_pan(label: str, index: int, seed: int, photos: tuple[str, ...], duration: float = 2.0) -> Pan:
    """The scene of clip `index` of class `label` over one of `photos`; deterministic in its arguments."""
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    photo = photos[(index + CLASSES.index(label)) % len(photos)]  # every class sees every photograph
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    kind, _, direction = label.partition("_")
    low, high = SPEEDS[kind]
    speed = float(rng.uniform(low, high)) * (-1.0 if direction == "left" else 1.0)
    source = photograph(photo)
    travel = abs(speed) * duration
    # The window and its whole travel fit in the photograph, zoomed at random (up to twice to make room); a pan too
    # long for that (tens of seconds) runs over the photograph mirrored at its edges (`render_pan`).
    fit = max((width + travel + 4) / source.shape[1], (height + 4) / source.shape[0])
    if fit > 2.0:
        fit = max((width + 4) / source.shape[1], (height + 4) / source.shape[0])
    scale = max(fit, float(rng.uniform(0.6, 1.2)))
    room_x = source.shape[1] * scale - width - travel - 2
    room_y = source.shape[0] * scale - height - 2
    x0 = float(rng.uniform(0, max(room_x, 0))) + (travel if speed < 0 else 0.0)
    y0 = float(rng.uniform(0, max(room_y, 0)))
    gain0, gain1 = rng.uniform(0.75, 1.25, size=2)
    return Pan(
        label=label, photo=photo, scale=scale, width=width, height=height, speed=speed, x0=x0, y0=y0,
        gain0=float(gain0), gain1=float(gain1), noise=float(rng.uniform(1.0, 3.0)), duration=duration,
        seed=int(rng.integers(2**31)),
    )  # fmt: skip


@lru_cache(maxsize=8)
def _scaled(photo: str, scale: float) -> np.ndarray:
    from PIL import Image

    source = photograph(photo)
    size = (round(source.shape[1] * scale), round(source.shape[0] * scale))
    return np.asarray(Image.fromarray(source).resize(size, Image.Resampling.LANCZOS)).astype(np.float32)


def render_pan(pan: Pan, fps: float) -> np.ndarray:
    """(T, H, W, 3) uint8 frames at `fps`: frame i shows the window at time i / fps (sub-pixel, bilinear)."""
    image = _scaled(pan.photo, pan.scale)
    rng = np.random.default_rng(pan.seed)
    count = round(pan.duration * fps)
    xs = pan.x0 + pan.speed * np.arange(count) / fps
    margin = int(np.ceil(max(0.0, -xs.min(), xs.max() + pan.width + 2 - image.shape[1])))
    if margin:  # a long pan: the photograph continues mirrored beyond its edges
        image = np.pad(image, ((0, 0), (margin, margin), (0, 0)), mode="symmetric")
    frames = np.empty((count, pan.height, pan.width, 3), np.uint8)
    y = int(round(pan.y0))
    rows = image[y : y + pan.height]
    for i in range(count):
        t = i / fps
        x = pan.x0 + pan.speed * t + margin
        left = int(np.floor(x))
        frac = x - left
        view = rows[:, left : left + pan.width + 1]
        shifted = view[:, :-1] * (1 - frac) + view[:, 1:] * frac  # the window at sub-pixel x
        gain = pan.gain0 + (pan.gain1 - pan.gain0) * t / pan.duration
        noisy = shifted * gain + rng.normal(0.0, pan.noise, shifted.shape)
        frames[i] = np.clip(noisy, 0, 255).round().astype(np.uint8)
    return frames


def _write(args: tuple[Pan, float, str]) -> None:
    pan, fps, path = args
    write_video(path, render_pan(pan, fps), fps=fps, crf=23)


def generate_pans(
    out: str | Path,
    *,
    counts: dict[str, int],
    photos: dict[str, tuple[str, ...]] | None = None,
    fps: dict[str, tuple[float, ...]] | None = None,
    seed: int = 0,
    duration: float = 2.0,
    workers: int = 2,
) -> dict:
    """Write pans as class folders with a manifest per split: ``SPLIT.csv`` (path, label) and ``scenes.jsonl``.

    Args:
        counts: clips per class of each split, e.g. ``{"train": 20, "val": 4, "test": 20}``.
        photos: the photographs of each split (default: `TRAIN_PHOTOS` for train and val, `TEST_PHOTOS` for test).
        fps: the frame rates each split is rendered at (default 30 fps). A split rendered at several rates gets one
            manifest per rate, ``SPLIT_FPS.csv``, over the same scenes (the same motion per second at each rate).
        seed: the scenes' seed (each split draws its own scenes).
        duration: seconds per clip.

    Returns:
        {manifest name: number of clips}.
    """
    out = Path(out)
    photos = photos or {"train": TRAIN_PHOTOS, "val": TRAIN_PHOTOS, "test": TEST_PHOTOS}
    fps = fps or {}
    jobs, manifests, scenes = [], {}, []
    for s, (split, per_class) in enumerate(counts.items()):
        rates = fps.get(split, (30.0,))
        for label in CLASSES:
            for i in range(per_class):
                pan = make_pan(label, i, seed * 1000 + s, photos[split], duration)
                scenes.append({"split": split, "index": i, **asdict(pan)})
                for rate in rates:
                    name = split if len(rates) == 1 else f"{split}_{rate:g}"
                    path = Path(name) / label / f"{label}_{i:03d}.mp4"
                    jobs.append((pan, rate, str(out / path)))
                    manifests.setdefault(name, []).append((str(path), label))
    for _, _, path in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    each(_write, jobs, workers=workers, desc="pans", unit="clip", chunksize=4)
    for name, rows in manifests.items():
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    with open(out / "scenes.jsonl", "w") as f:
        f.writelines(json.dumps(scene) + "\n" for scene in scenes)
    return {name: len(rows) for name, rows in manifests.items()}
