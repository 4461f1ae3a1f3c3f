"""Vital-signs sample data: a face and upper body from a real photograph, with a pulse in the skin's colour and
breathing in the shoulders, of known rates, under head motion, lighting drift, sensor noise and H.264 compression.

The person is scikit-image's ``astronaut`` (the only colour photograph of a person it ships). Each video frames her
at its own zoom and position, white balance and size (160x120 to 320x240) at 15, 24, 30 or 60 fps, and then, as a
function of SECONDS (the same second looks the same at any frame rate):

- pulse: the skin (a hand-placed ellipse over her face, intersected with skin colours) darkens with each beat by a
  PPG-like waveform (a fundamental and two harmonics) in the relative channel strengths of blood volume change,
  ``PBV = (0.33, 0.77, 0.53)`` for R, G, B (de Haan & van Leest 2014), at 0.3-0.8 levels of green: under one
  8-bit level, as in real video. The rate follows knots (45-150 bpm, a slow drift by default) plus respiratory sinus
  arrhythmia (1-4 bpm at the breathing rate) and slower heart-rate variability.
- breathing: everything below the neck moves up and down by 0.6-1.5 output pixels at 8-30 breaths per minute, the
  face does not (a smooth ramp from the neck to the shoulders).
- motion (`MOTIONS`): ``still`` (sub-pixel sway), ``moderate`` (2 px sway, 1 degree of roll) or ``strong`` (5 px sway,
  faster nods, 3 degrees of roll, two sudden moves, a 2% change of distance); lighting follows the head sideways.
- lighting: a slow drift of +-5% over 20-60 s and a faint white flicker (0.02-0.08%, 0.5-3 Hz), the same in every
  channel.
- sensor noise: Gaussian, 1-2.5 levels; compression (`COMPRESSIONS`): libx264 at crf 10, 16 or 22 (4:2:0 chroma).
  Compression matters most: at crf 18 and above x264 rounds away most of the pulse's sub-level chroma change, which
  is what CHROM and POS read (measured: the POS spectrum's pulse power falls about 5x from the rendered frames to
  crf 8).

`truth.csv` holds the true rates per second (the mean over each second); no-pulse videos (amplitude 0) leave the heart
rate blank. The test split differs from training by its seeds (rates, framing, white balance, motion paths, noise)
and shows the photograph mirrored; both splits cover every motion and compression level.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from tubelet.data.sample_pan import photograph
from tubelet.io.write import VideoWriter
from tubelet.progress import each

MOTIONS = ("still", "moderate", "strong")
COMPRESSIONS = {"low": 10, "medium": 16, "high": 22}  # level -> libx264 crf
RATES = (15.0, 24.0, 30.0, 60.0)
SIZES = ((160, 120), (240, 180), (320, 240))  # (width, height)
PHOTO = "astronaut"
PBV = np.array([0.33, 0.77, 0.53])  # relative pulsatile strength of R, G, B
FACE_ELLIPSE = (222.0, 132.0, 40.0, 56.0)  # (cx, cy, half-width, half-height) of her face in the 512x512 photograph
NECK_ROW, SHOULDER_ROW = 196.0, 250.0  # photograph rows where the breathing motion starts and reaches full size
FINE_HZ = 200.0  # the rates are integrated to phases on a grid this fine


@dataclass
class Subject:
    """Everything needed to render one video (see the module docstring).

    Attributes:
        width, height, fps, duration: the video's size, frame rate and seconds.
        mirror: the photograph is flipped left-right.
        zoom: output pixels per photograph pixel, relative to fitting her head and shoulders in the frame height.
        center: the photograph point (x, y) at the frame's centre.
        tint: per-channel gain (white balance).
        heart: (seconds, bpm) knots of the heart rate, linearly interpolated (before RSA and HRV).
        breath: (seconds, breaths per minute) knots of the breathing rate.
        rsa: amplitude in bpm of the heart rate's swing with each breath; hrv: of its slower random swing.
        pulse_levels: peak pulse amplitude in green, 0-255 levels (0: no pulse).
        breath_px: peak breathing displacement in output pixels.
        motion: `MOTIONS`; compression: `COMPRESSIONS` key; crf: its libx264 crf.
        noise: sensor noise standard deviation, levels; flicker: relative standard deviation of the white flicker.
        seed: seed of the motion paths, drift, HRV and noise.
    """

    width: int
    height: int
    fps: float
    duration: float
    mirror: bool
    zoom: float
    center: tuple[float, float]
    tint: tuple[float, float, float]
    heart: list[tuple[float, float]]
    breath: list[tuple[float, float]]
    rsa: float
    hrv: float
    pulse_levels: float
    breath_px: float
    motion: str
    compression: str
    crf: int
    noise: float
    flicker: float
    seed: int
    extra: dict = field(default_factory=dict)


def make_subject(index: int, *, seed: int, motion: str, compression: str, fps: float, size: tuple[int, int],
                 duration: float = 20.0, mirror: bool = False, pulse: bool = True) -> Subject:  # fmt: skip
    """Subject `index` of a split; deterministic in its arguments."""
    rng = np.random.default_rng([seed, index, MOTIONS.index(motion), int(fps), size[0]])
    hr0 = float(rng.uniform(50, 140))
    hr1 = float(np.clip(hr0 + rng.uniform(-15, 15), 45, 150))
    br0 = float(rng.uniform(9, 28))
    br1 = float(np.clip(br0 + rng.uniform(-3, 3), 8, 30))
    return Subject(
        width=size[0], height=size[1], fps=fps, duration=duration, mirror=mirror,
        zoom=float(rng.uniform(1.0, 1.3)), center=(float(rng.uniform(205, 240)), float(rng.uniform(180, 215))),
        tint=tuple(float(v) for v in rng.uniform(0.97, 1.03, size=3)),
        heart=[(0.0, hr0), (duration, hr1)], breath=[(0.0, br0), (duration, br1)],
        rsa=float(rng.uniform(1, 4)), hrv=float(rng.uniform(0.5, 2)),
        pulse_levels=float(rng.uniform(0.3, 0.8)) if pulse else 0.0, breath_px=float(rng.uniform(0.6, 1.5)),
        motion=motion, compression=compression, crf=COMPRESSIONS[compression], noise=float(rng.uniform(1, 2.5)),
        flicker=float(rng.uniform(0.0002, 0.0008)), seed=int(rng.integers(2**31)),
    )  # fmt: skip


@lru_cache(maxsize=4)
def _layers(mirror: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The photograph (512, 512, 3) float32, its (skin weight, breathing ramp, 0) layers, and the skin's mean green."""
    image = photograph(PHOTO).astype(np.float32)
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, ax, ay = FACE_ELLIPSE
    inside = np.clip(1.5 - np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2) * 1.5 + 0.5, 0, 1)  # soft edge
    ycrcb = cv2.cvtColor(photograph(PHOTO), cv2.COLOR_RGB2YCrCb).astype(np.float32)
    skin_colour = ((ycrcb[..., 1] > 135) & (ycrcb[..., 2] < 125)).astype(np.float32)  # not hair, eyes or shadow
    skin = inside * cv2.GaussianBlur(skin_colour, (5, 5), 0)
    ramp = np.clip((ys - NECK_ROW) / (SHOULDER_ROW - NECK_ROW), 0, 1)
    extra = np.stack([skin, ramp, np.zeros_like(skin)], axis=2)
    green = float((image[..., 1] * skin).sum() / skin.sum())
    if mirror:
        image, extra = image[:, ::-1].copy(), extra[:, ::-1].copy()
    return image, extra, green


def _knots(points: list[tuple[float, float]], times: np.ndarray) -> np.ndarray:
    t, v = zip(*points)
    return np.interp(times, t, v)


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, band: tuple[float, float], count: int = 6) -> np.ndarray:
    """A smooth random curve of unit standard deviation: `count` sinusoids of random frequency in `band` Hz."""
    freqs = rng.uniform(*band, size=count)
    phases = rng.uniform(0, 2 * np.pi, size=count)
    curve = np.sin(2 * np.pi * freqs[None] * times[:, None] + phases[None]).sum(axis=1)  # (N,)
    return curve / np.sqrt(count / 2)


def rate_curves(subject: Subject, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heart rate (bpm) and breathing rate (breaths/min) at `times` (N,) seconds, RSA and HRV included."""
    fine = np.arange(0, subject.duration + 1.0, 1.0 / FINE_HZ)
    breath = _knots(subject.breath, fine)
    breath_phase = 2 * np.pi * np.cumsum(breath / 60.0) / FINE_HZ
    rng = np.random.default_rng([subject.seed, 1])
    heart = (
        _knots(subject.heart, fine)
        + subject.rsa * np.sin(breath_phase)
        + subject.hrv * _smooth_noise(rng, fine, (0.02, 0.12))
    )
    heart = np.clip(heart, 40.0, 160.0)
    return np.interp(times, fine, heart), np.interp(times, fine, breath)


def phases(subject: Subject, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cardiac and breathing phases (radians) at `times`: the integrals of the rates from 0 s."""
    fine = np.arange(0, subject.duration + 1.0, 1.0 / FINE_HZ)
    heart, breath = rate_curves(subject, fine)
    return (np.interp(times, fine, 2 * np.pi * np.cumsum(heart / 60.0) / FINE_HZ),
            np.interp(times, fine, 2 * np.pi * np.cumsum(breath / 60.0) / FINE_HZ))  # fmt: skip


def waveform(phase: np.ndarray) -> np.ndarray:
    """A PPG-like pulse of peak amplitude about 1: a steep systolic rise and a dicrotic bump (three harmonics)."""
    wave = np.sin(phase) + 0.4 * np.sin(2 * phase - 0.9) + 0.15 * np.sin(3 * phase - 1.8)
    return wave / 1.3


def head_motion(subject: Subject, times: np.ndarray) -> dict[str, np.ndarray]:
    """dx, dy (output pixels), roll (degrees) and scale (relative) of the head at `times` (N,) seconds."""
    rng = np.random.default_rng([subject.seed, 2])
    sway, roll, fast, scale = {"still": (0.2, 0.0, 0.0, 0.0), "moderate": (2.0, 1.0, 0.0, 0.0),
                               "strong": (5.0, 3.0, 1.0, 0.02)}[subject.motion]  # fmt: skip
    dx = sway * _smooth_noise(rng, times, (0.03, 0.4)) + fast * _smooth_noise(rng, times, (0.5, 1.5))
    dy = 0.6 * sway * _smooth_noise(rng, times, (0.03, 0.4)) + fast * _smooth_noise(rng, times, (0.5, 1.5))
    if subject.motion == "strong":  # two sudden moves, each over 0.4 s
        for at in rng.uniform(0.15, 0.85, size=2) * subject.duration:
            step = np.clip((times - at) / 0.4, 0, 1)
            dx = dx + rng.choice([-1, 1]) * 6.0 * step * step * (3 - 2 * step)
    return {
        "dx": dx, "dy": dy, "roll": roll * _smooth_noise(rng, times, (0.03, 0.3)),
        "scale": 1.0 + scale * _smooth_noise(rng, times, (0.03, 0.2)),
    }  # fmt: skip


def lighting(subject: Subject, times: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """(N,) white gain at `times`: slow drift, faint flicker, and a side light that brightens as the head moves."""
    rng = np.random.default_rng([subject.seed, 3])
    period = rng.uniform(20, 60)
    drift = 0.05 * np.sin(2 * np.pi * times / period + rng.uniform(0, 2 * np.pi))
    flicker = subject.flicker * _smooth_noise(rng, times, (0.5, 3.0), count=10)
    return 1.0 + drift + flicker + 0.003 * dx


def frames(subject: Subject, times: np.ndarray | None = None):
    """Yield (seconds, (H, W, 3) uint8 frame) for frame i at i / fps seconds (or at each of `times`, increasing
    seconds: a variable frame rate), one at a time (bounded memory)."""
    image, extra, skin_green = _layers(subject.mirror)
    if times is None:
        times = np.arange(int(round(subject.duration * subject.fps))) / subject.fps
    heart_phase, breath_phase = phases(subject, times)
    motion = head_motion(subject, times)
    gain = lighting(subject, times, motion["dx"])
    pulse = waveform(heart_phase)
    chest = subject.breath_px * np.sin(breath_phase)
    # Relative darkening per channel at a pulse of 1: green moves by `pulse_levels` levels on the mean skin.
    strength = PBV * subject.pulse_levels / (PBV[1] * skin_green)
    tint = np.asarray(subject.tint, np.float32)
    w, h = subject.width, subject.height
    fit = h / 330.0 * subject.zoom  # head and shoulders (about 330 photograph rows) fill the frame height at zoom 1
    cx = 512 - subject.center[0] if subject.mirror else subject.center[0]
    cy = subject.center[1]
    rng = np.random.default_rng([subject.seed, 4])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, t in enumerate(times):
        s = fit * motion["scale"][i]
        m = cv2.getRotationMatrix2D((cx, cy), float(motion["roll"][i]), s)  # about the view centre
        m[0, 2] += w / 2 - cx + motion["dx"][i]
        m[1, 2] += h / 2 - cy + motion["dy"][i]
        view = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        layers = cv2.warpAffine(extra, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        skin, ramp = layers[..., 0], layers[..., 1]
        # Breathing: rows below the neck sample from `chest` pixels higher up (the body rises), the face stays.
        map_y = (ys - np.float32(chest[i]) * ramp).astype(np.float32)  # float64 maps are not remap's
        view = cv2.remap(view, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        view *= 1.0 - skin[..., None] * (strength * pulse[i]).astype(np.float32)[None, None]
        view *= tint * gain[i]
        view += rng.normal(0.0, subject.noise, view.shape).astype(np.float32)
        yield float(t), np.clip(view + 0.5, 0, 255).astype(np.uint8)


def write_subject(path: str | Path, subject: Subject, times: np.ndarray | None = None) -> Path:
    """Render and encode `subject` to `path` (libx264 at its crf), one frame at a time (at `times`, see `frames`)."""
    with VideoWriter(path, width=subject.width, height=subject.height, fps=subject.fps, crf=subject.crf) as writer:
        for t, frame in frames(subject, times):
            writer.write(frame, t)
    return Path(path)


def truth_per_second(subject: Subject) -> list[tuple[int, float | None, float]]:
    """(second, heart rate or None without a pulse, breathing rate): the means over each whole second."""
    rows = []
    for k in range(int(subject.duration)):
        times = k + np.arange(0, 1.0, 1.0 / FINE_HZ)
        heart, breath = rate_curves(subject, times)
        rows.append((k, float(heart.mean()) if subject.pulse_levels > 0 else None, float(breath.mean())))
    return rows


def _write(job: tuple[Subject, str]) -> None:
    subject, path = job
    write_subject(path, subject)


def generate_vitals(
    out: str | Path, *, seed: int = 0, duration: float = 20.0, per_cell: dict[str, int] | None = None,
    no_pulse: int = 2, rates: tuple[float, ...] = RATES, sizes: tuple[tuple[int, int], ...] = SIZES,
    motions: tuple[str, ...] = MOTIONS, compressions: tuple[str, ...] = tuple(COMPRESSIONS), workers: int = 2,
) -> dict:  # fmt: skip
    """Write ``train/`` and ``test/`` videos, manifests ``train.csv`` and ``test.csv``, ``truth.csv`` and
    ``subjects.jsonl``.

    Args:
        per_cell: videos per (motion, compression) of each split (default train 1, test 2).
        no_pulse: videos per split with no pulse at all (still or moderate motion, low or medium compression).
        rates, sizes: frame rates and (width, height) sizes, taken in turn.

    Returns:
        {"train": videos, "test": videos, "no_pulse": videos without a pulse, "seconds": of video in all}.
    """
    out = Path(out)
    per_cell = per_cell or {"train": 1, "test": 2}
    jobs, manifests, truth, subjects = [], {}, [], []
    for s, (split, count) in enumerate(per_cell.items()):
        cells = [(m, c, True) for m in motions for c in compressions for _ in range(count)]
        cells += [(motions[k % min(2, len(motions))], compressions[k % min(2, len(compressions))], False)
                  for k in range(no_pulse)]  # fmt: skip
        for index, (motion, compression, pulse) in enumerate(cells):
            fps, size = rates[(index + s) % len(rates)], sizes[(index // len(rates) + s) % len(sizes)]
            subject = make_subject(index, seed=seed * 100 + s, motion=motion, compression=compression, fps=fps,
                                   size=size, duration=duration, mirror=split == "test", pulse=pulse)  # fmt: skip
            name = f"{split}/{'pulse' if pulse else 'nopulse'}_{index:03d}_{motion}_{compression}_{fps:g}fps.mp4"
            jobs.append((subject, str(out / name)))
            manifests.setdefault(split, []).append(
                [name, fps, size[0], size[1], duration, motion, compression, subject.crf, int(pulse)]
            )
            truth += [[name, k, "" if hr is None else round(hr, 3), round(br, 3)] for k, hr, br in
                      truth_per_second(subject)]  # fmt: skip
            subjects.append({"split": split, "path": name, **asdict(subject)})
    for split in manifests:
        (out / split).mkdir(parents=True, exist_ok=True)
    each(_write, jobs, workers=workers, desc="vitals", unit="video")
    header = ["path", "fps", "width", "height", "seconds", "motion", "compression", "crf", "pulse"]
    for split, rows in manifests.items():
        _csv(out / f"{split}.csv", header, rows)
    _csv(out / "truth.csv", ["path", "second", "heart_rate_bpm", "breathing_rate_bpm"], truth)
    with open(out / "subjects.jsonl", "w") as f:
        f.writelines(json.dumps(subject) + "\n" for subject in subjects)
    return {
        **{split: len(rows) for split, rows in manifests.items()},
        "no_pulse": sum(not s["pulse_levels"] for s in subjects), "seconds": round(duration * len(subjects), 1),
    }  # fmt: skip


def _csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
