"""`tubelet explain` end to end: a real fine-tuned checkpoint, a real encoded file, every output file opened."""

import csv
import json
import re

import av
import pytest
from PIL import Image

from tubelet.explain import METHODS
from tubelet.io import probe
from tubelet.recipes.explain import explain

FAST = ["model=test", "size=64", "max_long_side=96", "sample_fps=4", "clip_seconds=1", "batch_particles=400"]


@pytest.fixture(scope="module")
def classifier(tiny_data, tmp_path_factory, tubelet_cli):
    out = tmp_path_factory.mktemp("explain-run")
    tubelet_cli("finetune", "--data", tiny_data, "--out", out, "--epochs", 1, "workers=0", *FAST)
    return out / "best"


@pytest.fixture(scope="module")
def video(tiny_data):
    return next(p for p in sorted((tiny_data / "move_left").iterdir()) if probe(p).duration_s >= 2.0)


def test_cli_explain_writes_a_self_contained_report(classifier, video, tmp_path, tubelet_cli):
    out = tmp_path / "why"
    result = tubelet_cli(
        "explain", "--checkpoint", classifier, video, "--out", out, "--start", "0.5", "--target", "move_right",
        "--occlusion-window", "1x2x2", "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["method"] == "occlusion" and report["target"] == "move_right"
    assert report["window"] == {"start": 0.5, "end": 1.5}
    assert report["meta"]["window"] == [1, 2, 2]
    assert json.loads((out / "explanation.json").read_text()) == report
    assert 0 < len(report["top_particles"]) <= 10
    for row in report["top_particles"]:
        assert 0.5 <= row["t"] <= 1.5  # seconds in the video, inside the window
    scores = [row["score"] for row in report["top_particles"]]
    assert scores == sorted(scores, reverse=True)

    with open(out / "particles.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["num_particles"]
    info = probe(video)
    assert all(0 <= int(r["x0"]) < int(r["x1"]) <= info.width + 1 for r in rows)  # source pixels (rounded)

    with av.open(str(out / "heatmap.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4  # 1 s at the checkpoint's 4 fps
    assert Image.open(out / "heatmap.gif").n_frames == 4
    page = (out / "report.html").read_text()
    assert page.count("data:image/gif;base64,") == 1 and page.count("data:image/png;base64,") == 2
    assert not re.search(r'src="(?!data:)', page)  # nothing the page would have to fetch
    assert "move_right" in page and video.name in page


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_through_the_recipe(classifier, video, tmp_path, method):
    report = explain(str(classifier), video, out=tmp_path, method=method, steps=4, pictures=False)
    assert report["method"] == method
    assert report["target"] == report["prediction"]["label"]  # default: the predicted class
    assert set(report["files"]) == {"particles"}
    assert report["num_particles"] > 0


def test_cli_explain_rejects_an_unknown_target_in_one_line(classifier, video, tmp_path, tubelet_cli):
    args = ["explain", "--checkpoint", classifier, video, "--out", tmp_path, "--target", "dance"]
    result = tubelet_cli(*args, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "target" in result.stderr and "move_left" in result.stderr


def test_cli_explain_rejects_a_start_past_the_end(classifier, video, tmp_path, tubelet_cli):
    result = tubelet_cli("explain", "--checkpoint", classifier, video, "--out", tmp_path, "--start", "999", check=False)
    assert result.returncode == 2 and "start" in result.stderr and str(video) in result.stderr
