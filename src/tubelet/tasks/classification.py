"""Classification loss and metrics: cross-entropy for training, a JSON-ready metrics dict for evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

# Top-k accuracy is reported only when it says more than plain accuracy can: with k or fewer classes it is 1.
TOP_K = 5


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over a batch of clips.

    Args:
        logits: (B, C) unnormalized class scores.
        targets: (B,) int64 class indices in ``[0, C)``.
        label_smoothing: mass in ``[0, 1)`` spread uniformly over all C classes, as in `torch.nn.CrossEntropyLoss`.

    Returns:
        () float32 scalar.
    """
    # float32 on purpose: log-softmax over bf16 logits loses the small differences the gradient lives on.
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, top-5, macro F1, per-class scores and the confusion matrix of one evaluation set.

    Predictions are the argmax of `probs`, so logits work as well as probabilities. Every label appears in
    ``per_class`` and in the confusion matrix, even with zero support (its scores are then 0). ``macro_f1`` follows
    scikit-learn's default and averages over the classes that occur in the targets or the predictions, so a class
    absent from the evaluation set and never predicted does not pull it down.

    Args:
        y_true: n class indices in ``[0, C)``.
        probs: (n, C) class probabilities (or any scores whose argmax is the prediction).
        labels: C class names, index i naming class i.

    Returns:
        A JSON-ready dict of plain floats and ints: ``accuracy``, ``top5_accuracy`` (None when C <= 5),
        ``macro_f1``, ``per_class`` ({label: {precision, recall, f1, support}}), ``confusion_matrix``
        (C lists of C counts; row = true class, column = predicted), ``labels`` and ``num_samples``.

    Raises:
        ValueError: empty input, shapes that disagree, duplicate labels or a target outside ``[0, C)``.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)  # (n,)
    scores = np.asarray(probs, dtype=np.float64)  # (n, C)
    num_classes = len(labels)
    if len(y) == 0:
        raise ValueError("classification_metrics: no samples to score")
    if len(set(labels)) != num_classes:
        raise ValueError(f"classification_metrics: duplicate class names in labels {labels}")
    if scores.shape != (len(y), num_classes):
        raise ValueError(
            f"classification_metrics: probs has shape {scores.shape}, expected ({len(y)}, {num_classes}) "
            f"for {len(y)} targets and {num_classes} labels"
        )
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"classification_metrics: targets must lie in [0, {num_classes}), got {y.min()}..{y.max()}")

    y_pred = scores.argmax(axis=1)  # (n,)
    class_ids = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=class_ids, zero_division=0)
    top_k = None
    if num_classes > TOP_K:
        top_k = float(top_k_accuracy_score(y, scores, k=TOP_K, labels=class_ids))
    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "top5_accuracy": top_k,
        "macro_f1": float(f1_score(y, y_pred, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y, y_pred, labels=class_ids).tolist(),
        "labels": list(labels),
        "num_samples": int(len(y)),
    }
