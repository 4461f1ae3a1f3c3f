"""How batches are dealt to the ranks of a torchrun job: every batch once, equal counts, balanced by particles."""

import numpy as np
import pytest

from tubelet.distributed import World, assign, shard, world
from tubelet.train.fit import Schedule, epoch_batches, total_steps


def _epoch(count: int, seed: int = 0, budget: int = 500):
    rng = np.random.default_rng(seed)
    estimates = rng.integers(20, 400, count).tolist()
    return estimates, epoch_batches(estimates, Schedule(epochs=1, batch_particles=budget, seed=seed), 0)


@pytest.mark.parametrize("ranks, accum", [(2, 1), (2, 2), (3, 1), (4, 3)])
def test_every_batch_is_trained_once_and_every_rank_runs_as_many_micro_batches(ranks, accum):
    estimates, batches = _epoch(41)
    shares = [assign(batches, estimates, ranks=ranks, accum_steps=accum, rank=r) for r in range(ranks)]
    steps = -(-len(batches) // (ranks * accum))
    assert [len(share) for share in shares] == [steps * accum] * ranks  # nobody waits alone in an all-reduce
    counted = sorted(m.position for share in shares for m in share if m.weight)
    assert counted == list(range(len(batches)))
    for share in shares:
        assert [m.ends_step for m in share] == [(k + 1) % accum == 0 for k in range(len(share))]
        for m in share:
            assert m.items == batches[m.position]
            step = m.position // (ranks * accum)  # a micro-batch belongs to the step of its global batch
            assert share.index(m) // accum == step or m.weight == 0


def test_a_step_with_fewer_batches_than_slots_repeats_its_smallest_batch_at_zero_weight():
    estimates = [100, 300, 50]
    batches = [[0], [1], [2]]
    shares = [assign(batches, estimates, ranks=2, accum_steps=2, rank=r) for r in range(2)]
    repeats = [m for share in shares for m in share if m.weight == 0]
    assert [(m.items, m.position) for m in repeats] == [([2], 2)]
    # Largest first to the lighter rank: 300 alone on one rank, 100 + 50 on the other.
    loads = sorted(sum(estimates[i] for m in share if m.weight for i in m.items) for share in shares)
    assert loads == [150, 300]


def test_ranks_carry_about_the_same_particles_in_every_step():
    estimates, batches = _epoch(64, seed=3, budget=900)
    shares = [assign(batches, estimates, ranks=2, accum_steps=4, rank=r) for r in range(2)]
    biggest = max(sum(estimates[i] for i in b) for b in batches)
    for step in range(len(shares[0]) // 4):
        mine = [share[4 * step : 4 * step + 4] for share in shares]
        loads = [sum(estimates[i] for m in micros if m.weight for i in m.items) for micros in mine]
        assert abs(loads[0] - loads[1]) <= biggest


def test_one_process_trains_the_epoch_in_order_and_its_short_last_step_just_steps():
    estimates, batches = _epoch(17)
    share = assign(batches, estimates, ranks=1, accum_steps=3, rank=0, first=4)
    assert [m.items for m in share] == batches and all(m.weight for m in share)
    assert [m.position for m in share] == list(range(4, 4 + len(batches)))
    ends = [k for k, m in enumerate(share) if m.ends_step]
    assert ends == [k for k in range(len(batches)) if (k + 1) % 3 == 0 or k == len(batches) - 1]


def test_the_global_batch_of_n_ranks_is_one_process_with_n_times_the_accumulation():
    estimates = np.random.default_rng(5).integers(20, 400, 300).tolist()
    two = Schedule(epochs=3, batch_particles=600, accum_steps=2, ranks=2)
    one = Schedule(epochs=3, batch_particles=600, accum_steps=4)
    assert total_steps(estimates, two) == total_steps(estimates, one)
    assert epoch_batches(estimates, two, 1) == epoch_batches(estimates, one, 1)  # min_steps_per_epoch counts steps


@pytest.mark.parametrize("count", [0, 1, 5, 8])
def test_evaluation_shards_cover_every_batch_with_equal_counts(count):
    estimates, batches = _epoch(200)
    batches = batches[:count]
    shares = [shard(batches, estimates, ranks=3, rank=r) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    assert {tuple(b) for s in shares for b in s} == {tuple(b) for b in batches}


def test_without_torchrun_this_is_one_process_of_rank_zero():
    assert world() == World(rank=0, size=1) and world().main and not world().distributed
