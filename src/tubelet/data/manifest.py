"""Datasets as lists of samples: class folders, or CSV / JSONL manifests (``path,label[,start,end]``).

Loading probes every file once, reports unreadable ones (file name and reason) and skips them; a class left
with no usable clip is an error naming the class. A probe index (`tubelet.data.probe_index`, written by
``tubelet scan --index``) spares re-probing unchanged files; the loaded samples and probe results are kept as
compact columns (`tubelet.data.columns`), so a manifest of millions of rows fits in memory.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tubelet.data.probe_index import (
    default_index_path,
    probe_files,
    try_probe,  # noqa: F401  (search, predict and qa import it from here)
)
from tubelet.errors import DataError
from tubelet.io.probe import VideoInfo

log = logging.getLogger("tubelet.data")

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".gif"})
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True, slots=True)  # slots: a manifest's rows are many
class Sample:
    """One video (or a window of it) and its label.

    Attributes:
        path: the video file.
        label: class name, or None for unlabeled footage.
        start, end: optional window in seconds.
    """

    path: Path
    label: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass
class VideoDataset:
    """Samples whose files probed cleanly, with what probing found.

    Attributes:
        samples: the usable samples (a list, or compact `tubelet.data.columns.Samples` from `load_dataset`).
        infos: probe results, one per sample (a list, or compact `tubelet.data.columns.VideoInfos`).
        labels: sorted class names (empty for unlabeled data).
        skipped: (path, reason) of every file that could not be read.
        source: where the samples came from.
        note: how the set was chosen when it is not the split asked for (class folders evaluated whole).
        probed: distinct files opened with FFmpeg while loading.
        reused: distinct files whose probe results came from the probe index.
    """

    samples: Sequence[Sample]
    infos: Sequence[VideoInfo]
    labels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    note: str | None = None
    probed: int = 0
    reused: int = 0

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.labels, 0)
        if hasattr(self.samples, "label_counts"):  # compact samples count without building a `Sample` per row
            counts.update({k: n for k, n in self.samples.label_counts().items() if k is not None})
            return counts
        for s in self.samples:
            if s.label is not None:
                counts[s.label] += 1
        return counts


def read_samples(
    source: str | os.PathLike, *, split: str | None = None, label_column: str = "label"
) -> tuple[list[Sample], list[str]]:
    """Samples of a dataset, without opening any video.

    Args:
        source: a CSV or JSONL manifest; a directory holding ``{split}.csv``/``{split}.jsonl`` or a
            ``{split}/`` folder; a directory of class folders (``DIR/<label>/*.mp4``); or a directory of
            unlabeled videos.
        split: ``train``, ``val``, ``test``... Required to pick a split's manifest or folder; with None a
            directory's class folders (or loose files) are read whole.
        label_column: the manifest column holding the label (``sentiment``, ``emotion``...); class folders
            ignore it.

    Returns:
        The samples and the declared class names (class folders count even when empty).

    Raises:
        DataError: missing source, missing split, or a manifest with a bad column or row.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    if source.is_file():
        samples = read_manifest(source, label_column=label_column)
        return samples, sorted({s.label for s in samples if s.label is not None})
    if split is not None:
        for suffix in MANIFEST_SUFFIXES:
            if (source / f"{split}{suffix}").is_file():
                return read_samples(source / f"{split}{suffix}", label_column=label_column)
        if (source / split).is_dir():
            return read_samples(source / split)
        raise DataError(f"{source}: no '{split}' split (expected {split}.csv, {split}.jsonl or a {split}/ folder)")
    return _read_folders(source)


def _read_folders(root: Path) -> tuple[list[Sample], list[str]]:
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if loose and not class_dirs:
        return [Sample(path=p) for p in loose], []
    samples = []
    for folder in class_dirs:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        samples.extend(Sample(path=p, label=folder.name) for p in files)
    if loose:
        log.warning("%s: %d video files outside class folders are ignored", root, len(loose))
    if not samples and not class_dirs:
        raise DataError(f"{root}: no videos found (expected class folders or video files)")
    return samples, [d.name for d in class_dirs]


def read_manifest(path: str | os.PathLike, *, label_column: str = "label") -> list[Sample]:
    """Read a CSV (header ``path,label[,start,end]``) or JSONL manifest; relative paths are taken from its folder.

    Args:
        label_column: the column holding the label. The default ``label`` may be absent (unlabeled footage);
            any other name was asked for, so a manifest without it is an error.

    Raises:
        DataError: naming the file, row and field when a row is malformed.
    """
    path = Path(path)
    required = ("path",) if label_column == "label" else ("path", label_column)
    videos: dict[str, Path] = {}  # one Path per distinct file, however many rows (windows) read it
    samples, lines = [], array("q")  # rows are parsed one at a time: a million of them never sit as dicts at once
    for line, row in iter_manifest_rows(path, required=required):
        samples.append(_sample_from_row(path, line, row, label_column, videos))
        lines.append(line)
    _warn_duplicates(path, samples, lines)
    return samples


def _warn_duplicates(manifest: Path, samples: list[Sample], lines: Sequence[int]) -> None:
    """Log the rows that repeat an earlier one (same path, start and end); they are kept, so they weigh double."""
    first: dict[tuple, int] = {}
    repeats = []
    for sample, line in zip(samples, lines):
        key = (sample.path, sample.start, sample.end)
        if key in first:
            repeats.append(f"line {line} repeats line {first[key]}")
        else:
            first[key] = line
    if repeats:
        shown = "; ".join(repeats[:3]) + (f"; and {len(repeats) - 3} more" if len(repeats) > 3 else "")
        log.warning(
            "%s: %d duplicate row(s) (same path, start, end) kept, so they count twice: %s",
            manifest,
            len(repeats),
            shown,
        )


def manifest_rows(path: str | os.PathLike, *, required: tuple[str, ...] = ("path",)) -> list[tuple[int, dict]]:
    """The rows of a CSV or JSONL manifest, each with its line number (for error messages).

    Args:
        required: columns every row must have (a CSV's header, each JSONL object's keys).

    Raises:
        DataError: one line naming the file (and line) and the missing field, or a malformed file.
    """
    return list(iter_manifest_rows(path, required=required))


def iter_manifest_rows(path: str | os.PathLike, *, required: tuple[str, ...] = ("path",)) -> Iterator[tuple[int, dict]]:
    """`manifest_rows` one row at a time (a manifest of millions of rows is never held as dicts)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel starts its CSVs with a BOM
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: manifest has no '{missing[0]}' column (header: {reader.fieldnames})")
            for i, row in enumerate(reader):
                yield i + 2, row
    elif path.suffix.lower() == ".jsonl":
        with open(path) as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{i}: each line must be a JSON object")
                missing = [c for c in required if c not in row]
                if missing:
                    raise DataError(f"{path}:{i}: no '{missing[0]}' field")
                yield i, row
    else:
        raise DataError(f"{path}: unknown manifest format (use .csv or .jsonl)")


def _sample_from_row(
    manifest: Path, line: int, row: dict, label_column: str = "label", videos: dict[str, Path] | None = None
) -> Sample:
    where = f"{manifest}:{line}"
    if None in row:  # csv.DictReader puts surplus cells under the key None
        raise DataError(f"{where}: more cells than header columns")
    raw = row.get("path")
    if not raw:
        raise DataError(f"{where}: field 'path' is empty")
    video = videos.get(str(raw)) if videos is not None else None
    if video is None:
        video = Path(str(raw))
        if not video.is_absolute():
            video = manifest.parent / video
        if videos is not None:
            videos[str(raw)] = video
    label = row.get(label_column)
    label = str(label).strip() if label not in (None, "") else None
    if label is None and label_column != "label":
        raise DataError(f"{where}: field '{label_column}' is empty")
    times = {}
    for key in ("start", "end"):
        value = row.get(key)
        if value in (None, ""):
            times[key] = None
            continue
        try:
            times[key] = float(value)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: field '{key}' is not a number: {value!r}") from exc
    if times["start"] is not None and times["start"] < 0:
        raise DataError(f"{where}: field 'start' ({times['start']}) must be 0 or more (seconds from the video's start)")
    if times["start"] is not None and times["end"] is not None and times["end"] <= times["start"]:
        raise DataError(f"{where}: field 'end' ({times['end']}) must be after 'start' ({times['start']})")
    return Sample(path=video, label=label, **times)


def load_dataset(
    source: str | os.PathLike,
    *,
    split: str | None = None,
    require_labels: bool = True,
    label_column: str = "label",
    workers: int = 4,
    index: str | os.PathLike | None = None,
) -> VideoDataset:
    """Read a dataset and probe every file once; unreadable files are logged and skipped.

    Args:
        source, split: as in `read_samples`.
        require_labels: every sample must have a label, and every class at least one usable clip.
        label_column: the manifest column holding the label (see `read_manifest`).
        workers: threads probing files in parallel (FFmpeg releases the GIL while demuxing).
        index: the probe index to use (`tubelet.data.probe_index`); default the one beside the source
            (`default_index_path`) when it exists. Files it knows unchanged (same size and mtime) are not opened;
            the others are probed and written back if the index is writable. Without an index every file is probed.

    Returns:
        The usable samples and their probe results, as compact columns.

    Raises:
        DataError: no usable video, unlabeled samples where labels are required, or a class with no usable clip.
    """
    from tubelet.data.columns import Samples, VideoInfos  # it builds on `Sample`, defined here

    samples, declared = read_samples(source, split=split, label_column=label_column)
    if require_labels:
        unlabeled = [s for s in samples if s.label is None]
        if unlabeled:
            raise DataError(
                f"{unlabeled[0].path}: field '{label_column}' is missing ({len(unlabeled)} unlabeled samples)"
            )
    if index is None and default_index_path(source).is_file():
        index = default_index_path(source)
    file_of: dict[Path, int] = {}  # rows of a manifest share files (windows): each is probed once
    rows = [file_of.setdefault(s.path, len(file_of)) for s in samples]
    probed = probe_files([str(p) for p in file_of], index=index, workers=workers)
    good, good_files, skipped = [], [], []
    for sample, f in zip(samples, rows):
        info, reason = probed.infos[f], probed.reasons[f]
        if info is not None and sample.start is not None and sample.start >= info.duration_s:
            end = info.duration_s
            reason = f"{sample.path}: its window starts at {sample.start:g} s, after the video's end ({end:.3f} s)"
            info = None
        if info is None:
            log.warning("skipping %s", reason)
            skipped.append((str(sample.path), reason))
        else:
            good.append(sample)
            good_files.append(f)
    labels = sorted(set(declared) | {s.label for s in samples if s.label is not None})
    if require_labels:
        usable = {s.label for s in good}
        for label in labels:
            if label not in usable:
                raise DataError(f"class '{label}' has no usable clip in {source}")
    if not good:
        raise DataError(f"{source}: no readable video ({len(skipped)} skipped)")
    readable = sorted(set(good_files))
    position = {f: i for i, f in enumerate(readable)}
    infos = VideoInfos([probed.infos[f] for f in readable], [position[f] for f in good_files])
    return VideoDataset(
        samples=Samples.from_samples(good),
        infos=infos,
        labels=labels,
        skipped=skipped,
        source=str(source),
        probed=probed.probed,
        reused=probed.reused,
    )


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, and every video file under each directory (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise DataError(f"{path}: no video files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths
