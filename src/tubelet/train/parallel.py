"""The training module on several processes: PyTorch's DistributedDataParallel, or FSDP2 for models too big for one
device, behind one field (``parallel``), and what both need from the loop.

A task's loss may call more than the model (pretraining calls the encoder, then the decoder beside it), and DDP and
FSDP only synchronise what runs inside their wrapper's ``forward``. So the loop hands the whole loss to the wrapper:
`Trainer` is a module holding the training module whose ``forward(loss_of)`` returns ``loss_of(module)``. On one
process it is that module, unwrapped; under torchrun it is DDP (gradients all-reduced in the backward pass of a
step's last micro-batch, `sync`) or FSDP2 (every transformer block and then the whole sharded over the ranks,
gathered for each forward).

A checkpoint is always one file of full tensors, written by rank 0 (`full_state`), so every command reads a run
trained on any number of processes; resuming loads it back into the sharded module (`load_full_state`).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from tubelet.distributed import sharded, world
from tubelet.nn.layers import Block

log = logging.getLogger("tubelet.train")

PARALLEL = ("ddp", "fsdp")


class Trainer(nn.Module):
    """The module that trains, behind one ``forward``: ``trainer(loss_of)`` is ``loss_of(module)``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, loss_of):
        return loss_of(self.module)


def wrap(module: nn.Module, *, parallel: str = "ddp", device: torch.device) -> nn.Module:
    """`module` behind a `Trainer`, wrapped for the ranks of `tubelet.distributed.world` (none on one process).

    Call it before the optimizer is built: FSDP2 replaces the parameters by their shards.

    Args:
        parallel: ``ddp`` (every rank holds the whole model) or ``fsdp`` (parameters, gradients and optimizer state
            sharded over the ranks).
    """
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}, got {parallel!r}")
    trainer = Trainer(module)
    if not world().distributed:
        return trainer
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in [m for m in module.modules() if isinstance(m, Block)]:
            fully_shard(block)
        fully_shard(trainer)  # the rest (embeddings, heads, a decoder's own layers): gathered for each step
        return trainer
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        trainer, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
    )


def sync(trainer: nn.Module, now: bool):
    """Context for one micro-batch: gradients are all-reduced only when `now` (a step's last micro-batch)."""
    if hasattr(trainer, "no_sync") and not now:  # DDP
        return trainer.no_sync()
    if hasattr(trainer, "set_requires_gradient_sync"):  # FSDP2
        trainer.set_requires_gradient_sync(now)
    return contextlib.nullcontext()


@contextlib.contextmanager
def gathered(trainer: nn.Module):
    """Inside it, code outside the trainer's forward may call the model (validation, pictures): FSDP's outer unit is
    gathered on every rank (each block still gathers its own in its forward, so every rank must run as many)."""
    if not sharded(trainer):
        yield
        return
    trainer.unshard()
    try:
        yield
    finally:
        trainer.reshard()


def full_state(trainer: nn.Module, module: nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """(`module`'s full state dict, the optimizer's full state dict or None) on rank 0, gathered from the FSDP
    shards of `trainer`; every rank must call it (the gather is collective), and the other ranks get (None, None).
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=options)
    optim_state = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    if not world().main:
        return None, None
    return model_state, optim_state


def load_full_state(
    trainer: nn.Module | None, module: nn.Module, model_state: dict | None, optimizer=None, optim_state=None
):
    """Load full (unsharded) states, as saved, into `module` (FSDP-sharded in `trainer`, or not) and its optimizer."""
    if not sharded(trainer):
        if model_state is not None:
            module.load_state_dict(model_state)
        if optimizer is not None and optim_state is not None:
            optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    if model_state is not None:
        set_model_state_dict(module, model_state, options=options)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(module, optimizer, optim_state, options=options)


def local_value(value) -> float:
    """A float of a scalar that may be an FSDP DTensor (a gradient norm)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


__all__ = ["PARALLEL", "Trainer", "full_state", "gathered", "load_full_state", "local_value", "sync", "wrap"]
