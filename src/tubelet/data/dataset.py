"""Map-style dataset of clips sampled by time, and batches formed by a particle budget."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from tubelet.data.manifest import VideoDataset
from tubelet.data.transforms import Augment, Preprocessing, clip_window, random_resized_crop
from tubelet.errors import TubeletError
from tubelet.io.decode import decode
from tubelet.particles.pack import pack
from tubelet.particles.structure import PackedParticles, Particles
from tubelet.particles.tokenize import tokenize

log = logging.getLogger("tubelet.data")


@dataclass
class Item:
    """One decoded clip: its particles and label index, or the reason it failed."""

    index: int  # item index in the dataset (a window index when the dataset has explicit windows)
    sample: int  # index of the video in the VideoDataset
    particles: Particles | None
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
    so one bad clip never stops a run.

    Args:
        dataset: probed samples (`tubelet.data.load_dataset`).
        pre: preprocessing.
        augment: training augmentation, or None.
        seed: base seed of the per-item random streams.
        windows: explicit (video index, start s, end s) per item.
        crash_dir: if set, each worker writes the path it is decoding to ``crash_dir/<pid>`` first, so a
            decoder that kills the worker (segfault) can be named afterwards.
    """

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
            particles = self.load(str(sample.path), window, info.height, info.width, rng)
        except (TubeletError, ValueError, RuntimeError) as exc:
            return Item(index, video, None, label, str(sample.path), window, error=str(exc))
        finally:
            self._mark(None)
        return Item(index, video, particles, label, str(sample.path), window)

    def load(self, path: str, window, height: int, width: int, rng: np.random.Generator | None) -> Particles:
        """Decode one window of a file and cut it into particles (augmented when `rng` is given)."""
        fps = self.pre.sample_fps
        if rng is not None and self.augment is not None and self.augment.fps_jitter and fps:
            jitter = 1.0 + self.augment.fps_jitter
            fps = fps * float(np.exp(rng.uniform(-np.log(jitter), np.log(jitter))))
        clip = decode(path, start=window[0], end=window[1], fps=fps, size=self.pre.output_size(height, width))
        frames = torch.from_numpy(clip.frames)
        if rng is not None and self.augment is not None:
            frames = random_resized_crop(frames, self.augment, rng)
            if self.augment.flip and rng.random() < 0.5:
                frames = frames.flip(2)
        # Times from the window's start: positions are relative to the clip, whatever its offset in a long video
        # (seconds since the stream start would lose float32 precision an hour in).
        return to_particles(frames, clip.timestamps - window[0], self.pre)

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


def to_particles(frames, timestamps, pre: Preprocessing) -> Particles:
    """Frames (T, H, W, 3) uint8 at their times (T,) seconds -> normalized, pruned particles."""
    return tokenize(
        frames,
        timestamps=timestamps,
        tubelet=pre.tubelet,
        prune_threshold=pre.prune_threshold,
        mean=pre.mean,
        std=pre.std,
    )
