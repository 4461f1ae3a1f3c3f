"""Heads, losses and metrics per task."""

from tubelet.tasks.classification import classification_loss, classification_metrics

__all__ = ["classification_loss", "classification_metrics"]
