"""Running a model over a dataset's windows: per-window outputs, their mean per item, evaluation windows.

Every task infers through here (validation, ``tubelet evaluate``, ``predict``, ``index``): the task says how a packed
batch becomes per-clip outputs (`Task.forward`) and what they mean (`Task.postprocess`); this module batches the
windows by particle budget, survives files that fail or crash a decoder, and averages windows per item. Under
torchrun each rank runs its share of the batches (`tubelet.distributed.shard`) and every rank gets all the outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from tubelet.data.dataset import budget_batches
from tubelet.data.loader import iterate_batches
from tubelet.distributed import gather, shard, sharded, world
from tubelet.nn.device import autocast
from tubelet.progress import bar

log = logging.getLogger("tubelet.tasks")


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    dataset,
    *,
    forward: Callable[[torch.nn.Module, object], torch.Tensor] | None = None,
    budget: int,
    device: torch.device,
    precision: str = "auto",
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    targets: Callable | None = None,
    collected: dict | None = None,
    desc: str = "inference",
) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    """`forward(model, packed)` (default ``model(packed)``) of every item of `dataset`, in float32.

    Args:
        targets: ``targets(batch)`` -> {name: (B, ...) tensor}, collected per item into `collected` ({name: (n, k)
            float32, NaN rows for items that failed}) when both are given: what a task scores its outputs against
            when the targets come from the clips themselves (pixels, a signal).
        desc: the progress bar's label (`tubelet.progress`: on a terminal only).

    Returns:
        outputs: (len(dataset), K) float32 with NaN rows for items that failed to decode; None when none decoded.
        failed: (path, reason) of clips that could not be read.
    """
    forward = forward or (lambda m, packed: m(packed))
    model.eval()
    estimates = dataset.estimates()
    batches = budget_batches(estimates, budget, shuffle=False)
    here = world()
    batches = shard(batches, estimates, ranks=here.size, rank=here.rank)  # under torchrun: this rank's share
    parts: list[tuple[list[int], np.ndarray, dict]] = []  # (items, outputs (B, K), targets {name: (B, k)})
    failed: list[tuple[str, str]] = []
    loaded = iterate_batches(dataset, batches, workers=workers, on_crash=lambda p, r: failed.append((p, r)))
    in_step = here.distributed and sharded(model)  # every rank must run as many forward passes (they gather)
    last = None
    for batch in bar(loaded, total=len(batches), desc=desc, unit="batch", leave=False, disable=not here.main):
        failed.extend((it.path, it.error) for it in batch.failed)
        if batch.packed is None:
            if in_step and last is not None:  # nothing decoded here: a pass over the last batch, thrown away
                with autocast(device, precision):
                    forward(model, last)
            continue
        last = batch.packed.to(device) if in_step else None
        with autocast(device, precision):
            values = forward(model, batch.packed.to(device))
        values = values.float().reshape(len(batch.indices), -1).cpu().numpy()  # (B, K)
        wanted = {}
        if targets is not None and collected is not None:
            wanted = {k: v.float().reshape(len(batch.indices), -1).cpu().numpy() for k, v in targets(batch).items()}
        parts.append((batch.indices, values, wanted))
        if on_batch is not None:
            on_batch(len(batch.indices))
    if here.distributed:  # every rank gets every rank's outputs (a repeated batch just writes its rows again)
        shares = gather((parts, failed))
        parts = [part for share, _ in shares for part in share]
        failed = list(dict.fromkeys(f for _, share in shares for f in share))
    out = None
    for indices, values, wanted in parts:
        if out is None:
            out = np.full((len(dataset), values.shape[1]), np.nan, dtype=np.float32)
        out[indices] = values
        for name, value in wanted.items():
            if name not in collected:
                collected[name] = np.full((len(dataset), value.shape[1]), np.nan, dtype=np.float32)
            collected[name][indices] = value
    return out, failed


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, C) logits (NaN rows stay NaN)."""
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def mean_over_videos(values: np.ndarray, videos: list[int], count: int) -> np.ndarray:
    """Average window outputs (n_windows, K) per video -> (count, K); NaN rows (failed windows) skipped."""
    out = np.full((count, values.shape[1]), np.nan, dtype=np.float32)
    videos = np.asarray(videos)
    for v in range(count):
        rows = values[videos == v]
        rows = rows[~np.isnan(rows).any(axis=1)]
        if len(rows):
            out[v] = rows.mean(axis=0)
    return out


def view_windows(data, clip_seconds: float, views: int) -> list[tuple[int, float, float]]:
    """`views` evenly spaced windows (video index, start s, end s) per sample of `data` (a `VideoDataset`), inside the
    sample's own span: its manifest ``start``/``end`` when it has them, else the whole video. One window when the span
    is no longer than a window."""
    windows = []
    for v, (sample, info) in enumerate(zip(data.samples, data.infos)):
        lo = sample.start or 0.0
        hi = min(sample.end or info.duration_s, info.duration_s)
        span = hi - lo
        if span <= clip_seconds or views <= 1:
            start = lo + max(0.0, (span - clip_seconds) / 2)
            windows.append((v, start, min(hi, start + clip_seconds)))
            continue
        for k in range(views):
            start = lo + (span - clip_seconds) * k / (views - 1)
            windows.append((v, start, start + clip_seconds))
    return windows


def windowed_outputs(
    task, model, dataset, windows: list, count: int, *, budget: int, device, precision: str = "auto",
    workers: int = 0, targets: dict | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:  # fmt: skip
    """(count, K') the task's predictions (`Task.postprocess` of its outputs) averaged over each item's windows (NaN
    rows: nothing decoded), and the (path, reason) of every file that failed, each reported once here.

    Args:
        targets: when a dict, filled with the task's targets (`Task.targets`) averaged per item the same way.
    """
    collected: dict = {}
    outputs, failed = run_model(
        model, dataset, forward=task.forward, budget=budget, device=device, precision=precision, workers=workers,
        targets=task.targets if targets is not None else None, collected=collected, desc="evaluate",
    )  # fmt: skip
    videos = [w[0] for w in windows]
    if targets is not None:
        targets.update({name: mean_over_videos(value, videos, count) for name, value in collected.items()})
    for path, reason in failed:
        log.warning("skipping %s: %s", path, reason)
    if outputs is None:
        raise RuntimeError("no clip could be decoded")
    return mean_over_videos(task.postprocess(outputs), videos, count), failed
