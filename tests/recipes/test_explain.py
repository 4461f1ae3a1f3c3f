"""`tubelet explain` end to end: a real fine-tuned checkpoint, a real encoded file, every output file opened."""

import csv
import json
import re

import av
import numpy as np
import pytest
from PIL import Image

from tubelet.errors import ConfigError, DataError
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


# --- fusion checkpoints: evidence over video AND audio particles ------------------------------------------------


def _band_of(hz: float, bands_hz: list) -> int:
    return next(b for b, (low, high) in enumerate(bands_hz) if low <= hz <= high)


@pytest.mark.parametrize("label,tone_hz", [("static_low", 330.0), ("static_high", 1320.0)])
def test_a_class_decided_by_sound_is_explained_by_its_audio_on_the_tone_band(sound_pair, label, tone_hz, tmp_path):
    """The pair's pictures are identical, so the evidence must be audio's, and within it the band of the tone."""
    report = explain(str(sound_pair["video,audio"]), sound_pair["test"][label], out=tmp_path, pictures=False)
    assert report["prediction"]["label"] == label and report["modalities"] == ["video", "audio"]
    share, drops = report["modality_share"], report["modality_occlusion"]
    assert share["audio"] >= 0.75 and share["video"] == pytest.approx(1 - share["audio"], abs=1e-3)
    assert drops["audio"] > max(drops["video"], 0.0) + 0.03  # without the sound the class is lost, not without video
    audio = report["audio"]
    scores = np.array(audio["scores"])  # (time patches, bands)
    assert scores.shape == (len(audio["times"]), len(audio["bands_hz"])) == (len(audio["times"]), 4)
    assert scores.sum(0).argmax() == _band_of(tone_hz, audio["bands_hz"])
    assert all(report["window"]["start"] <= t <= report["window"]["end"] for t in audio["times"])


def test_cli_explain_of_a_fusion_model_writes_per_modality_evidence(sound_pair, tmp_path, tubelet_cli):
    out = tmp_path / "why"
    video = sound_pair["test"]["static_low"]
    report = json.loads(tubelet_cli("explain", "--checkpoint", sound_pair["video,audio"], video, "--out", out,
                                    "--json").stdout)  # fmt: skip
    assert json.loads((out / "explanation.json").read_text()) == report
    with open(out / "particles.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["num_particles"] and {r["modality"] for r in rows} == {"video", "audio"}
    audio_rows = [r for r in rows if r["modality"] == "audio"]
    assert len(audio_rows) == len(report["audio"]["times"]) * 4 and all(r["x0"] == "" for r in audio_rows)
    video_rows = [r for r in rows if r["modality"] == "video"]
    assert all(int(r["x0"]) < int(r["x1"]) for r in video_rows)
    with av.open(str(out / "heatmap.mp4")) as container:  # drawn from the video particles only
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert Image.open(out / "audio.png").size[0] > 500
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Evidence per modality" in page  # heatmap, timeline, audio
    assert not re.search(r'src="(?!data:)', page)


@pytest.mark.parametrize("method", ["gradxinput", "ig", "rollout"])
def test_every_method_explains_an_audio_only_model(sound_pair, tmp_path, method):
    report = explain(str(sound_pair["audio"]), sound_pair["test"]["static_high"], out=tmp_path, method=method, steps=8)
    assert report["modalities"] == ["audio"] and report["modality_share"] in ({"audio": 1.0}, {"audio": 0.0})
    assert set(report["files"]) == {"particles", "audio", "html"}  # no frames were read: no heatmap
    # Removing every particle leaves the uniform prior: the drop is the target's probability above it.
    assert report["modality_occlusion"]["audio"] == pytest.approx(report["target_score"] - 0.5, abs=1e-3)
    scores = np.array(report["audio"]["scores"])
    assert np.isfinite(scores).all() and scores.size == report["num_particles"]
    if method == "ig":  # from silence, the high tone's band carries the evidence
        assert report["meta"]["baseline"] == "silence"
        assert scores.sum(0).argmax() == _band_of(1320.0, report["audio"]["bands_hz"])


def test_explain_without_the_audio_a_model_reads_is_an_error_naming_the_file(sound_pair, silent_mp4, tmp_path):
    with pytest.raises(DataError, match=f"{silent_mp4}: no audio stream"):
        explain(str(sound_pair["audio"]), silent_mp4, out=tmp_path)


def test_explain_refuses_a_model_that_reads_a_question(vqa_run, av_data, tmp_path):
    clip = next((av_data / "left_beep").glob("*.mp4"))
    with pytest.raises(ConfigError, match="question"):
        explain(str(vqa_run / "best"), clip, out=tmp_path)
