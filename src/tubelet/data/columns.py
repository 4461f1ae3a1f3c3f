"""Compact sequences of samples and probe results: numpy columns that build a `Sample` or `VideoInfo` on access.

A manifest of a million windows over a thousand files held as a million `Sample` and `VideoInfo` objects costs
GBs of Python objects; as columns it costs a few dozen bytes a row. Paths are stored once per distinct file, and
the facts of a file (`VideoInfo`) once per file, whatever the number of rows that read it. Both sequences index,
slice and iterate like the lists they replace, so ``data.infos[i].duration_s`` and
``zip(data.samples, data.infos)`` read as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from tubelet.data.manifest import Sample
from tubelet.io.probe import VideoInfo


class _Rows(Sequence):
    """A sequence over `rows` (int64 positions in some per-row or per-file table); subclasses build one item."""

    rows: np.ndarray  # (R,) int64

    def _item(self, row: int):
        raise NotImplementedError

    def _view(self, rows: np.ndarray):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int): ...
    @overload
    def __getitem__(self, i: slice): ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._view(self.rows[i])
        return self._item(int(self.rows[i]))  # numpy raises IndexError past the end, as a list does

    def __iter__(self) -> Iterator:
        for row in self.rows.tolist():
            yield self._item(row)

    def take(self, index: Sequence[int] | np.ndarray):
        """The items at `index`, as the same compact kind (what ``[seq[i] for i in index]`` gives, without objects)."""
        return self._view(self.rows[np.asarray(index, dtype=np.int64)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # mutable-looking, like list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"


class VideoInfos(_Rows):
    """`VideoInfo` per row, stored once per distinct file as numpy columns.

    Args:
        files: the distinct files' probe results.
        rows: (R,) which of `files` each row reads.
    """

    def __init__(self, files: Sequence[VideoInfo], rows: Sequence[int] | np.ndarray):
        self.rows = np.asarray(rows, dtype=np.int64)
        self._paths = [f.path for f in files]
        self._duration_s = np.array([f.duration_s for f in files], np.float64)
        self._fps = np.array([f.fps for f in files], np.float64)
        self._size = np.array([(f.height, f.width) for f in files], np.int32).reshape(-1, 2)  # (F, 2) height, width
        self._frames = np.array([f.frames for f in files], np.int64)
        self._codecs, self._codec = _categories([f.codec for f in files])
        self._containers, self._container = _categories([f.container for f in files])
        self._has_audio = np.array([f.has_audio for f in files], bool)
        self._audio_rate = np.array([f.audio_sample_rate or 0 for f in files], np.int64)  # 0: no audio
        self._start_offset_s = np.array([f.start_offset_s for f in files], np.float64)

    @property
    def duration_s(self) -> np.ndarray:
        """(R,) seconds of each row's file: sums and ranges without building objects."""
        return self._duration_s[self.rows]

    def per_file(self) -> list[tuple[VideoInfo, int]]:
        """Each distinct file read by these rows, once, with how many rows read it (in file order)."""
        counts = np.bincount(self.rows, minlength=len(self._paths))
        return [(self._item(f), int(n)) for f, n in enumerate(counts.tolist()) if n]

    def _item(self, f: int) -> VideoInfo:
        return VideoInfo(
            path=self._paths[f],
            duration_s=float(self._duration_s[f]),
            fps=float(self._fps[f]),
            width=int(self._size[f, 1]),
            height=int(self._size[f, 0]),
            frames=int(self._frames[f]),
            codec=self._codecs[self._codec[f]],
            has_audio=bool(self._has_audio[f]),
            audio_sample_rate=int(self._audio_rate[f]) or None,
            start_offset_s=float(self._start_offset_s[f]),
            container=self._containers[self._container[f]],
        )

    def _view(self, rows: np.ndarray) -> VideoInfos:
        view = object.__new__(VideoInfos)
        view.__dict__.update(self.__dict__)  # the per-file columns are shared, not copied
        view.rows = rows
        return view


class Samples(_Rows):
    """`Sample` per row as columns: a path id (paths stored once), a label id, and start/end (NaN for none).

    Build one with `Samples.from_samples`.
    """

    def __init__(self, paths: list[Path], path_id, labels: list[str | None], label_id, start, end):
        self._paths, self._labels = paths, labels
        self._path_id = np.asarray(path_id, np.int32)  # (R,)
        self._label_id = np.asarray(label_id, np.int32)  # (R,)
        self._start = np.asarray(start, np.float64)  # (R,) NaN: from the video's start
        self._end = np.asarray(end, np.float64)  # (R,) NaN: to the video's end
        self.rows = np.arange(len(self._path_id), dtype=np.int64)

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> Samples:
        paths: dict[Path, int] = {}
        labels: dict[str | None, int] = {}
        path_id = [paths.setdefault(s.path, len(paths)) for s in samples]
        label_id = [labels.setdefault(s.label, len(labels)) for s in samples]
        start = [np.nan if s.start is None else s.start for s in samples]
        end = [np.nan if s.end is None else s.end for s in samples]
        return cls(list(paths), path_id, list(labels), label_id, start, end)

    def label_counts(self) -> dict[str | None, int]:
        """How many rows carry each label."""
        counts = np.bincount(self._label_id[self.rows], minlength=len(self._labels))
        return {label: int(n) for label, n in zip(self._labels, counts) if n}

    def _item(self, r: int) -> Sample:
        start, end = self._start[r], self._end[r]
        return Sample(
            path=self._paths[self._path_id[r]],
            label=self._labels[self._label_id[r]],
            start=None if np.isnan(start) else float(start),
            end=None if np.isnan(end) else float(end),
        )

    def _view(self, rows: np.ndarray) -> Samples:
        view = object.__new__(Samples)
        view.__dict__.update(self.__dict__)
        view.rows = rows
        return view


def take(items: Sequence, index: Sequence[int]) -> Sequence:
    """``[items[i] for i in index]``, kept compact when `items` is a compact sequence."""
    return items.take(index) if isinstance(items, _Rows) else [items[i] for i in index]


def _categories(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct values and each value's position among them, (N,) int32."""
    names: dict[str, int] = {}
    codes = [names.setdefault(v, len(names)) for v in values]
    return list(names), np.asarray(codes, np.int32)
