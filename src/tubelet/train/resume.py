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

import torch
from torch import nn

from tubelet import checkpoint

log = logging.getLogger("tubelet.train")


def loop_state() -> dict:
    """The progress of a run that has not started: every key a resumable loop keeps."""
    return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "bad_epochs": 0, "skipped": []}


def trainer_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
    *,
    module: nn.Module | None = None,
) -> dict:
    """The ``trainer`` argument of `save_checkpoint`: optimizer, schedule, the loop's `state` and the RNG now.

    Args:
        module: the training module when it is not the model saved as ``model.safetensors`` (a peft wrapper
            whose adapters are merged into the saved copy); its own state is then saved too.
    """
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state, "rng": True}
    if module is not None:
        trainer["module"] = module.state_dict()
    return trainer


def resume(
    directory: str | os.PathLike,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
) -> bool:
    """Continue from a run's ``last/`` when it holds trainer state; True when it did.

    Loads the weights into `module` (the saved training module's state when there is one, else
    ``model.safetensors``), the optimizer, the schedule and the RNG states, and updates `state` in place. A
    directory without trainer state is logged and the run starts fresh.

    Args:
        module, optimizer, scheduler: built as the saved run built them (same parameters, same order, same
            frozen ones).

    Raises:
        ConfigError: the saved state does not fit (one line naming the file).
    """
    if not checkpoint.has_trainer(directory):
        log.warning("--resume: %s holds no trainer state; starting fresh", directory)
        return False
    restored = checkpoint.load_trainer(directory, optimizer=optimizer, scheduler=scheduler)
    module_state = restored.pop("module_state", None)
    state.update(restored)
    module.load_state_dict(module_state or checkpoint.load_state_dict(directory))
    log.info("resumed from %s at step %d (epoch %d)", directory, state["step"], state["epoch"])
    return True
