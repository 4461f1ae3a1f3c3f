"""POST events to a webhook from a background thread: retried with exponential backoff, never in the stream's way.

The database is the queue's memory: an event's ``delivered_start`` / ``delivered_end`` stay 0 until its receiver
answered 2xx, so what a dead receiver missed is sent when it comes back, by this run or the next one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tubelet.stream.events import COLUMNS, connect, row_event

log = logging.getLogger("tubelet.watch")


class WebhookSender:
    """Delivers ``(event id, phase)`` in order; `send` never blocks.

    The payload is the event's JSON (`tubelet.stream.events.EVENT_KEYS` and ``id``) with ``phase`` ``start`` or
    ``end``, read from the database when it is sent (an end payload carries the clip; a start payload never has an
    ``end`` or a ``clip``, however late it is sent).

    Args:
        url: where to POST.
        db_path: the events database (its own connection, in this thread).
        timeout: seconds to wait for one answer.
        backoff, max_backoff: first wait after a failure, doubled up to this.
    """

    def __init__(self, url: str, db_path: str | Path, *, timeout: float = 5.0, backoff: float = 0.5,
                 max_backoff: float = 30.0):  # fmt: skip
        self.url, self.db_path, self.timeout = url, Path(db_path), timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self.delivered = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tubelet-webhook", daemon=True)

    def start(self) -> WebhookSender:
        """Queue what earlier runs left undelivered, then start sending."""
        db = connect(self.db_path)
        try:
            rows = db.execute(
                'SELECT id, delivered_start, delivered_end, "end" FROM events '
                'WHERE delivered_start = 0 OR (delivered_end = 0 AND "end" IS NOT NULL) ORDER BY wall_start'
            ).fetchall()
        finally:
            db.close()
        for event_id, started, ended, end in rows:
            if started == 0:
                self.queue.put((event_id, "start"))
            if ended == 0 and end is not None:
                self.queue.put((event_id, "end"))
        if rows:
            log.info("webhook: %d undelivered event(s) from before queued", len(rows))
        self._thread.start()
        return self

    def send(self, event_id: str, phase: str) -> None:
        self.queue.put((event_id, phase))

    def close(self, drain_seconds: float = 5.0) -> int:
        """Wait up to `drain_seconds` for the queue to empty, then stop; returns how many are left (they stay
        marked undelivered in the database)."""
        end = time.monotonic() + drain_seconds
        while self.queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)
        return self.queue.unfinished_tasks

    def _run(self) -> None:
        db = connect(self.db_path)
        try:
            while not self._stop.is_set():
                try:
                    event_id, phase = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                wait = self.backoff
                while not self._stop.is_set():
                    if self._deliver(db, event_id, phase):
                        self.queue.task_done()  # one stopped mid-retry stays unfinished: `close` counts it
                        break
                    self.failures += 1
                    self._stop.wait(wait)
                    wait = min(wait * 2, self.max_backoff)
        finally:
            db.close()

    def _deliver(self, db, event_id: str, phase: str) -> bool:
        row = db.execute(f"SELECT {', '.join(_quoted(COLUMNS))} FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            return True  # nothing to send
        payload = {**row_event(dict(zip(COLUMNS, row, strict=True))), "phase": phase}
        if phase == "start":  # as it was when it started, however late this is sent
            payload.update(end=None, clip=None)
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.debug("webhook %s: %s", self.url, exc)
            return False
        if ok:
            with db:
                db.execute(f"UPDATE events SET delivered_{phase} = 1 WHERE id = ?", (event_id,))
            self.delivered += 1
        return ok


def _quoted(columns) -> list[str]:
    return [f'"{c}"' if c == "end" else c for c in columns]
