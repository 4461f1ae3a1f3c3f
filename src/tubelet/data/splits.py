"""Which clips train, validate and test: a dataset's own splits, or a validation share carved from class folders.

Most people bring class folders (``DIR/<label>/*.mp4``) and no splits. Training on such a directory uses all its
clips but a validation share held out per class (`stratified_split`: deterministic per seed, at least one clip of
every class that has two or more, ``--val-fraction`` of each); evaluating on one scores all its clips. Data that
has splits (``{split}.csv``/``.jsonl`` manifests or ``{split}/`` folders) is read split by split, and one manifest
file is one set, as `tubelet.data.manifest.read_samples` says.

A directory counts as class folders when it has sub-folders and no split of any of `SPLIT_NAMES` (nor of the splits
asked for); a class named like a split (``test/``) makes it a split layout.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from tubelet.data.columns import take
from tubelet.data.manifest import MANIFEST_SUFFIXES, VideoDataset, load_dataset
from tubelet.errors import ConfigError, DataError

log = logging.getLogger("tubelet.data")

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")  # names whose manifest or folder marks a split layout


def has_split(source: str | os.PathLike, split: str) -> bool:
    """Whether directory `source` holds ``{split}.csv``, ``{split}.jsonl`` or a ``{split}/`` folder."""
    source = Path(source)
    return any((source / f"{split}{suffix}").is_file() for suffix in MANIFEST_SUFFIXES) or (source / split).is_dir()


def is_class_folders(source: str | os.PathLike, splits: tuple[str, ...] = ()) -> bool:
    """Whether `source` is a directory of class folders with no split of its own (of `SPLIT_NAMES` or `splits`)."""
    source = Path(source)
    if not source.is_dir():
        return False
    if any(has_split(source, name) for name in (*SPLIT_NAMES, *splits) if name):
        return False
    return any(p.is_dir() and not p.name.startswith(".") for p in source.iterdir())


def train_val(
    source: str | os.PathLike,
    *,
    train_split: str = "train",
    val_split: str | None = "val",
    val_fraction: float = 0.2,
    label_column: str = "label",
    seed: int = 0,
    workers: int = 4,
) -> tuple[VideoDataset, VideoDataset | None]:
    """The training clips and the validation clips (None: no validation) of a labeled dataset.

    - a directory with a `train_split` (manifest or folder): that split, and the `val_split` when there is one (a
      warning and no validation when there is not);
    - class folders without that split: all their clips, less a validation share of `val_fraction` of each class
      (`stratified_split`) when `val_split` is set;
    - one manifest file: all its rows, no validation.

    Both sets carry the training set's labels.

    Args:
        val_split: None or ``none`` skips validation.
        val_fraction: the share of each class held out of class folders; 0 trains on all of them.
        seed: which clips are held out (the same seed holds out the same clips).
        workers: threads probing files.

    Raises:
        ConfigError: `val_fraction` outside [0, 1).
        DataError: no such split (and not class folders), a class with no usable clip, or validation labels the
            training set does not have.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction: must be at least 0 and below 1, got {val_fraction}")
    validate = bool(val_split) and val_split != "none"
    options = dict(label_column=label_column, workers=workers)
    if Path(source).is_file():
        return load_dataset(source, **options), None
    if is_class_folders(source, tuple(name for name in (train_split, val_split) if name)):
        data = load_dataset(source, **options)
        where = f"no '{train_split}' split in {source}: class folders"
        if not validate or val_fraction == 0:
            log.info("%s; training on all %d clips, no validation", where, len(data))
            return data, None
        train, val = stratified_split(data, val_fraction, seed=seed)
        if not len(val):
            log.warning("%s, none with 2 clips to hold one out; training on all %d, no validation", where, len(data))
            return data, None
        held, total = val.class_counts(), data.class_counts()
        shown = ", ".join(f"{label} {held[label]}/{total[label]}" for label in data.labels[:8])
        more = f" (+{len(data.labels) - 8} classes)" if len(data.labels) > 8 else ""
        log.info(
            "%s; holding out %d of %d clips as validation, per class (--val-fraction %g): %s%s",
            where, len(val), len(data), val_fraction, shown, more,
        )  # fmt: skip
        return train, val
    train = load_dataset(source, split=train_split, **options)
    if not validate:
        return train, None
    try:
        val = load_dataset(source, split=val_split, **options)
    except DataError as exc:
        if f"no '{val_split}' split" in str(exc):
            log.warning("%s; training without validation", exc)
            return train, None
        raise
    return train, _with_labels(val, train.labels, source, val_split)


def stratified_split(data: VideoDataset, fraction: float, *, seed: int = 0) -> tuple[VideoDataset, VideoDataset]:
    """(kept, held out): `fraction` of each class's clips held out, at least one of a class with two or more.

    A class keeps at least one clip. Which clips are held out depends on the seed and the class's own clips only
    (not on the other classes), and both parts keep the order of `data`.
    """
    held: set[int] = set()
    for label in data.labels:
        members = [i for i, s in enumerate(data.samples) if s.label == label]
        count = held_out_count(len(members), fraction)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        held.update(members[j] for j in rng.permutation(len(members))[:count].tolist())

    def subset(keep) -> VideoDataset:
        index = [i for i in range(len(data)) if keep(i)]
        return replace(data, samples=take(data.samples, index), infos=take(data.infos, index))

    kept, out = subset(lambda i: i not in held), subset(lambda i: i in held)
    return kept, replace(out, skipped=[])


def held_out_count(clips: int, fraction: float) -> int:
    """Clips held out of a class of `clips`: `fraction` of them, rounded; at least 1 of 2 or more; never all."""
    if clips < 2 or fraction <= 0:
        return 0
    return min(clips - 1, max(1, round(clips * fraction)))


def load_test_split(
    source: str | os.PathLike,
    labels: list[str],
    *,
    split: str = "test",
    label_column: str = "label",
    workers: int = 4,
) -> VideoDataset | None:
    """The test clips scored after training, with the training `labels`; None when there is no such split.

    One manifest file has no test split; neither have class folders (their validation share was carved from the
    same clips). A missing split is logged, not an error.

    Raises:
        DataError: a test label the training set does not have.
    """
    if Path(source).is_file():
        return None
    if is_class_folders(source, (split,)):
        log.info("no '%s' split in %s: class folders; no test report", split, source)
        return None
    try:
        test = load_dataset(source, split=split, label_column=label_column, workers=workers)
    except DataError as exc:
        log.warning("%s; no test report", exc)
        return None
    return _with_labels(test, labels, source, split)


def eval_split(
    source: str | os.PathLike, split: str | None, *, label_column: str = "label", workers: int = 4
) -> VideoDataset:
    """The clips ``tubelet evaluate`` scores (with a ``note`` when they are not the split asked for).

    A split of a dataset that has splits, all rows of one manifest file (`split` None), or all clips of class
    folders: read whole when `split` is None, and also when they have no such split (the note says so).

    Raises:
        DataError: no such split in data that is not class folders, or a class with no usable clip.
    """
    options = dict(label_column=label_column, workers=workers)
    if split is not None and is_class_folders(source, (split,)):
        data = load_dataset(source, **options)
        note = f"no '{split}' split in {source}: class folders; evaluating all {len(data)} clips"
        log.info("%s", note)
        return replace(data, note=note)
    return load_dataset(source, split=split, **options)


def _with_labels(data: VideoDataset, labels: list[str], source, split: str) -> VideoDataset:
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise DataError(f"{source}: label(s) {', '.join(unknown)} of split '{split}' not in the training split")
    return replace(data, labels=list(labels))


def check_labels(data: VideoDataset, labels: list[str] | None, where: str) -> VideoDataset:
    """`data` with the checkpoint's label order; a label the checkpoint does not know is an error naming it."""
    if not labels:
        raise ConfigError(f"{where}: the checkpoint has no labels.json (not a classifier)")
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise DataError(
            f"{data.source}: label(s) {', '.join(repr(u) for u in unknown)} not in the checkpoint's labels "
            f"({', '.join(labels)})"
        )
    data.labels = list(labels)
    return data
