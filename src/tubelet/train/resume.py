"""Resuming a training run from its ``last/`` checkpoint: what the loop saves there, and getting it back.

A recipe's loop keeps its progress in one JSON-able dict (`loop_state`): optimizer steps, the epoch and the batch
within it, the best validation metric and the evaluations since, and the clips skipped. `trainer_state` packs
that dict with the optimizer, the schedule and the RNG states for `tubelet.checkpoint.save_checkpoint`;
`resume` restores all of it into a freshly built model, optimizer and schedule. Video fine-tuning, the fusion
recipes (audio-visual classification, question answering) and retrieval share both, so a run of any of them continues
the same way, through the one loop that keeps `loop_state` (`tubelet.train.fit`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from tubelet import checkpoint
from tubelet.distributed import sharded
from tubelet.errors import ConfigError
from tubelet.train.parallel import load_full_state

log = logging.getLogger("tubelet.train")


def loop_state(*, ranks: int = 1) -> dict:
    """The progress of a run that has not started: every key a resumable loop keeps.

    Args:
        ranks: how many processes train it (torchrun's world size): a resume needs as many.
    """
    return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "bad_epochs": 0, "skipped": [], "ranks": ranks}


def check_ranks(state: dict, ranks: int, directory: str | os.PathLike) -> None:
    """Refuse to resume a run on another number of processes than it trained on (runs from before ``ranks`` was
    saved trained on one).

    The number of processes is part of the run: each optimizer step takes ``accum_steps`` batches on each, and the
    schedule's length and the position inside an epoch count in those steps, so on another number the batches
    would neither be the same nor continue where they stopped.

    Raises:
        ConfigError: naming both numbers and the command that resumes it.
    """
    saved = state.get("ranks", 1)
    if saved != ranks:
        how = "without torchrun" if saved == 1 else f"with torchrun --nproc_per_node (x --nnodes) = {saved}"
        raise ConfigError(
            f"resume: {directory} was trained on {saved} process{'es' if saved > 1 else ''}, this is {ranks}; "
            f"resume it {how}, or start a new run (--out) from its weights (--model {Path(directory).parent}/best)"
        )
    state["ranks"] = ranks


def trainer_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
    *,
    module: nn.Module | None = None,
    module_state: dict | None = None,
    optimizer_state: dict | None = None,
) -> dict:
    """The ``trainer`` argument of `save_checkpoint`: optimizer, schedule, the loop's `state` and the RNG now.

    Args:
        module: the training module when it is not the model saved as ``model.safetensors`` (a peft wrapper
            whose adapters are merged into the saved copy); its own state is then saved too.
        module_state, optimizer_state: the full states when they are not the objects' own (gathered from FSDP
            shards, `tubelet.train.parallel.full_state`).
    """
    optim = optimizer_state if optimizer_state is not None else optimizer.state_dict()
    trainer = {"optimizer": optim, "scheduler": scheduler.state_dict(), "state": state, "rng": True}
    if module is not None:
        trainer["module"] = module_state if module_state is not None else module.state_dict()
    return trainer


def resume(
    directory: str | os.PathLike,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
    trainer: nn.Module | None = None,
) -> bool:
    """Continue from a run's ``last/`` when it holds trainer state; True when it did.

    Loads the weights into `module` (the saved training module's state when there is one, else
    ``model.safetensors``), the optimizer, the schedule and the RNG states, and updates `state` in place. A
    directory without trainer state is logged and the run starts fresh.

    Args:
        module, optimizer, scheduler: built as the saved run built them (same parameters, same order, same
            frozen ones).
        trainer: `module` wrapped for the ranks (`tubelet.train.parallel.wrap`): FSDP shards load the full saved
            states through it.

    Raises:
        ConfigError: the saved state does not fit (one line naming the file).
    """
    if not checkpoint.has_trainer(directory):
        log.warning("--resume: %s holds no trainer state; starting fresh", directory)
        return False
    load_optimizer = None
    if sharded(trainer):
        load_optimizer = lambda saved: load_full_state(trainer, module, None, optimizer, saved)  # noqa: E731
    restored = checkpoint.load_trainer(
        directory, optimizer=optimizer, scheduler=scheduler, load_optimizer=load_optimizer
    )
    module_state = restored.pop("module_state", None)
    state.update(restored)
    load_full_state(trainer, module, module_state or checkpoint.load_state_dict(directory))
    log.info("resumed from %s at step %d (epoch %d)", directory, state["step"], state["epoch"])
    return True
