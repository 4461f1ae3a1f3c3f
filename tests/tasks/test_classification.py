"""Classification loss and metrics against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tubelet.tasks.classification import classification_loss, classification_metrics

# 3 real classes and "d", which is neither in the targets nor predicted. Worked out by hand:
#   confusion (rows true a, b, c): [3, 1, 0], [0, 2, 0], [0, 1, 1]; columns sum to 3, 4, 1
#   a: precision 3/3, recall 3/4, F1 6/7;  b: 2/4, 2/2, 2/3;  c: 1/1, 1/2, 2/3;  accuracy 6/8
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 2, 1]
LABELS = ["a", "b", "c", "d"]


def _soft_probs(predicted: list[int], num_classes: int) -> np.ndarray:
    """(n, C) probabilities whose argmax is `predicted`, not one-hot, so nothing depends on exact 0/1 input."""
    probs = np.full((len(predicted), num_classes), 0.3 / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = 0.7
    return probs


@pytest.fixture(scope="module")
def metrics() -> dict:
    return classification_metrics(Y_TRUE, _soft_probs(Y_PRED, len(LABELS)), LABELS)


def test_metrics_match_hand_computation(metrics):
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    expected = {"a": (1.0, 3 / 4, 6 / 7, 4), "b": (1 / 2, 1.0, 2 / 3, 2), "c": (1.0, 1 / 2, 2 / 3, 2)}
    for label, (precision, recall, f1, support) in expected.items():
        scores = metrics["per_class"][label]
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert scores["f1"] == pytest.approx(f1)
        assert scores["support"] == support
    assert metrics["confusion_matrix"] == [[3, 1, 0, 0], [0, 2, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert metrics["labels"] == LABELS
    assert metrics["num_samples"] == 8


def test_zero_support_class_is_listed_but_not_averaged(metrics):
    assert metrics["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # Macro F1 averages the classes seen in targets or predictions: (6/7 + 2/3 + 2/3) / 3, not over 4.
    assert metrics["macro_f1"] == pytest.approx((6 / 7 + 2 / 3 + 2 / 3) / 3)


def test_predicted_but_absent_class_counts_against_macro_f1():
    # "c" never occurs but is predicted once: its F1 of 0 joins the average.
    result = classification_metrics([0, 0, 1, 1], _soft_probs([0, 0, 1, 2], 3), ["a", "b", "c"])
    assert result["per_class"]["c"]["support"] == 0
    assert result["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


def test_metrics_are_plain_json_types(metrics):
    assert json.loads(json.dumps(metrics)) == metrics
    assert type(metrics["accuracy"]) is float and type(metrics["num_samples"]) is int
    assert type(metrics["per_class"]["a"]["support"]) is int
    assert all(type(count) is int for row in metrics["confusion_matrix"] for count in row)


def test_top5_only_beyond_five_classes(metrics):
    assert metrics["top5_accuracy"] is None
    five = classification_metrics([0, 1], _soft_probs([0, 1], 5), list("abcde"))
    assert five["top5_accuracy"] is None


def test_top5_accuracy_with_seven_classes():
    # Every sample scores class 0 highest, then 1, ..., class 6 lowest: class 4 ranks 5th, class 5 ranks 6th.
    scores = np.tile(np.arange(7, 0, -1) / 28.0, (3, 1))  # (3, 7)
    result = classification_metrics([0, 4, 5], scores, list("abcdefg"))
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["top5_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("y_true", "shape", "labels", "message"),
    [
        ([0, 3], (2, 3), ["a", "b", "c"], r"\[0, 3\)"),
        ([0, 1], (2, 4), ["a", "b", "c"], "shape"),
        ([0, 1], (2, 3), ["a", "b", "a"], "duplicate"),
        ([], (0, 3), ["a", "b", "c"], "no samples"),
    ],
)
def test_metrics_reject_bad_input(y_true, shape, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, np.zeros(shape), labels)


LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
TARGETS = [0, 2]


def _hand_loss(label_smoothing: float) -> float:
    """Mean over samples of (1 - eps) * -log p[target] + eps * mean_k(-log p[k])."""
    total = 0.0
    for row, target in zip(LOGITS, TARGETS):
        log_z = math.log(sum(math.exp(v) for v in row))
        nll = [log_z - v for v in row]
        total += (1 - label_smoothing) * nll[target] + label_smoothing * sum(nll) / len(row)
    return total / len(LOGITS)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_matches_hand_computation(label_smoothing):
    loss = classification_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), label_smoothing=label_smoothing)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_hand_loss(label_smoothing), rel=1e-6)


def test_smoothing_changes_the_loss_and_low_precision_logits_give_float32():
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    assert classification_loss(logits, targets).item() != pytest.approx(
        classification_loss(logits, targets, label_smoothing=0.1).item()
    )
    loss = classification_loss(logits.bfloat16().requires_grad_(), targets)
    assert loss.dtype == torch.float32
