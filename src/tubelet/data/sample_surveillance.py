"""A fixed camera over a real photograph with people-like patches walking past, and planted anomalies of known seconds.

What ``tubelet sample-data OUT --surveillance`` writes, for ``tubelet watch`` and its benchmark:

* ``streams/stream_NNN.mp4``: long fixed-camera videos (320x240, 15 fps by default). The background is a photograph
  shipped with scikit-image, with sensor noise and a slow lighting drift. Normal traffic: patches cut from other
  photographs (upright, about 18x40 px) crossing left to right at walking speed, one every few seconds. After a
  normal calibration period (`CALIBRATION_S`) anomalies are planted, one at a time with normal stretches between:
  `KINDS`. ``anomalies.csv`` gives each one's stream, kind and start and end seconds; ``streams.csv`` each stream's
  duration and the end of its anomaly-free calibration period.
* ``clips/SPLIT/LABEL/*.mp4`` with ``train.csv``, ``val.csv``, ``test.csv`` (path, label): short clips labelled
  ``normal`` or one anomaly kind, cut from scenes of their own (never from the streams), for ``tubelet finetune``
  to train an ``--alert`` classifier; ``normal.csv`` lists the normal clips of every split (for pretraining).

Everything is a function of seconds (positions, gains), so a stream rendered at another rate shows the same events.
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from tubelet.data.sample_pan import photograph
from tubelet.io.write import write_video
from tubelet.progress import bar

KINDS = ("wrong_way", "running", "left_behind", "loitering", "fall", "light")
BACKGROUNDS = ("brick", "gravel", "grass", "camera")
SPRITES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
CALIBRATION_S = 30.0  # every stream's first seconds hold normal traffic only
WALK = (20.0, 32.0)  # walking speed, pixels per second at 320 px wide (10-16 s to cross)
RUN = (110.0, 160.0)
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
DRIFT_PERIOD_S = 40.0  # the slow lighting drift's cycle


@dataclass
class Actor:
    """A patch moving along keyframes ``(seconds, x, y, angle in degrees)``, linear between them.

    (x, y) is the bottom centre of the patch; it is drawn from the first key's time to the last one's.
    """

    sprite: int  # index into the scene's sprites
    keys: list[tuple[float, float, float, float]]

    def at(self, t: float) -> tuple[float, float, float] | None:
        times = [k[0] for k in self.keys]
        if not times[0] <= t <= times[-1]:
            return None
        return tuple(float(np.interp(t, times, [k[i] for k in self.keys])) for i in (1, 2, 3))


@dataclass
class Scene:
    """Everything needed to render a stretch of one camera: background, actors, lighting and planted anomalies."""

    background: str
    width: int
    height: int
    seed: int
    actors: list[Actor] = field(default_factory=list)
    sprites: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # (photo, y, x, h, w) cut from it
    lights: list[tuple[float, float, float]] = field(default_factory=list)  # (start, end, gain) sudden changes
    anomalies: list[tuple[str, float, float]] = field(default_factory=list)  # (kind, start, end) seconds
    noise: float = 2.0  # sensor noise, 0-255 levels
    drift: float = 0.04  # slow lighting drift amplitude (fraction of brightness)
    phase: float = 0.0  # seconds into the drift's 40 s cycle at t = 0 (drawn per scene: no clock to learn)


def _sprite(scene: Scene, rng: np.random.Generator, *, height: int = 40, width: int = 18) -> int:
    photo = SPRITES[int(rng.integers(len(SPRITES)))]
    image = photograph(photo)
    h, w = int(height * rng.uniform(0.85, 1.15)), int(width * rng.uniform(0.85, 1.15))
    y, x = int(rng.integers(0, image.shape[0] - h)), int(rng.integers(0, image.shape[1] - w))
    scene.sprites.append((photo, y, x, h, w))
    return len(scene.sprites) - 1


def _lane(scene: Scene, rng: np.random.Generator) -> float:
    """The y (feet) of a walker: the lower two thirds of the frame, the walkway."""
    return float(rng.uniform(scene.height * 0.45, scene.height * 0.95))


def _crossing(scene: Scene, rng: np.random.Generator, start: float, speed: float, *, leftward: bool = False) -> Actor:
    y, margin = _lane(scene, rng), 20.0
    span = (scene.width + 2 * margin) / speed
    x0, x1 = (scene.width + margin, -margin) if leftward else (-margin, scene.width + margin)
    return Actor(_sprite(scene, rng), [(start, x0, y, 0.0), (start + span, x1, y, 0.0)])


def _plant(scene: Scene, kind: str, start: float, rng: np.random.Generator) -> tuple[float, float]:
    """Add anomaly `kind` beginning at `start` seconds; returns its (start, end) as the truth says."""
    W = scene.width
    walk = float(rng.uniform(*WALK))
    if kind in ("wrong_way", "running"):
        speed = walk if kind == "wrong_way" else float(rng.uniform(*RUN))
        actor = _crossing(scene, rng, start, speed, leftward=kind == "wrong_way")
        scene.actors.append(actor)
        # Abnormal while in view: from entering the frame (the 20 px margin) to leaving it.
        return start + 20.0 / speed, actor.keys[-1][0] - 20.0 / speed
    if kind == "left_behind":  # a walker sets a bag down mid-frame and walks on; the bag stays
        carrier = _crossing(scene, rng, start - (W * 0.5 + 20) / walk, walk)
        scene.actors.append(carrier)
        stay = float(rng.uniform(10.0, 14.0))
        x, y = W * float(rng.uniform(0.4, 0.6)), carrier.keys[0][2]
        bag = _sprite(scene, rng, height=14, width=16)
        scene.actors.append(Actor(bag, [(start, x, y, 0.0), (start + stay, x, y, 0.0)]))
        return start, start + stay
    if kind == "loitering":  # walks in, then lingers in a small area, then walks on
        y, x = _lane(scene, rng), W * float(rng.uniform(0.35, 0.65))
        linger = float(rng.uniform(10.0, 14.0))
        enter = start - (x + 20) / walk
        keys = [(enter, -20.0, y, 0.0), (start, x, y, 0.0)]
        for step in np.arange(1.5, linger, 1.5):  # small back-and-forth steps
            keys.append((start + float(step), x + float(rng.uniform(-14, 14)), y + float(rng.uniform(-4, 4)), 0.0))
        keys += [(start + linger, x, y, 0.0), (start + linger + (W - x + 20) / walk, W + 20.0, y, 0.0)]
        scene.actors.append(Actor(_sprite(scene, rng), keys))
        return start, start + linger
    if kind == "fall":  # walks in, topples over half a second, lies still, is gone
        y, x = _lane(scene, rng), W * float(rng.uniform(0.3, 0.7))
        lie = float(rng.uniform(5.0, 7.0))
        keys = [(start - (x + 20) / walk, -20.0, y, 0.0), (start, x, y, 0.0), (start + 0.5, x + 10, y, -90.0)]
        keys.append((start + 0.5 + lie, x + 10, y, -90.0))
        scene.actors.append(Actor(_sprite(scene, rng), keys))
        return start, start + 0.5 + lie
    if kind == "light":
        length = float(rng.uniform(3.0, 6.0))
        gain = float(rng.choice([0.6, 1.45]))
        scene.lights.append((start, start + length, gain))
        return start, start + length
    raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {', '.join(KINDS)}")


def make_scene(
    duration: float,
    *,
    seed: int,
    anomalies: list[tuple[str, float]] = (),
    width: int = 320,
    height: int = 240,
    background: str | None = None,
    gap: tuple[float, float] = (3.0, 7.0),
) -> Scene:
    """A camera's scene of `duration` seconds: normal walkers every `gap` seconds, and `anomalies` (kind, start s).

    Walkers start before 0 too, so the scene is already busy at its first second.
    """
    rng = np.random.default_rng(seed)
    scene = Scene(background or BACKGROUNDS[seed % len(BACKGROUNDS)], width, height, int(rng.integers(2**31)))
    scene.phase = float(rng.uniform(0.0, DRIFT_PERIOD_S))
    t = -float(rng.uniform(0, 10))
    while t < duration:
        scene.actors.append(_crossing(scene, rng, t, float(rng.uniform(*WALK))))
        t += float(rng.uniform(*gap))
    for kind, start in anomalies:
        begin, end = _plant(scene, kind, start, rng)
        scene.anomalies.append((kind, round(begin, 3), round(min(end, duration), 3)))
    return scene


@lru_cache(maxsize=8)
def _background(name: str, width: int, height: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(photograph(name))
    scale = max(width / image.width, height / image.height)
    image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))))
    return np.asarray(image, dtype=np.float32)[:height, :width]


def _patch(scene: Scene, index: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) float32 pixels and (h, w, 1) alpha (an ellipse, soft edge) of a sprite turned by `angle` degrees."""
    from PIL import Image

    photo, y, x, h, w = scene.sprites[index]
    pixels = photograph(photo)[y : y + h, x : x + w]
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    alpha = np.clip((1.0 - ellipse) * 4.0, 0.0, 1.0)
    rgba = np.concatenate([pixels, (alpha * 255).astype(np.uint8)[..., None]], axis=2)
    if round(angle):
        rgba = np.asarray(Image.fromarray(rgba, "RGBA").rotate(angle, expand=True, resample=Image.Resampling.BILINEAR))
    return rgba[..., :3].astype(np.float32), rgba[..., 3:].astype(np.float32) / 255.0


def render(scene: Scene, *, fps: float, start: float, end: float) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of seconds [start, end) at `fps`: frame i shows time ``start + i / fps``."""
    base = _background(scene.background, scene.width, scene.height)
    rng = np.random.default_rng([scene.seed, round(start * 1000)])
    count = max(1, round((end - start) * fps))
    frames = np.empty((count, scene.height, scene.width, 3), np.uint8)
    patches: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for i in range(count):
        t = start + i / fps
        frame = base.copy()
        for actor in scene.actors:
            where = actor.at(t)
            if where is None:
                continue
            x, y, angle = where
            key = (actor.sprite, round(angle / 10) * 10)  # turned in 10-degree steps
            if key not in patches:
                patches[key] = _patch(scene, *key)
            pixels, alpha = patches[key]
            h, w = alpha.shape[:2]
            top, left = round(y) - h, round(x) - w // 2
            y0, y1, x0, x1 = max(top, 0), min(top + h, scene.height), max(left, 0), min(left + w, scene.width)
            if y0 >= y1 or x0 >= x1:
                continue
            a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
            p = pixels[y0 - top : y1 - top, x0 - left : x1 - left]
            frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - a) + p * a
        gain = 1.0 + scene.drift * np.sin(2 * np.pi * (t + scene.phase) / DRIFT_PERIOD_S)  # slow drift: clouds
        for begin, stop, change in scene.lights:
            if begin <= t < stop:
                gain *= change
        frame = frame * gain + rng.standard_normal(frame.shape, dtype=np.float32) * scene.noise
        frames[i] = np.clip(frame, 0, 255).round().astype(np.uint8)
    return frames


def _write(job: tuple[Scene, float, float, float, str]) -> None:
    scene, fps, start, end, path = job
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(path, render(scene, fps=fps, start=start, end=end), fps=fps, crf=23)


def stream_schedule(duration: float, index: int, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Anomalies (kind, start s) of stream `index`: after the calibration period, one every 20-25 s, kinds in turn."""
    planted, t = [], CALIBRATION_S + float(rng.uniform(3.0, 8.0))
    k = index * 2  # streams start at different kinds, so a few streams hold every kind
    while t + 12.0 < duration - 0.5:
        planted.append((KINDS[k % len(KINDS)], t))
        k += 1
        t += float(rng.uniform(20.0, 25.0))
    return planted


def generate_surveillance(
    out: str | Path,
    *,
    seed: int = 0,
    streams: int = 4,
    stream_seconds: float = 90.0,
    clips_per_class: int = 12,
    clip_seconds: float = 4.0,
    fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    workers: int = 2,
) -> dict:
    """Write the surveillance sample: long streams with planted anomalies and labelled short clips.

    Args:
        streams, stream_seconds: how many long fixed-camera videos, and how long (more than `CALIBRATION_S`).
        clips_per_class: short clips per label (``normal`` and each of `KINDS`), split 60/20/20 (at least 3).
        clip_seconds: length of a short clip; an anomaly's clip starts half a second before it does.

    Returns:
        A summary: the files written and how many of each.
    """
    if stream_seconds <= CALIBRATION_S + 20.0 and streams:
        raise ValueError(f"stream_seconds must exceed {CALIBRATION_S + 20:g} (calibration, then one anomaly)")
    if clips_per_class < 3:
        raise ValueError("clips_per_class must be at least 3 (one each for train, val and test)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, truth, stream_rows = [], [], []
    for s in range(streams):
        rng = np.random.default_rng([seed, 1, s])
        planted = stream_schedule(stream_seconds, s, rng)
        scene = make_scene(stream_seconds, seed=seed * 10_000 + s, anomalies=planted, width=width, height=height)
        path = f"streams/stream_{s:03d}.mp4"
        jobs.append((scene, fps, 0.0, stream_seconds, str(out / path)))
        stream_rows.append((path, stream_seconds, CALIBRATION_S, scene.background))
        truth += [(path, kind, start, end) for kind, start, end in scene.anomalies]
    clip_rows = []
    for c, label in enumerate(("normal", *KINDS)):
        splits = clip_splits(clips_per_class, np.random.default_rng([seed, 2, c]))
        for i in range(clips_per_class):
            split = splits[i]
            clip_seed = seed * 10_000 + 5000 + c * 500 + i
            rng = np.random.default_rng(clip_seed)
            at = float(rng.uniform(8.0, 12.0))
            planted = [] if label == "normal" else [(label, at)]
            scene = make_scene(at + clip_seconds + 1, seed=clip_seed, anomalies=planted, width=width, height=height)
            begin = at - 0.5 if planted else at
            path = f"clips/{split}/{label}/{label}_{i:03d}.mp4"
            jobs.append((scene, fps, begin, begin + clip_seconds, str(out / path)))
            clip_rows.append((split, path, label))
    # The long streams first: with a pool they start early and the short clips fill the gaps.
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(bar(pool.map(_write, jobs), total=len(jobs), desc="surveillance", unit="video"))
    write_csv(out / "anomalies.csv", ("path", "kind", "start", "end"), truth)
    write_csv(out / "streams.csv", ("path", "duration", "calibration_end", "background"), stream_rows)
    for split in SPLITS:
        write_csv(out / f"{split}.csv", ("path", "label"), [(p, lab) for sp, p, lab in clip_rows if sp == split])
    write_csv(out / "normal.csv", ("path", "label"), [(p, lab) for _, p, lab in clip_rows if lab == "normal"])
    return {
        "out": str(out),
        "streams": streams,
        "stream_seconds": stream_seconds,
        "anomalies": len(truth),
        "clips": {split: sum(sp == split for sp, _, _ in clip_rows) for split in SPLITS},
        "labels": ["normal", *KINDS],
    }


def clip_splits(count: int, rng: np.random.Generator) -> list[str]:
    """The split of each of a class's `count` clips: `SPLITS`' shares (at least one test and one val clip), which
    clips at random."""
    rank = np.argsort(rng.permutation(count))  # clip i's place in a random order
    held = max(1, round(SPLITS["test"] * count))
    return ["test" if r < held else ("val" if r < 2 * held else "train") for r in rank]


def write_csv(path: Path, header: tuple[str, ...], rows: list) -> None:
    """A CSV file of `header` and `rows` (a manifest, a truth table)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_truth(out: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """``anomalies.csv`` of a generated folder: {stream path relative to it: [(kind, start, end) seconds]}."""
    truth: dict[str, list[tuple[str, float, float]]] = {}
    with open(Path(out) / "anomalies.csv", newline="") as f:
        for row in csv.DictReader(f):
            truth.setdefault(row["path"], []).append((row["kind"], float(row["start"]), float(row["end"])))
    return truth
