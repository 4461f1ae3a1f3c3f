"""Which process this is when training runs on several (``torchrun``), and the few collectives tubelet needs.

A leaf module (torch only). ``torchrun --nproc_per_node=N -m tubelet finetune ...`` starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; `init` joins them into PyTorch's process group
(NCCL on CUDA, gloo on the CPU) and `world` tells every module which rank it is. Without torchrun nothing here
does anything: `world` is one process of rank 0, and every collective returns its input.

What is shared over the ranks is decided here too, so the training loop and sharded evaluation agree:

- `assign`: the batches of one optimizer step dealt to the ranks, each rank the same number of micro-batches,
  balanced by particle count; a rank left short gets a zero-weighted repeat, so no rank waits forever in the
  gradient all-reduce (ranks with unequal batch counts hang there).
- `shard`: evaluation batches dealt the same way, padded to the same count per rank.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("tubelet.distributed")

# How long a rank waits for the others in one collective before it gives up with an error instead of hanging: a
# dead peer (killed, out of memory) ends the run within this time, and torchrun stops the rest.
TIMEOUT_S = float(os.environ.get("TUBELET_DIST_TIMEOUT_S", 1800))


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0 .. size - 1 over every machine; rank 0 writes checkpoints, logs and the progress bar.
        size: how many processes train together (1: no torchrun).
        local_rank: the rank on this machine, which picks its GPU.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The process group this process belongs to (one process of rank 0 when none was set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def main_process() -> bool:
    """Whether this process is rank 0 of its launch (torchrun's ``RANK``), before or after the process group."""
    return int(os.environ.get("RANK", "0")) == 0


def launched() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started this process among several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> torch.device | None:
    """Join torchrun's process group when launched by it; the device this rank computes on (None: not launched).

    On CUDA each rank takes GPU ``LOCAL_RANK`` and the backend is NCCL; on the CPU it is gloo.

    Args:
        device: the run's ``device`` field: ``auto`` picks CUDA when there is one.
    """
    if not launched():
        return None
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    here = world()
    log.info("rank %d of %d (%s on %s)", here.rank, here.size, dist.get_backend(), os.uname().nodename)
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def finish() -> None:
    """Leave the process group (every rank, at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sharded(module: torch.nn.Module) -> bool:
    """Whether `module` is FSDP-sharded: each forward pass gathers its parameters from every rank, so every rank must
    run as many of them."""
    return hasattr(module, "set_requires_gradient_sync")


def _device() -> torch.device:
    """Where a collective's tensors must live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sum(values: list[float]) -> list[float]:
    """`values` summed over the ranks, element by element (float64; unchanged on one process)."""
    if not world().distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather(obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank (``[obj]`` on one process)."""
    if not world().distributed:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank (`obj` itself on one process)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    if world().distributed:
        dist.barrier()


@dataclass(frozen=True)
class Micro:
    """One micro-batch a rank runs: dataset items, the batch's place in the epoch, and whether it counts.

    Attributes:
        items: dataset indices of its clips.
        position: the batch's index among the epoch's batches (what seeds its masks, the same on any number of
            ranks).
        weight: 1, or 0 for a repeat that only keeps this rank in step with the others (its gradient is zero).
        ends_step: the last micro-batch of an optimizer step: its backward all-reduces the gradients.
    """

    items: list[int]
    position: int
    weight: int = 1
    ends_step: bool = False


def assign(
    batches: list[list[int]], estimates: list[int], *, ranks: int, accum_steps: int, rank: int, first: int = 0
) -> list[Micro]:
    """This rank's micro-batches of an epoch, in order: `accum_steps` per optimizer step.

    Every optimizer step takes the next ``ranks * accum_steps`` batches of the epoch, the global batch. Inside a
    step, the batches go to the ranks largest first, each to the rank with the fewest particles so far among those
    with a free slot, so the ranks finish their step at about the same time. A step with fewer batches (the epoch's
    last) fills the free slots with zero-weighted repeats of its smallest batch: every rank runs the same number
    of forward and backward passes and the gradients are those of the batches that count, as on one process with
    ``accum_steps * ranks`` accumulation steps.

    Args:
        batches: the epoch's batches (item indices) from `first` on, the same on every rank.
        first: the position of ``batches[0]`` in the epoch (a resumed epoch starts at a step boundary).
    """
    per_step = ranks * accum_steps
    mine: list[Micro] = []
    for start in range(0, len(batches), per_step):
        group = list(range(start, min(start + per_step, len(batches))))
        cost = [sum(estimates[i] for i in batches[b]) for b in group]
        slots: list[list[int]] = [[] for _ in range(ranks)]
        load = [0] * ranks
        for k in sorted(range(len(group)), key=lambda k: (-cost[k], group[k])):
            r = min((r for r in range(ranks) if len(slots[r]) < accum_steps), key=lambda r: (load[r], r))
            slots[r].append(group[k])
            load[r] += cost[k]
        smallest = group[min(range(len(group)), key=lambda k: (cost[k], group[k]))]
        own = sorted(slots[rank])
        steps = [Micro(batches[b], first + b) for b in own]
        if ranks > 1:  # one process waits for nobody: its short last step just steps
            steps += [Micro(batches[smallest], first + smallest, weight=0)] * (accum_steps - len(own))
        steps[-1] = Micro(steps[-1].items, steps[-1].position, steps[-1].weight, ends_step=True)
        mine.extend(steps)
    return mine


def shard(batches: list[list[int]], estimates: list[int], *, ranks: int, rank: int) -> list[list[int]]:
    """This rank's share of evaluation `batches`: balanced by particle count, the same number on every rank.

    A rank with fewer batches than the others repeats its last one (or the first batch), so that a model whose
    forward pass talks to the other ranks (sharded parameters) runs as often on each; the repeats' outputs are the
    same values again and change nothing.
    """
    if ranks == 1:
        return batches
    slots: list[list[int]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    per_rank = -(-len(batches) // ranks)
    cost = [sum(estimates[i] for i in b) for b in batches]
    for b in sorted(range(len(batches)), key=lambda b: (-cost[b], b)):
        r = min((r for r in range(ranks) if len(slots[r]) < per_rank), key=lambda r: (load[r], r))
        slots[r].append(b)
        load[r] += cost[b]
    own = [batches[b] for b in sorted(slots[rank])]
    if batches:
        own += [own[-1] if own else batches[0]] * (per_rank - len(own))
    return own


__all__ = [
    "Micro", "World", "assign", "barrier", "broadcast", "finish", "gather", "init", "launched", "main_process",
    "reduce_sum", "shard", "sharded", "world",
]  # fmt: skip
