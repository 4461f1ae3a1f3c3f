"""Clips with their soundtrack: each window's video particles and the same window's audio particles.

Video and audio of an item are decoded for the SAME window (start, end) and both get times relative to its
start, so a frame and the sound played with it carry the same seconds. Batches are `ModalBatch`es (one packed
batch per modality) formed by a particle budget over both modalities, as `budget_batches` forms video batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from tubelet.data.dataset import Batch, ClipDataset, Item
from tubelet.data.manifest import VideoDataset
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import DataError, VideoError
from tubelet.io.audio import Audio, decode_audio
from tubelet.particles.audio import LOG_FLOOR, tokenize_audio
from tubelet.particles.modalities import pack_modalities
from tubelet.particles.structure import Particles
from tubelet.typed import from_dict


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


# Why a file cannot be read by a model that reads audio (unless its AudioPreprocessing allows missing audio).
MISSING_AUDIO = "no audio stream, but the model reads audio (it was trained without --allow-missing-audio)"


def check_audio(data: VideoDataset, audio: AudioPreprocessing) -> None:
    """Fail before training when a file has no audio stream and silence was not allowed.

    Raises:
        DataError: one line naming the first such file (and how many there are).
    """
    if audio.allow_missing_audio:
        return
    silent = [str(s.path) for s, info in zip(data.samples, data.infos) if not info.has_audio]
    if silent:
        more = f" (and {len(silent) - 1} more files)" if len(silent) > 1 else ""
        raise DataError(
            f"{silent[0]}: no audio stream, but audio is requested{more}; drop audio from --modalities or pass "
            "--allow-missing-audio to use silence"
        )


def audio_particles(path: str, window: tuple[float, float], audio: AudioPreprocessing) -> Particles:
    """Normalized log-mel particles of ``window`` (start, end seconds) of `path`, with times from the window's start.

    A file with no audio stream gives silence when ``audio.allow_missing_audio``, else `VideoError`.
    """
    start, end = window
    try:
        decoded = decode_audio(path, sample_rate=audio.sample_rate, start=start, end=end)
    except VideoError as exc:
        if not (audio.allow_missing_audio and exc.reason == "no audio stream"):
            raise
        decoded = None
    if decoded is None:  # no audio stream, and silence was allowed
        samples = np.zeros(max(round((end - start) * audio.sample_rate), audio.n_fft), np.float32)
        decoded = Audio(samples, audio.sample_rate, start, path)
    particles = tokenize_audio(decoded, patch=audio.patch, n_fft=audio.n_fft, hop=audio.hop, n_mels=audio.n_mels)
    # The same origin as the video particles of this window (`ClipDataset.load`): seconds after its start.
    return replace(particles, values=(particles.values - audio.mean) / audio.std, t=particles.t - start)


class AVClipDataset(ClipDataset):
    """`ClipDataset` whose items carry a dict of modality -> `Particles` for the same window.

    Args:
        dataset, pre, augment, seed, windows: as `ClipDataset` (augmentation touches the frames only).
        audio: how audio becomes particles.
        modalities: which of ``video`` and ``audio`` to decode (only those are decoded).
    """

    def __init__(
        self,
        dataset: VideoDataset,
        pre: Preprocessing,
        audio: AudioPreprocessing,
        *,
        modalities: tuple[str, ...],
        augment: Augment | None = None,
        seed: int = 0,
        windows: list[tuple[int, float, float]] | None = None,
    ):
        super().__init__(dataset, pre, augment=augment, seed=seed, windows=windows)
        unknown = sorted(set(modalities) - {"video", "audio"})
        if unknown:
            raise DataError(f"modalities: {', '.join(unknown)} cannot be read from video files (video, audio)")
        self.audio = audio
        self.modalities = tuple(modalities)

    def estimates(self) -> list[int]:
        """Upper bound of particles per item, all its modalities together."""
        video = super().estimates() if "video" in self.modalities else [0] * len(self)
        if "audio" not in self.modalities:
            return video
        return [v + self.audio.estimate_particles(seconds) for v, seconds in zip(video, self._seconds())]

    def _seconds(self) -> list[float]:
        if self.windows is not None:
            return [end - start for _, start, end in self.windows]
        out = []
        for sample, info in zip(self.dataset.samples, self.dataset.infos):
            hi = min(sample.end or info.duration_s, info.duration_s)
            out.append(min(self.pre.clip_seconds, max(hi - (sample.start or 0.0), 0.0)))
        return out

    def load(self, path: str, window, height: int, width: int, rng) -> dict[str, Particles]:
        """Each requested modality's particles of one window, in the order of `modalities`."""
        out = {}
        for name in self.modalities:
            if name == "video":
                out[name] = super().load(path, window, height, width, rng)
            else:
                out[name] = audio_particles(path, window, self.audio)
        return out

    @staticmethod
    def collate(items: list[Item]) -> Batch:
        """`tubelet.data.dataset.collate` for multimodal items: ``packed`` is a `ModalBatch`."""
        good = [it for it in items if it.particles is not None]
        return Batch(
            packed=pack_modalities([it.particles for it in good]) if good else None,
            labels=torch.tensor([it.label for it in good], dtype=torch.long),
            indices=[it.index for it in good],
            samples=[it.sample for it in good],
            windows=[it.window for it in good],
            failed=[it for it in items if it.particles is None],
        )
