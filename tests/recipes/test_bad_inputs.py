"""Bad input to the commands that read a checkpoint: each family one line on stderr, exit 2, never a traceback."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tubelet.cli import main
from tubelet.io import write_video


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """An mkv cut after its first few frames (its index is at the front, so it opens) and one cut to nothing."""
    root = tmp_path_factory.mktemp("truncated")
    frames = np.random.default_rng(0).integers(0, 255, (80, 48, 64, 3), dtype=np.uint8)
    data = write_video(root / "full.mkv", frames, fps=8).read_bytes()
    (root / "empty.mkv").write_bytes(data[: len(data) // 50])  # header only: no frame decodes
    return root


def test_a_file_from_which_no_window_decodes_gets_its_own_line_alone_as_beside_others(
    classifier_run, truncated, tiny_data, capsys
):
    _, run = classifier_run
    checkpoint = ["--checkpoint", str(run / "best")]
    assert main(["predict", *checkpoint, str(truncated / "empty.mkv")]) == 2
    alone = capsys.readouterr()
    assert "Traceback" not in alone.err
    assert alone.out.strip().startswith(f"{truncated / 'empty.mkv'}: error:")
    assert alone.err.strip().splitlines() == ["tubelet predict: error: 1 file(s) could not be read (see above)"]

    good = next((tiny_data / "test").rglob("*.mp4"), None) or next(tiny_data.rglob("*.mp4"))
    assert main(["predict", *checkpoint, str(truncated / "empty.mkv"), str(good)]) == 2
    beside = capsys.readouterr()
    lines = beside.out.strip().splitlines()
    assert lines[0] == alone.out.strip() and lines[1].startswith(f"{good}:") and "error" not in lines[1]


def test_a_prediction_near_chance_says_so():
    from tubelet.tasks.classification import ClassificationTask

    task, labels = ClassificationTask(), ["a", "b", "c", "d", "e"]
    unsure = task.describe(np.array([0.23, 0.2, 0.19, 0.19, 0.19]), labels, topk=2)
    assert unsure["label"] == "a" and unsure["near_chance"] == 0.2
    sure = task.describe(np.array([0.31, 0.2, 0.19, 0.15, 0.15]), labels, topk=2)  # 1.55 x chance
    assert "near_chance" not in sure and [t["label"] for t in sure["topk"]] == ["a", "b"]


def _manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "start", "end"])
        writer.writerows(rows)
    return path


def test_evaluate_reads_the_manifest_windows_and_refuses_impossible_ones(classifier_run, tiny_data, tmp_path, capsys):
    _, run = classifier_run
    rows = [(str(tiny_data / r["path"]), r["label"]) for r in csv.DictReader(open(tiny_data / "test.csv"))]
    args = ["evaluate", "--checkpoint", str(run / "best"), "--views", "1", "--workers", "0", "--json"]

    negative = _manifest(tmp_path / "negative.csv", [(p, label, -2, 1) for p, label in rows])
    assert main([*args, "--data", str(negative), "--out", str(tmp_path / "neg")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field 'start'" in err and "negative.csv:2" in err

    # One more row whose window starts after its clip's end: skipped with the reason, the others are scored.
    late = [*((p, label, "", "") for p, label in rows), (rows[0][0], rows[0][1], 1000, 1001)]
    assert main([*args, "--data", str(_manifest(tmp_path / "late.csv", late)), "--out", str(tmp_path / "late")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == len(rows) and report["details"]["skipped"] == 1
