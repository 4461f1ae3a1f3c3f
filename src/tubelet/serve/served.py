"""The model a server answers with, and swapping in a new checkpoint without a restart.

`ModelSlot` holds the current `Served` model. `reload` loads the checkpoint directory again in a background thread
(`tubelet.models.load`, so an export directory works as a checkpoint does) and swaps the new model in with one
assignment: a request holds the `Served` it started with to the end, so none sees half of each. `watch` polls the
directory's files every second and reloads when they change.

Never a half-written checkpoint: tubelet writes checkpoints by an atomic directory swap (`tubelet.checkpoint`), and a
load counts only when the directory's signature (inodes, sizes and times of its files) is the same before and after
reading it; a swap in between is read again. A load that fails keeps the old model and reports the error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tubelet.models import Loaded, load
from tubelet.tasks.base import Task, task_of

log = logging.getLogger("tubelet.serve")

# The files whose change means a new checkpoint (a checkpoint's weights, or an export's graph).
WATCHED = ("config.json", "model.safetensors", "model.onnx")


@dataclass(eq=False)
class Served:
    """A loaded model ready to answer: its task, a lock for one forward at a time, and where it came from."""

    loaded: Loaded
    task: Task
    version: int  # 1 for the first load, +1 per swap
    signature: tuple  # `signature` of the directory it was read from
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)


def signature(directory: Path) -> tuple:
    """What changes when a checkpoint is rewritten: the directory's inode and each watched file's inode, size and
    modification time (an atomic swap gives new inodes even within one clock tick)."""
    parts = []
    for name in ("", *WATCHED):
        try:
            st = os.stat(directory / name)
        except OSError:
            parts.append((name, None))
            continue
        parts.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(parts)


class ModelSlot:
    """The current model of a checkpoint directory, reloaded on demand or when its files change.

    Args:
        checkpoint: the directory served.
        device: where models run.
    """

    def __init__(self, checkpoint: str | Path, *, device):
        self.checkpoint = Path(checkpoint)
        self.device = device
        self.current: Served | None = None
        self.error: str | None = None  # the last load's error, until a load succeeds
        self.loading = False
        self.reloads = 0  # successful swaps after the first load
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._failed_at: tuple | None = None  # the signature a load failed on: not tried again until it changes

    def load_now(self) -> Served:
        """Load the checkpoint in this thread and swap it in; raises what the load raised (the old model stays)."""
        with self._lock:
            self.loading = True
            try:
                served = self._read()
            except Exception as exc:
                self.error = f"{self.checkpoint}: {exc}"
                log.error("reload failed, still serving version %s: %s", self._version(), self.error)
                raise
            finally:
                self.loading = False
            if self.current is not None:
                self.reloads += 1
            self.current, self.error = served, None  # the swap: one assignment
            log.info("serving %s (version %d)", self.checkpoint, served.version)
            return served

    def reload(self) -> threading.Thread:
        """Load again in a background thread; the current model answers meanwhile."""
        thread = threading.Thread(target=self._quietly, name="tubelet-reload", daemon=True)
        thread.start()
        return thread

    def watch(self, every: float = 1.0) -> threading.Thread:
        """Poll the directory's signature every `every` seconds and reload when it changed (and is stable)."""

        def loop() -> None:
            while not self._stop.wait(every):
                seen = signature(self.checkpoint)
                served = self.current
                if served is None or seen == served.signature or seen == self._failed_at:
                    continue
                self._quietly()

        thread = threading.Thread(target=loop, name="tubelet-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _quietly(self) -> None:
        try:
            self.load_now()
            self._failed_at = None
        except Exception:
            self._failed_at = signature(self.checkpoint)  # not again until the files change once more

    def _read(self, attempts: int = 5) -> Served:
        """A model read from one complete checkpoint: the signature before and after the read agree."""
        for _ in range(attempts):
            before = signature(self.checkpoint)
            loaded = load(self.checkpoint)
            task = task_of(loaded)
            if signature(self.checkpoint) == before:
                loaded.model.to(self.device).eval()
                return Served(loaded, task, self._version() + 1, before)
            time.sleep(0.2)  # rewritten while read: read again
        raise RuntimeError(f"the checkpoint kept changing while it was read ({attempts} tries)")

    def _version(self) -> int:
        return self.current.version if self.current is not None else 0
