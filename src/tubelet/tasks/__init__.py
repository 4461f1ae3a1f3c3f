"""Heads, losses and metrics per task."""

from tubelet.tasks.classification import classification_loss, classification_metrics
from tubelet.tasks.reconstruction import predicted_pixels, reconstruction_loss, reconstruction_targets

__all__ = [
    "classification_loss",
    "classification_metrics",
    "predicted_pixels",
    "reconstruction_loss",
    "reconstruction_targets",
]
