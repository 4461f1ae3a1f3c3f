"""Evaluation reports: the three files, the pinned JSON keys, the Markdown page and the before / after block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tubelet.tasks.classification import classification_metrics
from tubelet.tasks.report import write_report

LABELS = ["walk", "run", "jump|hop"]  # a "|" in a name must not break the Markdown tables


def _metrics(predicted: list[int], labels: list[str] = LABELS) -> dict:
    y_true = [0, 0, 1, 1, 2, 2][: len(predicted)]
    return classification_metrics(y_true, np.eye(len(labels))[predicted], labels)


@pytest.fixture(scope="module")
def after() -> dict:
    return _metrics([0, 0, 1, 1, 2, 0])  # accuracy 5/6


@pytest.fixture(scope="module")
def before() -> dict:
    return _metrics([0, 1, 1, 0, 0, 0])  # accuracy 2/6


def test_writes_three_files_and_json_round_trips(tmp_path, after):
    original = json.dumps(after)
    details = {"checkpoint": Path("runs/a/best"), "clip_seconds": 2.0, "clips": np.int64(6)}
    paths = write_report(after, tmp_path / "new" / "dir", title="Eval", details=details)
    assert set(paths) == {"json", "markdown", "confusion_matrix"}
    assert [p.name for p in paths.values()] == ["report.json", "report.md", "confusion_matrix.png"]
    assert all(p.is_file() for p in paths.values())
    assert json.dumps(after) == original  # the caller's dict is left alone

    report = json.loads(paths["json"].read_text())
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["macro_f1"] == pytest.approx(after["macro_f1"])
    assert set(report["per_class"]) == set(LABELS)
    for scores in report["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    assert report["confusion_matrix"] == after["confusion_matrix"]
    assert report["details"] == {"checkpoint": "runs/a/best", "clip_seconds": 2.0, "clips": 6}
    assert "comparison" not in report


def test_markdown_names_every_class_and_the_accuracy(tmp_path, after):
    text = write_report(after, tmp_path, title="Eval of run A")["markdown"].read_text()
    assert text.startswith("# Eval of run A\n")
    assert "0.8333" in text
    assert "n/a (3 classes)" in text  # no top-5 for 3 classes
    for label in ["walk", "run", "jump\\|hop"]:
        assert f"| {label} |" in text  # per-class row
        assert f"| **{label}** |" in text  # confusion-matrix row
    assert "Before / after" not in text


@pytest.mark.parametrize("num_classes", [3, 30])
def test_png_opens_with_a_sensible_size(tmp_path, num_classes):
    labels = [f"class_{i}" for i in range(num_classes)]
    metrics = classification_metrics(list(range(num_classes)), np.eye(num_classes), labels)
    path = write_report(metrics, tmp_path, title="Eval")["confusion_matrix"]
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 5000 and 400 <= height <= 5000
    if num_classes == 30:
        assert width >= 1000  # 30 labelled rows need room


def test_baseline_comparison_deltas(tmp_path, after, before):
    paths = write_report(after, tmp_path, title="Eval", baseline=before, baseline_name="pretrained")
    comparison = json.loads(paths["json"].read_text())["comparison"]
    assert comparison["baseline_name"] == "pretrained"
    assert comparison["accuracy"]["baseline"] == pytest.approx(2 / 6)
    assert comparison["accuracy"]["value"] == pytest.approx(5 / 6)
    assert comparison["accuracy"]["delta"] == pytest.approx(3 / 6)
    assert comparison["macro_f1"]["delta"] == pytest.approx(after["macro_f1"] - before["macro_f1"])
    for label in LABELS:
        entry = comparison["per_class_f1"][label]
        assert entry["baseline"] == pytest.approx(before["per_class"][label]["f1"])
        assert entry["delta"] == pytest.approx(after["per_class"][label]["f1"] - before["per_class"][label]["f1"])
    # "jump|hop" went from never predicted (F1 0) to 1 of 2 found with no false alarm (F1 2/3).
    assert comparison["per_class_f1"]["jump|hop"]["delta"] == pytest.approx(2 / 3)

    text = paths["markdown"].read_text()
    assert "Before / after fine-tuning" in text
    assert "| accuracy | 0.3333 | 0.8333 | +0.5000 |" in text

    with Image.open(paths["confusion_matrix"]) as image:
        side_by_side = image.size
    with Image.open(write_report(after, tmp_path / "alone", title="Eval")["confusion_matrix"]) as image:
        alone = image.size
    assert side_by_side[0] > 1.5 * alone[0]  # before | after panels


def test_class_missing_from_baseline_has_no_delta(tmp_path, after):
    old = _metrics([0, 1, 1, 0], labels=["walk", "run"])
    comparison = json.loads(write_report(after, tmp_path, title="Eval", baseline=old)["json"].read_text())["comparison"]
    assert comparison["per_class_f1"]["jump|hop"] == {"baseline": None, "value": pytest.approx(2 / 3), "delta": None}
    assert comparison["per_class_f1"]["walk"]["delta"] is not None
