"""Learned heart and breathing rate: the ``vitals`` task (``tubelet finetune --task vitals --data D``) and the
`VitalsModel` that ``tubelet vitals --method model --checkpoint C`` runs.

The model does not read pixels: a pulse is well under one 8-bit level per frame, and a transformer over pixel
tubelets would have to find the skin before it could hear the pulse. It reads what the classical pipeline already
measures (`tubelet.vitals.traces`: the mean colour of the held skin mask and the chest's and face's vertical motion,
per frame), so the learned and the classical readers see the same numbers and differ only in how they turn them
into a rate. What it reads are SPECTRA, the representation in which a rate is a position, not a slope to regress:

- a window of `clip_seconds` of the trace is resampled onto a uniform grid of `sample_fps` samples per second
  (decoder timestamps, so 15 and 60 fps footage give the same grid); POS's pulse signal of it and its R, G and B
  relative to their means, band-passed, are cut into `SUB_COUNT` sub-windows of `SUB_SECONDS` spread over the
  window, and each sub-window's power spectra are taken on the heart-rate bins `HR_BINS` (each scaled to mean 1). The
  colour channels let the model tell a pulse (strongest in green, in the ratios of blood) from a change of light or
  angle (in every channel alike), which POS alone projects away imperfectly. The breathing signal (chest minus face
  motion, `tubelet.vitals.breathing.breathing_signal`) over the `BREATH_SECONDS` that end with each sub-window gives
  a spectrum on the breathing bins `BR_BINS`;
- every BIN is one PARTICLE: it stands at column x = its bin (row y = 0 heart rate, y = 1 breathing) and carries its
  log power in every channel and sub-window, so a particle knows where it is on the rate axis as a tubelet knows
  where it is in the frame, and rotary positions make attention depend on the distance between bins (a harmonic, a
  neighbour), not on where they are;
- a small `Encoder` reads a window's particles and its head gives every particle one LOGIT (`window_logits`): a
  softmax over the heart-rate particles, and one over the breathing particles, are distributions over the rates. A
  peak moved along the bins moves the output with it, so a few dozen videos' rates teach every rate (a regression
  head over pooled features has to learn each rate from examples of it, and regresses to the middle). Each
  distribution is trained by cross-entropy against the true rate smoothed by a Gaussian (`HR_SIGMA`, `BR_SIGMA`); a
  window of a video without a pulse is trained towards the uniform distribution, so the model learns to say it does
  not know.

A rate is read as the probability-weighted mean of the bins within `PEAK_BINS` of the most probable one, and its
quality is the model's own confidence in dB, in the spirit of the spectral SNR: the probability within `HR_NEAR`
(`BR_NEAR`) of the rate over the probability elsewhere, ``10 log10(p / (1 - p))``; `tubelet.vitals.estimate` refuses a
learned rate below `LEARNED_MIN_QUALITY_DB` (0 dB: more than half the mass near the rate), and a learned heart rate
also where POS's spectrum of the window has little power at it (`tubelet.vitals.estimate.learned_quality`): trained
towards the uniform distribution on two no-pulse videos, the model alone stays confident on most no-pulse windows.

Data: the folder ``tubelet sample-data --vitals`` writes (``train.csv``, ``val.csv`` or a share of the training
videos, ``truth.csv`` of per-second rates). Each video is traced once in `prepare`. Training windows are random in
start and time-stretched by ``U(1/stretch, stretch)`` (the trace read faster or slower, both rates scaled with it),
drawn once per (seed, item) and their particles kept in memory from the first epoch on: a window's spectra cost tens
of milliseconds on a CPU, many times the model's step on it, so more windows per video beat fresh ones each epoch.
Validation reads every window at a 1 s stride, as ``tubelet vitals`` does.
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
from tubelet.tasks.base import Arm, Built, Prepared, StepLoss, Task, refuse_frame_options, register
from tubelet.typed import opt
from tubelet.vitals import breathing
from tubelet.vitals.estimate import MIN_SKIN_SHARE, Windows
from tubelet.vitals.pulse import Rate, Spectrum, bandpass, pos
from tubelet.vitals.traces import Trace, Tracer

log = logging.getLogger("tubelet.vitals")

PULSE_CHANNELS = 4  # POS's pulse and the band-passed R, G and B relative to their means
HR_BINS = np.arange(40.0, 201.0, 2.0)  # beats per minute: the heart-rate bins, inputs and outputs
BR_BINS = np.arange(6.0, 42.5, 0.5)  # breaths per minute
SPECTRA_DIM = PULSE_CHANNELS * len(HR_BINS) + len(BR_BINS)  # one sub-window's spectra, side by side
SUB_SECONDS, SUB_COUNT = 8.0, 5  # pulse sub-windows: their length and how many, spread evenly over the window
PARTICLE_DIM = PULSE_CHANNELS * SUB_COUNT + 1  # a bin's powers over the sub-windows and a breathing flag
PARTICLES = len(HR_BINS) + len(BR_BINS)  # particles (and logits) per window: heart-rate bins, then breathing bins
BREATH_SECONDS = breathing.MIN_SECONDS  # a particle's breathing span ends with its sub-window, as the classical one
MIN_BREATH_SECONDS = 1.0 / breathing.BAND_HZ[0] / 2  # half a slow cycle, as the classical reader asks
HR_SIGMA, BR_SIGMA = 3.0, 1.0  # per minute: the width of the Gaussian training targets
HR_NEAR, BR_NEAR = 6.0, 1.5  # per minute: the probability within this of a rate is its confidence
BR_WEIGHT = 2.0  # the breathing cross-entropy's weight: breathing is learned more slowly than the pulse
PEAK_BINS = 3  # a rate is the mean of the bins within this many of the most probable one
MIN_GRID_HZ = 10.0  # the grid must resolve 4 Hz (240 bpm) below its Nyquist rate
VAL_STRIDE = 1.0  # seconds between validation windows, as `tubelet vitals` reads them
NFFT = 1024  # zero-padded periodogram length: at 15 samples per second, bins 0.9 bpm apart


@dataclass(frozen=True)
class VitalsFields:
    """The fields of ``finetune --task vitals`` besides those every run shares."""

    windows_per_video: int = opt(48, "random training windows cut once from each training video")
    stretch: float = opt(1.3, "time-stretch augmentation: a window read U(1/s, s) times as fast, its rates scaled too")
    model_dim: int = opt(64, "width of a fresh vitals model")
    model_depth: int = opt(2, "transformer blocks of a fresh vitals model")
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


def sub_windows(seconds: float) -> list[float]:
    """End times (seconds from the window's start) of the `SUB_COUNT` pulse sub-windows of a window of `seconds`,
    evenly from the first full `SUB_SECONDS` to the window's end (all the whole window when it is shorter)."""
    return [float(e) for e in np.linspace(min(SUB_SECONDS, seconds), seconds, SUB_COUNT)]


def band_power(x: np.ndarray, fs: float, bins_per_minute: np.ndarray) -> np.ndarray:
    """(len(bins),) the Hann-windowed, zero-padded periodogram of `x` (N,) at `bins_per_minute`, scaled to mean 1
    (all zeros for a flat signal)."""
    n = len(x)
    power = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(n), max(NFFT, n))) ** 2
    freqs = np.fft.rfftfreq(max(NFFT, n), 1.0 / fs) * 60.0
    out = np.interp(bins_per_minute, freqs, power)
    mean = float(out.mean())
    return out / mean if mean > 1e-30 else np.zeros_like(out)


def window_features(trace: Trace, start: float, end: float, count: int, fs: float) -> np.ndarray | None:
    """(SUB_COUNT, SPECTRA_DIM) float32 spectra of the sub-windows of trace seconds [`start`, `end`] read as `count`
    samples of a grid of `fs` per second (a stretched window is read faster or slower than real time: every rate in
    it is scaled by ``(end - start) / (count / fs)``): per sub-window the `PULSE_CHANNELS` spectra on `HR_BINS`, then
    the breathing spectrum on `BR_BINS`; None when the skin was missing in too many of its frames. Breathing spectra
    read the trace back to `BREATH_SECONDS` (read time) before each sub-window's end, or as far as it goes (zeros
    when under `MIN_BREATH_SECONDS`).
    """
    part = trace.between(start, end)
    have = ~np.isnan(part.rgb[:, 0]) if len(part) else np.zeros(0, bool)
    if len(part) < 4 or have.mean() < MIN_SKIN_SHARE:
        return None
    seconds = count / fs
    speed = seconds / (end - start)  # read seconds per trace second
    grid = start + np.arange(count) / (fs * speed)
    rgb = np.stack([np.interp(grid, part.times[have], part.rgb[have, c]) for c in range(3)], axis=1)  # (K, 3)
    rel = rgb / np.maximum(rgb.mean(axis=0), 1e-9) - 1.0  # (K, 3)
    colour = bandpass(rel - np.linspace(rel[0], rel[-1], len(rel)), fs)  # (K, 3): the band-pass removes the drift
    signals = [pos(rgb, fs), *colour.T]  # each (K,)
    sub = int(round(min(SUB_SECONDS, seconds) * fs))
    ends = sub_windows(seconds)
    span = trace.between(end - (BREATH_SECONDS + ends[-1] - ends[0]) / speed, end)
    motion_times = motion = None
    if len(span) >= 4 and (span.times[-1] - span.times[0]) * speed >= MIN_BREATH_SECONDS:
        grid_b, motion = breathing.breathing_signal((span.times - start) * speed, span.chest_y, span.face_y)
        motion_times = grid_b  # read seconds from the window's start
    rows = []
    for e in ends:
        stop = int(round(e * fs))
        pulse = np.concatenate([band_power(s[stop - sub : stop], fs, HR_BINS) for s in signals])
        breath = np.zeros(len(BR_BINS))
        if motion is not None:
            inside = (motion_times >= e - BREATH_SECONDS - 1e-6) & (motion_times <= e + 1e-6)
            if inside.sum() >= MIN_BREATH_SECONDS * breathing.RATE_HZ:
                breath = band_power(motion[inside], breathing.RATE_HZ, BR_BINS)
        rows.append(np.concatenate([pulse, breath]))
    return np.stack(rows).astype(np.float32)  # (SUB_COUNT, SPECTRA_DIM)


def window_particles(features: np.ndarray, seconds: float) -> Particles:
    """The `PARTICLES` particles of a window of `seconds` from its spectra (SUB_COUNT, SPECTRA_DIM): one per rate bin
    (see the module docstring), heart-rate bins on row y = 0 and breathing bins on row y = 1, column x its bin, all at
    the window's centre in seconds."""
    hr, br = len(HR_BINS), len(BR_BINS)
    power = np.log1p(features)  # peaks tens of times the mean: compressed
    pulse = power[:, : PULSE_CHANNELS * hr].reshape(SUB_COUNT, PULSE_CHANNELS, hr)  # (S, C, bins) as (s (c b))
    heart = pulse.transpose(2, 1, 0).reshape(hr, PULSE_CHANNELS * SUB_COUNT)  # (bins, C*S)
    breath = np.zeros((br, PULSE_CHANNELS * SUB_COUNT), np.float32)
    breath[:, :SUB_COUNT] = power[:, PULSE_CHANNELS * hr :].T  # (bins, S), the rest zeros
    flag = np.concatenate([np.zeros(hr), np.ones(br)])[:, None]
    values = np.concatenate([np.concatenate([heart, breath]), flag], axis=1).astype(np.float32)  # (P, dim)
    n = PARTICLES
    row = torch.cat([torch.zeros(hr, dtype=torch.int64), torch.ones(br, dtype=torch.int64)])
    column = torch.cat([torch.arange(hr), torch.arange(br)])
    zeros = torch.zeros(n, dtype=torch.int64)
    return Particles(
        values=torch.from_numpy(values), t=torch.full((n,), seconds / 2), ti=zeros, y=row, x=column,
        span=torch.ones(n, dtype=torch.int64), seq=zeros, grid=(1, 2, max(hr, br)), tubelet=(1, 1, 1),
        frame_shape=(1, 2, max(hr, br)), channels=PARTICLE_DIM,
    )  # fmt: skip


def window_logits(model, packed) -> torch.Tensor:
    """(B, PARTICLES) logits of the windows of a packed batch: the encoder's head on every particle, not on a pooled
    vector (a bin's logit is read where the bin is, so a peak moved along the bins moves the output with it)."""
    features = model.forward_features(packed)  # (N, D)
    return model.forward_head(features)[:, 0].reshape(packed.num_clips, PARTICLES)  # (B, PARTICLES)


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

    def subset(self, keep: set[int]) -> Videos:
        """The videos whose index is in `keep`, in order."""
        return replace(self, **{k: [x for i, x in enumerate(getattr(self, k)) if i in keep]
                                for k in ("paths", "traces", "truth")})  # fmt: skip


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

    Training (`train`): item i is a random window of video ``i // windows_per_video`` per (seed, i), time-stretched,
    computed once. Otherwise every window at a `VAL_STRIDE` stride of every video, as read live. Videos without a
    pulse are in both: their heart rate is NaN (a uniform target), their breathing is known.
    """

    crash_dir = None  # nothing is decoded here: no worker can crash on a file

    def __init__(self, videos: Videos, pre: Preprocessing, *, train: bool, seed: int = 0):
        self.videos, self.train, self.seed, self.epoch = videos, train, seed, 0
        self.cache: dict[int, tuple | None] = {}  # item -> what __getitem__ gave (see the module docstring)
        self.fs, self.count = grid_of(pre)
        self.seconds = self.count / self.fs
        self.particles = PARTICLES
        self.items: list[tuple[int, float | None]] = []
        for v in range(len(videos)):
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
        return [self.particles] * len(self.items)

    def item_indices_of(self, path: str) -> list[int]:
        return [i for i, (v, _) in enumerate(self.items) if self.videos.paths[v] == path]

    def window(self, i: int) -> tuple[float, float, float]:
        """(start, end) trace seconds of item i and its speed: read seconds per trace second (a window of trace read
        in fewer seconds shows faster rates: the rates read are the true ones divided by it)."""
        v, start = self.items[i]
        if start is not None:
            return start, start + self.seconds, 1.0
        rng = np.random.default_rng((self.seed, i))
        limit = np.log(self.videos.stretch)
        times = self.videos.traces[v].times
        room = float(times[-1] - times[0])
        stretch = float(np.exp(rng.uniform(-limit, limit)))
        span = min(self.seconds * stretch, room)  # seconds of trace read as `self.seconds` of window
        begin = float(times[0]) + rng.uniform(0.0, room - span)
        return begin, begin + span, self.seconds / span

    def __getitem__(self, i: int):
        if i not in self.cache:
            self.cache[i] = self._item(i)
        return self.cache[i]

    def _item(self, i: int):
        v, _ = self.items[i]
        start, end, speed = self.window(i)
        features = window_features(self.videos.traces[v], start, end, self.count, self.fs)
        if features is None:
            return None
        truth = self.videos.truth[v]
        hr = mean_rate(truth[:, 0], start, end) / speed
        br = mean_rate(truth[:, 1], end - BREATH_SECONDS / speed, end) / speed
        return window_particles(features, self.seconds), (hr, br), i, v, (start, end)

    def collate(self, items: list) -> Batch:
        kept = [item for item in items if item is not None]
        if not kept:
            return Batch(None, torch.zeros(0, 2), [], [], [], [])
        rates = torch.tensor([k[1] for k in kept], dtype=torch.float32)  # (B, 2) heart (NaN: none), breathing rate
        return Batch(pack([k[0] for k in kept]), rates, [k[2] for k in kept], [k[3] for k in kept],
                     [k[4] for k in kept], [])  # fmt: skip


# --- targets and readings ----------------------------------------------------------------------------------------


def soft_targets(rates: torch.Tensor, bins: np.ndarray, sigma: float) -> torch.Tensor:
    """(B, len(bins)) target distributions: a Gaussian of `sigma` around each rate (B,), uniform where it is NaN."""
    centres = torch.as_tensor(bins, dtype=torch.float32, device=rates.device)
    clipped = rates.clamp(float(bins[0]), float(bins[-1]))
    weights = torch.exp(-0.5 * ((centres[None] - clipped[:, None].nan_to_num(0.0)) / sigma) ** 2)  # (B, bins)
    weights = torch.where(rates.isnan()[:, None], torch.ones_like(weights), weights)
    return weights / weights.sum(dim=1, keepdim=True)


def split_logits(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, PARTICLES) logits -> heart-rate logits (B, len(HR_BINS)) and breathing logits (B, len(BR_BINS))."""
    return outputs[:, : len(HR_BINS)], outputs[:, len(HR_BINS) :]


def read_rates(probs: np.ndarray, bins: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Rates (B,) and their confidence in dB (B,) of distributions `probs` (B, bins) (see the module docstring)."""
    top = probs.argmax(axis=1)  # (B,)
    index = np.arange(len(bins))
    local = np.where(np.abs(index[None] - top[:, None]) <= PEAK_BINS, probs, 0.0)  # (B, bins)
    rate = (local * bins[None]).sum(axis=1) / np.maximum(local.sum(axis=1), 1e-12)
    mass = np.where(np.abs(bins[None] - rate[:, None]) <= near, probs, 0.0).sum(axis=1)
    mass = np.clip(mass, 1e-6, 1 - 1e-6)
    return rate, 10 * np.log10(mass / (1 - mass))


def rate_metrics(predicted: np.ndarray, true: np.ndarray, *, within: float = 3.0) -> dict:
    """MAE, RMSE, Pearson r and share within `within` per minute of predicted against true rates (both (n,))."""
    err = predicted - true
    r = float(np.corrcoef(predicted, true)[0, 1]) if len(err) > 1 and predicted.std() > 0 and true.std() > 0 else 0.0
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())), "pearson_r": r,
            "within": float((np.abs(err) <= within).mean()), "windows": len(err)}  # fmt: skip


# --- the task ------------------------------------------------------------------------------------------------------


@register
class VitalsTask(Task):
    """Heart and breathing rate as distributions over bins, from spectra of the skin-colour and motion traces."""

    name = "vitals"
    summary = "heart and breathing rate (rPPG): a small encoder over spectra of the skin-colour and chest-motion traces"
    Config = VitalsFields
    # The validation loss picks best/: it scores both heads and the calibration the confidence gate relies on (the
    # heart rate's MAE alone picks an early epoch whose breathing head is still far behind).
    metrics = {"loss": False, "mae_bpm": False, "rmse_bpm": False, "within_3_bpm": True, "pearson_r": True,
               "breathing_mae": False}  # fmt: skip
    config_defaults = {
        "sample_fps": 15.0, "clip_seconds": 10.0, "size": None, "max_long_side": None, "prune_threshold": 0.0,
        "epochs": 6, "lr": 2e-3, "batch_particles": 32 * PARTICLES, "min_steps_per_epoch": 0, "val_split": "val",
        "val_fraction": 0.25,
    }  # fmt: skip

    def prepare(self, cfg, out: Path) -> Prepared:
        refuse_frame_options(cfg, self.name)
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
            val, train = train.subset(held), train.subset(set(range(len(train))) - held)
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
            dim=cfg.model_dim, depth=cfg.model_depth, heads=cfg.model_heads, tubelet=(1, 1, 1),
            channels=PARTICLE_DIM, num_classes=1, pooling="mean", dropout=cfg.dropout,
            drop_path=cfg.drop_path, attention=cfg.attention, embed_init="random",
        )  # fmt: skip
        return Built(Encoder(config), Preprocessing(tubelet=(1, 1, 1), size=None, max_long_side=None))

    def dataset(self, data, pre, reads, *, augment=None, seed: int = 0, windows=None) -> TraceWindows:
        return TraceWindows(data, pre, train=windows is None, seed=seed)

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        return StepLoss(vitals_loss(window_logits(module, batch.packed.to(device)).float(), batch.labels.to(device)),
                        len(batch.indices), len(batch.indices))  # fmt: skip

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


def vitals_loss(outputs: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the heart-rate and breathing logits (`outputs` (B, PARTICLES)) against `soft_targets` of the
    true `rates` (B, 2) (heart rate NaN: no pulse, the uniform target)."""
    heart, breath = split_logits(outputs)
    hr_target = soft_targets(rates[:, 0], HR_BINS, HR_SIGMA)  # (B, HR bins)
    br_target = soft_targets(rates[:, 1], BR_BINS, BR_SIGMA)  # (B, BR bins)
    hr_loss = -(hr_target * heart.log_softmax(dim=1)).sum(dim=1)
    br_loss = -(br_target * breath.log_softmax(dim=1)).sum(dim=1)
    return (hr_loss + BR_WEIGHT * br_loss).mean()


@torch.no_grad()
def predict_windows(model, windows: TraceWindows, *, device="cpu", batch: int = 64) -> dict[str, np.ndarray]:
    """Every readable item of `windows` through `model`: arrays (n,) of ``hr``, ``hr_quality``, ``br``,
    ``br_quality``, the true ``hr_true`` (NaN: no pulse) and ``br_true``, and the summed ``loss``."""
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("hr", "hr_quality", "br", "br_quality", "hr_true", "br_true")}
    loss = 0.0
    for first in range(0, len(windows), batch):
        got = windows.collate([windows[i] for i in range(first, min(first + batch, len(windows)))])
        if got.packed is None:
            continue
        outputs = window_logits(model, got.packed.to(device)).float().cpu()  # (B, PARTICLES)
        loss += float(vitals_loss(outputs, got.labels)) * len(got.indices)
        heart, breath = split_logits(outputs)
        for key, logits, bins, near in (("hr", heart, HR_BINS, HR_NEAR), ("br", breath, BR_BINS, BR_NEAR)):
            rate, quality = read_rates(logits.softmax(dim=1).numpy(), bins, near)
            parts[key].append(rate)
            parts[f"{key}_quality"].append(quality)
        parts["hr_true"].append(got.labels[:, 0].numpy())
        parts["br_true"].append(got.labels[:, 1].numpy())
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    out["loss"] = loss
    return out


def evaluate_windows(model, windows: TraceWindows, *, device="cpu", batch: int = 64) -> dict:
    """Heart-rate metrics (``mae_bpm``, ``rmse_bpm``, ``pearson_r``, ``within_3_bpm``) over the pulsed windows,
    ``breathing_mae`` over all, and the mean ``loss``, of `model` over `windows` (windows without skin left out)."""
    got = predict_windows(model, windows, device=device, batch=batch)
    pulsed = np.isfinite(got["hr_true"])
    if not pulsed.any():
        return {"mae_bpm": float("inf"), "rmse_bpm": float("inf"), "within_3_bpm": 0.0, "pearson_r": 0.0,
                "breathing_mae": float("inf"), "loss": float("inf"), "windows": 0}  # fmt: skip
    hr = rate_metrics(got["hr"][pulsed], got["hr_true"][pulsed])
    return {"mae_bpm": hr["mae"], "rmse_bpm": hr["rmse"], "pearson_r": hr["pearson_r"], "within_3_bpm": hr["within"],
            "windows": hr["windows"], "breathing_mae": float(np.abs(got["br"] - got["br_true"]).mean()),
            "loss": got["loss"] / max(len(got["hr"]), 1)}  # fmt: skip


# --- inference -------------------------------------------------------------------------------------------------------


def load_vitals(checkpoint: str | Path):
    """A `tubelet.models.Loaded` vitals checkpoint of this module's layout; a one-line ConfigError for any other."""
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
    config = loaded.model.config
    if config.channels != PARTICLE_DIM or config.num_classes != 1:
        raise ConfigError(f"{checkpoint}: a vitals model of an older layout ({config.channels} inputs, "
                          f"{config.num_classes} outputs; this tubelet reads {PARTICLE_DIM} and 1); train it again "
                          "with tubelet finetune --task vitals")  # fmt: skip
    return loaded


class VitalsModel:
    """A trained vitals checkpoint, reading heart and breathing rate per window of a trace (``tubelet vitals
    --method model``)."""

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu"):
        loaded = load_vitals(checkpoint)
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.fs, self.count = grid_of(loaded.preprocessing)
        self.window_seconds = self.count / self.fs

    @torch.no_grad()
    def read(self, trace: Trace, start: float, end: float) -> tuple[Rate, Rate] | None:
        """The heart and breathing `Rate` of trace seconds [`start`, `end`] (their spectra are the model's
        distributions over its bins, in Hz; quality is its confidence in dB), or None with too little skin. The trace
        should hold the `BREATH_SECONDS` before the window too. A window longer or shorter than the model was trained
        on is read on the model's own grid: it keeps the rate, not the sample count."""
        count = int(round((end - start) * self.fs))
        features = window_features(trace, start, end, count, self.fs)
        if features is None:
            return None
        packed = pack([window_particles(features, count / self.fs)]).to(self.device)
        heart, breath = split_logits(window_logits(self.model, packed).float().cpu())
        out = []
        for logits, bins, near in ((heart, HR_BINS, HR_NEAR), (breath, BR_BINS, BR_NEAR)):
            probs = logits.softmax(dim=1).numpy()  # (1, bins)
            rate, quality = read_rates(probs, bins, near)
            out.append(Rate(float(rate[0]) / 60.0, float(quality[0]), Spectrum(bins / 60.0, probs[0])))
        return out[0], out[1]

    def heart_rate(self, trace: Trace, start: float, end: float) -> float | None:
        """Beats per minute over trace seconds [`start`, `end`] (None: too little skin), whatever its confidence."""
        got = self.read(trace, start, end)
        return None if got is None else got[0].bpm
