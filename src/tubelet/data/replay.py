"""Rehearsal for re-fine-tuning as new video arrives: the grown label list and a replayed share of the old clips.

``tubelet finetune --model PREV/best --data NEW --replay OLD`` trains on NEW's clips plus a share of OLD's training
clips, so the classes PREV learned are rehearsed while new ones are learned (`replay_share`). The share is drawn
once per seed, not per epoch: the run's training set is then one plain dataset, which resumes, shards over ranks and
reports like any other; each epoch still sees other windows and crops of the replayed clips.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace

import numpy as np

from tubelet.data.columns import take
from tubelet.data.manifest import VideoDataset

log = logging.getLogger("tubelet.data")


def continual_labels(previous: list[str], seen: list[str]) -> list[str]:
    """The grown label list: `previous` in its order (each keeps its head row), then the labels of `seen` it lacks,
    sorted. A label of `seen` named like one of `previous` is that class."""
    known = set(previous)
    return [*previous, *sorted({label for label in seen if label not in known})]


def replay_count(fraction: float, new_count: int, old_count: int) -> int:
    """Old clips to mix into `new_count` new ones so that they are `fraction` of the whole (at most `old_count`)."""
    return min(old_count, round(fraction * new_count / (1.0 - fraction)))


def replay_share(old: VideoDataset, *, fraction: float, new_count: int, seed: int = 0) -> VideoDataset:
    """The clips of `old` replayed beside `new_count` new clips: `replay_count` of them, spread over its classes.

    Each class's clips are shuffled by (seed, class name) and the classes are dealt round-robin, so every old class
    is rehearsed with about the same number of clips, and the same seed replays the same clips. When `old` has
    fewer clips than the fraction asks for, all are replayed (and the fraction reached is said).
    """
    count = replay_count(fraction, new_count, len(old))
    wanted = round(fraction * new_count / (1.0 - fraction))
    if count < wanted:
        log.warning(
            "replay: %d old training clips, fewer than the %d that replay_fraction %g of %d new clips asks for; "
            "replaying all (%.2f of the training set)",
            len(old), wanted, fraction, new_count, count / max(1, count + new_count),
        )  # fmt: skip
    queues = []
    for label in old.labels:
        members = np.array([i for i, s in enumerate(old.samples) if s.label == label], dtype=np.int64)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        queues.append(members[rng.permutation(len(members))].tolist())
    dealt = [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]
    index = sorted(dealt[:count])  # in the order of `old`
    return replace(old, samples=take(old.samples, index), infos=take(old.infos, index), skipped=[])


def combine(parts: list[VideoDataset | None], labels: list[str]) -> VideoDataset | None:
    """The clips of `parts` (None parts left out) as one set over `labels`; None when every part is None."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return VideoDataset(
        samples=[s for p in parts for s in p.samples],
        infos=[i for p in parts for i in p.infos],
        labels=list(labels),
        skipped=[s for p in parts for s in p.skipped],
        source=" + ".join(str(p.source) for p in parts),
    )
