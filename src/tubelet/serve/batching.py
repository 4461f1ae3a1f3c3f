"""Micro-batching: the windows of concurrent requests run as one packed batch (no padding) through one forward.

Each request decodes its own windows in its own thread (`tubelet.data.dataset.Item`s, particles ready) and hands
them to the `MicroBatcher`. Its one worker thread takes the first waiting request, keeps collecting for up to
``max_batch_ms`` or until the particle budget is full, and runs `tubelet.tasks.inference.run_model` over all their
windows at once: packing, the budget split and the forward are the ones ``tubelet predict`` uses. The queue is
bounded: a request that finds it full is refused at once (`QueueFull`, HTTP 429) rather than waiting forever.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from tubelet.data.dataset import Item, collate
from tubelet.tasks.inference import run_model

log = logging.getLogger("tubelet.serve")


class QueueFull(Exception):
    """The batcher's queue holds as many requests as it may: try again later."""


class DecodedWindows:
    """Already decoded items as a dataset `run_model` reads: item i is ``items[i]`` (re-indexed to i)."""

    def __init__(self, items: list[Item], collate_fn=collate):
        self.items = [dataclasses.replace(item, index=i) for i, item in enumerate(items)]
        self.collate = collate_fn
        self.crash_dir = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]

    def estimates(self) -> list[int]:
        """The particles each item really has (a failed one costs nothing)."""
        return [_count(item.particles) for item in self.items]


def _count(particles) -> int:
    if particles is None:
        return 0
    if isinstance(particles, dict):  # a fusion model's clip: modality -> Particles
        return sum(len(p) for p in particles.values())
    return len(particles)


@dataclasses.dataclass
class Job:
    """One request's windows for one served model (jobs of different models never share a batch)."""

    served: object  # the `Served` model the windows were planned for
    items: list[Item]
    collate: object
    future: Future = dataclasses.field(default_factory=Future)


class MicroBatcher:
    """A bounded queue of jobs and one thread that runs them, several at once.

    Args:
        max_batch_ms: how long the worker waits for more requests after the first; 0 runs each request alone.
        budget: particles per forward (`budget_batches` splits a larger collection into several).
        capacity: jobs that may wait; one more is `QueueFull`.
        device: where the model runs.
    """

    def __init__(self, *, max_batch_ms: float, budget: int, capacity: int, device):
        self.max_batch_ms = max_batch_ms
        self.budget = budget
        self.device = device
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self.batches = 0  # forward groups run (a group of requests; `run_model` may split it by budget)
        self.requests = 0  # requests answered
        self.clips = 0  # windows run
        self.largest = 0  # most requests in one group
        self.on_group = None  # (requests, clips, seconds) -> None after each group: the metrics
        self._thread = threading.Thread(target=self._run, name="tubelet-batcher", daemon=True)
        self._thread.start()

    def submit(self, served, items: list[Item], collate_fn=collate) -> Future:
        """Queue a request's decoded windows; the future gives ``(outputs (n, K) or None, failed [(path, reason)])``.

        Raises:
            QueueFull: the queue is full.
        """
        job = Job(served, items, collate_fn)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.queue.maxsize} requests are already waiting") from None
        return job.future

    def depth(self) -> int:
        return self.queue.qsize()

    def close(self) -> None:
        """Stop the worker once the jobs queued before are done (at most 10 s of waiting)."""
        try:
            self.queue.put(None, timeout=10)
        except queue.Full:
            return  # a stuck worker: it is a daemon thread, it goes with the process
        self._thread.join(timeout=10)

    def _collect(self, first: Job) -> tuple[list[Job], Job | None]:
        """`first` and the jobs of the same model that arrive within ``max_batch_ms`` and fit the budget; and a job
        that came but could not join (another model, or the stop sign's None) to run next."""
        jobs, used = [first], sum(_count(it.particles) for it in first.items)
        deadline = time.monotonic() + self.max_batch_ms / 1000
        while used < self.budget:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                job = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if job is None or job.served is not first.served:
                return jobs, job
            jobs.append(job)
            used += sum(_count(it.particles) for it in job.items)
        return jobs, None

    def _run(self) -> None:
        pending: Job | None = None
        while True:
            job = pending if pending is not None else self.queue.get()
            pending = None
            if job is None:
                return
            jobs, pending = self._collect(job) if self.max_batch_ms > 0 else ([job], None)
            try:
                self._forward(jobs)
            except BaseException as exc:  # a failed forward fails its requests, never the worker
                log.exception("batched forward failed")
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)

    def _forward(self, jobs: list[Job]) -> None:
        served = jobs[0].served
        data = DecodedWindows([it for j in jobs for it in j.items], jobs[0].collate)
        began = time.perf_counter()
        with served.lock:  # one forward at a time on a model (explain uses it too)
            outputs, failed = run_model(
                served.loaded.model, data, forward=served.task.forward, budget=self.budget, device=self.device,
                desc="serve",
            )  # fmt: skip
        seconds = time.perf_counter() - began
        self.batches += 1
        self.requests += len(jobs)
        self.clips += len(data)
        self.largest = max(self.largest, len(jobs))
        if self.on_group is not None:
            self.on_group(len(jobs), len(data), seconds)
        start = 0
        for j in jobs:
            end = start + len(j.items)
            mine = None if outputs is None else outputs[start:end]
            if mine is not None and np.isnan(mine).all():
                mine = None
            paths = {it.path for it in j.items}
            j.future.set_result((mine, [(p, r) for p, r in failed if p in paths]))
            start = end
