"""The one training loop: every task, every model kind, the same progress, logs, checkpoints and resume.

A task says how a batch becomes a loss (`loss_of`) and how a model is scored on held-out data (`validate`); `fit`
owns the rest: particle-budget batches per epoch (seeded, so a resumed run replays them), gradient accumulation,
clipping, the schedule, the progress bar, ``metrics.jsonl`` and TensorBoard (`MetricsLog`), ``best/`` and
``last/`` (with trainer state, every epoch and every ``save_every_steps`` steps), early stopping in the metric's
direction, quarantine of files that crash a decoder worker (on every later epoch and after a resume), and resume to
the exact batch: an epoch cut by ``max_steps`` is not finished, so ``--resume`` with a larger budget continues
inside it. Under torchrun the same loop runs on every rank (`fit`), each on its share of every step's batches.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from tubelet.data.dataset import budget_batches
from tubelet.data.loader import iterate_batches
from tubelet.distributed import assign, gather, reduce_sum, sharded, world
from tubelet.errors import DataError
from tubelet.progress import bar
from tubelet.tasks.base import StepLoss
from tubelet.train.metrics_log import MetricsLog
from tubelet.train.parallel import Trainer, gathered, local_value, sync

log = logging.getLogger("tubelet.train")


@dataclass
class Schedule:
    """The loop's budget, from a run's config: how many epochs, steps and particles, how to step."""

    epochs: int
    batch_particles: int
    max_clips_per_batch: int | None = None
    min_steps_per_epoch: int = 0
    accum_steps: int = 1
    grad_clip: float | None = 1.0
    max_steps: int | None = None
    save_every_steps: int = 0
    early_stopping: int | None = None
    seed: int = 0
    workers: int = 0
    ranks: int = 1  # processes training together: each optimizer step takes accum_steps batches on each

    @property
    def batches_per_step(self) -> int:
        """The global batch, in batches: ``accum_steps`` on each of ``ranks`` processes."""
        return self.accum_steps * self.ranks

    @classmethod
    def of(cls, cfg) -> Schedule:
        """The schedule fields of any run config (fields it lacks keep their defaults)."""
        names = cls.__dataclass_fields__
        return cls(**{name: getattr(cfg, name) for name in names if hasattr(cfg, name)})


def epoch_batches(estimates: list[int], schedule: Schedule, epoch: int, exclude=frozenset()) -> list[list[int]]:
    """The batches (item indices) of one epoch: shuffled per (seed, epoch), each within the particle budget.

    A small dataset gets batches of at most len / ``min_steps_per_epoch`` clips (and `Schedule.batches_per_step`
    times more batches), so that an epoch makes that many optimizer steps: with the budget alone, 100 clips make
    about 8 steps an epoch, and a model from scratch needs hundreds of steps to find motion
    (benchmarks/bench_motion.py).
    """
    cap = schedule.max_clips_per_batch
    if schedule.min_steps_per_epoch:
        fewer = max(1, len(estimates) // (schedule.min_steps_per_epoch * schedule.batches_per_step))
        cap = fewer if cap is None else min(cap, fewer)
    return budget_batches(
        estimates, schedule.batch_particles, shuffle=True, seed=schedule.seed, epoch=epoch, max_clips=cap,
        exclude=exclude,
    )  # fmt: skip


def steps_in(batches: list[list[int]], batches_per_step: int) -> int:
    return math.ceil(len(batches) / batches_per_step)


def total_steps(estimates: list[int], schedule: Schedule) -> tuple[int, int]:
    """(optimizer steps of the whole run, steps of one epoch) for the schedule."""
    per_step = schedule.batches_per_step
    per_epoch = [steps_in(epoch_batches(estimates, schedule, e), per_step) for e in range(schedule.epochs)]
    total = sum(per_epoch)
    if schedule.max_steps is not None:
        total = min(total, schedule.max_steps)
    return total, per_epoch[0]


def optimizer_step(module: torch.nn.Module, optimizer, scheduler, grad_clip: float | None) -> float:
    """Clip the global gradient norm (None: measure only), step the optimizer and the schedule; the norm."""
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else math.inf) if params else torch.zeros(())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return local_value(norm)


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without improvement, in the metric's direction."""

    patience: int | None
    best: float | None = None
    bad_epochs: int = 0
    higher_is_better: bool = True

    def update(self, value: float) -> bool:
        """Record a new value; True when it is the best so far."""
        better = self.best is None or (value > self.best if self.higher_is_better else value < self.best)
        if better:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


def fit(
    module: torch.nn.Module,
    dataset,
    *,
    schedule: Schedule,
    optimizer: torch.optim.Optimizer,
    scheduler,
    steps: int,
    state: dict,
    loss_of: Callable[..., StepLoss | None],
    save: Callable[[str, bool], Path | None],
    out: Path,
    trainer: torch.nn.Module | None = None,
    validate: Callable[[], dict | None] | None = None,
    metric: str = "loss",
    higher_is_better: bool = False,
    judge_train_loss: bool = False,
    on_epoch_end: Callable[[int], dict] | None = None,
    name: str = "",
    data: str = "",
) -> dict:
    """Train `module` on `dataset` until `steps` optimizer steps, ``schedule.epochs`` or early stopping.

    Under torchrun every rank calls it with the same arguments: each optimizer step takes the next
    ``ranks * accum_steps`` batches of the epoch, dealt to the ranks by `tubelet.distributed.assign` (the same
    batches, in the same steps, as one process with ``accum_steps * ranks``), gradients are all-reduced once per
    step, and the loss, clip counts and files that failed are summed over the ranks at each step, so every rank
    takes the same decisions (skip a step, quarantine a file, stop early). Only rank 0 shows progress and writes
    ``metrics.jsonl``, TensorBoard and the epoch lines; `save` is called on every rank (a sharded model is
    gathered) and writes on rank 0.

    Args:
        module: what trains (the model, or its LoRA wrapper); ``train()`` is set each epoch.
        dataset: a `tubelet.data.dataset.ClipDataset` (or subclass): ``set_epoch``, ``estimates``,
            ``item_indices_of``.
        steps: the run's optimizer steps (`total_steps`), the schedule's length.
        state: `tubelet.train.resume.loop_state()`, or the state a resume restored; updated in place and saved
            in ``last/``.
        loss_of: ``loss_of(module, batch, epoch, index)`` -> `StepLoss`, or None when the batch has nothing to learn
            from; `index` is the batch's place in the epoch, the same on any number of ranks.
        save: ``save(name, with_trainer)`` writes ``out/name`` (``best`` without, ``last`` with trainer state).
        trainer: `module` wrapped for the ranks (`tubelet.train.parallel.wrap`); None: one process.
        validate: ``validate()`` -> held-out metrics holding `metric` (None: nothing to judge this epoch); None: no
            validation, ``best/`` is the last weights.
        metric, higher_is_better: what picks ``best/`` and drives early stopping.
        judge_train_loss: there is no held-out set (pretraining): `metric` is the epoch's mean training loss.
        on_epoch_end: ``on_epoch_end(epoch)`` -> more keys for the epoch's line (e.g. pictures); rank 0 only, or
            every rank when the model is FSDP-sharded (it writes on rank 0).
        name: the arm's name, on the progress bar and each epoch's line (empty: one model).
        data: the data's name, for the error when nothing decodes.

    Returns:
        ``steps``, ``epochs_run``, ``best_val_<metric>`` and ``skipped`` ([{path, reason}]). A resumed run that
        had finished trains nothing and writes no checkpoint.
    """
    here = world()
    trainer = trainer if trainer is not None else Trainer(module)
    estimates = dataset.estimates()
    quarantine: set[int] = set()
    for path, _ in state["skipped"]:  # files that crashed a worker before a resume stay out
        quarantine.update(dataset.item_indices_of(path))
    stopper = EarlyStopping(schedule.early_stopping, state["best"], state["bad_epochs"], higher_is_better)
    # A fresh log, or the resumed run's up to its step; rank 0 writes it.
    metrics_log = MetricsLog(out, from_step=state["step"]) if here.main else None
    accum = schedule.accum_steps
    trained = False
    spare = Spare(dataset, loss_of, trainer)

    for epoch in range(state["epoch"], schedule.epochs):
        if state["step"] >= steps or stopper.should_stop:
            break
        trained = True
        dataset.set_epoch(epoch)
        batches = epoch_batches(estimates, schedule, epoch, quarantine)
        skip = state["batch_in_epoch"]  # batches of this epoch trained on before a resume
        micros = assign(batches[skip:], estimates, ranks=here.size, accum_steps=accum, rank=here.rank, first=skip)
        module.train()
        prefix = f"{name} " if name else ""
        progress = bar(
            total=len(batches), initial=skip, desc=f"{prefix}epoch {epoch + 1}/{schedule.epochs}", unit="batch",
            disable=not here.main,
        )  # fmt: skip
        clips, weight_sum, loss_sum, started = 0, 0.0, 0.0, time.perf_counter()
        step = Tally()  # this rank's share of one optimizer step
        finished = True
        failed: list[tuple[str, str]] = []  # files that failed here since the last step, quarantined at its end
        shares = [m.items for m in micros]
        loader = iter(iterate_batches(dataset, shares, workers=schedule.workers, on_crash=failed_here(failed)))
        for n, micro in enumerate(micros):
            waited = time.perf_counter()
            batch = next(loader)
            step.data_s += time.perf_counter() - waited
            for item in batch.failed:
                log.warning("skipping %s: %s", item.path, item.error)
                failed.append((item.path, item.error))
            with sync(trainer, micro.ends_step):
                result = None
                if batch.packed is not None:
                    result = trainer(partial(loss_of, batch=batch, epoch=epoch, index=micro.position))
                counts = result is not None and micro.weight > 0  # a repeat (weight 0) runs only to keep in step
                if counts:
                    spare.keep(batch, epoch, micro.position)
                if result is None and micro.ends_step and here.distributed:
                    result = spare.loss(epoch, micros)  # this rank joins the step's all-reduce with a zero gradient
                if result is not None:
                    (result.loss * (1.0 if counts else 0.0) / accum).backward()
                if counts:
                    step.add(result)
            if not micro.ends_step:
                continue
            weight, loss_total, step_clips, failures = reduce_sum([step.weight, step.loss, step.clips, len(failed)])
            if failures:  # every rank quarantines what failed on any rank; rank 0 reports the others'
                for path, reason, rank in _new_failures(gather(failed), state["skipped"]):
                    state["skipped"].append((path, reason))
                    quarantine.update(dataset.item_indices_of(path))
                    if rank != here.rank and here.main:
                        log.warning("skipping %s (on rank %d): %s", path, rank, reason)
            failed.clear()
            reached = min(skip + (n // accum + 1) * accum * here.size, len(batches))  # the step's global batches
            progress.update(reached - progress.n)
            if weight == 0:  # every clip of these batches failed to decode: nothing to learn from
                optimizer.zero_grad(set_to_none=True)
                step = Tally()
                continue
            grad_norm = optimizer_step(module, optimizer, scheduler, schedule.grad_clip)
            state["step"], state["batch_in_epoch"] = state["step"] + 1, reached
            clips += int(step_clips)
            weight_sum += weight
            loss_sum += loss_total
            rate = clips / max(time.perf_counter() - started, 1e-9)
            progress.set_postfix(loss=f"{loss_sum / max(weight_sum, 1):.4f}", clips_s=f"{rate:.1f}")
            if metrics_log is not None:
                metrics_log.write(
                    "train", state["step"], loss=loss_total / weight, lr=scheduler.get_last_lr()[0],
                    grad_norm=grad_norm, clips_per_s=rate, epoch=epoch, data_s=round(step.data_s, 4),
                    step_s=round(time.perf_counter() - step.started, 4), **step.logs,
                )  # fmt: skip
            step = Tally()
            if schedule.save_every_steps and state["step"] % schedule.save_every_steps == 0:
                save("last", True)
            if state["step"] >= steps and n + 1 < len(micros):
                finished = False  # the budget ended inside this epoch: a resume continues from this batch
                break
        progress.close()
        if clips == 0 and skip < len(batches):
            raise DataError(f"{data}: no training clip could be decoded in epoch {epoch + 1} (see warnings)")
        if finished:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        train_loss = loss_sum / weight_sum if weight_sum else None
        rate = clips / max(time.perf_counter() - started, 1e-9) if clips else None  # None: nothing left to train
        if metrics_log is not None:
            metrics_log.write("epoch", state["step"], loss=train_loss, clips_per_s=rate, epoch=epoch + 1)
        line = {"arm": name} if name else {}
        line.update(
            epoch=epoch + 1,
            train_loss=None if train_loss is None else round(train_loss, 5),
            clips_per_s=None if rate is None else round(rate, 2),
        )
        if judge_train_loss:  # no held-out set (pretraining): best/ is the epoch of the lowest training loss
            metrics = {metric: train_loss} if train_loss is not None else None
        else:
            with gathered(trainer):
                metrics = validate() if validate is not None else None
            if metrics is not None:
                numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                line.update({f"val_{k}": round(v, 4) for k, v in numbers.items() if k != "num_samples"})
                if metrics_log is not None:
                    metrics_log.write("val", state["step"], epoch=epoch + 1, **numbers)
        if metrics is not None:
            improved = stopper.update(metrics[metric])
            state["best"], state["bad_epochs"] = stopper.best, stopper.bad_epochs
            if improved:
                best = save("best", False)
                if here.main:
                    (Path(best) / "val_metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        save("last", True)
        if on_epoch_end is not None and (here.main or sharded(trainer)):  # FSDP: a forward pass needs every rank
            with gathered(trainer):
                line.update(on_epoch_end(epoch + 1))
        if here.main:
            print(json.dumps(line), flush=True)
        if stopper.should_stop:
            log.info("early stopping: no %s improvement in %d validations", metric, stopper.bad_epochs)
    if trained and ((validate is None and not judge_train_loss) or not (out / "best").exists()):
        save("best", False)  # nothing to choose by: the last weights are the best we know
    if metrics_log is not None:
        metrics_log.close()
    return {
        "steps": state["step"],
        "epochs_run": state["epoch"],
        f"best_val_{metric}": stopper.best,
        "skipped": [{"path": p, "reason": r} for p, r in state["skipped"]],
    }


@dataclass
class Tally:
    """One rank's share of an optimizer step: loss summed over its weight, clips, logs, and time waiting for data."""

    weight: float = 0.0
    loss: float = 0.0
    clips: int = 0
    logs: dict = field(default_factory=dict)
    data_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepLoss) -> None:
        self.weight += result.weight
        self.loss += result.loss.item() * result.weight
        self.clips += result.clips
        self.logs = result.logs


class Spare:
    """The last batch this rank learned from, to join a step's gradient all-reduce when it has nothing of its own.

    Under DDP every rank must run a backward pass in each step (its last micro-batch all-reduces the gradients):
    a rank whose batches all failed to decode runs one on the spare batch with the loss times zero, so it adds
    nothing to the gradient and the other ranks do not wait forever.
    """

    def __init__(self, dataset, loss_of: Callable, trainer: torch.nn.Module):
        self.dataset, self.loss_of, self.trainer = dataset, loss_of, trainer
        self.kept = None

    def keep(self, batch, epoch: int, position: int) -> None:
        self.kept = (batch, epoch, position)

    def loss(self, epoch: int, micros: list) -> StepLoss:
        if self.kept is None:  # nothing learned from yet: the first of this rank's batches that decodes
            for micro in micros:
                for batch in iterate_batches(self.dataset, [micro.items]):
                    if batch.packed is not None:
                        self.kept = (batch, epoch, micro.position)
                        break
                if self.kept is not None:
                    break
            else:
                raise DataError(f"rank {world().rank}: no clip of its share of the data decodes (see warnings)")
        batch, kept_epoch, position = self.kept
        result = self.trainer(partial(self.loss_of, batch=batch, epoch=kept_epoch, index=position))
        if result is None:
            raise DataError(f"rank {world().rank}: its spare batch gives no loss")
        return result


def failed_here(failed: list[tuple[str, str]]) -> Callable[[str, str], None]:
    """The loader's ``on_crash``: a file that crashed a decoder worker joins this step's failures."""
    return lambda path, reason: failed.append((path, reason))


def _new_failures(per_rank: list[list[tuple[str, str]]], known: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """(path, reason, rank) of the files that failed on any rank, each once, leaving out those already quarantined."""
    seen = {path for path, _ in known}
    new = []
    for rank, failures in enumerate(per_rank):
        for path, reason in failures:
            if path not in seen:
                seen.add(path)
                new.append((path, reason, rank))
    return new
