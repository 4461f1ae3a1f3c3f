"""Map-style dataset of clips sampled by time, and batches formed by a particle budget."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from tubelet.data.manifest import VideoDataset
from tubelet.data.pipeline import ClipParticles, clip_particles, decode_window
from tubelet.data.transforms import AudioPreprocessing, Augment, Preprocessing, clip_window
from tubelet.errors import TubeletError
from tubelet.particles.pack import pack
from tubelet.particles.structure import PackedParticles

log = logging.getLogger("tubelet.data")


@dataclass
class Item:
    """One decoded clip: its particles and label index, or the reason it failed."""

    index: int  # item index in the dataset (a window index when the dataset has explicit windows)
    sample: int  # index of the video in the VideoDataset
    particles: ClipParticles | None  # `Particles`, or modality -> `Particles` for a fusion model's datasets
    label: int
    path: str
    window: tuple[float, float]
    error: str = ""


@dataclass
class Batch:
    """A packed batch and what did not make it into it."""

    packed: PackedParticles | None
    labels: torch.Tensor  # (B,) int64
    indices: list[int]  # item indices of the clips in the batch
    samples: list[int]  # video indices of the clips in the batch
    windows: list[tuple[float, float]]  # (start, end) seconds of each clip
    failed: list[Item]  # clips whose decoding failed (reported and skipped)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of labeled (or unlabeled) videos, decoded by time and cut into particles.

    Without `windows`, item i is video i: training (with `augment`) samples a random window of
    ``clip_seconds``, deterministic per seed, epoch and item; evaluation takes the centred window. With
    `windows`, item i is the explicit window ``windows[i] = (video, start, end)`` (evaluation views, sliding
    windows for prediction). A file that fails to decode yields an `Item` with an error instead of raising,
    so one bad clip never stops a run. Every window is decoded by `tubelet.data.pipeline.decode_window` and becomes
    particles in `tubelet.data.pipeline.clip_particles`, as in ``predict`` and ``explain``.

    Args:
        dataset: probed samples (`tubelet.data.load_dataset`).
        pre: preprocessing.
        augment: training augmentation, or None.
        seed: base seed of the per-item random streams.
        windows: explicit (video index, start s, end s) per item.
        crash_dir: if set, each worker writes the path it is decoding to ``crash_dir/<pid>`` first, so a
            decoder that kills the worker (segfault) can be named afterwards.
    """

    modalities: tuple[str, ...] | None = None  # None: a video encoder's clips; else a fusion model's (`AVClipDataset`)
    audio: AudioPreprocessing | None = None  # how the soundtrack becomes particles, when "audio" is read

    def __init__(
        self,
        dataset: VideoDataset,
        pre: Preprocessing,
        *,
        augment: Augment | None = None,
        seed: int = 0,
        windows: list[tuple[int, float, float]] | None = None,
        crash_dir: str | None = None,
    ):
        self.dataset = dataset
        self.pre = pre
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.windows = windows
        self.crash_dir = crash_dir
        self.label_index = {label: i for i, label in enumerate(dataset.labels)}

    def __len__(self) -> int:
        return len(self.windows) if self.windows is not None else len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def estimates(self) -> list[int]:
        """Upper bound of particles per item (before pruning)."""
        out = []
        for i in range(len(self)):
            video, seconds = (i, None) if self.windows is None else (self.windows[i][0], None)
            sample, info = self.dataset.samples[video], self.dataset.infos[video]
            if self.windows is None:
                seconds = _sample_seconds(sample, info.duration_s)
            else:
                seconds = self.windows[i][2] - self.windows[i][1]
            out.append(self.pre.estimate_particles(info.height, info.width, info.fps, seconds))
        return out

    def item_indices_of(self, path: str) -> list[int]:
        """Items that read `path` (to leave a crashing file out)."""
        videos = {i for i, s in enumerate(self.dataset.samples) if str(s.path) == path}
        if self.windows is None:
            return sorted(videos)
        return [i for i, w in enumerate(self.windows) if w[0] in videos]

    def __getitem__(self, index: int) -> Item:
        augmenting = self.augment is not None and self.windows is None
        rng = np.random.default_rng([self.seed, self.epoch, index]) if augmenting else None
        if self.windows is None:
            video = index
            sample, info = self.dataset.samples[video], self.dataset.infos[video]
            lo = sample.start or 0.0
            hi = min(sample.end or info.duration_s, info.duration_s)
            start, end = clip_window(hi - lo, self.pre.clip_seconds, rng)
            window = (lo + start, lo + end)
        else:
            video, start, end = self.windows[index]
            sample, info = self.dataset.samples[video], self.dataset.infos[video]
            window = (start, end)
        label = self.label_index.get(sample.label, -1)
        self._mark(str(sample.path))
        try:
            question = self.question(video)
            particles = self.load(str(sample.path), window, info.height, info.width, rng, question=question)
        except (TubeletError, ValueError, RuntimeError) as exc:
            return Item(index, video, None, label, str(sample.path), window, error=str(exc))
        finally:
            self._mark(None)
        return Item(index, video, particles, label, str(sample.path), window)

    def load(
        self,
        path: str,
        window: tuple[float, float],
        height: int,
        width: int,
        rng: np.random.Generator | None,
        *,
        question: list[int] | None = None,
    ) -> ClipParticles:
        """One window of a file as particles (augmented when `rng` is given): `decode_window`, then `clip_particles`.

        Args:
            height, width: the file's frame size (probed), which the preprocessing resizes from.
            question: the token ids of the question asked about the window (a dataset that reads ``text``).
        """
        media = self.modalities if self.modalities is not None else ("video",)
        decoded = decode_window(
            path, window, pre=self.pre, modalities=media, audio_pre=self.audio, source_size=(height, width),
            augment=self.augment, rng=rng,
        )  # fmt: skip
        return clip_particles(
            window, pre=self.pre, modalities=self.modalities, frames=decoded.frames, timestamps=decoded.timestamps,
            audio=decoded.audio, audio_pre=self.audio, question=question,
        )  # fmt: skip

    def question(self, video: int) -> list[int] | None:
        """The token ids of the question asked about sample `video` (None here; `QAClipDataset` asks one)."""
        return None

    def _mark(self, path: str | None) -> None:
        if self.crash_dir is None:
            return
        marker = os.path.join(self.crash_dir, str(os.getpid()))
        if path is None:
            if os.path.exists(marker):
                os.remove(marker)
        else:
            with open(marker, "w") as f:
                f.write(path)


def _sample_seconds(sample, duration: float) -> float:
    lo = sample.start or 0.0
    hi = min(sample.end or duration, duration)
    return max(hi - lo, 0.0)


def collate(items: list[Item]) -> Batch:
    """Pack the clips that decoded; keep the failures for reporting."""
    good = [it for it in items if it.particles is not None]
    failed = [it for it in items if it.particles is None]
    packed = pack([it.particles for it in good]) if good else None
    labels = torch.tensor([it.label for it in good], dtype=torch.long)
    return Batch(
        packed=packed,
        labels=labels,
        indices=[it.index for it in good],
        samples=[it.sample for it in good],
        windows=[it.window for it in good],
        failed=failed,
    )


def budget_batches(
    estimates: list[int],
    budget: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    max_clips: int | None = None,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[list[int]]:
    """Group items into batches whose estimated particle counts sum to at most `budget`.

    Clips of any length, resolution and frame rate share a batch; a clip larger than the budget forms a
    batch alone. The order is shuffled per (seed, epoch) when `shuffle`, so every epoch's batches are
    reproducible (a resumed run replays the same batches).

    Returns:
        Lists of item indices.
    """
    order = np.arange(len(estimates))
    if shuffle:
        order = np.random.default_rng([seed, epoch, 7919]).permutation(len(estimates))
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order.tolist():
        if i in exclude:
            continue
        cost = estimates[i]
        full = current and (used + cost > budget or (max_clips is not None and len(current) >= max_clips))
        if full:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        batches.append(current)
    return batches
