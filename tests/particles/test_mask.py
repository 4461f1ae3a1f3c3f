"""mask_particles: tube, random and frame masking by dropping particles, with both index sets returned."""

import numpy as np
import pytest
import torch

from tubelet.particles import MASK_MODES, mask_batch, mask_particles, pack, tokenize


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


# --- mask_batch: a packed batch split into what the encoder sees and what the decoder reconstructs ---


def _batch(prune=None):
    rng = np.random.default_rng(3)
    clips = []
    for frames, height, width in ((8, 64, 96), (4, 32, 48), (6, 48, 48)):
        video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        if prune:
            video[2:] = video[:2].repeat(frames // 2 - 1, axis=0)  # still after the first tubelet: runs collapse
        clips.append(tokenize(video, timestamps=np.arange(frames) / 8, tubelet=(2, 16, 16), prune_threshold=prune))
    return pack(clips)


def _places(packed, index=None):
    """Set of (clip, ti, y, x) of the particles at `index` (all when None)."""
    index = torch.arange(len(packed)) if index is None else index
    return set(zip(*(getattr(packed, name)[index].tolist() for name in ("seq", "ti", "y", "x"))))


@pytest.mark.parametrize("mode", MASK_MODES)
def test_mask_batch_splits_every_clip_into_visible_and_hidden(mode):
    batch = _batch()
    plan = mask_batch(batch, 0.75, mode=mode, generator=seeded())

    assert plan.visible.num_clips == plan.queries.num_clips == batch.num_clips
    assert len(plan.visible) + len(plan.queries) == len(batch) == len(plan.visible) + plan.hidden
    hidden = _places(batch, plan.target_index)
    assert _places(plan.queries) == hidden and _places(plan.visible) == _places(batch) - hidden
    # Targets are the batch's own values at target_index; the queries carry positions only.
    assert plan.queries.values.shape == (len(plan.queries), 0)
    visible_rows = torch.tensor(sorted(set(range(len(batch))) - set(plan.target_index.tolist())))
    assert torch.equal(plan.visible.values, batch.values[visible_rows])
    assert torch.equal(plan.queries.t, batch.t[plan.target_index])


def test_the_encoder_input_is_a_tenth_of_the_batch_at_ratio_0_9():
    batch = _batch()
    plan = mask_batch(batch, 0.9, mode="tube", generator=seeded())
    # Per clip: 24, 6 and 9 places; round(0.9 * places) hidden at every time.
    assert plan.visible.lengths.tolist() == [4 * 2, 2 * 1, 3 * 1]
    assert 0.05 < len(plan.visible) / len(batch) < 0.15


def test_decoder_masking_reconstructs_a_subset_of_the_hidden_particles():
    batch = _batch()
    full = mask_batch(batch, 0.75, mode="random", generator=seeded(5))
    half = mask_batch(batch, 0.75, mode="random", decoder_ratio=0.5, generator=seeded(5))

    assert torch.equal(half.visible.values, full.visible.values)  # the encoder's side does not change
    assert set(half.target_index.tolist()) < set(full.target_index.tolist())
    assert half.hidden == full.hidden
    per_clip = [round(0.5 * n) for n in full.queries.lengths.tolist()]
    assert half.queries.lengths.tolist() == per_clip
    assert _places(half.queries) == _places(batch, half.target_index)
    with pytest.raises(ValueError, match="decoder mask ratio"):
        mask_batch(batch, 0.75, decoder_ratio=1.0)


def test_pruned_particles_are_neither_encoded_nor_targets():
    batch = _batch(prune=1.0)
    assert len(batch) < sum(g[0] * g[1] * g[2] for g in batch.grids)  # static runs were collapsed
    plan = mask_batch(batch, 0.5, mode="tube", generator=seeded())
    assert len(plan.visible) + len(plan.queries) == len(batch)
    assert _places(plan.visible) | _places(plan.queries) == _places(batch)
