"""Loading batches in parallel workers and surviving decoders that crash them.

A corrupt file normally raises inside `ClipDataset` and is skipped there. A decoder that *kills* its
process (a segfault inside FFmpeg) takes a DataLoader worker down with it; torch then raises in the main
process. `iterate_batches` catches that, reads which file the dead worker was decoding (each worker writes
it to ``crash_dir/<pid>`` before decoding), reports and excludes that file, and restarts the loader on the
batches not yet delivered. Training goes on.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator

import torch

from tubelet.data.dataset import Batch, ClipDataset, collate

log = logging.getLogger("tubelet.data")

# torch's message when a worker dies: "DataLoader worker (pid(s) 1234, 1235) exited unexpectedly" or
# "DataLoader worker (pid 1234) is killed by signal: Segmentation fault."
_DEAD_WORKER = re.compile(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\)")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; several BLAS threads per worker would oversubscribe the cores


def iterate_batches(
    dataset: ClipDataset,
    batches: list[list[int]],
    *,
    workers: int = 0,
    on_crash: Callable[[str, str], None] | None = None,
    max_crashes: int = 20,
) -> Iterator[Batch]:
    """Yield one packed `Batch` per entry of `batches`, decoding in `workers` processes.

    Args:
        dataset: the clips.
        batches: lists of dataset indices (e.g. from `budget_batches`).
        workers: DataLoader worker processes (0 decodes in this process).
        on_crash: called with (path, reason) when a file crashed a worker; it is then left out.
        max_crashes: give up (RuntimeError) after this many worker deaths in one pass.
    """
    # A dataset whose items are not single-modality `Particles` brings its own `collate` (e.g. `AVClipDataset`).
    collate_fn = getattr(dataset, "collate", collate)
    workers = min(workers, len(batches))  # a process per batch at most: one file's few windows start no idle ones
    if workers == 0:
        for indices in batches:
            yield collate_fn([dataset[i] for i in indices])
        return
    own_dir = dataset.crash_dir is None
    if own_dir:
        dataset.crash_dir = tempfile.mkdtemp(prefix="tubelet-decoding-")
    try:
        remaining = [list(b) for b in batches]
        crashes = 0
        _without_sigchld_handler()
        while remaining:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=remaining,
                num_workers=workers,
                collate_fn=collate_fn,
                worker_init_fn=_worker_init,
                multiprocessing_context="fork" if "fork" in _start_methods() else None,
            )
            delivered = 0
            batches_of = iter(loader)
            try:
                for batch in batches_of:
                    delivered += 1
                    yield batch
                remaining = []
            except (RuntimeError, ConnectionError, EOFError) as exc:
                death = _worker_death(exc)
                # Stop and unregister the loader's workers now: torch's SIGCHLD handler would otherwise raise about
                # the dead one again, anywhere in the code that follows.
                getattr(batches_of, "_shutdown_workers", lambda: None)()
                dead = _dead_worker_files(death, dataset.crash_dir)
                if dead is None:
                    raise
                exc = death
                crashes += 1
                if crashes > max_crashes:
                    raise RuntimeError(f"{crashes} DataLoader workers crashed; giving up") from exc
                reason = " ".join(str(exc).split())
                bad = set()
                for path in dead:
                    log.warning("skipping %s: the decoder crashed its worker (%s)", path, reason)
                    if on_crash is not None:
                        on_crash(path, reason)
                    bad.update(dataset.item_indices_of(path))
                # Batches already delivered are done; the rest run again without the culprit. A batch left empty is
                # still delivered (empty): callers count batches (the training loop's steps, a resume's position).
                remaining = [[i for i in b if i not in bad] for b in remaining[delivered:]]
    finally:
        if own_dir:
            _clear(dataset.crash_dir)
            os.rmdir(dataset.crash_dir)
            dataset.crash_dir = None


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _without_sigchld_handler() -> None:
    """Keep torch from installing its SIGCHLD handler: it raises a worker's death as an exception wherever the main
    thread happens to be (inside a training step, an optimizer update), where nothing can skip the file. Without it
    the loader reports a dead worker from inside its own iteration (its queue check: an error, or every 5 s), where
    `iterate_batches` catches it. Set before the first loader of the process; one set earlier stays."""
    from torch.utils.data._utils import signal_handling

    signal_handling._SIGCHLD_handler_set = True


def _worker_death(exc: BaseException, wait_s: float = 5.0) -> BaseException:
    """The RuntimeError that names the dead worker(s): `exc` itself, or, when the death first surfaced as a broken
    connection to that worker (its tensors' file descriptors), the error torch's worker check raises once the
    process is seen dead (within `wait_s`); `exc` when no worker died."""
    if isinstance(exc, RuntimeError):
        return exc
    from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            _error_if_any_worker_fails()
        except RuntimeError as death:
            return death
        time.sleep(0.05)
    return exc


def _dead_worker_files(exc: BaseException, crash_dir: str) -> list[str] | None:
    """Files the dead worker(s) were decoding, or None when `exc` is not a worker death."""
    match = _DEAD_WORKER.search(str(exc))
    if match is None:
        return None
    pids = [p.strip() for p in match.group(1).split(",") if p.strip()]
    files = []
    for pid in pids:
        marker = os.path.join(crash_dir, pid)
        if os.path.exists(marker):
            with open(marker) as f:
                files.append(f.read())
            os.remove(marker)
    _clear(crash_dir)  # markers of the healthy workers that were torn down with the loader
    return files


def _clear(crash_dir: str) -> None:
    for name in os.listdir(crash_dir):
        os.remove(os.path.join(crash_dir, name))
