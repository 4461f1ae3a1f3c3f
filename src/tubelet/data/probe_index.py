"""A probe index: what probing found for each video file, kept in a SQLite file so a dataset loads without probing.

Probing opens every file with FFmpeg; over millions of files that takes hours. The index holds one row per file:
its size and modification time (``mtime_ns``), and either every field of `VideoInfo` or the reason it could not
be read, so a corrupt file is not re-probed every run either. A row whose size or mtime no longer matches the
file is stale and is probed again.

``tubelet scan DATA --index`` writes it; `tubelet.data.load_dataset` reads it when it exists (beside the manifest
by default, see `default_index_path`) and writes back what it had to probe, if the file is writable.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from tubelet.errors import DataError, TubeletError
from tubelet.io.probe import VideoInfo, probe

log = logging.getLogger("tubelet.data")

INFO_FIELDS = tuple(f.name for f in fields(VideoInfo) if f.name != "path")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS probes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT,  -- NULL when the file probed cleanly, else why it could not be read (and the fields are NULL)
    {", ".join(f"{name} {_type}" for name, _type in zip(INFO_FIELDS, (
        "REAL", "REAL", "INTEGER", "INTEGER", "INTEGER", "TEXT", "INTEGER", "INTEGER", "REAL", "TEXT")))}
)
"""  # fmt: skip
_COLUMNS = ("path", "size", "mtime_ns", "reason", *INFO_FIELDS)
_BATCH = 900  # paths per `IN (...)` query: under SQLite's default limit of 999 bound parameters


def default_index_path(source: str | os.PathLike) -> Path:
    """Where a dataset's probe index lives by default.

    ``train.csv`` -> ``train.csv.probe.sqlite``; a folder DIR (class folders, or split manifests) ->
    ``DIR/.tubelet-probe.sqlite``, one index for all its splits.
    """
    source = Path(source)
    if source.is_dir():
        return source / ".tubelet-probe.sqlite"
    return source.with_name(source.name + ".probe.sqlite")


@dataclass
class Probed:
    """What probing a list of files found, file by file, and how much of it came from the index.

    Attributes:
        infos: one per file, None where it could not be read.
        reasons: why each unreadable file could not be read ("" for readable ones).
        probed: files opened with FFmpeg (not in the index, or changed since).
        reused: files taken from the index without opening them.
    """

    infos: list[VideoInfo | None]
    reasons: list[str]
    probed: int = 0
    reused: int = 0


def probe_files(paths: list[str], *, index: str | os.PathLike | None = None, workers: int = 4) -> Probed:
    """Probe each of `paths` (distinct), taking what the index already knows of unchanged files.

    Args:
        paths: the files, each once.
        index: a probe index file to read and update; None probes everything. Files probed here are written back
            when the index is writable; a read-only index is only read.
        workers: threads probing files in parallel (FFmpeg releases the GIL while demuxing).

    Raises:
        DataError: `index` is not a SQLite probe index.
    """
    stats = [_stat(p) for p in paths]
    known = _read(index, paths, stats) if index is not None else {}
    todo = [i for i in range(len(paths)) if i not in known]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        fresh = dict(zip(todo, pool.map(try_probe, [paths[i] for i in todo])))
    results = {**known, **fresh}
    if index is not None and fresh:
        _write(index, [(paths[i], stats[i], *fresh[i]) for i in todo if stats[i] is not None])
    return Probed(
        infos=[results[i][0] for i in range(len(paths))],
        reasons=[results[i][1] for i in range(len(paths))],
        probed=len(todo),
        reused=len(known),
    )


def try_probe(path: str | os.PathLike) -> tuple[VideoInfo | None, str]:
    """`probe`'s result and "", or None and the reason the file cannot be read."""
    try:
        return probe(path), ""
    except TubeletError as exc:
        return None, str(exc)


def create_index(path: str | os.PathLike) -> Path:
    """An empty index at `path` (or the existing one, left as it is); its folder must exist."""
    path = Path(path)
    with _connect(path) as db:
        db.execute(_SCHEMA)
    db.close()
    return path


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing: probed (and reported) every time, never recorded
    return st.st_size, st.st_mtime_ns


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        return sqlite3.connect(path, timeout=30)  # timeout: other ranks or workers may be writing
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open the probe index ({exc})") from exc


def _read(index: str | os.PathLike, paths: list[str], stats: list) -> dict[int, tuple[VideoInfo | None, str]]:
    """Index rows of the files whose size and mtime still match, by position in `paths`."""
    index = Path(index)
    if not index.exists():
        return {}
    position = {p: i for i, p in enumerate(paths)}
    known = {}
    db = _connect(index, readonly=True)
    try:
        for lo in range(0, len(paths), _BATCH):
            batch = paths[lo : lo + _BATCH]
            query = f"SELECT {', '.join(_COLUMNS)} FROM probes WHERE path IN ({', '.join('?' * len(batch))})"
            for path, size, mtime_ns, reason, *values in db.execute(query, batch):
                i = position[path]
                if stats[i] != (size, mtime_ns):
                    continue  # changed since it was probed
                if reason is not None:
                    known[i] = (None, reason)
                else:
                    info = dict(zip(INFO_FIELDS, values))
                    info["has_audio"] = bool(info["has_audio"])
                    known[i] = (VideoInfo(path=path, **info), "")
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"{index}: not a tubelet probe index ({exc}); delete it or rebuild it with `tubelet scan --index`"
        ) from exc
    finally:
        db.close()
    return known


def _write(index: str | os.PathLike, rows: list[tuple]) -> None:
    """Record (path, (size, mtime_ns), info or None, reason) rows; a read-only index is left as it is."""
    index = Path(index)
    if not os.access(index, os.W_OK) or not os.access(index.parent, os.W_OK):
        log.info("%s: read-only, %d newly probed files not recorded", index, len(rows))
        return
    records = []
    for path, (size, mtime_ns), info, reason in rows:
        values = [getattr(info, name) for name in INFO_FIELDS] if info is not None else [None] * len(INFO_FIELDS)
        records.append((path, size, mtime_ns, reason or None, *values))
    query = f"INSERT OR REPLACE INTO probes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    try:
        with _connect(index) as db:
            db.execute(_SCHEMA)
            db.executemany(query, records)
        db.close()
    except sqlite3.Error as exc:  # another writer held the lock too long, a full disk: the index is a cache
        log.warning("%s: could not record %d probed files (%s)", index, len(rows), exc)
