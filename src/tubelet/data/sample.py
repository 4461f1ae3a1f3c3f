"""A deterministic labeled sample dataset of real encoded videos with known motion.

Five motion classes rendered by TIME (positions are functions of seconds, not of frame index), so the same
motion recorded at 15, 24, 30 or 60 fps looks the same at the same second. Every clip also records its
scene parameters in ``metadata.jsonl``, so the object's true position at any time is known (`object_box`)
for localization checks of explanations.
"""

from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tubelet.io.write import write_video
from tubelet.progress import bar

CLASSES = ("move_left", "move_right", "rotate", "grow", "static")
FRAME_RATES = (15, 24, 30, 60)
# (width, height): wider than tall, taller than wide, square; several not multiples of 16. All even (4:2:0).
SIZES = ((160, 96), (96, 144), (128, 128), (200, 120), (120, 176), (176, 100), (144, 112))
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
# The static class never gets the noise-free background: its only change over time is noise or flicker.
_BACKGROUNDS = ("textured", "noisy", "flicker")


@dataclass
class Scene:
    """Everything needed to render one clip (and to know where its object is at any time).

    Attributes:
        label: the motion class.
        width, height: frame size in pixels.
        fps: frame rate of the encoded file.
        duration: seconds.
        background: ``textured`` (fixed camera, static texture), ``noisy`` (texture plus sensor noise) or
            ``flicker`` (texture whose brightness oscillates, plus noise).
        seed: seed of the background texture and noise.
        shape: ``square`` or ``disc`` (``bar`` for rotate).
        color: RGB of the object.
        size: object size in pixels (side, diameter, or bar length).
        x0, y0: object centre at t = 0, pixels.
        speed: pixels per second (move_*), radians per second (rotate), or pixels of size per second (grow).
        audio: whether the file carries an AAC track.
        audio_hz: tone frequency of that track.
        container: file extension.
    """

    label: str
    width: int
    height: int
    fps: int
    duration: float
    background: str
    seed: int
    shape: str
    color: tuple[int, int, int]
    size: float
    x0: float
    y0: float
    speed: float
    audio: bool
    audio_hz: float
    container: str


def make_scene(label: str, index: int, seed: int) -> Scene:
    """The scene of clip `index` of class `label`; deterministic in (label, index, seed)."""
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    fps = FRAME_RATES[(index + CLASSES.index(label)) % len(FRAME_RATES)]  # every class sees every rate
    short = min(width, height)
    size = float(rng.uniform(0.22, 0.32) * short)
    shape = "bar" if label == "rotate" else ("square" if rng.random() < 0.5 else "disc")
    if label in ("move_left", "move_right"):
        speed = float(rng.uniform(0.35, 0.6) * width)  # px/s; wraps around the frame
    elif label == "rotate":
        speed = float(rng.choice([-1, 1]) * rng.uniform(2.0, 3.5))  # rad/s
        size = float(rng.uniform(0.5, 0.7) * short)
    elif label == "grow":
        speed = float(rng.uniform(0.25, 0.45) * short)  # diameter px/s, restarts when too large
        size = float(0.12 * short)
    else:
        speed = 0.0
    return Scene(
        label=label,
        width=width,
        height=height,
        fps=fps,
        duration=round(float(rng.uniform(1.0, 8.0)), 2),
        background=_BACKGROUNDS[index % 3] if label != "static" else _BACKGROUNDS[1 + index % 2],
        seed=int(rng.integers(2**31)),
        shape=shape,
        color=tuple(int(c) for c in rng.integers(150, 256, size=3)),
        size=size,
        x0=float(rng.uniform(0.3, 0.7) * width),
        y0=float(rng.uniform(0.35, 0.65) * height),
        speed=speed,
        audio=bool(index % 5 in (1, 3)),
        audio_hz=float(rng.uniform(220, 880)),
        container=".mkv" if index % 4 == 3 else ".mp4",
    )


def object_box(scene: Scene, t: float) -> tuple[float, float, float, float]:
    """The object's bounding box ``(x0, y0, x1, y1)`` in pixels at `t` seconds."""
    half = _extent(scene, t) / 2
    cx, cy = _centre(scene, t)
    return cx - half, cy - half, cx + half, cy + half


def _centre(scene: Scene, t: float) -> tuple[float, float]:
    if scene.label in ("move_left", "move_right"):
        direction = -1.0 if scene.label == "move_left" else 1.0
        travel = scene.width + scene.size  # leaves on one side, re-enters on the other
        cx = (scene.x0 + direction * scene.speed * t + scene.size / 2) % travel - scene.size / 2
        return cx, scene.y0
    return scene.x0, scene.y0


def _extent(scene: Scene, t: float) -> float:
    if scene.label == "grow":
        top = 0.6 * min(scene.width, scene.height)
        return scene.size + (scene.speed * t) % (top - scene.size)
    return scene.size


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and their times (T,) seconds."""
    rng = np.random.default_rng(scene.seed)
    count = max(2, round(scene.duration * scene.fps))
    times = np.arange(count) / scene.fps
    background = _texture(rng, scene.height, scene.width)
    yy, xx = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32) + 0.5
    frames = np.empty((count, scene.height, scene.width, 3), dtype=np.uint8)
    for i, t in enumerate(times):
        frame = background.copy()
        if scene.background == "flicker":
            frame += 12.0 * math.sin(2 * math.pi * 1.5 * t)
        mask = _object_mask(scene, t, yy, xx)
        frame[mask] = scene.color
        if scene.background in ("noisy", "flicker"):
            frame += rng.normal(0.0, 3.0, size=frame.shape).astype(np.float32)
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames, times


def _texture(rng, height: int, width: int) -> np.ndarray:
    """A smooth static background: low-frequency colour blobs, (H, W, 3) float32 in 30-120 levels."""
    coarse = rng.uniform(30, 120, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    rows = np.linspace(0, coarse.shape[0] - 1, height)
    cols = np.linspace(0, coarse.shape[1] - 1, width)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, coarse.shape[0] - 1), np.minimum(c0 + 1, coarse.shape[1] - 1)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c1] * fc
    bottom = coarse[r1][:, c0] * (1 - fc) + coarse[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def _object_mask(scene: Scene, t: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cx, cy = _centre(scene, t)
    extent = _extent(scene, t)
    if scene.shape == "bar":
        angle = scene.speed * t
        dx, dy = xx - cx, yy - cy
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        return (np.abs(along) <= extent / 2) & (np.abs(across) <= max(3.0, extent / 8))
    if scene.shape == "disc":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= (extent / 2) ** 2
    return (np.abs(xx - cx) <= extent / 2) & (np.abs(yy - cy) <= extent / 2)


def _write_clip(args: tuple[Scene, str]) -> None:
    scene, path = args
    frames, times = render(scene)
    audio = None
    if scene.audio:
        rate = 16000
        n = round(scene.duration * rate)
        tt = np.arange(n) / rate
        audio = (0.3 * np.sin(2 * math.pi * scene.audio_hz * tt)).astype(np.float32)
    write_video(path, frames, timestamps=times, audio=audio, crf=20, preset="veryfast")


def generate(out: str | Path, *, seed: int = 0, clips_per_class: int = 12, workers: int = 2) -> dict:
    """Write the sample dataset to `out`: class folders, metadata.jsonl and train/val/test CSV manifests.

    Returns:
        A summary: clips per class and per split, and the output directory.
    """
    if clips_per_class < 3:
        raise ValueError("clips_per_class must be at least 3 (one each for train, val and test)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, rows = [], []
    for label in CLASSES:
        scenes = [make_scene(label, i, seed) for i in range(clips_per_class)]
        order = np.random.default_rng([seed, 7, CLASSES.index(label)]).permutation(clips_per_class)
        n_test = n_val = max(1, round(SPLITS["test"] * clips_per_class))
        split_of = {}
        for rank, i in enumerate(order):
            split_of[int(i)] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
        for i, scene in enumerate(scenes):
            rel = f"{label}/{label}_{i:03d}{scene.container}"
            jobs.append((scene, str(out / rel)))
            rows.append({"path": rel, "label": label, "split": split_of[i], "scene": asdict(scene)})
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(bar(pool.map(_write_clip, jobs), total=len(jobs), desc="sample-data", unit="clip"))
    with open(out / "metadata.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for split in SPLITS:
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([r["path"], r["label"]] for r in rows if r["split"] == split)
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    return {"out": str(out), "classes": list(CLASSES), "clips": len(rows), "splits": counts}


def load_scenes(root: str | Path) -> dict[str, Scene]:
    """Scenes of a generated dataset keyed by relative path (for localization checks)."""
    scenes = {}
    with open(Path(root) / "metadata.jsonl") as f:
        for line in f:
            row = json.loads(line)
            scene = row["scene"]
            scene["color"] = tuple(scene["color"])
            scenes[row["path"]] = Scene(**scene)
    return scenes


def write_subset(
    root: str | Path, out: str | Path, classes: dict[str, int | None], *, exclude: str | Path | None = None
) -> Path:
    """Split manifests in `out` over some classes of a generated dataset in `root` (its files stay where they are).

    Args:
        classes: label -> at most this many clips of it per split (None: all), in manifest order. With
            ``{"grow": None, "move_left": 2}`` as NEW and then ``{"move_left": None, "rotate": None}`` as OLD with
            ``exclude=NEW``, NEW brings a new class and a few other clips of an old one (``finetune --replay``'s data).
        exclude: a folder written by `write_subset` whose clips are left out (no clip in both).

    Returns:
        `out`, with ``train.csv``, ``val.csv`` and ``test.csv`` of absolute paths.
    """
    root, out = Path(root).resolve(), Path(out)
    taken_elsewhere = set()
    for split in SPLITS if exclude is not None else ():
        with open(Path(exclude) / f"{split}.csv", newline="") as f:
            taken_elsewhere.update(r["path"] for r in csv.DictReader(f))
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with open(root / f"{split}.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["label"] in classes]
        rows = [r for r in rows if str(root / r["path"]) not in taken_elsewhere]
        taken: dict[str, int] = {}
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            for r in rows:
                cap = classes[r["label"]]
                if cap is None or taken.get(r["label"], 0) < cap:
                    taken[r["label"]] = taken.get(r["label"], 0) + 1
                    writer.writerow([str(root / r["path"]), r["label"]])
    return out
