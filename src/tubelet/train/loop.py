"""Plain functions the recipes' loops are built from: devices, precision, forward passes, inference."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from tubelet.data.dataset import ClipDataset, budget_batches
from tubelet.data.loader import iterate_batches

log = logging.getLogger("tubelet.train")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (initialisation; sampling and masks take their own seeded streams)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimizer_step(module: torch.nn.Module, optimizer, scheduler, grad_clip: float | None) -> float:
    """Clip the global gradient norm (None: measure only), step the optimizer and the schedule; the norm."""
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf) if params else torch.zeros(())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return float(norm)


def train_epoch(
    module: torch.nn.Module,
    batches: list[list[int]],
    load: Callable[[list[list[int]]], Iterable],
    *,
    state: dict,
    loss_of: Callable,
    optimizer,
    scheduler,
    grad_clip: float | None,
    accum_steps: int,
    total_steps: int,
    on_failed: Callable,
    on_step: Callable,
) -> tuple[int, float]:
    """One pass of gradient-accumulated training over an epoch, from the batch a resumed run had reached.

    The loop the multimodal recipes share. It keeps the run's progress in `state` (`tubelet.train.resume.loop_state`):
    ``step`` and ``batch_in_epoch`` after every optimizer step, and the next ``epoch`` (``batch_in_epoch`` 0) when
    the pass reaches the end of the epoch rather than `total_steps`.

    Args:
        batches: all of the epoch's batches (sample indices); the first ``state["batch_in_epoch"]`` (a multiple of
            `accum_steps`) were trained on before the run was interrupted and are skipped.
        load: batches -> their loaded batches, in order (`tubelet.data.loader.iterate_batches`).
        loss_of: batch -> (loss, clips it averages over), or None when the batch has nothing to learn from.
        on_failed: called with every item of a batch that failed to decode.
        on_step: called as ``on_step(step, grad_norm, seen, loss_sum)`` after each optimizer step.
        total_steps: the most optimizer steps of the run; the pass ends early there.

    Returns:
        (clips learned from in this pass, their summed loss).
    """
    count, skip = len(batches), state["batch_in_epoch"]
    seen, loss_sum = 0, 0.0
    for i, batch in enumerate(load(batches[skip:]), start=skip):
        for item in batch.failed:
            on_failed(item)
        result = loss_of(batch) if batch.packed is not None else None
        if result is not None:
            loss, clips = result
            (loss / accum_steps).backward()
            seen += clips
            loss_sum += loss.item() * clips
        if (i + 1) % accum_steps and i + 1 != count:
            continue
        grad_norm = optimizer_step(module, optimizer, scheduler, grad_clip)
        state["step"], state["batch_in_epoch"] = state["step"] + 1, i + 1
        on_step(state["step"], grad_norm, seen, loss_sum)
        if state["step"] >= total_steps:
            break
    if state["batch_in_epoch"] == count:  # else total_steps ended the run inside this epoch
        state["epoch"], state["batch_in_epoch"] = state["epoch"] + 1, 0
    return seen, loss_sum


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA (``auto`` or ``bf16``); full precision otherwise."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without improvement of a higher-is-better metric."""

    patience: int | None
    best: float | None = None
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record a new value; True when it is the best so far."""
        if self.best is None or value > self.best:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


@torch.no_grad()
def predict_items(
    model: torch.nn.Module,
    dataset: ClipDataset,
    *,
    budget: int,
    device: torch.device,
    precision: str = "auto",
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Class probabilities of every item of `dataset` (NaN rows for items that failed to decode).

    Returns:
        probs: (len(dataset), C) float32.
        failed: (path, reason) of clips that could not be read.
    """
    model.eval()
    batches = budget_batches(dataset.estimates(), budget, shuffle=False)
    probs = None
    failed: list[tuple[str, str]] = []
    for batch in iterate_batches(dataset, batches, workers=workers, on_crash=lambda p, r: failed.append((p, r))):
        failed.extend((it.path, it.error) for it in batch.failed)
        if batch.packed is None:
            continue
        with autocast(device, precision):
            logits = model(batch.packed.to(device))
        p = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if probs is None:
            probs = np.full((len(dataset), p.shape[1]), np.nan, dtype=np.float32)
        probs[batch.indices] = p
        if on_batch is not None:
            on_batch(len(batch.indices))
    if probs is None:
        raise RuntimeError("no clip could be decoded")
    return probs, failed


def mean_over_videos(probs: np.ndarray, videos: list[int], count: int) -> np.ndarray:
    """Average window probabilities (n_windows, C) per video -> (count, C); NaN rows (failed windows) skipped."""
    out = np.full((count, probs.shape[1]), np.nan, dtype=np.float32)
    videos = np.asarray(videos)
    for v in range(count):
        rows = probs[videos == v]
        rows = rows[~np.isnan(rows).any(axis=1)]
        if len(rows):
            out[v] = rows.mean(axis=0)
    return out


def view_windows(durations: list[float], clip_seconds: float, views: int) -> list[tuple[int, float, float]]:
    """`views` evenly spaced windows per video (one when the video is no longer than a window)."""
    windows = []
    for v, duration in enumerate(durations):
        if duration <= clip_seconds or views <= 1:
            start = max(0.0, (duration - clip_seconds) / 2)
            windows.append((v, start, min(duration, start + clip_seconds)))
            continue
        for k in range(views):
            start = (duration - clip_seconds) * k / (views - 1)
            windows.append((v, start, start + clip_seconds))
    return windows


def steps_in(batches: list[list[int]], accum_steps: int) -> int:
    return math.ceil(len(batches) / accum_steps)
