"""Importance of every second without labels, and how well importance scores agree with people's.

Unsupervised importance combines two signals, each scaled to [0, 1] over the video (`normalise`):

- `novelty`: how far a second's pooled encoder features are (cosine distance) from the running mean of the seconds
  before it in its shot: something new on screen;
- `motion_energy`: what moves once the camera's own motion is taken out (a global shift between frames, from phase
  correlation): objects entering, colliding, falling; a slow pan scores near zero.

`rank_correlations` measures a score sequence against annotators' (Kendall tau and Spearman rho per annotator,
averaged): what the F1 of a knapsack summary hides (Otani et al., CVPR 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MOMENTUM = 0.8  # weight of the running mean's past at every second (about 5 s of memory)
TOP_SHARE = 0.005  # motion energy: the mean of this share of the largest (blurred) differences of a frame pair
BLUR = 5  # box filter over the signed difference: texture's interpolation residue cancels, an object's edge stays


def normalise(values: np.ndarray) -> np.ndarray:
    """(N,) scaled to [0, 1] (min to 0, max to 1); a constant sequence gives zeros. NaN stays NaN."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanmin(values), np.nanmax(values)
    if not np.isfinite(hi - lo) or hi - lo < 1e-12:
        return np.where(np.isnan(values), np.nan, 0.0)
    return (values - lo) / (hi - lo)


def novelty(features: np.ndarray, *, shot_starts: Sequence[int] = (), momentum: float = MOMENTUM) -> np.ndarray:
    """(N,) cosine distance of every second's feature to the running mean of the seconds before it in its shot.

    A shot's first second has no past in its shot: it gets the median novelty of the rest of its shot (so a cut
    alone is not news).

    Args:
        features: (N, D) pooled features per second.
        shot_starts: the seconds where a new shot begins (0 is always one).
    """
    features = np.asarray(features, dtype=np.float64)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)  # (N, D)
    starts = set(int(s) for s in shot_starts) | {0}
    out = np.full(len(unit), np.nan)
    mean = None
    for k, f in enumerate(unit):
        if k in starts or mean is None:
            mean = f.copy()
            continue
        out[k] = 1.0 - float(f @ mean / max(np.linalg.norm(mean), 1e-12))
        mean = momentum * mean + (1.0 - momentum) * f
    edges = sorted(starts) + [len(unit)]
    for a, b in zip(edges, edges[1:]):
        rest = out[a + 1 : b]
        out[a] = float(np.median(rest)) if len(rest) and not np.all(np.isnan(rest)) else 0.0
    return out


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    return dx, dy


def motion_energy(
    frames: np.ndarray, timestamps: np.ndarray, seconds: int, *, cut_indices: Sequence[int] = (), fill: bool = True
) -> np.ndarray:
    """(seconds,) what moves in every second once the camera's shift is compensated.

    For each pair of consecutive frames (not across a cut), the later frame is compared with the earlier one moved by
    their global shift (phase correlation). The signed grey difference is box-filtered (`BLUR` px: what sub-pixel
    resampling of fine texture leaves is zero-mean and cancels; an object's coherent change stays), and the pair's
    energy is the mean of its largest `TOP_SHARE` absolute values inside the overlap (a small object counts, noise
    barely does). A second's energy is the mean over the pairs whose later frame falls in it.

    Args:
        frames: (T, H, W, 3) uint8, small (a short side of 64-96 px is plenty).
        timestamps: (T,) seconds.
        cut_indices: frame indices i where a cut falls between frames i-1 and i (`video2video.baselines.cuts`).
        fill: give a second without pairs its nearest second's value; otherwise NaN (frames read in chunks).
    """
    grey = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
    cut = set(int(i) for i in cut_indices)
    H, W = grey.shape[1:]
    window = cv2.createHanningWindow((W, H), cv2.CV_32F)
    total, count = np.zeros(seconds), np.zeros(seconds)
    for i in range(1, len(grey)):
        if i in cut:
            continue
        a, b = grey[i - 1], grey[i]
        dx, dy = _shift(a * window, b * window)
        moved = cv2.warpAffine(a, np.float32([[1, 0, dx], [0, 1, dy]]), (W, H), borderMode=cv2.BORDER_REPLICATE)
        mx, my = int(np.ceil(abs(dx))) + 1 + BLUR // 2, int(np.ceil(abs(dy))) + 1 + BLUR // 2
        change = cv2.blur(b - moved, (BLUR, BLUR))  # (H, W) signed, smoothed
        diff = np.abs(change)[my : H - my, mx : W - mx].ravel()  # (H'W',) inside the overlap
        if diff.size == 0:
            continue
        top = max(1, int(TOP_SHARE * diff.size))
        energy = float(np.partition(diff, diff.size - top)[-top:].mean())
        k = int(np.clip(np.floor(timestamps[i]), 0, seconds - 1))
        total[k] += energy
        count[k] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    if not fill:
        return out
    for k in range(seconds):  # a second without pairs (a cut at its only frame): its neighbour's value
        if np.isnan(out[k]):
            known = np.flatnonzero(~np.isnan(out))
            out[k] = out[known[np.argmin(np.abs(known - k))]] if len(known) else 0.0
    return out


def combine(*signals: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """(N,) the weighted mean (equal weights by default) of the `normalise`d signals, itself scaled to [0, 1]."""
    weights = weights or [1.0] * len(signals)
    mixed = sum(w * normalise(s) for w, s in zip(weights, signals)) / sum(weights)
    return normalise(mixed)


def rank_correlations(scores: np.ndarray, annotators: np.ndarray) -> dict[str, float]:
    """Kendall tau (tau-b) and Spearman rho of `scores` (N,) against each annotator's (A, N), averaged over them.

    A constant sequence has no ranking: its correlations are NaN (as scipy says), never 0.
    """
    from scipy.stats import kendalltau, spearmanr

    taus, rhos = [], []
    for user in np.asarray(annotators, dtype=np.float64):
        if np.ptp(scores) == 0 or np.ptp(user) == 0:
            taus.append(np.nan)
            rhos.append(np.nan)
            continue
        taus.append(float(kendalltau(scores, user).statistic))
        rhos.append(float(spearmanr(scores, user).statistic))
    return {"kendall_tau": float(np.mean(taus)), "spearman_rho": float(np.mean(rhos))}
