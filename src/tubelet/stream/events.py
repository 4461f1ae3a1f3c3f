"""Events of a watched stream: hysteresis over window scores, the `events.sqlite` database, and event clips.

An event opens on the first window whose score reaches its threshold and closes once the score has stayed below it
for `cooldown` seconds; its ``end`` is the end of the last window that was over. The database is a real embedded
one (stdlib sqlite3, WAL journal, one transaction per write), so a kill at any moment leaves it readable: at worst
an event whose ``end`` is still NULL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("tubelet.watch")

# The keys of an event as printed (one JSON line), POSTed and stored: pinned by `tubelet watch`'s contract.
EVENT_KEYS = ("start", "end", "wall_start", "kind", "label", "score", "clip", "thumbnail")
KINDS = ("label", "anomaly", "gap")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,           -- uuid4 hex; the webhook payload's "id"
    kind TEXT NOT NULL,            -- label | anomaly | gap
    label TEXT,                    -- the alerted label; NULL for anomaly and gap events
    start REAL NOT NULL,           -- stream seconds of the first window over the threshold (gap: last frame)
    "end" REAL,                    -- stream seconds of the last window over it; NULL while the event is open
    wall_start REAL NOT NULL,      -- Unix time (seconds, UTC) the event started
    wall_end REAL,                 -- Unix time it was closed
    score REAL,                    -- the highest window score of the event (NULL for a gap)
    threshold REAL,                -- the threshold it was held against
    clip TEXT,                     -- the event's mp4 (pre- and post-roll included), written when it ends
    thumbnail TEXT,                -- a PNG of the window that opened it
    source TEXT,                   -- the SOURCE watched
    delivered_start INTEGER,       -- webhook: 1 delivered, 0 pending, NULL no webhook configured
    delivered_end INTEGER
);
CREATE INDEX IF NOT EXISTS events_start ON events(wall_start);
"""
COLUMNS = (
    "id", "kind", "label", "start", "end", "wall_start", "wall_end", "score", "threshold", "clip", "thumbnail",
    "source", "delivered_start", "delivered_end",
)  # fmt: skip


@dataclass
class Event:
    """One event. ``end`` is None while it is open."""

    kind: str
    start: float
    wall_start: float
    label: str | None = None
    score: float | None = None
    threshold: float | None = None
    end: float | None = None
    wall_end: float | None = None
    clip: str | None = None
    thumbnail: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict:
        """The event's pinned keys (plus ``id``), rounded for reading."""
        out = {k: getattr(self, k) for k in EVENT_KEYS}
        for k in ("start", "end", "score"):
            if out[k] is not None:
                out[k] = round(float(out[k]), 4)
        out["wall_start"] = round(self.wall_start, 3)
        return {**out, "id": self.id}


class Hysteresis:
    """Opens an event when a window's score reaches `threshold` (with `strict`, rises above it); closes it after
    `cooldown` seconds below.

    `update` takes windows in order and returns ``"start"``, ``"end"`` or None; `start`, `end`, `peak` describe the
    current (or just closed) event. A NaN score (a window not scored) changes nothing.
    """

    def __init__(self, threshold: float | None, cooldown: float, *, strict: bool = False):
        self.threshold, self.cooldown, self.strict = threshold, cooldown, strict
        self.open = False
        self.start = self.end = self.peak = None

    def update(self, start: float, end: float, score: float) -> str | None:
        if self.threshold is None or np.isnan(score):
            return None
        # Strictly above means above by more than float noise: features of identical windows differ in the 7th digit.
        margin = 1e-5 * max(1.0, abs(self.threshold)) if self.strict else 0.0
        if score > self.threshold + margin or (score == self.threshold and not self.strict):
            if not self.open:
                self.open, self.start, self.peak = True, start, score
                self.end = end
                return "start"
            self.end, self.peak = max(self.end, end), max(self.peak, score)
            return None
        if self.open and end - self.end >= self.cooldown:
            self.open = False
            return "end"
        return None

    def close(self) -> bool:
        """Close an open event now (the stream ended or dropped); True when one was open."""
        was, self.open = self.open, False
        return was


class EventStore:
    """`DIR/events.sqlite`: one row per event, inserted when it starts and updated when it ends.

    Every write is its own transaction in WAL mode with ``synchronous=NORMAL``: a killed process loses at most the
    write in flight, never the file. Safe to share between threads (one lock around this connection); the webhook
    sender opens its own connection.
    """

    def __init__(self, path: str | Path, *, source: str = "", webhook: bool = False):
        self.path, self.source, self.webhook = Path(path), source, webhook
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(self.path)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(SCHEMA)

    def insert(self, event: Event) -> None:
        pending = 0 if self.webhook else None
        row = {**event.__dict__, "source": self.source, "delivered_start": pending, "delivered_end": pending}
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO events ({', '.join(_q(c) for c in COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [row[c] for c in COLUMNS],
            )

    def update(self, event: Event) -> None:
        with self._lock, self._db:
            self._db.execute(
                'UPDATE events SET "end" = ?, wall_end = ?, score = ?, clip = ?, thumbnail = ? WHERE id = ?',
                (event.end, event.wall_end, event.score, event.clip, event.thumbnail, event.id),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode that waits for the other writer rather than failing."""
    db = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def row_event(row: dict) -> dict:
    """An `events` row as the event JSON (the pinned keys and ``id``)."""
    event = Event(**{k: row[k] for k in ("kind", "start", "wall_start", "label", "score", "end", "clip", "thumbnail")})
    event.id = row["id"]
    return event.to_json()


def _q(column: str) -> str:
    return f'"{column}"' if column == "end" else column


class Recorder:
    """Recent frames (bounded) and what an event's clip and thumbnail are cut from.

    Args:
        out: the folder clips and thumbnails go to (``out/clips``); None writes none.
        keep_seconds: seconds of frames held; a clip longer than this keeps its last seconds.
    """

    def __init__(self, out: Path | None, *, keep_seconds: float, pre_roll: float, post_roll: float):
        self.out = Path(out) / "clips" if out is not None else None
        self.keep, self.pre_roll, self.post_roll = keep_seconds, pre_roll, post_roll
        self.frames: deque[tuple[float, np.ndarray]] = deque()

    def add(self, frames: np.ndarray, timestamps: np.ndarray) -> None:
        for frame, t in zip(frames, timestamps, strict=True):
            self.frames.append((float(t), frame))
        while self.frames and self.frames[-1][0] - self.frames[0][0] > self.keep:
            self.frames.popleft()

    def reset(self) -> None:
        self.frames.clear()

    def thumbnail(self, event: Event, at: float) -> str | None:
        """A PNG of the frame nearest `at` seconds."""
        if self.out is None or not self.frames:
            return None
        from PIL import Image

        times = np.array([t for t, _ in self.frames])
        frame = self.frames[int(np.argmin(np.abs(times - at)))][1]
        path = self.out / f"{_name(event)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(path)
        return str(path)

    def clip(self, event: Event) -> str | None:
        """The event's mp4: its frames from `pre_roll` before its start to `post_roll` after its end (those held)."""
        if self.out is None:
            return None
        from tubelet.io.write import write_video

        lo, hi = event.start - self.pre_roll, (event.end if event.end is not None else event.start) + self.post_roll
        picked = [(t, f) for t, f in self.frames if lo <= t <= hi]
        if not picked:
            return None
        times = np.array([t for t, _ in picked])
        path = self.out / f"{_name(event)}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_video(path, np.stack([_even(f) for _, f in picked]), timestamps=times - times[0])
        except Exception as exc:  # a clip is a courtesy: the event stands without it
            log.warning("event %s: clip not written (%s)", event.id, exc)
            return None
        return str(path)


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: drop a last odd row or column."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def _name(event: Event) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(event.wall_start))
    label = f"_{''.join(c if c.isalnum() else '-' for c in event.label)}" if event.label else ""
    return f"{stamp}_{event.kind}{label}_{event.id[:8]}"
