"""Explanations: which particles (where, when) drove a decision, pictures of them, and checks of their honesty."""

from tubelet.explain.checks import (
    deletion_auc,
    deletion_curve,
    particle_boxes,
    pointing_hit,
    random_deletion_auc,
    randomized_model,
    rank_correlation,
)
from tubelet.explain.methods import (
    METHODS,
    Explanation,
    attention_rollout,
    class_probs,
    explain_particles,
    gradient_x_input,
    integrated_gradients,
    modality_occlusion,
    occlusion,
)

__all__ = [
    "METHODS",
    "Explanation",
    "attention_rollout",
    "class_probs",
    "deletion_auc",
    "deletion_curve",
    "explain_particles",
    "gradient_x_input",
    "integrated_gradients",
    "modality_occlusion",
    "occlusion",
    "particle_boxes",
    "pointing_hit",
    "random_deletion_auc",
    "randomized_model",
    "rank_correlation",
]
