"""``finetune --task importance`` and ``tubelet summarize`` end to end on real encoded stories: the loss falls, the
per-second pooling follows particle time, the summary's segments lie inside the video within the ratio and along the
shots, summary.mp4 lasts as long as its segments, and bad input ends in one line."""

import json
import math

import numpy as np
import pytest
import torch

from tubelet.data.sample_stories import generate_stories
from tubelet.io import probe
from tubelet.io.audio import decode_audio
from tubelet.particles.pack import pack
from tubelet.particles.structure import Particles
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.importance import second_pool, tiles

FAST = dict(model="test", size=64, max_long_side=96, sample_fps=4.0, clip_seconds=2.0, workers=0, lr=3e-3)


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    out = tmp_path_factory.mktemp("stories")
    generate_stories(out, seed=4, stories=3, story_seconds=12, workers=1)
    return out


@pytest.fixture(scope="module")
def importance_run(stories, tmp_path_factory):
    out = tmp_path_factory.mktemp("importance") / "run"
    summary = finetune(FinetuneConfig(task="importance", data=str(stories), out=str(out), epochs=4, window_stride=1,
                                      min_steps_per_epoch=4, **FAST))  # fmt: skip
    return summary, out


def test_finetune_importance_learns_and_reports_rank_correlations(importance_run):
    summary, out = importance_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["kind"] == "epoch"]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert set(summary["test"]) == {"kendall_tau", "spearman_rho", "mse", "videos"} and summary["test"]["videos"] == 1
    assert -1 <= summary["test"]["kendall_tau"] <= 1
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["encoder"]["num_classes"] == 2  # a row per second of a 2 s window


def test_features_are_pooled_per_second_of_their_window():
    def clip(times):
        t = torch.tensor(times, dtype=torch.float32)
        n = len(times)
        zeros = torch.zeros(n, dtype=torch.long)
        ones = torch.ones(n, dtype=torch.long)
        return Particles(values=torch.zeros(n, 1), t=t, ti=zeros, y=zeros, x=zeros, span=ones, seq=zeros,
                         grid=(1, 1, 1), tubelet=(2, 16, 16), frame_shape=(2, 16, 16))  # fmt: skip

    packed = pack([clip([0.25, 0.75, 1.5]), clip([0.5, 0.6])])
    features = torch.tensor([[1.0], [3.0], [10.0], [4.0], [6.0]])
    pooled = second_pool(features, packed, 2)  # (2 clips, 2 seconds, 1)
    assert pooled[:, :, 0].tolist() == [[2.0, 10.0], [5.0, 5.0]]  # clip 2 has nothing in second 1: its clip mean
    strongest = second_pool(features, packed, 2, how="max")
    assert strongest[:, :, 0].tolist() == [[3.0, 10.0], [6.0, 5.0]]
    assert tiles(10, 4, 4) == [0, 4, 6] and tiles(3, 4, 4) == [0] and tiles(8, 4, 2) == [0, 2, 4]


@pytest.mark.parametrize("learned", [True, False])
def test_summarize_writes_a_summary_within_the_ratio_along_the_shots(stories, importance_run, tmp_path, tubelet_cli,
                                                                     learned):  # fmt: skip
    story = json.loads((stories / "stories.jsonl").read_text().splitlines()[0])
    video = stories / story["path"]
    checkpoint = importance_run[1] / "best" if learned else "test"
    out = tmp_path / "summary"
    result = tubelet_cli("summarize", video, "--checkpoint", checkpoint, "--out", out, "--ratio", "0.3", "--json")
    printed = json.loads(result.stdout)
    assert printed["importance"] == ("learned" if learned else "unsupervised")
    report = json.loads((out / "summary.json").read_text())
    duration = probe(video).duration_s
    segments = report["segments"]
    assert segments and report["ratio"] == 0.3 and len(report["importance"]) == story["duration"]
    assert sum(s["end"] - s["start"] for s in segments) <= 0.3 * duration + 1e-6
    cuts = [s["start"] for s in story["shots"][1:]]
    assert [a for a, _ in report["shots"][1:]] == pytest.approx(cuts, abs=1e-6)  # detected where the story cut
    for s in segments:
        assert 0 <= s["start"] < s["end"] <= duration + 1e-6 and s["caption"] is None
        assert not any(s["start"] < c < s["end"] for c in cuts)  # never across a cut
    # summary.mp4: the segments back to back, with their sound
    info = probe(out / "summary.mp4")
    total = sum(s["end"] - s["start"] for s in segments)
    assert info.has_audio and info.duration_s == pytest.approx(total, abs=1 / 15 + 1e-3)
    assert decode_audio(out / "summary.mp4").duration == pytest.approx(total, abs=0.1)
    markdown = (out / "summary.md").read_text()
    assert "No caption model" in markdown and markdown.count("| - |") == len(segments)
    assert (out / "importance.png").stat().st_size > 1000


def test_the_selection_keeps_the_most_important_seconds(stories, tmp_path, tubelet_cli):
    story = json.loads((stories / "stories.jsonl").read_text().splitlines()[1])
    out = tmp_path / "summary"
    tubelet_cli("summarize", stories / story["path"], "--checkpoint", "test", "--out", out, "--ratio", "0.2")
    report = json.loads((out / "summary.json").read_text())
    importance = np.asarray(report["importance"])
    chosen = {k for s in report["segments"] for k in range(math.floor(s["start"]), math.ceil(s["end"]))}
    rest = [importance[k] for k in range(len(importance)) if k not in chosen]
    assert np.mean([importance[k] for k in chosen]) > np.mean(rest)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratio", "0"], "--ratio: must be in (0, 1], got 0"),
        (["--ratio", "1.5"], "--ratio: must be in (0, 1], got 1.5"),
        (["--checkpoint", "NOPE_DIR/x"], "no such checkpoint directory"),
        (["--captioner", "test"], "--captioner test: not a caption model"),
    ],
)
def test_bad_input_is_one_line(stories, tmp_path, tubelet_cli, args, message):
    video = next((stories / "videos").glob("*.mp4"))
    flags = {"--checkpoint": "test", "--out": str(tmp_path / "o"), "--ratio": "0.15"}
    flags.update(dict(zip(args[::2], args[1::2])))
    result = tubelet_cli("summarize", video, *[x for kv in flags.items() for x in kv], check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_unreadable_file_and_a_folder_that_is_no_checkpoint_are_one_line(stories, tmp_path, tubelet_cli):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    result = tubelet_cli("summarize", broken, "--checkpoint", "test", "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "broken.mp4" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    video = next((stories / "videos").glob("*.mp4"))
    result = tubelet_cli("summarize", video, "--checkpoint", stories, "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "not a model checkpoint" in result.stderr
