"""Video-to-video sample data: camera pans and zooms over real photographs, a moving object, and hard scene cuts.

Each clip is a camera moving over a photograph shipped with scikit-image: its centre travels in a straight line and
its zoom changes steadily (both functions of SECONDS, so a clip rendered at 24, 30 or 60 fps shows the same view at
the same second), while a patch cut from another photograph moves across the view. Some clips hold a hard cut to a
second photograph halfway through. Frames are rendered clean (sub-pixel, bilinear), carry a quiet tone as their
soundtrack, and are encoded with H.264 at high quality (crf 18), so the decoded frames are the clean reference that
noise is added to.

Photographs are split: `TRAIN_PHOTOS` for training, `TEST_PHOTOS` (never seen in training) for the test split.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from tubelet.data.sample_pan import TEST_PHOTOS, TRAIN_PHOTOS, photograph
from tubelet.io.write import write_video
from tubelet.progress import each

RATES = (24.0, 30.0, 60.0)
SIZES = ((320, 240), (256, 256))  # (width, height)
AUDIO_RATE = 16000


@dataclass
class Scene:
    """Everything needed to render one clip.

    Attributes:
        photo: the photograph the camera looks at (and `cut_photo` after the cut).
        width, height: clip size in pixels.
        fps: frames per second.
        duration: seconds.
        start, velocity: the view's centre at 0 s, as fractions of the photograph's (x, y), and its speed in pixels of
            the photograph per second.
        zoom0, zoom1: output pixels per photograph pixel at the first and the last second (a steady zoom).
        object_photo: the photograph the moving object's patch is cut from; object_size its side in pixels.
        object_start, object_velocity: the object's top-left corner in output pixels at 0 s, and pixels per second.
        cut: seconds of the hard cut (the first frame at or after it shows `cut_photo`), or None.
        cut_photo: the photograph after the cut.
        tone: Hz of the soundtrack's tone.
    """

    photo: str
    width: int
    height: int
    fps: float
    duration: float
    start: tuple[float, float]
    velocity: tuple[float, float]
    zoom0: float
    zoom1: float
    object_photo: str
    object_size: int
    object_start: tuple[float, float]
    object_velocity: tuple[float, float]
    cut: float | None
    cut_photo: str
    tone: float


def make_scene(index: int, *, photos: tuple[str, ...], fps: float, size: tuple[int, int], duration: float, seed: int,
               cut: bool = False) -> Scene:  # fmt: skip
    """Scene `index` of a split; deterministic in its arguments."""
    rng = np.random.default_rng([seed, index, int(fps), size[0]])
    photo, other, cut_photo = (photos[(index + k) % len(photos)] for k in (0, 1, 2))
    width, height = size
    speed = rng.uniform(20, 70)  # photograph pixels per second
    angle = rng.uniform(0, 2 * np.pi)
    side = int(rng.uniform(0.18, 0.3) * min(width, height))  # about 45-70 px at 240 px
    return Scene(
        photo=photo, width=width, height=height, fps=fps, duration=duration,
        start=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))),
        velocity=(float(speed * np.cos(angle)), float(speed * np.sin(angle))),
        zoom0=float(rng.uniform(0.9, 1.2)), zoom1=float(rng.uniform(0.9, 1.5)),
        object_photo=other, object_size=side,
        object_start=(float(rng.uniform(0, width / 3)), float(rng.uniform(0, height - side))),
        object_velocity=(float(rng.uniform(30, 80)), float(rng.uniform(-20, 20))),
        cut=round(duration / 2, 3) if cut else None, cut_photo=cut_photo, tone=float(rng.uniform(220, 880)),
    )  # fmt: skip


def _view(image: np.ndarray, scene: Scene, t: float) -> np.ndarray:
    """(H, W, 3) float32: the camera at time t over `image` (reflected beyond its edges)."""
    h, w = image.shape[:2]
    zoom = scene.zoom0 + (scene.zoom1 - scene.zoom0) * t / scene.duration
    # The photograph must cover the view: never zoom out past it.
    zoom = max(zoom, scene.width / (w - 8), scene.height / (h - 8))
    cx = scene.start[0] * w + scene.velocity[0] * t
    cy = scene.start[1] * h + scene.velocity[1] * t
    matrix = np.float32([[zoom, 0, scene.width / 2 - zoom * cx], [0, zoom, scene.height / 2 - zoom * cy]])
    return cv2.warpAffine(image, matrix, (scene.width, scene.height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)  # fmt: skip


def render(scene: Scene) -> np.ndarray:
    """(T, H, W, 3) uint8 clean frames: frame i is the scene at i / fps seconds."""
    first = photograph(scene.photo).astype(np.float32)
    second = photograph(scene.cut_photo).astype(np.float32)
    source = photograph(scene.object_photo)
    s = scene.object_size
    y0, x0 = (source.shape[0] - s) // 2, (source.shape[1] - s) // 2
    patch = source[y0 : y0 + s, x0 : x0 + s].astype(np.float32)
    count = round(scene.duration * scene.fps)
    frames = np.empty((count, scene.height, scene.width, 3), np.uint8)
    for i in range(count):
        t = i / scene.fps
        after_cut = scene.cut is not None and t >= scene.cut - 1e-9
        view = _view(second if after_cut else first, scene, t)
        # The object: the patch placed at a sub-pixel position by an affine shift, with a matching coverage mask.
        ox = scene.object_start[0] + scene.object_velocity[0] * t
        oy = scene.object_start[1] + scene.object_velocity[1] * t
        shift = np.float32([[1, 0, ox], [0, 1, oy]])
        size = (scene.width, scene.height)
        placed = cv2.warpAffine(patch, shift, size, flags=cv2.INTER_LINEAR)
        cover = cv2.warpAffine(np.ones((s, s), np.float32), shift, size, flags=cv2.INTER_LINEAR)[..., None]
        frames[i] = np.clip(view * (1 - cover) + placed * cover + 0.5, 0, 255).astype(np.uint8)
    return frames


def soundtrack(scene: Scene) -> np.ndarray:
    """(N,) float32 mono at `AUDIO_RATE`: a quiet tone as long as the clip."""
    times = np.arange(round(scene.duration * AUDIO_RATE)) / AUDIO_RATE
    return (0.2 * np.sin(2 * np.pi * scene.tone * times)).astype(np.float32)


def _write(args: tuple[Scene, str]) -> None:
    scene, path = args
    write_video(path, render(scene), fps=scene.fps, audio=soundtrack(scene), audio_rate=AUDIO_RATE, crf=18)


def generate_v2v(
    out: str | Path, *, seed: int = 0, duration: float = 3.0, per_setting: dict[str, int] | None = None,
    rates: tuple[float, ...] = RATES, sizes: tuple[tuple[int, int], ...] = SIZES, workers: int = 2,
) -> dict:  # fmt: skip
    """Write ``train/`` and ``test/`` clips with manifests ``train.csv`` and ``test.csv`` and ``scenes.jsonl``.

    Args:
        seed: the scenes' seed.
        duration: seconds per clip.
        per_setting: clips per (frame rate, size) of each split (default train 2, test 1); each split also gets one
            clip with a hard cut per frame rate (at the first size).
        rates, sizes: the frame rates and (width, height) sizes rendered.

    Returns:
        {"train": clips, "test": clips, "cuts": clips with a cut}.
    """
    out = Path(out)
    per_setting = per_setting or {"train": 2, "test": 1}
    photos = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}
    jobs, rows, scenes = [], {}, []
    for s, (split, count) in enumerate(per_setting.items()):
        index = 0
        settings = [(rate, size, False) for rate in rates for size in sizes for _ in range(count)]
        settings += [(rate, sizes[0], True) for rate in rates]
        for rate, size, cut in settings:
            scene = make_scene(index, photos=photos[split], fps=rate, size=size, duration=duration,
                               seed=seed * 100 + s, cut=cut)  # fmt: skip
            name = f"{split}/{'cut' if cut else 'pan'}_{index:03d}_{size[0]}x{size[1]}_{rate:g}fps.mp4"
            jobs.append((scene, str(out / name)))
            rows.setdefault(split, []).append((name, rate, size[0], size[1], "" if scene.cut is None else scene.cut))
            scenes.append({"split": split, "path": name, **asdict(scene)})
            index += 1
    for split in rows:
        (out / split).mkdir(parents=True, exist_ok=True)
    each(_write, jobs, workers=workers, desc="video2video", unit="clip")
    for split, table in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "fps", "width", "height", "cut_seconds"])
            writer.writerows(table)
    with open(out / "scenes.jsonl", "w") as f:
        f.writelines(json.dumps(scene) + "\n" for scene in scenes)
    return {**{split: len(table) for split, table in rows.items()}, "cuts": sum(s["cut"] is not None for s in scenes)}
