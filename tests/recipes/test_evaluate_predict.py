"""fine-tune -> evaluate -> predict through the real CLI, at tiny size."""

import json

import numpy as np
import pytest

from tubelet.io import write_video

FAST = [
    "model=test",
    "size=64",
    "max_long_side=96",
    "sample_fps=4",
    "clip_seconds=1",
    "batch_particles=400",
    "workers=0",
    "lr=0.003",
]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory, tubelet_cli):
    out = tmp_path_factory.mktemp("cli-run")
    first = out / "first"
    tubelet_cli("finetune", "--data", tiny_data, "--out", first, "--epochs", 1, *FAST)
    second = out / "second"
    tubelet_cli("finetune", "--data", tiny_data, "--model", first / "best", "--out", second, "--epochs", 2, *FAST)
    return first, second


def test_evaluate_writes_the_pinned_report(trained, tiny_data, tmp_path, tubelet_cli):
    _, run = trained
    result = tubelet_cli("evaluate", "--checkpoint", run / "best", "--data", tiny_data, "--out", tmp_path, "--views", 2)
    assert "accuracy" in result.stdout and "move_left" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    assert set(report["per_class"]) == {"grow", "move_left", "move_right", "rotate", "static"}
    for row in report["per_class"].values():
        assert set(row) >= {"precision", "recall", "f1", "support"}
    assert sum(row["support"] for row in report["per_class"].values()) == 5  # the test split
    assert (tmp_path / "report.md").read_text().count("move_right") >= 1
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000


def test_evaluate_with_a_baseline_compares_before_and_after(trained, tiny_data, tmp_path, tubelet_cli):
    first, second = trained
    tubelet_cli(
        "evaluate",
        "--checkpoint",
        second / "best",
        "--baseline",
        first / "best",
        "--data",
        tiny_data,
        "--out",
        tmp_path,
        "--views",
        1,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    comparison = report["comparison"]
    assert comparison["accuracy"]["value"] == pytest.approx(report["accuracy"])
    assert comparison["accuracy"]["delta"] == pytest.approx(report["accuracy"] - comparison["accuracy"]["baseline"])
    assert "before" in (tmp_path / "report.md").read_text().lower()


def test_evaluate_refuses_labels_the_checkpoint_does_not_know(trained, tmp_path, tubelet_cli):
    _, run = trained
    rng = np.random.default_rng(0)
    write_video(tmp_path / "data" / "juggling" / "a.mp4", rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8), fps=8)
    result = tubelet_cli(
        "evaluate",
        "--checkpoint",
        run / "best",
        "--data",
        tmp_path / "data",
        "--split",
        "all",
        "--out",
        tmp_path / "r",
        check=False,
    )
    assert result.returncode == 2
    assert "'juggling' not in the checkpoint's labels" in result.stderr


def test_predict_labels_new_files_and_windows_long_ones(trained, tmp_path, tubelet_cli):
    _, run = trained
    frames = np.random.default_rng(1).integers(0, 255, (40, 64, 80, 3), dtype=np.uint8)
    long_video = write_video(tmp_path / "long.mp4", frames, fps=8)  # 5 s
    short_video = write_video(tmp_path / "short.mkv", frames[:6], fps=8)
    result = tubelet_cli(
        "predict",
        "--checkpoint",
        run / "best",
        long_video,
        short_video,
        "--json",
        "--window-seconds",
        1,
        "--stride-seconds",
        1,
        "--plot",
        tmp_path / "plots",
    )
    rows = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    long_row, short_row = rows[str(long_video)], rows[str(short_video)]
    labels = {"grow", "move_left", "move_right", "rotate", "static"}
    for row in (long_row, short_row):
        assert row["label"] in labels and 0 < row["score"] <= 1
        assert row["topk"][0]["label"] == row["label"] and len(row["topk"]) == 5
    assert [(w["start"], w["end"]) for w in long_row["windows"]] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert "windows" not in short_row
    assert (tmp_path / "plots" / "long_timeline.png").exists()


def test_predict_reports_an_unreadable_file_and_goes_on(trained, tmp_path, tubelet_cli):
    _, run = trained
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    good = write_video(tmp_path / "ok.mp4", np.zeros((8, 48, 48, 3), np.uint8), fps=8)
    result = tubelet_cli("predict", "--checkpoint", run / "best", bad, good, "--json", check=False)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["path"] == str(bad) and "cannot open" in rows[0]["error"]
    assert rows[1]["path"] == str(good) and "label" in rows[1]
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
