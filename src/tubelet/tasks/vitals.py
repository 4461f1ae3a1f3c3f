"""Learned heart rate from the skin's colour: the ``vitals`` task (``tubelet finetune --task vitals --data D``) and
the `VitalsModel` that ``tubelet vitals --method model --checkpoint C`` runs.

The model does not read pixels: a pulse is well under one 8-bit level per frame, and a transformer over pixel
tubelets would have to find the skin before it could hear the pulse. It reads what the classical pipeline already
measures (`tubelet.vitals.traces`: the mean colour of the held skin mask, per frame), so the learned and the
classical readers see the same numbers and differ only in how they turn them into a rate:

- a window of `clip_seconds` of the trace is resampled onto a uniform grid of `sample_fps` samples per second
  (decoder timestamps, so 15 and 60 fps footage give the same grid), and becomes FEATURES (`window_features`): the
  three channels relative to their mean, detrended and band-passed to 0.7-4 Hz (scaled together, so their ratios
  stay), and POS's pulse of the same window (scaled on its own);
- every `CHUNK` grid samples are one PARTICLE (tubelet ``CHUNK x 1 x 1`` over `CHANNELS` channels) carrying its
  time in seconds from the window's start; a small `Encoder` (rotary time over real seconds) reads the window's
  particles, pools them and regresses the heart rate (``(bpm - TARGET_MEAN) / TARGET_SCALE``, smooth L1).

Data: the folder ``tubelet sample-data --vitals`` writes (``train.csv``, ``val.csv`` or a share of the training
videos, ``truth.csv`` of per-second rates). Each video is traced once in `prepare`. Training windows are random in
start and time-stretched by ``U(1/stretch, stretch)`` (the trace read faster or slower, the rate scaled with it),
which spreads a few videos' rates over the 45-150 bpm range; validation reads every window at a 1 s stride, as
``tubelet vitals`` does. Videos without a pulse are not trained on (there is no rate to regress); the model's windows
are gated by the signal-to-noise of POS's spectrum at the model's rate (`window_quality`), as the classical ones are
by their own peak's.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tubelet.data.dataset import Batch
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.particles import pack
from tubelet.particles.structure import Particles
from tubelet.tasks.base import Arm, Built, Prepared, StepLoss, Task, register
from tubelet.typed import opt
from tubelet.vitals.estimate import MIN_SKIN_SHARE, Windows
from tubelet.vitals.pulse import bandpass, detrend, pos, snr_db
from tubelet.vitals.traces import Trace, Tracer

log = logging.getLogger("tubelet.vitals")

CHUNK = 3  # grid samples per particle: 0.2 s at 15 samples per second
CHANNELS = 4  # band-passed R, G, B relative to their mean, and POS's pulse
TARGET_MEAN, TARGET_SCALE = 90.0, 30.0  # heart rate targets are (bpm - mean) / scale
MIN_GRID_HZ = 10.0  # the grid must resolve 4 Hz (240 bpm) below its Nyquist rate
VAL_STRIDE = 1.0  # seconds between validation windows, as `tubelet vitals` reads them


@dataclass(frozen=True)
class VitalsFields:
    """The fields of ``finetune --task vitals`` besides those every run shares."""

    windows_per_video: int = opt(32, "random training windows cut from each training video per epoch")
    stretch: float = opt(1.3, "time-stretch augmentation: a window read U(1/s, s) times as fast, its rate scaled too")
    model_dim: int = opt(64, "width of a fresh vitals model")
    model_depth: int = opt(3, "transformer blocks of a fresh vitals model")
    model_heads: int = opt(4, "attention heads of a fresh vitals model")

    def validate(self) -> None:
        if self.windows_per_video < 1:
            raise ConfigError(f"windows_per_video: must be at least 1, got {self.windows_per_video}")
        if self.stretch < 1.0:
            raise ConfigError(f"stretch: must be 1 (off) or more, got {self.stretch}")
        if self.model_dim % self.model_heads or (self.model_dim // self.model_heads) % 2:
            raise ConfigError(f"model_dim: {self.model_dim} must split into {self.model_heads} even heads")


# --- traces and their truth ------------------------------------------------------------------------------------------


def trace_file(path: str | Path) -> Trace:
    """The per-frame trace of a whole video file, as ``tubelet vitals`` measures it (`Tracer`, decoder times)."""
    from tubelet.stream.source import Frames, Source

    tracer = Tracer()
    for item in Source(str(path), chunk_seconds=5.0):
        if isinstance(item, Frames):
            for frame, t in zip(item.frames, item.timestamps):
                tracer.add(frame, float(t))
    return tracer.trace()


def read_truth(root: Path) -> dict[str, np.ndarray]:
    """``truth.csv`` of a vitals sample folder: path -> (S, 2) heart rate (NaN: no pulse) and breathing rate of
    second k = 0..S-1."""
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    with open(root / "truth.csv") as f:
        for row in csv.DictReader(f):
            hr = float(row["heart_rate_bpm"]) if row["heart_rate_bpm"] else np.nan
            rows.setdefault(row["path"], {})[int(row["second"])] = (hr, float(row["breathing_rate_bpm"]))
    return {path: np.array([seconds[k] for k in sorted(seconds)]) for path, seconds in rows.items()}


def mean_rate(per_second: np.ndarray, start: float, end: float) -> float:
    """The mean of per-second rates (S,) (second k covers [k, k+1)) over [`start`, `end`], weighted by overlap."""
    k = np.arange(len(per_second))
    overlap = np.clip(np.minimum(k + 1, end) - np.maximum(k, start), 0.0, None)
    return float((overlap * per_second).sum() / max(overlap.sum(), 1e-9))


# --- a window as particles -----------------------------------------------------------------------------------------


def window_features(trace: Trace, start: float, end: float, count: int, fs: float) -> np.ndarray | None:
    """(count, CHANNELS) float32 features of trace seconds [`start`, `end`] resampled to `count` points, read as a
    grid of `fs` samples per second (a stretched window is read faster or slower than real time); None when the
    skin was missing in too many of its frames.
    """
    part = trace.between(start, end)
    have = ~np.isnan(part.rgb[:, 0]) if len(part) else np.zeros(0, bool)
    if len(part) < 4 or have.mean() < MIN_SKIN_SHARE:
        return None
    grid = start + np.arange(count) * (end - start) / count
    rgb = np.stack([np.interp(grid, part.times[have], part.rgb[have, c]) for c in range(3)], axis=1)  # (K, 3)
    rel = rgb / np.maximum(rgb.mean(axis=0), 1e-9) - 1.0
    colour = bandpass(np.stack([detrend(rel[:, c]) for c in range(3)], axis=1), fs)  # (K, 3)
    pulse = pos(rgb, fs)  # (K,)
    colour /= max(float(colour.std()), 1e-12)
    pulse /= max(float(pulse.std()), 1e-12)
    return np.concatenate([colour, pulse[:, None]], axis=1).astype(np.float32)


def window_particles(features: np.ndarray, fs: float) -> Particles:
    """The particles of one window's features (K, CHANNELS): every `CHUNK` samples one, at its centre's seconds."""
    n = len(features) // CHUNK
    values = torch.from_numpy(features[: n * CHUNK].reshape(n, CHUNK * CHANNELS).copy())  # (n, CHUNK*C) as (t c)
    index = torch.arange(n)
    zeros = torch.zeros(n, dtype=torch.int64)
    return Particles(
        values=values, t=((index * CHUNK + (CHUNK - 1) / 2) / fs).float(), ti=index, y=zeros, x=zeros,
        span=torch.ones(n, dtype=torch.int64), seq=zeros, grid=(n, 1, 1), tubelet=(CHUNK, 1, 1),
        frame_shape=(n * CHUNK, 1, 1), channels=CHANNELS,
    )  # fmt: skip


def grid_of(pre: Preprocessing) -> tuple[float, int]:
    """(samples per second, samples per window) of a vitals model's preprocessing."""
    fs = float(pre.sample_fps)
    return fs, int(round(pre.clip_seconds * fs))


# --- the data ------------------------------------------------------------------------------------------------------


@dataclass
class Videos:
    """Traced videos of one split: `paths`, their `traces` and per-second `truth` ((S, 2), NaN heart rate: none)."""

    paths: list[str]
    traces: list[Trace]
    truth: list[np.ndarray]
    windows_per_video: int = 1
    stretch: float = 1.0

    def __len__(self) -> int:
        return len(self.paths)

    def pulsed(self) -> list[int]:
        return [i for i, t in enumerate(self.truth) if np.isfinite(t[:, 0]).all()]


def load_videos(root: Path, split: str, paths: list[str] | None = None) -> Videos:
    """Trace every video of ``root/split.csv`` (or the given `paths`), with its truth."""
    if paths is None:
        manifest = root / f"{split}.csv"
        if not manifest.exists():
            raise ConfigError(f"data: {manifest} not found (tubelet sample-data OUT --vitals writes a vitals folder)")
        with open(manifest) as f:
            paths = [row["path"] for row in csv.DictReader(f)]
    truth = read_truth(root)
    missing = [p for p in paths if p not in truth]
    if missing:
        raise ConfigError(f"data: {root / 'truth.csv'} has no rows for {missing[0]}")
    return Videos(list(paths), [trace_file(root / p) for p in paths], [truth[p] for p in paths])


class TraceWindows(torch.utils.data.Dataset):
    """Windows of traced videos as packed particle batches, for the one loop (`tubelet.train.fit`).

    Training (`train`): item i is a random window of pulsed video ``i // windows_per_video`` per (seed, epoch, i),
    time-stretched. Otherwise every window at a `VAL_STRIDE` stride of every pulsed video, as read live.
    """

    crash_dir = None  # nothing is decoded here: no worker can crash on a file

    def __init__(self, videos: Videos, pre: Preprocessing, *, train: bool, seed: int = 0):
        self.videos, self.train, self.seed, self.epoch = videos, train, seed, 0
        self.fs, self.count = grid_of(pre)
        self.seconds = self.count / self.fs
        self.items: list[tuple[int, float | None]] = []
        for v in videos.pulsed():
            if train:
                self.items += [(v, None)] * videos.windows_per_video
                continue
            times = videos.traces[v].times
            period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
            for start, _ in Windows(self.seconds, VAL_STRIDE).due(float(times[0]), float(times[-1]), period):
                self.items.append((v, start))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def estimates(self) -> list[int]:
        return [self.count // CHUNK] * len(self.items)

    def item_indices_of(self, path: str) -> list[int]:
        return [i for i, (v, _) in enumerate(self.items) if self.videos.paths[v] == path]

    def window(self, i: int) -> tuple[float, float, float]:
        """(start, end) trace seconds of item i and its stretch (the rate read is the true one times it)."""
        v, start = self.items[i]
        if start is not None:
            return start, start + self.seconds, 1.0
        rng = np.random.default_rng((self.seed, self.epoch, i))
        limit = np.log(self.videos.stretch)
        times = self.videos.traces[v].times
        room = float(times[-1] - times[0])
        stretch = float(np.exp(rng.uniform(-limit, limit)))
        span = min(self.seconds * stretch, room)  # seconds of trace read as `self.seconds` of window
        begin = float(times[0]) + rng.uniform(0.0, room - span)
        return begin, begin + span, self.seconds / span

    def __getitem__(self, i: int):
        v, _ = self.items[i]
        start, end, speed = self.window(i)
        features = window_features(self.videos.traces[v], start, end, self.count, self.fs)
        if features is None:
            return None
        bpm = mean_rate(self.videos.truth[v][:, 0], start, end) * speed
        return window_particles(features, self.fs), bpm, i, v, (start, end)

    def collate(self, items: list) -> Batch:
        kept = [item for item in items if item is not None]
        if not kept:
            return Batch(None, torch.zeros(0), [], [], [], [])
        bpm = torch.tensor([k[1] for k in kept], dtype=torch.float32)  # (B,) beats per minute, not class ids
        return Batch(pack([k[0] for k in kept]), bpm, [k[2] for k in kept], [k[3] for k in kept],
                     [k[4] for k in kept], [])  # fmt: skip


def to_bpm(outputs: torch.Tensor) -> torch.Tensor:
    """(B, 1) model outputs -> (B,) beats per minute."""
    return outputs[:, 0] * TARGET_SCALE + TARGET_MEAN


def hr_metrics(predicted: np.ndarray, true: np.ndarray) -> dict:
    """MAE, RMSE, Pearson r and share within 3 bpm of predicted against true rates (both (n,))."""
    err = predicted - true
    r = float(np.corrcoef(predicted, true)[0, 1]) if len(err) > 1 and predicted.std() > 0 and true.std() > 0 else 0.0
    return {"mae_bpm": float(np.abs(err).mean()), "rmse_bpm": float(np.sqrt((err**2).mean())), "pearson_r": r,
            "within_3_bpm": float((np.abs(err) <= 3).mean()), "windows": len(err)}  # fmt: skip


# --- the task ------------------------------------------------------------------------------------------------------


@register
class VitalsTask(Task):
    """Heart rate regressed from windows of the skin's colour trace (see the module docstring)."""

    name = "vitals"
    summary = "heart rate from the skin-colour trace (rPPG): a small encoder over trace particles in seconds"
    Config = VitalsFields
    metrics = {"mae_bpm": False, "rmse_bpm": False, "within_3_bpm": True, "pearson_r": True}
    config_defaults = {
        "sample_fps": 15.0, "clip_seconds": 10.0, "size": None, "max_long_side": None, "prune_threshold": 0.0,
        "epochs": 30, "lr": 1e-3, "batch_particles": 1600, "min_steps_per_epoch": 0, "val_split": "val",
        "val_fraction": 0.25,
    }  # fmt: skip

    def prepare(self, cfg, out: Path) -> Prepared:
        root = Path(cfg.data)
        if not (root / "truth.csv").exists():
            raise ConfigError(
                f"data: {root} has no truth.csv (tubelet sample-data OUT --vitals writes a vitals folder)"
            )
        if cfg.sample_fps is None or cfg.sample_fps < MIN_GRID_HZ:
            raise ConfigError(f"sample_fps: the vitals grid needs at least {MIN_GRID_HZ:g} samples per second")
        train = load_videos(root, cfg.train_split)
        val = None
        if cfg.val_split not in (None, "none") and (root / f"{cfg.val_split}.csv").exists():
            val = load_videos(root, cfg.val_split)
        elif cfg.val_split not in (None, "none"):  # no val split: every k-th pulsed training video
            every = max(2, round(1 / max(cfg.val_fraction, 1e-6)))
            held = set(train.pulsed()[::every])
            val = Videos(*([x for i, x in enumerate(col) if i in held] for col in (train.paths, train.traces,
                                                                                   train.truth)))  # fmt: skip
            train = Videos(*([x for i, x in enumerate(col) if i not in held] for col in (train.paths, train.traces,
                                                                                         train.truth)))  # fmt: skip
        train = replace(train, windows_per_video=cfg.windows_per_video, stretch=cfg.stretch)
        if not train.pulsed():
            raise ConfigError(f"data: {root} has no training video with a pulse")
        log.info("vitals: %d training videos (%d with a pulse), %d validation", len(train), len(train.pulsed()),
                 len(val) if val is not None else 0)  # fmt: skip
        return Prepared(train, val)

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        from tubelet.models.encoder import Encoder, EncoderConfig

        if Path(cfg.model).is_dir():  # continue a vitals model
            loaded = load_vitals(cfg.model)
            return Built(loaded.model, loaded.preprocessing)
        config = EncoderConfig(
            dim=cfg.model_dim, depth=cfg.model_depth, heads=cfg.model_heads, tubelet=(CHUNK, 1, 1),
            channels=CHANNELS, num_classes=1, pooling="attention", dropout=cfg.dropout, drop_path=cfg.drop_path,
            attention=cfg.attention, embed_init="random",
        )  # fmt: skip
        return Built(Encoder(config), Preprocessing(tubelet=(CHUNK, 1, 1), size=None, max_long_side=None))

    def dataset(self, data, pre, reads, *, augment=None, seed: int = 0, windows=None) -> TraceWindows:
        return TraceWindows(data, pre, train=windows is None, seed=seed)

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        outputs = module(batch.packed.to(device)).float()  # (B, 1)
        target = ((batch.labels - TARGET_MEAN) / TARGET_SCALE).to(device)  # (B,)
        loss = torch.nn.functional.smooth_l1_loss(outputs[:, 0], target, beta=0.5)
        return StepLoss(loss, len(batch.indices), len(batch.indices))

    def validate(self, model, prepared: Prepared, arm: Arm, pre, *, cfg, device):
        if prepared.val is None:
            return None
        return evaluate_windows(model, TraceWindows(prepared.val, pre, train=False), device=device)

    def checkpoint_extras(self, prepared: Prepared, arm: Arm) -> dict:
        return {"labels": None, "tokenizer": None, "audio": None}

    def check_predict(self, loaded) -> None:
        raise ConfigError(f"{loaded.source}: a vitals model; read it with tubelet vitals FILE --method model "
                          f"--checkpoint {loaded.source}")  # fmt: skip

    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        raise ConfigError(f"{loaded.source}: a vitals model; benchmarks/bench_vitals.py measures it beside POS, "
                          "CHROM and GREEN")  # fmt: skip

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        out = Path(cfg.out)
        return {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), **summaries[arms[0].name]}


@torch.no_grad()
def evaluate_windows(model, windows: TraceWindows, *, device="cpu", batch: int = 64) -> dict:
    """`hr_metrics` of `model` over every item of `windows` (windows without skin are left out)."""
    model.eval()
    predicted, true = [], []
    for first in range(0, len(windows), batch):
        got = windows.collate([windows[i] for i in range(first, min(first + batch, len(windows)))])
        if got.packed is None:
            continue
        predicted.append(to_bpm(model(got.packed.to(device)).float()).cpu().numpy())
        true.append(got.labels.numpy())
    if not predicted:
        return {"mae_bpm": float("inf"), "rmse_bpm": float("inf"), "within_3_bpm": 0.0, "pearson_r": 0.0,
                "windows": 0}  # fmt: skip
    return hr_metrics(np.concatenate(predicted), np.concatenate(true))


# --- inference -------------------------------------------------------------------------------------------------------


def load_vitals(checkpoint: str | Path):
    """A `tubelet.models.Loaded` vitals checkpoint; a one-line ConfigError for any other."""
    from tubelet.models import load

    if not Path(checkpoint).is_dir():
        raise ConfigError(f"--checkpoint {checkpoint}: not a checkpoint directory (tubelet finetune --task vitals "
                          "writes RUN/best)")  # fmt: skip
    loaded = load(checkpoint)
    if loaded.task != "vitals":
        raise ConfigError(
            f"{checkpoint}: a {loaded.task or loaded.kind} checkpoint, not a vitals model (train one with tubelet "
            f"finetune --task vitals --data DIR)"
        )
    return loaded


class VitalsModel:
    """A trained vitals checkpoint, reading a heart rate per window of a trace (``tubelet vitals --method model``)."""

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu"):
        loaded = load_vitals(checkpoint)
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.fs, self.count = grid_of(loaded.preprocessing)
        self.window_seconds = self.count / self.fs

    @torch.no_grad()
    def heart_rate(self, trace: Trace, start: float, end: float) -> float | None:
        """Beats per minute over trace seconds [`start`, `end`] (None: too little skin). The window is read on the
        model's own grid: a window longer or shorter than it was trained on keeps the rate, not the sample count."""
        count = int(round((end - start) * self.fs))
        features = window_features(trace, start, end, count, self.fs)
        if features is None:
            return None
        packed = pack([window_particles(features, self.fs)]).to(self.device)
        return float(to_bpm(self.model(packed).float())[0])


def window_quality(spectrum, bpm: float) -> float:
    """SNR (dB) of a pulse spectrum (`tubelet.vitals.pulse.Spectrum`) at `bpm`: how clearly the trace supports it."""
    return snr_db(spectrum, bpm / 60.0)
