"""tubelet interpolate / denoise end to end on real encoded files: frame times, cuts, audio, lower error."""

import json

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("cv2")

from tubelet.cli import main  # noqa: E402
from tubelet.data.sample_v2v import TEST_PHOTOS, make_scene, render, soundtrack  # noqa: E402
from tubelet.io import decode, probe, write_video  # noqa: E402
from tubelet.video2video.baselines import interpolate  # noqa: E402
from tubelet.video2video.metrics import psnr  # noqa: E402


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """1 s at 24 fps, 96x64, a hard cut at 0.5 s (frame 12), with a soundtrack."""
    scene = make_scene(0, photos=TEST_PHOTOS, fps=24.0, size=(96, 64), duration=1.0, seed=3, cut=True)
    path = tmp_path_factory.mktemp("v2v") / "cut.mp4"
    write_video(path, render(scene), fps=24.0, audio=soundtrack(scene), audio_rate=16000, crf=18)
    return path


def run_json(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_interpolate_writes_the_requested_times_and_never_blends_across_the_cut(cut_clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    summary = run_json(capsys, ["interpolate", str(cut_clip), "--fps", "60", "--out", str(out), "--method", "blend"])
    assert summary["frames_in"] == 24 and summary["cuts"] == [0.5] and summary["audio"]
    clip, source = decode(out), decode(cut_clip)
    assert len(clip) == summary["frames_out"] == 58  # 0 .. 57/60 <= 23/24 s
    np.testing.assert_allclose(clip.timestamps, np.arange(58) / 60, atol=1e-4)
    assert probe(out).has_audio
    # 28/60 s is 0.2 of the way from frame 11 to frame 12, across the cut: frame 11 itself, not a blend.
    frame = clip.frames[28]
    blended = interpolate(source.frames[11], source.frames[12], 0.2, "blend")
    assert psnr(frame, source.frames[11]) > psnr(frame, blended) + 3
    # Within a shot it is a blend: 7/60 s is 0.8 of the way from frame 2 to frame 3.
    within = interpolate(source.frames[2], source.frames[3], 0.8, "blend")
    assert psnr(clip.frames[7], within) > psnr(clip.frames[7], source.frames[2]) + 3


class Collect:
    """Stands in for the encoder: keeps every (seconds, frame) written, so two runs compare before lossy coding."""

    def __init__(self, *args, **kwargs):
        self.frames = []
        Collect.last = self

    def write(self, frame, seconds):
        self.frames.append((seconds, frame.copy()))

    def write_audio(self, samples, start):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_windows_give_the_same_video_as_one_pass(cut_clip, monkeypatch):
    import tubelet.recipes.interpolate as recipe

    monkeypatch.setattr(recipe, "VideoWriter", Collect)
    recipe.interpolate_video(str(cut_clip), fps=30.0, out="unused.mp4", method="flow")
    whole = Collect.last.frames
    monkeypatch.setattr(recipe, "WINDOW_FRAMES", 5)  # five windows, the cut inside the third
    summary = recipe.interpolate_video(str(cut_clip), fps=30.0, out="unused.mp4", method="flow")
    pieces = Collect.last.frames
    assert summary["cuts"] == [0.5] and len(whole) == len(pieces) == 29
    for (t1, a), (t2, b) in zip(whole, pieces):
        assert t1 == t2
        np.testing.assert_array_equal(a, b)


def test_a_missing_or_wrong_checkpoint_is_refused_in_one_line(cut_clip, interpolation_run, tmp_path, capsys):
    out = str(tmp_path / "o.mp4")
    assert main(["interpolate", str(cut_clip), "--fps", "30", "--out", out, "--checkpoint", str(tmp_path / "no")]) == 2
    assert main(["denoise", str(cut_clip), "--out", out, "--checkpoint", str(interpolation_run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "not a denoise model" in lines[1]
    assert not (tmp_path / "o.mp4").exists()


def test_interpolate_with_a_model_writes_the_requested_times_and_respects_the_cut(
    cut_clip, interpolation_run, tmp_path, capsys
):
    out = tmp_path / "model.mp4"
    summary = run_json(capsys, ["interpolate", str(cut_clip), "--fps", "60", "--out", str(out),
                                "--checkpoint", str(interpolation_run)])  # fmt: skip
    assert summary["method"] == "model" and summary["cuts"] == [0.5] and summary["audio"]
    clip, source = decode(out), decode(cut_clip)
    assert len(clip) == summary["frames_out"] == 58
    np.testing.assert_allclose(clip.timestamps, np.arange(58) / 60, atol=1e-4)
    # Across the cut the nearer frame, as the baselines do; within a shot, close to the flow-warped frame it refines.
    assert psnr(clip.frames[28], source.frames[11]) > 30
    flow = interpolate(source.frames[2], source.frames[3], 0.8, "flow")
    assert psnr(clip.frames[7], flow) > 28


def test_denoise_with_a_model_keeps_the_times_and_lowers_the_error(denoise_run, tmp_path, capsys):
    scene = make_scene(1, photos=TEST_PHOTOS, fps=24.0, size=(64, 48), duration=0.5, seed=4)
    clean = render(scene)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    source = tmp_path / "noisy.mp4"
    write_video(source, noisy, fps=24.0, crf=10)
    out = tmp_path / "clean.mp4"
    summary = run_json(capsys, ["denoise", str(source), "--out", str(out), "--checkpoint", str(denoise_run)])
    result = decode(out)
    assert summary["method"] == "model" and summary["frames"] == 3 and summary["frames_out"] == len(result) == 12
    np.testing.assert_allclose(result.timestamps, decode(source).timestamps, atol=1e-4)
    assert psnr(result.frames, clean) > psnr(decode(source).frames, clean) + 2


@pytest.mark.parametrize("method", ["median", "nlm"])
def test_denoise_lowers_the_error_against_the_clean_clip(tmp_path, capsys, method):
    scene = make_scene(1, photos=TEST_PHOTOS, fps=24.0, size=(96, 64), duration=0.5, seed=4)
    scene.velocity, scene.object_velocity = (10.0, 0.0), (15.0, 0.0)  # slow motion: a median's good case
    clean = render(scene)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    source = tmp_path / "noisy.mp4"
    write_video(source, noisy, fps=24.0, crf=10)
    out = tmp_path / "clean.mp4"
    summary = run_json(capsys, ["denoise", str(source), "--out", str(out), "--method", method, "--sigma", "25"])
    result = decode(out)
    assert summary["frames_out"] == len(result) == 12 and summary["cuts"] == []
    np.testing.assert_allclose(result.timestamps, decode(source).timestamps, atol=1e-4)
    assert psnr(result.frames, clean) > psnr(decode(source).frames, clean) + 2
