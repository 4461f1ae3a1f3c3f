"""Which segments make a summary: shots cut into short segments, a 0/1 knapsack within a share of the length, and the
F1 of a selection against a user's (the TVSum/SumMe protocol).

Time is seconds. Importance is given per whole second: value k covers [k, k + 1). Lengths enter the knapsack in
integer steps of `STEP` seconds, each segment's rounded UP and the budget DOWN, so a selection never exceeds its
share of the length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STEP = 0.1  # seconds per knapsack unit (deciseconds)
MAX_SEGMENT_S = 2.0  # shots longer than this are cut into equal segments no longer than it


@dataclass(frozen=True)
class Segment:
    """A stretch of the video: `start` and `end` seconds and its `score` (mean importance over it)."""

    start: float
    end: float
    score: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start


def shot_bounds(cuts: Sequence[float], duration: float) -> list[tuple[float, float]]:
    """(start, end) seconds of every shot of a `duration` s video with hard cuts at `cuts` seconds."""
    inner = sorted(c for c in cuts if 0.0 < c < duration)
    edges = [0.0, *inner, float(duration)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def segments_of(
    shots: Sequence[tuple[float, float]], *, max_seconds: float = MAX_SEGMENT_S
) -> list[tuple[float, float]]:
    """Every shot cut into the fewest equal segments of at most `max_seconds` (a segment never crosses a cut)."""
    out = []
    for a, b in shots:
        pieces = max(1, math.ceil((b - a) / max_seconds - 1e-9))
        edges = np.linspace(a, b, pieces + 1)
        out += [(float(s), float(e)) for s, e in zip(edges, edges[1:])]
    return out


def overlap_sum(importance: np.ndarray, start: float, end: float) -> float:
    """Σ_k importance[k] * |[k, k+1) ∩ [start, end)|: the importance a segment carries (mean times length)."""
    lo, hi = max(0, math.floor(start)), min(len(importance), math.ceil(end))
    total = 0.0
    for k in range(lo, hi):
        total += float(importance[k]) * max(0.0, min(end, k + 1) - max(start, k))
    return total


def knapsack(values: Sequence[float], weights: Sequence[int], capacity: int) -> list[int]:
    """The items of a 0/1 knapsack: indices (sorted) maximising Σ values with Σ weights <= `capacity`.

    Dynamic programming over capacities, O(items x capacity). Ties keep the earlier choice (fewer items).

    Args:
        values: (n,) item values.
        weights: (n,) non-negative integer weights.
        capacity: the budget, a non-negative integer.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.int64)
    if len(values) != len(weights):
        raise ValueError(f"knapsack: {len(values)} values but {len(weights)} weights")
    if capacity < 0 or (len(weights) and weights.min() < 0):
        raise ValueError("knapsack: capacity and weights must not be negative")
    best = np.zeros(capacity + 1)  # best[c]: the most value within weight c
    take = np.zeros((len(values), capacity + 1), dtype=bool)  # (n, C+1) item i taken at capacity c
    for i, (v, w) in enumerate(zip(values, weights)):
        if w > capacity:
            continue
        with_it = best[: capacity + 1 - w] + v  # (C+1-w,) value at capacity c >= w if item i is taken
        better = with_it > best[w:] + 1e-12
        take[i, w:] = better
        best[w:] = np.where(better, with_it, best[w:])
    chosen, c = [], capacity
    for i in range(len(values) - 1, -1, -1):
        if take[i, c]:
            chosen.append(i)
            c -= int(weights[i])
    return sorted(chosen)


def select(
    importance: np.ndarray, shots: Sequence[tuple[float, float]], *, ratio: float, duration: float | None = None,
    max_seconds: float = MAX_SEGMENT_S, step: float = STEP,
) -> list[Segment]:  # fmt: skip
    """The summary: segments of `shots` (each cut into pieces of at most `max_seconds`) of the most summed importance
    whose lengths add up to at most `ratio` of `duration` (default the end of the last shot).

    Args:
        importance: (N,) importance of every whole second.

    Returns:
        The chosen segments in time order, each with its mean importance as its score.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio: must be in (0, 1], got {ratio:g}")
    duration = duration if duration is not None else max(b for _, b in shots)
    pieces = segments_of(shots, max_seconds=max_seconds)
    values = [overlap_sum(importance, a, b) for a, b in pieces]
    weights = [math.ceil((b - a) / step - 1e-6) for a, b in pieces]  # rounded up: never over the budget
    capacity = math.floor(ratio * duration / step + 1e-6)
    chosen = knapsack(values, weights, capacity)
    return [Segment(pieces[i][0], pieces[i][1], values[i] / max(pieces[i][1] - pieces[i][0], 1e-9)) for i in chosen]


def summary_mask(segments: Sequence[Segment | tuple[float, float]], duration: float, *, step: float = STEP):
    """(ceil(duration / step),) bool: cell j (covering [j, j+1) * step) is in the summary when its centre is."""
    centres = (np.arange(math.ceil(duration / step - 1e-9)) + 0.5) * step
    mask = np.zeros(len(centres), dtype=bool)
    for seg in segments:
        a, b = (seg.start, seg.end) if isinstance(seg, Segment) else seg
        mask |= (centres >= a) & (centres < b)
    return mask


def selection_f1(predicted: np.ndarray, user: np.ndarray) -> float:
    """F1 of the overlap of two summaries (bool masks of equal length; `summary_mask`): 2PR / (P + R), 0 if none."""
    overlap = float(np.sum(predicted & user))
    if overlap == 0:
        return 0.0
    precision, recall = overlap / float(predicted.sum()), overlap / float(user.sum())
    return 2 * precision * recall / (precision + recall)
