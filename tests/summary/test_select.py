"""Summaries: the knapsack against brute force and hand-computed cases, segments inside shots within the ratio, F1,
rank correlations, and the unsupervised signals (novelty, camera-compensated motion) on real pixels."""

import itertools

import numpy as np
import pytest

from tubelet.data.sample_pan import Pan, render_pan
from tubelet.summary import (
    Segment,
    knapsack,
    motion_energy,
    novelty,
    rank_correlations,
    segments_of,
    select,
    selection_f1,
    shot_bounds,
    summary_mask,
)


def test_knapsack_finds_the_hand_computed_optimum():
    assert knapsack([6, 10, 12], [1, 2, 3], 5) == [1, 2]  # 22, not 6 + 10 or 6 + 12
    assert knapsack([6, 10, 12], [1, 2, 3], 0) == []
    assert knapsack([5, 1], [9, 1], 3) == [1]  # the heavy item never fits


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 8))
        values, weights = rng.random(n), rng.integers(1, 10, n)
        capacity = int(rng.integers(0, 25))
        best = max(
            sum(values[list(c)]) for r in range(n + 1) for c in itertools.combinations(range(n), r)
            if sum(weights[list(c)]) <= capacity
        )  # fmt: skip
        chosen = knapsack(values, weights, capacity)
        assert sum(weights[chosen]) <= capacity
        assert sum(values[chosen]) == pytest.approx(best)


def test_shots_are_cut_into_equal_segments_that_never_cross_a_cut():
    assert shot_bounds([3.0, 0.0, 12.0], 6.0) == [(0.0, 3.0), (3.0, 6.0)]  # cuts outside the video are ignored
    pieces = segments_of([(0.0, 5.0), (5.0, 6.5)], max_seconds=2.0)
    assert np.asarray(pieces) == pytest.approx(np.array([(0, 5 / 3), (5 / 3, 10 / 3), (10 / 3, 5), (5, 6.5)]))


def test_the_selection_takes_the_important_segments_within_the_ratio_and_inside_shots():
    importance = np.array([0, 0, 1, 1, 0, 0], dtype=float)  # seconds 2 and 3: one each side of the cut at 3 s
    shots = [(0.0, 3.0), (3.0, 6.0)]  # segments of 1.5 s: (0, 1.5) (1.5, 3) (3, 4.5) (4.5, 6)
    assert select(importance, shots, ratio=0.25, max_seconds=1.5) == [Segment(1.5, 3.0, pytest.approx(2 / 3))]
    both = select(importance, shots, ratio=0.5, max_seconds=1.5)
    assert [(s.start, s.end) for s in both] == [(1.5, 3.0), (3.0, 4.5)]
    everything = select(importance + 0.1, shots, ratio=1.0, max_seconds=1.5)  # all of it fits, and all is worth some
    assert [(s.start, s.end) for s in everything] == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, 6.0)]
    with pytest.raises(ValueError, match="ratio"):
        select(importance, shots, ratio=0.0)


def test_any_selection_respects_the_ratio_and_the_shots():
    rng = np.random.default_rng(1)
    for ratio in (0.05, 0.15, 0.33, 0.8):
        duration = float(rng.integers(20, 90))
        cuts = sorted(rng.uniform(1, duration - 1, size=int(rng.integers(0, 6))))
        shots = shot_bounds(cuts, duration)
        chosen = select(rng.random(int(duration)), shots, ratio=ratio, duration=duration)
        assert sum(s.length for s in chosen) <= ratio * duration + 1e-9
        assert all(any(a - 1e-9 <= s.start and s.end <= b + 1e-9 for a, b in shots) for s in chosen)
        assert all(0 <= s.start < s.end <= duration for s in chosen)
        assert all(x.end <= y.start + 1e-9 for x, y in zip(chosen, chosen[1:]))  # in order, never overlapping


def test_f1_of_two_summaries():
    predicted = summary_mask([(0.0, 2.0)], 10.0)
    assert selection_f1(predicted, summary_mask([(1.0, 3.0)], 10.0)) == pytest.approx(0.5)  # 1 s shared of 2 and 2
    assert selection_f1(predicted, predicted) == 1.0
    assert selection_f1(predicted, summary_mask([(5.0, 6.0)], 10.0)) == 0.0


def test_rank_correlations_against_each_annotator():
    scores = np.arange(10.0)
    same = rank_correlations(scores, np.stack([scores * 2, scores + 1]))
    assert same == {"kendall_tau": pytest.approx(1.0), "spearman_rho": pytest.approx(1.0)}
    mixed = rank_correlations(scores, np.stack([scores, -scores]))  # one agrees, one reverses: mean 0
    assert mixed["kendall_tau"] == pytest.approx(0.0) and mixed["spearman_rho"] == pytest.approx(0.0)
    assert np.isnan(rank_correlations(np.ones(10), np.stack([scores]))["kendall_tau"])  # no ranking, not 0


def test_novelty_peaks_where_the_features_change_and_restarts_at_a_shot():
    features = np.tile(np.array([1.0, 0.0, 0.0]), (12, 1)) + np.random.default_rng(0).normal(0, 0.01, (12, 3))
    features[5:8] = [0.0, 1.0, 0.0]  # something new for three seconds
    features[8:] = [0.0, 0.0, 1.0]  # a new shot starts at 8: its own running mean
    values = novelty(features, shot_starts=[8])
    assert int(np.argmax(values)) == 5
    assert values[9:].max() < 0.05 and values[1:5].max() < 0.05


def test_motion_energy_sees_an_object_and_not_the_camera_pan():
    fps, seconds = 10, 6
    pan = Pan("slow_right", "grass", 0.8, 96, 72, 12.0, 10.0, 20.0, 1.0, 1.0, 1.5, float(seconds), 0)
    frames = render_pan(pan, fps)  # (60, 72, 96, 3) a textured pan
    times = np.arange(len(frames)) / fps
    for i, t in enumerate(times):  # a red square crosses from second 2 to second 4
        if 2.0 <= t < 4.0:
            x = int(10 + 35 * (t - 2.0))
            frames[i, 30:42, x : x + 12] = (220, 40, 40)
    energy = motion_energy(frames, times, seconds)
    assert min(energy[2], energy[3]) > 3 * max(energy[0], energy[1], energy[5])
