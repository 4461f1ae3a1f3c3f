"""fine-tune -> evaluate -> predict through the real CLI, at tiny size."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tubelet.cli import main
from tubelet.data.av_dataset import MISSING_AUDIO
from tubelet.data.pipeline import MAX_WINDOWS, window_count
from tubelet.data.qa import load_qa, qa_manifest, tokenize_questions
from tubelet.errors import ConfigError
from tubelet.io import probe, write_video
from tubelet.models import load
from tubelet.recipes.explain import explain
from tubelet.recipes.predict import predict
from tubelet.tasks.vqa import evaluate_vqa

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
def trained(classifier_run, tiny_data, tmp_path_factory, tubelet_cli):
    """(first, second): the session's classifier run (conftest, the settings of FAST) and a real `tubelet finetune`
    process that continues from its ``best`` for 2 more epochs."""
    _, first = classifier_run
    second = tmp_path_factory.mktemp("cli-run") / "second"
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


def test_evaluate_with_a_baseline_compares_before_and_after(trained, tiny_data, tmp_path):
    first, second = trained
    args = ["--checkpoint", second / "best", "--baseline", first / "best", "--data", tiny_data, "--out", tmp_path]
    assert main(["evaluate", *map(str, args), "--views", "1"]) == 0  # in this process: the CLI runs above
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


# --- fusion checkpoints: each window's audio beside its frames; VQA checkpoints answer --question --------------


def test_predict_with_a_fusion_model_hears_each_window_and_reports_a_file_without_audio(
    sound_pair, silent_mp4, tmp_path, tubelet_cli
):
    low, high = sound_pair["test"]["static_low"], sound_pair["test"]["static_high"]
    result = tubelet_cli(
        "predict", "--checkpoint", sound_pair["video,audio"], low, silent_mp4, high, "--json", "--plot", tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0] == {"path": str(silent_mp4), "error": f"{silent_mp4}: {MISSING_AUDIO}"}  # the others go on
    by_path = {row["path"]: row for row in rows[1:]}
    for label, path in (("static_low", low), ("static_high", high)):  # told apart by their sound alone
        row = by_path[path]
        assert row["label"] == label and row["topk"][0]["label"] == label and len(row["topk"]) == 2
        assert len(row["windows"]) >= 2 and row["windows"][-1]["end"] == pytest.approx(row["duration_s"], abs=1e-3)
        assert row["timeline"].endswith(f"{Path(path).stem}_timeline.png")


def test_predict_with_an_audio_only_model_and_with_silence_allowed(sound_pair, silent_mp4, tmp_path):
    checkpoint = sound_pair["audio"]
    for label, path in sound_pair["test"].items():
        (row,) = predict(str(checkpoint), [path])
        assert row["label"] == label
    (row,) = predict(str(checkpoint), [str(silent_mp4)])
    assert "no audio stream" in row["error"]
    allowing = tmp_path / "allowing"  # the same model, trained as if with --allow-missing-audio
    shutil.copytree(checkpoint, allowing)
    config = json.loads((allowing / "config.json").read_text())
    config["audio"]["allow_missing_audio"] = True
    (allowing / "config.json").write_text(json.dumps(config))
    (row,) = predict(str(allowing), [str(silent_mp4)])
    assert row["label"] in {"static_low", "static_high"} and "error" not in row


def test_predict_answers_every_question_about_every_file_as_evaluate_vqa_does(vqa_run, av_data):
    """Each (file, question) of the test questions, one window over the whole clip, answered as the VQA report does."""
    loaded = load(vqa_run / "best")
    qa = tokenize_questions(load_qa(qa_manifest(av_data, "test"), answers=loaded.labels), loaded.tokenizer)
    whole = replace(loaded, preprocessing=replace(loaded.preprocessing, clip_seconds=100.0))  # one window: all of it
    expected = evaluate_vqa(whole, qa, device=torch.device("cpu"))["predictions"]
    clips = sorted({str(s.path) for s in qa.data.samples})[:2]
    questions = sorted(set(qa.questions))
    rows = list(predict(str(vqa_run / "best"), clips, questions=questions, window_seconds=100.0))
    assert [(r["path"], r["question"]) for r in rows] == [(c, q) for c in clips for q in questions]
    answers = {(r["path"], r["question"]): r["label"] for r in rows}
    asked = [(str(s.path), q, e) for s, q, e in zip(qa.data.samples, qa.questions, expected) if str(s.path) in clips]
    assert len(asked) == 8 and all(answers[(path, q)] == e for path, q, e in asked)
    scores = {r["question"]: r["topk"][0]["score"] for r in rows if r["path"] == clips[0]}
    assert len(set(scores.values())) > 1  # the question is read: different questions, different answers' scores


def test_cli_predict_needs_a_question_exactly_for_a_vqa_checkpoint(vqa_run, sound_pair, capsys):
    clip = sound_pair["test"]["static_low"]
    assert main(["predict", "--checkpoint", str(vqa_run / "best"), clip, "--question", "which way does it move?",
                 "--question", "what colour is it?"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "'which way does it move?' ->" in lines[0] and "'what colour is it?' ->" in lines[1]
    for checkpoint, questions, why in (
        (vqa_run / "best", None, "pass one"), (sound_pair["audio"], ["which way?"], "does not read text")
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=f"--question: .*{why}") as error:
            next(predict(str(checkpoint), [clip], questions=questions))
        assert "\n" not in str(error.value)


# --- issue 13: windows that make no sense for the checkpoint, output into a closed pipe -------------------------------


def test_a_window_shorter_than_one_tubelet_is_refused_by_predict_and_explain(classifier_run, tiny_data, tmp_path):
    # The classifier samples 4 fps with 2-frame tubelets: 0.25 s holds one frame.
    ckpt = classifier_run[1] / "best"
    clip = next((tiny_data / "grow").iterdir())
    with pytest.raises(
        ConfigError, match=r"--window-seconds 0.25: holds 1 frames .* one tubelet \(2 frames\); .*0.5 s"
    ):
        list(predict(ckpt, [clip], window_seconds=0.25))
    with pytest.raises(ConfigError, match=r"--seconds 0.25: .*one tubelet"):
        explain(ckpt, clip, out=tmp_path / "why", seconds=0.25)
    assert not (tmp_path / "why" / "explanation.json").exists()


def test_a_stride_that_makes_too_many_windows_is_refused_naming_the_file_and_count(classifier_run, tiny_data, capsys):
    ckpt = classifier_run[1] / "best"
    clip = next((tiny_data / "grow").iterdir())
    stride = 1e-5
    expected = window_count(probe(clip).duration_s, 1.0, stride)
    assert expected > MAX_WINDOWS
    assert main(["predict", "--checkpoint", str(ckpt), str(clip), "--stride-seconds", str(stride)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert (
        f"--stride-seconds 1e-05: {clip} would be cut into {expected} windows (at most {MAX_WINDOWS})" in captured.err
    )


def test_predict_into_a_closed_pipe_ends_quietly(classifier_run, tiny_data):
    clips = sorted((tiny_data / "grow").iterdir())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tubelet", "predict", "--checkpoint", str(classifier_run[1] / "best"), *map(str, clips)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert stderr == ""
