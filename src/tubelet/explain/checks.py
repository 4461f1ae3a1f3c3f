"""Are the explanations honest? Sanity (weight randomization), faithfulness (deletion) and localization checks.

- Sanity check (Adebayo et al., NeurIPS 2018): a map that barely changes when the model's weights are replaced by
  random ones explains the input, not the model. `randomized_model` redraws every weight; `rank_correlation` of the
  two maps should be low.
- Faithfulness (deletion, Petsiuk et al. 2018): removing the highest-scoring particles first should lower the
  target's probability faster than removing particles in random order: a lower area under the deletion curve.
- Localization (pointing game, Zhang et al. 2016): the top particle should lie on the object that carries the
  class, where the data says where it is (the sample data knows its object's box at every second).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from tubelet.explain.methods import Explanation, class_probs
from tubelet.models.encoder import Encoder
from tubelet.particles.structure import Particles


@torch.no_grad()
def randomized_model(model: Encoder, seed: int = 0) -> Encoder:
    """A copy of `model` whose every parameter is redrawn from a normal with that tensor's own mean and std.

    Keeping each tensor's scale keeps the random network's activations in range (a model of all-0.02 weights
    would output near-constant logits and make any map look "random" for the wrong reason).
    """
    generator = torch.Generator().manual_seed(seed)
    clone = copy.deepcopy(model)
    for param in clone.parameters():
        values = param.detach().float().cpu()
        std = values.std().item() if values.numel() > 1 else 0.0
        noise = torch.randn(values.shape, generator=generator) * (std or 0.02) + values.mean()
        param.data.copy_(noise.to(param.dtype))
    return clone.eval()


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two maps over the same particles (NaN-safe: a constant map gives 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def deletion_curve(
    model: Encoder, particles: Particles, order: torch.Tensor | np.ndarray, target: int, *, points: int = 20,
    budget: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Target probability as the particles are removed in `order` (first = removed first).

    Returns:
        (fractions removed (points+1,) from 0 to (N-1)/N, target probabilities at each). The last point keeps one
        particle: a clip with none has no output.
    """
    order = torch.as_tensor(np.asarray(order), dtype=torch.long)
    n = len(particles)
    counts = np.unique(np.linspace(0, n - 1, points + 1).round().astype(int))
    clips = []
    for k in counts:
        keep = torch.ones(n, dtype=torch.bool)
        keep[order[:k]] = False
        clips.append(particles.select(keep))
    probs = class_probs(model, clips, budget)[:, target].numpy()
    return counts / n, probs


def area(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under a curve over [0, last fraction], divided by that span (a mean height in [0, 1])."""
    span = fractions[-1] - fractions[0]
    if span <= 0:
        return float(values[0])
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(fractions)) / span)


def deletion_auc(model: Encoder, explanation: Explanation, *, points: int = 20) -> float:
    """Area under the deletion curve when the best-scoring particles go first (lower = more faithful)."""
    order = torch.argsort(explanation.scores, descending=True)
    fractions, probs = deletion_curve(model, explanation.particles, order, explanation.target, points=points)
    return area(fractions, probs)


def random_deletion_auc(
    model: Encoder, particles: Particles, target: int, *, repeats: int = 3, points: int = 20, seed: int = 0
) -> float:
    """The same area with particles removed in random order, averaged over `repeats` orders."""
    generator = torch.Generator().manual_seed(seed)
    areas = []
    for _ in range(repeats):
        order = torch.randperm(len(particles), generator=generator)
        areas.append(area(*deletion_curve(model, particles, order, target, points=points)))
    return float(np.mean(areas))


def particle_boxes(particles: Particles, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(N, 4) ``x0, y0, x1, y1`` of each particle's grid cell in pixels of the model's frames times `scale` (sy, sx).

    Use ``scale = (source_height / model_height, source_width / model_width)`` for source pixels. Cells are clipped
    to the frame (the last row and column may be padding).
    """
    _, p, q = particles.tubelet
    _, height, width = particles.frame_shape
    y, x = particles.y.numpy(), particles.x.numpy()
    boxes = np.stack([x * q, y * p, np.minimum((x + 1) * q, width), np.minimum((y + 1) * p, height)], 1)
    return boxes.astype(np.float64) * np.array([scale[1], scale[0], scale[1], scale[0]])


def overlaps(box: np.ndarray | tuple, other: np.ndarray | tuple, tolerance: float = 0.0) -> bool:
    """Whether two ``x0, y0, x1, y1`` boxes intersect once `other` is grown by `tolerance` pixels on each side."""
    return bool(
        box[0] < other[2] + tolerance
        and other[0] - tolerance < box[2]
        and box[1] < other[3] + tolerance
        and other[1] - tolerance < box[3]
    )


def pointing_hit(
    explanation: Explanation,
    box_at: Callable[[float], tuple[float, float, float, float]],
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    time_offset: float = 0.0,
    tolerance: float = 0.0,
) -> bool:
    """Whether the top-scoring particle's cell overlaps the object's box at that particle's time.

    Args:
        box_at: seconds in the source video -> the object's ``x0, y0, x1, y1`` in source pixels.
        scale: (sy, sx) from the model's frames to source pixels.
        time_offset: seconds to add to particle times (the window's start in the video).
        tolerance: pixels of slack around the box.
    """
    best = explanation.top(1)[0]
    cell = particle_boxes(explanation.particles, scale)[best]
    return overlaps(cell, box_at(float(explanation.particles.t[best]) + time_offset), tolerance)
