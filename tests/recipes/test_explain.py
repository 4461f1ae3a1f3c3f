"""`tubelet explain` end to end: a real fine-tuned checkpoint, a real encoded file, every output file opened."""

import csv
import html
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tubelet.cli import main
from tubelet.data.manifest import Sample, VideoDataset
from tubelet.errors import ConfigError, DataError
from tubelet.explain import METHODS, class_probs
from tubelet.io import probe
from tubelet.models import load
from tubelet.particles.modalities import ModalClip
from tubelet.particles.structure import TEXT
from tubelet.recipes.explain import explain
from tubelet.recipes.predict import predict, window_dataset


@pytest.fixture(scope="module")
def classifier(classifier_run):
    """A fine-tuned video classifier checkpoint (the `test` encoder, 64-px frames, 1 s at 4 fps): the session's."""
    return classifier_run[1] / "best"


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


# Appended to a copy of a report: after the page has loaded, each <img>'s decoded size and the page's width go into
# the body's attributes, which Chromium's --dump-dom prints.
_MEASURE = """<script>window.addEventListener("load", () => {
  document.body.dataset.images = [...document.images].map(i => i.naturalWidth + "x" + i.naturalHeight).join(" ");
  document.body.dataset.scrollWidth = document.documentElement.scrollWidth;
});</script>"""


def test_report_renders_in_a_headless_browser(classifier, video, tmp_path, chromium):
    out = tmp_path / "why"
    assert main(["explain", "--checkpoint", str(classifier), str(video), "--out", str(out), "--json"]) == 0
    measured = tmp_path / "measured.html"
    measured.write_text((out / "report.html").read_text().replace("</body>", _MEASURE + "</body>"))
    dom = chromium(measured, "--window-size=1280,2000", "--dump-dom")
    images = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    assert len(images) == 3  # the animation, the frames with their heat, the timeline
    for size, name in zip(images, ("heatmap.gif", "heatmap.png", "timeline.png")):
        assert size == "{}x{}".format(*Image.open(out / name).size)  # each decoded in full by a real browser
    assert int(re.search(r'data-scroll-width="(\d+)"', dom).group(1)) <= 1280  # no sideways scrolling
    assert "Sound" not in dom and "Question" not in dom and "modality" not in dom  # a video-only model's page

    shot = tmp_path / "page.png"
    chromium(out / "report.html", "--window-size=1280,2000", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    colourful = (pixels.max(-1) - pixels.min(-1)) > 60  # text and tables are grey; the pictures are not
    assert colourful.mean() > 0.01  # 0 where the pictures fail to show (their alt text is grey)


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


def test_cli_explain_of_a_fusion_model_writes_per_modality_evidence(sound_pair, tmp_path, capsys):
    out = tmp_path / "why"
    video = sound_pair["test"]["static_low"]
    args = ["explain", "--checkpoint", str(sound_pair["video,audio"]), video, "--out", str(out), "--json"]
    assert main(args) == 0  # in this process: a real `tubelet explain` runs above
    report = json.loads(capsys.readouterr().out)
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


# --- VQA checkpoints: the answer to a question, over the clip's particles and the question's tokens ---------------


@pytest.fixture(scope="module")
def asked(av_data):
    """(clip, question) of the first test question (a motion question about a left_beep clip)."""
    row = next(csv.DictReader(open(av_data / "qa_test.csv")))
    return str(av_data / row["path"]), row["question"]


def _whole_window(loaded, clip: str, question: str) -> ModalClip:
    """The particles predict reads for one window over all of `clip` with `question` (its dataset, not explain's)."""
    info = probe(clip)
    data = VideoDataset(samples=[Sample(path=Path(clip))], infos=[info], labels=[])
    dataset = window_dataset(loaded, data, loaded.preprocessing, [(0, 0.0, info.duration_s)], [question])
    return ModalClip(dataset[0].particles)


def test_vqa_explanation_answers_as_predict_does_and_scores_each_token_by_removing_it(vqa_run, asked, tmp_path):
    checkpoint, (clip, question) = str(vqa_run / "best"), asked
    loaded = load(checkpoint)
    whole = dict(start=0.0, seconds=100.0, pictures=False)  # one window over all of the clip, as predict's below
    report = explain(checkpoint, clip, out=tmp_path, question=question, **whole)
    (answer,) = predict(checkpoint, [clip], questions=[question], window_seconds=100.0, topk=len(loaded.labels))
    assert report["question"] == answer["question"] == question and report["modalities"] == ["video", "text"]
    assert report["target"] == report["prediction"]["label"] == answer["label"]
    assert report["target_score"] == pytest.approx(answer["score"], abs=2e-4)
    other = answer["topk"][-1]  # the least likely answer, asked for explicitly
    again = explain(checkpoint, clip, out=tmp_path / "other", question=question, target=other["label"], **whole)
    assert again["target"] == other["label"] and again["target_score"] == pytest.approx(other["score"], abs=2e-4)

    # Each token's score is the drop of the answer's probability when that token's particle is removed.
    tokens = report["tokens"]
    assert [t["token"] for t in tokens] == loaded.tokenizer.encode(question).tokens  # [CLS] and the words, in order
    particles = _whole_window(loaded, clip, question)
    target = loaded.labels.index(report["target"])
    full = class_probs(loaded.model.eval(), [particles])[0, target]
    assert full.item() == pytest.approx(report["target_score"], abs=1e-4)
    first = particles.slices()["text"].start
    for k, token in enumerate(tokens):
        keep = torch.ones(len(particles), dtype=torch.bool)
        keep[first + k] = False
        drop = full - class_probs(loaded.model, [particles.select(keep)])[0, target]
        assert token["score"] == pytest.approx(drop.item(), abs=1e-6)
    without_question = class_probs(loaded.model, [particles.select(particles.modality != TEXT)])[0, target]
    assert set(report["modality_occlusion"]) == {"video", "text"}
    assert report["modality_occlusion"]["text"] == pytest.approx((full - without_question).item(), abs=1e-4)
    assert set(report["modality_share"]) == {"video", "text"}
    with open(tmp_path / "particles.csv", newline="") as f:
        said = [r for r in csv.DictReader(f) if r["modality"] == "text"]
    assert [r["token"] for r in said] == [t["token"] for t in tokens] and all(r["x0"] == "" for r in said)
    # Asked as predict asks: at the same seconds (the window's centre), in the same places.
    assert [float(r["t"]) for r in said] == pytest.approx(particles.parts["text"].t.tolist(), abs=1e-4)
    assert [int(r["ti"]) for r in said] == particles.parts["text"].ti.tolist()


@pytest.mark.parametrize("method", ["ig", "gradxinput", "rollout"])
def test_gradient_methods_and_rollout_explain_a_vqa_checkpoint(vqa_run, asked, tmp_path, method):
    clip, question = asked
    report = explain(str(vqa_run / "best"), clip, out=tmp_path, question=question, method=method, steps=16,
                     pictures=False)  # fmt: skip
    assert len(report["tokens"]) == len(question.split()) + 2  # [CLS], the words and the "?"
    assert all(np.isfinite(t["score"]) for t in report["tokens"])
    if method == "rollout":
        return
    assert report["meta"]["baseline"] == "average video particle, token 0 for every text particle"  # [PAD] is 0
    if method == "ig":  # complete: particle scores (tokens included) sum to the logit's change from the baseline
        change = report["meta"]["logit"] - report["meta"]["baseline_logit"]
        assert abs(report["meta"]["completeness_gap"]) <= 0.02 * abs(change) + 1e-5


def test_cli_explain_of_a_vqa_checkpoint_shows_the_question_shaded_by_token(vqa_run, asked, tmp_path, capsys):
    clip, question = asked
    out = tmp_path / "why"
    args = ["explain", "--checkpoint", str(vqa_run / "best"), clip, "--question", question, "--out", str(out)]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads((out / "explanation.json").read_text()) == report
    assert report["question"] == question and "text" in report["modality_occlusion"]
    assert set(report["files"]) == {"particles", "mp4", "gif", "png", "timeline", "html"}  # no sound: no audio.png
    with av.open(str(out / "heatmap.mp4")) as container:  # drawn from the video particles only
        assert sum(1 for _ in container.decode(video=0)) == 4
    page = (out / "report.html").read_text()
    token_span = r'<span class="token" style="background:rgba\((\d+),\d+,\d+,([\d.]+)\)"[^>]*>([^<]*)</span>'
    shaded = re.findall(token_span, page)  # (red, opacity, token) of each token, in order
    assert [token for *_, token in shaded] == [html.escape(t["token"]) for t in report["tokens"]]
    largest = max(abs(t["score"]) for t in report["tokens"])
    assert [float(alpha) for _, alpha, _ in shaded] == pytest.approx(
        [abs(t["score"]) / largest for t in report["tokens"]], abs=1e-3
    )
    assert [red == "214" for red, *_ in shaded] == [t["score"] >= 0 for t in report["tokens"]]  # red for, blue against
    assert html.escape(question) in page and not re.search(r'src="(?!data:)', page)


def test_explain_question_errors_name_the_flag_as_predict_does(vqa_run, classifier, video, asked, tmp_path, capsys):
    clip, question = asked
    for checkpoint, flags, path in (
        (vqa_run / "best", [], clip),  # a VQA checkpoint needs a question
        (classifier, ["--question", question], video),  # a video classifier reads none
        (vqa_run / "best", ["--question", " "], clip),
    ):  # fmt: skip
        assert main(["explain", "--checkpoint", str(checkpoint), str(path), "--out", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err
        with pytest.raises(ConfigError) as predicted:
            next(predict(str(checkpoint), [str(path)], questions=flags[1:] or None))
        assert err == f"tubelet explain: error: {predicted.value}\n" and "--question" in err
