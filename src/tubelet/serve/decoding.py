"""Reading uploads in worker processes: a decoder that kills its process costs that upload, not the server.

FFmpeg is native code. A hostile or broken file can crash it (a segfault), and in the server's own process that
would take every request down with it. `Decoders` runs each probe and each decode in a small process pool. When a
worker dies, the pool is rebuilt and the job tried once more, alone: a request that only shared the pool with the
culprit succeeds on the retry, and the file that crashes twice is answered as undecodable (`DecoderCrashed`).

Training survives such files the same way in its DataLoader workers (`tubelet.data.loader`).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger("tubelet.serve")


class DecoderCrashed(Exception):
    """The file crashed the decoder's process twice."""


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # decoding workers share the cores with the model


def decode_all(dataset) -> list:
    """Every item of a `tubelet.data.dataset.ClipDataset` (decoded windows, or the reason each failed)."""
    return [dataset[i] for i in range(len(dataset))]


class Decoders:
    """`run(fn, *args)` in one of `workers` processes (0: in the calling thread, no isolation)."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # fork: a worker starts in milliseconds with tubelet already imported (spawn would import torch
                # again); the pool is started on first use, from a request's thread.
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context(method), initializer=_one_thread
                )
            return self._pool

    def _broken(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def run(self, fn, *args):
        """``fn(*args)`` in a worker process; its exceptions are raised here as they were raised there.

        Raises:
            DecoderCrashed: the worker running it died twice in a row.
        """
        if self.workers == 0:
            return fn(*args)
        for attempt in range(2):
            pool = self._current()
            try:
                return pool.submit(fn, *args).result()
            except BrokenProcessPool:
                self._broken(pool)
                log.warning("a decoding worker died (attempt %d); the pool is restarted", attempt + 1)
        raise DecoderCrashed("the decoder crashed while reading it")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["DecoderCrashed", "Decoders", "decode_all"]
