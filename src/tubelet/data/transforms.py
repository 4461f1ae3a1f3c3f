"""Preprocessing shared by training and inference, and training-only augmentation.

`Preprocessing` (and, for a model that hears, `AudioPreprocessing`) is stored in every checkpoint's ``config.json``
so that `evaluate`, `predict` and export reproduce training's sampling, resizing, normalization, tubelet and
pruning without flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, LEGACY_PRUNE_REFERENCE
from tubelet.particles.audio import LOG_FLOOR
from tubelet.particles.prune import check_reference
from tubelet.typed import check_range, from_dict

CROPS = (None, "motion")  # what `Preprocessing.crop` may be
PIXELS = ("rgb", "difference")  # what `Preprocessing.pixels` may be


@dataclass(frozen=True)
class Preprocessing:
    """How a video becomes particles. Saved with the model."""

    tubelet: tuple[int, int, int] = (2, 16, 16)  # frames, rows, columns per particle
    sample_fps: float | None = 8.0  # frames per second read from the video; None reads native frames
    clip_seconds: float = 2.0  # seconds per clip (one window)
    size: int | None = 112  # short side in pixels after resizing (aspect ratio kept); None keeps the source size
    max_long_side: int | None = 224  # cap on the long side after resizing (very wide or tall video)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # per-channel mean, 0-1 units
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)  # per-channel std, 0-1 units
    prune_threshold: float = 4.0  # static pruning threshold in 0-255 levels; 0 keeps every particle
    # What a tubelet is compared with when pruning: "previous" tubelet or the run's "anchor" particle. A checkpoint
    # saved before this field existed has no key and loads as "previous", which is what it was trained with.
    prune_reference: str = DEFAULT_PRUNE_REFERENCE
    # "motion": each window is cut to the square around what moves in it and resized to `crop_size`
    # (`tubelet.data.crop`); None reads the whole frame. A checkpoint saved before this field existed loads as None.
    crop: str | None = None
    crop_size: int | None = None  # side in pixels of the motion crop; None: `size`
    # "difference": each frame replaced by its grey level's absolute change from the frame before, in all three
    # channels (what moved, not what it looks like; `tubelet.data.crop.frame_differences`); "rgb": the frames.
    pixels: str = "rgb"

    def __post_init__(self) -> None:
        check_range(self, "tubelet", "size", "max_long_side", "crop_size", low=1)
        if self.crop not in CROPS:
            raise ValueError(f"crop: expected one of {', '.join(map(str, CROPS))}, got {self.crop!r}")
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels: expected one of {', '.join(PIXELS)}, got {self.pixels!r}")
        if self.crop is not None and self.crop_side is None:
            raise ValueError("crop_size: a motion crop needs a side in pixels (crop_size or size)")
        check_range(self, "prune_threshold", low=0)
        check_reference(self.prune_reference)
        check_range(self, "sample_fps", "clip_seconds", "std", low=0, strict=True)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean, std: expected 3 values each (one per channel), got {self.mean}, {self.std}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """A saved preprocessing; one without ``prune_reference`` (saved before it existed) pruned as "previous"."""
        return from_dict(cls, {"prune_reference": LEGACY_PRUNE_REFERENCE, **data}, what="preprocessing")

    @property
    def crop_side(self) -> int | None:
        """Side in pixels of the square a window is cropped to; None without a crop."""
        if self.crop is None:
            return None
        return self.crop_size or self.size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) a source frame is resized to (before any crop)."""
        if self.size is None:
            return height, width
        scale = self.size / min(height, width)
        if self.max_long_side is not None:
            scale = min(scale, self.max_long_side / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def estimate_particles(self, height: int, width: int, fps: float, seconds: float | None = None) -> int:
        """Upper bound on particles of one clip before pruning (for batching by a particle budget)."""
        seconds = self.clip_seconds if seconds is None else min(seconds, self.clip_seconds)
        frames = max(1, math.ceil(seconds * (self.sample_fps or fps)))
        h, w = (self.crop_side,) * 2 if self.crop is not None else self.output_size(height, width)
        t, p, q = self.tubelet
        return math.ceil(frames / t) * math.ceil(h / p) * math.ceil(w / q)


@dataclass(frozen=True)
class AudioPreprocessing:
    """How a window's soundtrack becomes audio particles. Stored in a fusion checkpoint's ``config.json``."""

    sample_rate: int = 16000  # Hz the audio is resampled to
    n_fft: int = 400  # STFT window in samples (25 ms at 16 kHz)
    hop: int = 160  # samples between STFT frames (10 ms at 16 kHz)
    n_mels: int = 64  # mel bins of the spectrogram
    patch: tuple[int, int] = (16, 16)  # STFT frames x mel bins per particle
    mean: float = -4.0  # log-mel values are normalized to (value - mean) / std (measured on the AV sample data)
    std: float = 3.0
    allow_missing_audio: bool = False  # a file without an audio stream gets silence instead of an error

    def __post_init__(self) -> None:
        check_range(self, "sample_rate", "n_fft", "hop", "n_mels", "patch", low=1)
        check_range(self, "std", low=0, strict=True)
        if self.n_mels < self.patch[1]:
            raise ValueError(f"n_mels: expected at least the patch's mel bins ({self.patch[1]}), got {self.n_mels}")

    @property
    def bands(self) -> int:
        """Mel bands of particles per time step."""
        return self.n_mels // self.patch[1]

    @property
    def silence(self) -> float:
        """The normalized log-mel value of digital silence: every value of a window without sound."""
        return (math.log(LOG_FLOOR) - self.mean) / self.std

    def estimate_particles(self, seconds: float) -> int:
        """Audio particles of a window of `seconds` (exact up to the decoder's rounding of its samples)."""
        frames = 1 + int(seconds * self.sample_rate) // self.hop
        return math.ceil(frames / self.patch[0]) * self.bands

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AudioPreprocessing:
        return from_dict(cls, data, what="audio preprocessing")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation. Not stored for inference."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: area fraction range (1, 1 disables)
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # aspect-ratio range of the crop
    flip: bool = False  # horizontal flip; off by default because it turns "moving left" into "moving right"
    fps_jitter: float = 0.0  # sample at sample_fps * U(1/(1+j), 1+j): frame-rate augmentation


def clip_window(duration: float, clip_seconds: float, rng: np.random.Generator | None) -> tuple[float, float]:
    """(start, end) seconds of one clip inside [0, duration): random when `rng` is given, else centred."""
    if duration <= clip_seconds:
        return 0.0, duration
    slack = duration - clip_seconds
    start = float(rng.uniform(0, slack)) if rng is not None else slack / 2
    return start, start + clip_seconds


def random_resized_crop(frames: torch.Tensor, augment: Augment, rng: np.random.Generator) -> torch.Tensor:
    """Crop a random region (same for every frame) and resize it back to the frame size.

    Args:
        frames: (T, H, W, C) uint8.

    Returns:
        (T, H, W, C) uint8.
    """
    T, H, W, C = frames.shape
    lo, hi = augment.crop_scale
    if lo >= 1.0:
        return frames
    for _ in range(10):
        area = H * W * rng.uniform(lo, hi)
        ratio = math.exp(rng.uniform(math.log(augment.crop_ratio[0]), math.log(augment.crop_ratio[1])))
        w = round(math.sqrt(area * ratio))
        h = round(math.sqrt(area / ratio))
        if 0 < w <= W and 0 < h <= H:
            y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            crop = frames[:, y0 : y0 + h, x0 : x0 + w].permute(0, 3, 1, 2).float()  # (T, C, h, w)
            resized = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
            return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return frames
