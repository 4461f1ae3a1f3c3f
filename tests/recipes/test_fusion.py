import csv
import json
import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from tubelet import checkpoint
from tubelet.cli import main
from tubelet.data.av_dataset import AudioPreprocessing, AVClipDataset, audio_particles
from tubelet.data.loader import iterate_batches
from tubelet.data.manifest import load_dataset
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.models import load
from tubelet.particles.structure import VIDEO
from tubelet.recipes.finetune import FinetuneConfig, finetune

FAST = [
    "--model", "test", "--size", "48", "--max-long-side", "64", "--sample-fps", "4", "--clip-seconds", "1",
    "--batch-particles", "600", "--workers", "0", "--epochs", "1",
]  # fmt: skip


def test_cli_trains_every_arm_and_reports_the_ablation(av_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(av_data), "--out", str(run), "--modalities", "video,audio", *FAST]) == 0
    for ckpt in (run / "best", run / "last", run / "ablation/video/best", run / "ablation/audio/best"):
        assert {"config.json", "model.safetensors", "labels.json"} <= set(os.listdir(ckpt))
    assert load(run / "best").model.config.modalities == ("video", "audio")
    assert load(run / "ablation/audio/best").model.config.modalities == ("audio",)
    report = json.loads((run / "report/report.json").read_text())
    assert {"accuracy", "macro_f1", "per_class"} <= report.keys() and report["num_samples"] == 6
    assert set(report["ablation"]) == {"video+audio", "video", "audio"}
    for arm in report["ablation"].values():
        assert {"accuracy", "macro_f1", "per_class"} <= arm.keys() and len(arm["per_class"]) == 6
    assert "## Ablation" in (run / "report/report.md").read_text()

    # `tubelet evaluate` reads a fusion checkpoint too (dispatch on its model_type), and agrees with the report
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(run / "best"), "--data", str(av_data), "--out", str(out), "--workers", "0"]
    assert main([*args, "--views", "1", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["details"]["modalities"] == "video,audio" and evaluated["num_samples"] == 6
    assert evaluated["accuracy"] == report["accuracy"]  # both use 1 view (eval_views default) on the test split


def test_audio_only_run_without_ablation_writes_one_model(av_data, tmp_path):
    cfg = FinetuneConfig(
        data=str(av_data), out=str(tmp_path / "run"), model="test", size=48, sample_fps=4.0, clip_seconds=1.0,
        workers=0, epochs=1, modalities="audio", val_split="none",
    )  # fmt: skip
    summary = finetune(cfg)
    assert list(summary["ablation"]) == ["audio"] and not (tmp_path / "run/ablation").exists()


def test_bad_modalities_name_the_field():
    with pytest.raises(ConfigError, match="modalities"):
        FinetuneConfig(data="x", modalities="video,smell").validate()


def test_video_and_audio_of_a_window_share_its_seconds(av_data):
    data = load_dataset(av_data, split="test")
    pre = Preprocessing(size=48, sample_fps=4.0, clip_seconds=1.0, tubelet=(2, 16, 16))
    windows = [(0, 0.5, 1.5)]  # not the file's start: both must be measured from the window's start
    dataset = AVClipDataset(data, pre, AudioPreprocessing(), modalities=("video", "audio"), windows=windows)
    batch = next(iterate_batches(dataset, [[0]]))
    v, a = batch.packed.parts["video"], batch.packed.parts["audio"]
    assert 0.0 < v.t.min() < 0.3 and 0.6 < v.t.max() < 1.0  # tubelet centres of frames at 0, .25, .5, .75 s
    assert 0.0 < a.t.min() < 0.1 and 0.9 < a.t.max() < 1.0  # 160 ms patches over the same second
    assert len(a) == dataset.estimates()[0] - pre.estimate_particles(data.infos[0].height, data.infos[0].width,
                                                                     data.infos[0].fps, 1.0)  # fmt: skip


@pytest.fixture
def with_silent_file(av_data, silent_mp4, tmp_path):
    """A copy of the train manifest plus one file with no audio stream."""
    root = tmp_path / "data"
    root.mkdir()
    for split in ("train", "val", "test"):
        with open(av_data / f"{split}.csv") as f:
            rows = list(csv.DictReader(f))
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([str(av_data / r["path"]), r["label"]] for r in rows)
            if split == "train":
                writer.writerow([str(silent_mp4), rows[0]["label"]])
    return root


def test_missing_audio_is_a_one_line_error_naming_the_file(with_silent_file, tmp_path, capsys):
    args = ["finetune", "--data", str(with_silent_file), "--out", str(tmp_path / "run"), "--modalities", "video,audio"]
    assert main([*args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "silent.mp4: no audio stream" in err and "--allow-missing-audio" in err
    with pytest.raises(DataError, match="silent.mp4"):  # audio only as well
        finetune(FinetuneConfig(data=str(with_silent_file), out=str(tmp_path / "r2"), modalities="audio"))


def test_allow_missing_audio_fills_silence(silent_mp4):
    path = str(silent_mp4)
    audio = AudioPreprocessing(allow_missing_audio=True)
    particles = audio_particles(path, (0.0, 1.0), audio)
    assert len(particles) == audio.estimate_particles(1.0)
    assert audio.silence == pytest.approx((np.log(1e-6) - audio.mean) / audio.std)  # the baseline of explanations
    assert torch.allclose(particles.values, torch.full_like(particles.values, audio.silence))
    with pytest.raises(Exception, match="no audio stream"):
        audio_particles(path, (0.0, 1.0), AudioPreprocessing())


# Two epochs of two one-clip steps each at a constant learning rate (no warmup, no decay), so that a run cut short
# by max_steps has followed the full run's schedule up to the cut.
RESUMABLE = dict(
    model="test", size=48, max_long_side=64, sample_fps=4.0, clip_seconds=1.0, max_clips_per_batch=1, workers=0,
    epochs=2, warmup_epochs=0.0, min_lr_ratio=1.0, modalities="video,audio",
)  # fmt: skip
ARMS = {"video+audio": ".", "video": "ablation/video", "audio": "ablation/audio"}


@pytest.fixture
def two_clips(first_train_clips):
    """A manifest of two train clips of two classes (one manifest: no val or test split to evaluate)."""
    return first_train_clips(2)


def test_a_resumed_run_reaches_the_weights_of_an_uninterrupted_one(two_clips, tmp_path):
    cfg = FinetuneConfig(data=str(two_clips), out=str(tmp_path / "ref"), **RESUMABLE)
    reference = finetune(cfg)
    run = tmp_path / "run"
    cut = finetune(replace(cfg, out=str(run), max_steps=1))
    for arm, where in ARMS.items():
        assert reference["arms"][arm]["steps"] == 4 and cut["arms"][arm]["steps"] == 1
        state = json.loads((run / where / "last/trainer/state.json").read_text())["state"]
        assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (1, 0, 1)  # inside the first epoch

    resumed = finetune(replace(cfg, out=str(run), resume=True))
    for arm, where in ARMS.items():
        assert resumed["arms"][arm]["steps"] == 4
        expected = checkpoint.load_state_dict(tmp_path / "ref" / where / "last")
        got = checkpoint.load_state_dict(run / where / "last")
        assert all(torch.equal(got[k], v) for k, v in expected.items()), arm
        steps = [json.loads(line)["step"] for line in open(run / where / "metrics.jsonl") if '"train"' in line]
        assert steps == [1, 2, 3, 4]  # continued from the cut (across the epoch boundary), none repeated

    # Every arm has finished: resuming again trains nothing and rewrites no checkpoint.
    written = {where: (run / where / "last/model.safetensors").stat().st_mtime_ns for where in ARMS.values()}
    again = finetune(replace(cfg, out=str(run), resume=True))
    assert again["arms"] == resumed["arms"]
    assert written == {where: (run / where / "last/model.safetensors").stat().st_mtime_ns for where in ARMS.values()}


def test_freeze_keeps_the_pretrained_encoder_and_trains_what_is_new(pretrained_encoder, av_data, tmp_path):
    cfg = FinetuneConfig(
        data=str(av_data / "train.csv"), model=str(pretrained_encoder), modalities="video,audio", ablate=False,
        size=48, max_long_side=64, sample_fps=4.0, clip_seconds=1.0, batch_particles=200, workers=0, epochs=1,
        lr=1e-2,
    )  # fmt: skip
    encoder = checkpoint.load_state_dict(pretrained_encoder)
    finetune(replace(cfg, out=str(tmp_path / "probe"), freeze="backbone"))
    probe = checkpoint.load_state_dict(tmp_path / "probe/last")
    assert all(torch.equal(probe[k], v) for k, v in encoder.items())  # video embedding, blocks, final norm
    assert probe["modality_embed.weight"][VIDEO].abs().sum() > 0  # started at zero, trained
    finetune(replace(cfg, out=str(tmp_path / "top"), freeze="top:1"))
    top = checkpoint.load_state_dict(tmp_path / "top/last")
    changed = {k for k, v in encoder.items() if not torch.equal(top[k], v)}
    assert changed and all(k.startswith(("blocks.1.", "norm.")) for k in changed), changed


LORA_TARGET = re.compile(r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc\d)\.weight")


def assert_low_rank_updates_only(before: dict, after: dict, *, rank: int, prefix: str = "") -> None:
    """The LoRA targets of `before`'s blocks moved by an update of rank <= `rank`; every other weight of it stayed."""
    moved = []
    for key, weight in before.items():
        delta = after[prefix + key] - weight
        if LORA_TARGET.fullmatch(key):
            assert torch.linalg.matrix_rank(delta, atol=1e-5) <= rank, key
            moved.append(key)
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), key
    assert moved and any(not torch.equal(after[prefix + k], before[k]) for k in moved)


def test_lora_trains_adapters_beside_what_is_new_and_saves_them_merged(pretrained_encoder, av_data, tmp_path):
    cfg = FinetuneConfig(
        data=str(av_data / "train.csv"), model=str(pretrained_encoder), modalities="video,audio", ablate=False,
        size=48, max_long_side=64, sample_fps=4.0, clip_seconds=1.0, batch_particles=200, workers=0, epochs=1,
        lr=1e-2, peft="lora", lora_rank=2, out=str(tmp_path / "run"),
    )  # fmt: skip
    finetune(cfg)
    encoder = checkpoint.load_state_dict(pretrained_encoder)
    for name in ("best", "last"):
        merged = checkpoint.load_state_dict(tmp_path / "run" / name)
        assert not any("lora" in k or "base_layer" in k for k in merged)  # a plain fusion checkpoint
        assert_low_rank_updates_only(encoder, merged, rank=2)  # the encoder's blocks through adapters, all else kept
        assert merged["modality_embed.weight"][VIDEO].abs().sum() > 0  # new parts train in full (started at zero)
        load(tmp_path / "run" / name)
    state = json.loads((tmp_path / "run/last/trainer/state.json").read_text())
    assert "lora_A" in json.dumps(state["module"]), "the adapters' own state, for --resume"


def test_a_resumed_lora_run_reaches_the_weights_of_an_uninterrupted_one(two_clips, tmp_path):
    cfg = FinetuneConfig(data=str(two_clips), out=str(tmp_path / "ref"), **RESUMABLE, ablate=False, peft="lora")
    finetune(cfg)
    cut = finetune(replace(cfg, out=str(tmp_path / "run"), max_steps=1))
    assert cut["arms"]["video+audio"]["steps"] == 1
    resumed = finetune(replace(cfg, out=str(tmp_path / "run"), resume=True))
    assert resumed["arms"]["video+audio"]["steps"] == 4
    expected = checkpoint.load_state_dict(tmp_path / "ref/last")
    got = checkpoint.load_state_dict(tmp_path / "run/last")
    assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
