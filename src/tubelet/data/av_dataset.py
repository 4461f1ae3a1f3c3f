"""Clips with their soundtrack: each window's video particles and the same window's audio particles.

Video and audio of an item are decoded for the SAME window (start, end) and both get times relative to its
start, so a frame and the sound played with it carry the same seconds. Batches are `ModalBatch`es (one packed
batch per modality) formed by a particle budget over both modalities, as `budget_batches` forms video batches.
"""

from __future__ import annotations

import torch

from tubelet.data.dataset import Batch, ClipDataset, Item
from tubelet.data.manifest import VideoDataset
from tubelet.data.pipeline import clip_particles, read_audio
from tubelet.data.transforms import AudioPreprocessing, Augment, Preprocessing
from tubelet.errors import DataError
from tubelet.particles.modalities import pack_modalities
from tubelet.particles.structure import Particles

__all__ = ["AVClipDataset", "AudioPreprocessing", "MISSING_AUDIO", "audio_particles", "check_audio"]

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
    (`tubelet.data.pipeline.read_audio`, then `clip_particles`.)
    """
    decoded = read_audio(path, window, audio)
    return clip_particles(window, modalities=("audio",), audio=decoded, audio_pre=audio)["audio"]


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
