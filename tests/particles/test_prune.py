"""Static pruning: a tubelet equal to the one before it at its place is dropped and its run's first particle grows."""

import numpy as np
import pytest
import torch

from tubelet.particles import patchify, static_runs, to_grid, tokenize, unpatchify

TUBELET = (2, 16, 16)


def static_scene_with_moving_square(frames=16, height=96, width=128):
    """(T, H, W, 3) uint8: a fixed random texture (0-100) with a white 16x16 square moving 6 px per frame."""
    rng = np.random.default_rng(0)
    video = np.repeat(rng.integers(0, 101, (1, height, width, 3), dtype=np.uint8), frames, axis=0)
    for i in range(frames):
        video[i, 32:48, 6 * i : 6 * i + 16] = 255
    return video


@pytest.fixture(scope="module")
def scene():
    return static_scene_with_moving_square()


@pytest.fixture(scope="module")
def pruned(scene):
    return tokenize(scene, timestamps=np.arange(len(scene)) / 30, tubelet=TUBELET, prune_threshold=1.0)


def test_a_static_scene_keeps_few_particles(pruned):
    assert pruned.grid == (8, 6, 8)
    positions = pruned.grid[1] * pruned.grid[2]
    assert positions < len(pruned) < 0.3 * pruned.total  # more than one per place (the square moves), under 30%


def test_first_tubelet_of_every_position_is_kept(pruned):
    first = pruned.ti == 0
    assert int(first.sum()) == 48
    assert set(zip(pruned.y[first].tolist(), pruned.x[first].tolist())) == {(y, x) for y in range(6) for x in range(8)}


def test_spans_at_each_position_add_up_to_the_tubelets_in_time(pruned):
    totals = torch.zeros(6, 8, dtype=torch.long).index_put_((pruned.y, pruned.x), pruned.span, accumulate=True)

    assert torch.equal(totals, torch.full((6, 8), 8))


def test_kept_tubelets_are_exactly_those_that_changed(scene, pruned):
    patches = patchify(torch.from_numpy(scene), TUBELET)  # (T', H', W', D)
    changed = (patches[1:] != patches[:-1]).any(dim=-1)  # (T'-1, H', W')
    kept = torch.zeros(8, 6, 8, dtype=torch.bool)
    kept[pruned.ti, pruned.y, pruned.x] = True

    assert kept[0].all()
    assert torch.equal(kept[1:], changed)
    assert changed[:, 2].any() and not changed[:, 0].any()  # the square's row moves; the top row never does


def test_pruned_particles_rebuild_the_video_exactly(scene, pruned):
    grid = to_grid(pruned)  # (T', H', W', D), each particle repeated over its run

    video = unpatchify(grid, TUBELET, frame_shape=pruned.frame_shape)

    assert torch.equal(video, torch.from_numpy(scene).float())


def test_a_kept_particle_keeps_the_time_of_its_first_tubelet(pruned):
    centres = (torch.arange(8) * 2 + 0.5) / 30  # frames 2k and 2k+1 at 30 fps

    torch.testing.assert_close(pruned.t, centres[pruned.ti].float())


@pytest.mark.parametrize(("threshold", "kept"), [(6, 1), (4, 2), (5, 2)])
def test_threshold_is_in_0_255_levels(threshold, kept):
    video = np.full((4, 16, 16, 3), 100, dtype=np.uint8)
    video[2:] += 5  # the second tubelet is uniformly 5 levels brighter

    particles = tokenize(video, timestamps=np.arange(4) / 30, tubelet=TUBELET, prune_threshold=threshold)

    assert len(particles) == kept
    assert particles.span.tolist() == ([2] if kept == 1 else [1, 1])


def test_threshold_ignores_normalization():
    video = np.full((4, 16, 16, 3), 100, dtype=np.uint8)
    video[2:] += 5

    particles = tokenize(
        video, timestamps=np.arange(4) / 30, tubelet=TUBELET, prune_threshold=6, mean=(0.5,) * 3, std=(0.25,) * 3
    )

    assert len(particles) == 1


@pytest.mark.parametrize("threshold", [None, 0])
def test_no_threshold_keeps_everything(scene, threshold):
    particles = tokenize(scene, timestamps=np.arange(16) / 30, tubelet=TUBELET, prune_threshold=threshold)

    assert len(particles) == particles.total == 384
    assert bool((particles.span == 1).all())


def test_runs_restart_after_a_change():
    # One position over six tubelets: A A B B B A.
    a, b = torch.zeros(4), torch.full((4,), 50.0)
    patches = torch.stack([a, a, b, b, b, a]).reshape(6, 1, 1, 4)

    keep, span = static_runs(patches, threshold=1.0)

    assert keep.reshape(-1).tolist() == [True, False, True, False, False, True]
    assert span.reshape(-1).tolist() == [2, 0, 3, 0, 0, 1]


def test_a_still_video_collapses_to_one_particle_per_position():
    video = np.random.default_rng(1).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8).repeat(10, axis=0)

    particles = tokenize(video, timestamps=np.arange(10) / 30, tubelet=TUBELET, prune_threshold=0.5)

    assert len(particles) == 2 * 3
    assert bool((particles.ti == 0).all())
    assert bool((particles.span == 5).all())


# --- what a tubelet is compared with: the previous tubelet or its run's anchor -------------------------------------


def drifting_video(tubelets: int) -> np.ndarray:
    """(2 * tubelets, 16, 16, 3) uint8: one position whose pixels rise by 1 level per tubelet (a slow drift)."""
    levels = 100 + np.arange(tubelets, dtype=np.uint8).repeat(2)  # both frames of tubelet k at 100 + k
    return np.broadcast_to(levels[:, None, None, None], (2 * tubelets, 16, 16, 3)).copy()


@pytest.mark.parametrize(
    ("reference", "kept_at", "spans"),
    [("previous", [0], [10]), ("anchor", [0, 4, 8], [4, 4, 2])],
)
def test_a_slow_drift_is_kept_only_when_compared_with_the_anchor(reference, kept_at, spans):
    # Neighbours differ by 1 level, under the threshold of 4; the drift from the anchor reaches 4 every 4 tubelets.
    video = drifting_video(10)

    particles = tokenize(
        video, timestamps=np.arange(20) / 30, tubelet=TUBELET, prune_threshold=4, prune_reference=reference
    )

    assert particles.ti.tolist() == kept_at
    assert particles.span.tolist() == spans
    assert int(particles.span.sum()) == 10  # every tubelet is stood for by exactly one particle


def test_the_anchor_run_restarts_at_each_kept_tubelet():
    # One position over six tubelets, 3 levels apart each: 0 3 6 9 12 15 with threshold 5.
    patches = (torch.arange(6.0) * 3).reshape(6, 1, 1, 1).expand(6, 1, 1, 4)

    keep, span = static_runs(patches, threshold=5.0, reference="anchor")

    # 3 < 5 drops tubelet 1; 6 - 0 >= 5 keeps 2; 9 - 6 drops 3; 12 - 6 keeps 4; 15 - 12 drops 5.
    assert keep.reshape(-1).tolist() == [True, False, True, False, True, False]
    assert span.reshape(-1).tolist() == [2, 0, 2, 0, 2, 0]


@pytest.mark.parametrize("reference", ["previous", "anchor"])
def test_a_static_camera_with_noise_under_the_threshold_keeps_one_particle_per_position(reference):
    rng = np.random.default_rng(2)
    still = rng.integers(20, 236, (1, 32, 48, 3)).repeat(12, axis=0)  # (T, H, W, 3) the same frame 12 times
    video = (still + rng.integers(-2, 3, still.shape)).astype(np.uint8)  # sensor noise: ~1.6 levels apart on average

    particles = tokenize(
        video, timestamps=np.arange(12) / 30, tubelet=TUBELET, prune_threshold=4, prune_reference=reference
    )

    assert len(particles) == 2 * 3
    assert bool((particles.ti == 0).all())
    assert bool((particles.span == 6).all())


def slow_pan(frames: int = 16, size: int = 64, top: int = 0, left: int = 300) -> np.ndarray:
    """(T, size, size, 3) uint8: a window over scikit-image's astronaut photograph moving right 1 px per frame."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()  # (512, 512, 3) uint8
    return np.stack([photo[top : top + size, left + i : left + i + size] for i in range(frames)])


@pytest.fixture(scope="module")
def pan_particles():
    """Both references on the same slow pan, threshold 4 levels, tubelet 2x16x16 (an 8 x 4 x 4 grid)."""
    video = slow_pan()
    return video, {
        reference: tokenize(
            video, timestamps=np.arange(16) / 30, tubelet=TUBELET, prune_threshold=4, prune_reference=reference
        )
        for reference in ("previous", "anchor")
    }


def test_a_slow_pan_over_a_photograph_keeps_more_particles_with_the_anchor(pan_particles):
    _, particles = pan_particles
    # The window (rows 0-63, columns 300-379 over the pan) is the photograph's smooth top-right background: two
    # tubelets in a row differ by under 4 levels everywhere, so "previous" keeps only the 16 first tubelets of the
    # 8 x 4 x 4 = 128; comparing with the anchor keeps 39 (measured with scikit-image 0.26's astronaut).
    assert len(particles["previous"]) == 16
    assert 30 <= len(particles["anchor"]) <= 48
    for p in particles.values():
        totals = torch.zeros(4, 4, dtype=torch.long).index_put_((p.y, p.x), p.span, accumulate=True)
        assert torch.equal(totals, torch.full((4, 4), 8))  # the spans at each position still cover all 8 tubelets


def test_with_the_anchor_every_tubelet_stays_within_the_threshold_of_its_particle(pan_particles):
    video, particles = pan_particles
    patches = patchify(torch.from_numpy(video), TUBELET).float()  # (T', H', W', D)

    def worst_gap(p):
        """The largest mean absolute difference, in levels, between a tubelet and the particle standing for it."""
        return float((to_grid(p) - patches).abs().mean(dim=-1).max())

    assert worst_gap(particles["anchor"]) < 4  # the guarantee the anchor gives
    assert worst_gap(particles["previous"]) > 8  # what "previous" loses: the pan drifts far from its particle
