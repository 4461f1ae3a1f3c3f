"""mask_particles: tube, random and frame masking by dropping particles, with both index sets returned."""

import numpy as np
import pytest
import torch

from tubelet.particles import MASK_MODES, mask_particles, tokenize


@pytest.fixture(scope="module")
def particles():
    """A full 4 x 4 x 6 grid (96 particles) of a random 8-frame 64x96 clip with 2x16x16 tubelets."""
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 96, 3), dtype=np.uint8)
    return tokenize(frames, timestamps=np.arange(8) / 8, tubelet=(2, 16, 16))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def positions(parts, ti):
    here = parts.ti == ti
    return set(zip(parts.y[here].tolist(), parts.x[here].tolist()))


def test_tube_mask_hides_the_same_places_at_every_time(particles):
    visible, _, _ = mask_particles(particles, 0.75, mode="tube", generator=seeded())

    shown = [positions(visible, ti) for ti in range(4)]
    assert all(s == shown[0] for s in shown)
    assert len(shown[0]) == 24 - 18  # 75% of the 24 places hidden
    assert len(visible) == 4 * 6


def test_frame_mask_hides_whole_times(particles):
    visible, _, masked = mask_particles(particles, 0.5, mode="frame", generator=seeded())

    hidden_times = set(particles.ti[masked].tolist())
    assert len(hidden_times) == 2
    assert hidden_times.isdisjoint(visible.ti.tolist())
    for ti in set(visible.ti.tolist()):
        assert len(positions(visible, ti)) == 24  # a visible time keeps all its places


def test_random_mask_hides_that_fraction_of_particles(particles):
    visible, keep, masked = mask_particles(particles, 0.9, mode="random", generator=seeded())

    assert len(masked) == round(0.9 * 96)
    assert len(visible) == len(keep) == 96 - round(0.9 * 96)
    # Unlike a tube mask, visible places differ between times.
    assert len({frozenset(positions(visible, ti)) for ti in range(4)}) > 1


@pytest.mark.parametrize("mode", MASK_MODES)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.75, 0.9])
def test_ratio_is_respected_within_one_unit(particles, mode, ratio):
    units = {"tube": 24, "random": 96, "frame": 4}[mode]
    per_unit = 96 // units

    _, _, masked = mask_particles(particles, ratio, mode=mode, generator=seeded())

    hidden_units = len(masked) / per_unit
    assert abs(hidden_units - ratio * units) <= 1
    assert hidden_units <= units - 1  # something is always left to see


@pytest.mark.parametrize("mode", MASK_MODES)
def test_keep_and_masked_are_sorted_disjoint_and_cover_every_particle(particles, mode):
    visible, keep, masked = mask_particles(particles, 0.6, mode=mode, generator=seeded())

    assert keep.dtype == masked.dtype == torch.int64
    assert torch.equal(keep, keep.sort().values) and torch.equal(masked, masked.sort().values)
    assert torch.equal(torch.cat([keep, masked]).sort().values, torch.arange(96))
    # The visible particles are the kept ones, every field gathered alike.
    assert torch.equal(visible.values, particles.values[keep])
    assert torch.equal(visible.t, particles.t[keep])
    assert torch.equal(visible.y, particles.y[keep]) and torch.equal(visible.x, particles.x[keep])
    assert visible.grid == particles.grid


@pytest.mark.parametrize("mode", MASK_MODES)
def test_same_seed_same_mask(particles, mode):
    _, first, _ = mask_particles(particles, 0.5, mode=mode, generator=seeded(7))
    _, again, _ = mask_particles(particles, 0.5, mode=mode, generator=seeded(7))

    assert torch.equal(first, again)


def test_different_seeds_give_different_masks(particles):
    masks = {tuple(mask_particles(particles, 0.5, mode="tube", generator=seeded(s))[1].tolist()) for s in range(4)}

    assert len(masks) > 1


def test_tube_mask_of_pruned_particles_still_hides_whole_places():
    video = np.zeros((8, 32, 48, 3), dtype=np.uint8)
    video[4:, :16, :16] = 200  # one place changes halfway; everything else is still
    pruned = tokenize(video, timestamps=np.arange(8) / 8, tubelet=(2, 16, 16), prune_threshold=1.0)
    assert len(pruned) == 7  # six places plus the change

    visible, _, masked = mask_particles(pruned, 0.5, mode="tube", generator=seeded())

    hidden = set(zip(pruned.y[masked].tolist(), pruned.x[masked].tolist()))
    shown = set(zip(visible.y.tolist(), visible.x.tolist()))
    assert len(hidden) == 3 and hidden.isdisjoint(shown)


def test_unknown_mode_raises_value_error(particles):
    with pytest.raises(ValueError, match="unknown mask mode 'block'"):
        mask_particles(particles, 0.5, mode="block")


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_0_1_raises_value_error(particles, ratio):
    with pytest.raises(ValueError, match="mask ratio"):
        mask_particles(particles, ratio)
