"""Masked video pretraining end to end on tiny generated data, and fine-tuning from its encoder."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import tubelet.models as models_module
import tubelet.tasks.reconstruction as reconstruction_module
from tubelet import checkpoint
from tubelet.errors import ConfigError
from tubelet.models import Encoder, model_config
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.pretrain import PretrainConfig, pretrain

# The `test` encoder (dim 32, 2 blocks) and a one-block decoder on 64-px frames, 1 s clips at 4 fps.
FAST = dict(
    model="test",
    size=64,
    max_long_side=96,
    sample_fps=4.0,
    clip_seconds=1.0,
    batch_particles=600,
    workers=0,
    lr=3e-3,
    decoder_dim=32,
    decoder_depth=1,
    decoder_heads=2,
)


def run(data, out, **changes) -> dict:
    return pretrain(PretrainConfig(data=str(data), out=str(out), **{**FAST, "epochs": 2, **changes}))


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    """One 2-epoch run shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    return run(tiny_data, out), out


def test_run_writes_encoder_checkpoints_decoder_pictures_and_metrics(pretrained):
    summary, out = pretrained
    assert summary["epochs_run"] == 2 and summary["skipped"] == []
    encoder_keys = set(Encoder(model_config("test", num_classes=0)).state_dict())
    for name in ("best", "last"):
        assert {"config.json", "model.safetensors", "decoder.safetensors", "training_args.json"} <= {
            p.name for p in (out / name).iterdir()
        }
        assert set(checkpoint.load_state_dict(out / name)) == encoder_keys  # the encoder alone, no head
        config = checkpoint.load_config(out / name)
        assert config["model_type"] == "tubelet-encoder" and config["encoder"]["num_classes"] == 0
        assert config["decoder"]["dim"] == 32 and config["preprocessing"]["sample_fps"] == 4.0
        decoder = checkpoint.load_state_dict(out / name, "decoder.safetensors")
        assert "mask_token" in decoder and not any(k.startswith(("encoder.", "decoder.")) for k in decoder)
    assert checkpoint.has_trainer(out / "last") and not checkpoint.has_trainer(out / "best")

    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, summary["steps"] + 1))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    best_epoch = min((r for r in records if r["kind"] == "epoch"), key=lambda r: r["loss"])
    assert summary["best_loss"] == pytest.approx(best_epoch["loss"])  # best/ is the lowest epoch loss

    pictures = out / "reconstructions"
    assert sorted(p.name for p in pictures.iterdir()) == [
        "epoch_001.gif",
        "epoch_001.png",
        "epoch_002.gif",
        "epoch_002.png",
    ]
    with Image.open(pictures / "epoch_002.gif") as gif:
        assert gif.n_frames == 4  # 1 s at 4 fps
        assert gif.width > 3 * gif.height  # original | masked | reconstruction side by side
    with Image.open(pictures / "epoch_002.png") as png:
        assert png.height > 3 * 64  # three rows of frames


def test_the_encoder_sees_a_tenth_of_the_particles(tiny_data, tmp_path, monkeypatch):
    fed, batches = [], []
    real_forward, real_mask = Encoder.forward_features, reconstruction_module.mask_batch

    def forward_features(self, packed, **kw):
        fed.append(len(packed))
        return real_forward(self, packed, **kw)

    def mask_batch(packed, *args, **kw):
        plan = real_mask(packed, *args, **kw)
        batches.append((len(packed), len(plan.visible)))
        return plan

    monkeypatch.setattr(Encoder, "forward_features", forward_features)
    monkeypatch.setattr(reconstruction_module, "mask_batch", mask_batch)
    run(tiny_data, tmp_path / "run", epochs=1, prune_threshold=0.0)

    assert fed == [visible for _, visible in batches]  # training batches, then the picture's clip
    total, visible = np.sum(batches, axis=0)
    assert 0.05 < visible / total < 0.15, (visible, total)


def test_training_reduces_the_loss_on_a_fixed_set(tiny_data, tmp_path):
    # Whole clips, no crops: every epoch sees the same particles (under new masks). Targets are the normalized
    # values: norm-pix targets of this synthetic footage are mostly sensor noise, which no model can predict.
    out = tmp_path / "run"
    summary = run(
        tiny_data,
        out,
        epochs=5,
        norm_pix=False,
        lr=1e-2,
        warmup_epochs=0.0,
        weight_decay=0.0,
        clip_seconds=10.0,
        sample_fps=2.0,
        crop_scale_min=1.0,
        batch_particles=1000,
        min_steps_per_epoch=0,  # the budget's batches: the same few each epoch
    )
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    losses = [r["loss"] for r in records if r["kind"] == "epoch"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert summary["best_loss"] == min(losses)


def test_finetune_starts_from_the_pretrained_encoder(pretrained, tiny_data, tmp_path, monkeypatch):
    _, out = pretrained
    loaded = {}
    real_load = models_module.load

    def spy_load(spec, **kw):
        result = real_load(spec, **kw)
        loaded.update({k: v.clone() for k, v in result.model.state_dict().items()})
        return result

    monkeypatch.setattr(models_module, "load", spy_load)
    summary = finetune(
        FinetuneConfig(
            data=str(tiny_data),
            out=str(tmp_path / "ft"),
            model=str(out / "last"),
            epochs=1,
            **{k: v for k, v in FAST.items() if not k.startswith("decoder") and k != "model"},
        )
    )
    assert summary["steps"] >= 1
    pretrained_weights = checkpoint.load_state_dict(out / "last")
    assert set(loaded) == set(pretrained_weights)  # strict: every key, no head yet (the recipe adds it)
    assert all(torch.equal(loaded[k], v) for k, v in pretrained_weights.items())
    assert real_load(str(tmp_path / "ft" / "last")).model.num_classes == 5

    # And back: pretraining from the classifier drops its head, so the encoder keys are those of a headless one.
    run(tiny_data, tmp_path / "again", model=str(tmp_path / "ft" / "last"), epochs=1, max_steps=1)
    assert set(checkpoint.load_state_dict(tmp_path / "again" / "last")) == set(pretrained_weights)


def test_resume_after_a_finished_epoch_reaches_the_same_step_count(tiny_data, tmp_path, pretrained):
    reference, _ = pretrained  # 2 epochs straight through
    first = run(tiny_data, tmp_path / "run", epochs=1)
    assert 0 < first["steps"] < reference["steps"]
    resumed = run(tiny_data, tmp_path / "run", epochs=2, resume=True)
    assert resumed["steps"] == reference["steps"] and resumed["epochs_run"] == 2
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, reference["steps"] + 1))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]  # epoch 1 was not run again


def test_an_unreadable_file_in_an_unlabeled_folder_is_skipped_and_reported(tiny_data, tmp_path):
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    for video in sorted(tiny_data.glob("*/*.mp4"))[:4]:
        shutil.copy(video, folder / video.name)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)

    summary = run(folder, tmp_path / "run", epochs=1)

    assert [s["path"].endswith("broken.mp4") for s in summary["skipped"]] == [True]
    assert summary["skipped"][0]["reason"]
    assert summary["steps"] >= 1


def test_bad_settings_name_their_field(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="mask: expected tube | random | frame"):
        run(tiny_data, tmp_path, mask="block")
    with pytest.raises(ConfigError, match="mask_ratio"):
        run(tiny_data, tmp_path, mask_ratio=1.0)


def test_cli_pretrain_with_random_masks_then_probe_linear(tiny_data, tmp_path, tubelet_cli):
    def tubelet(*args):
        return tubelet_cli(*args, check=False)

    overrides = [f"{k}={v}" for k, v in FAST.items() if k != "model"]
    args = ["--data", tiny_data, "--model", "test", "--out", tmp_path / "pre", "--mask", "random"]
    result = tubelet("pretrain", *args, "--mask-ratio", "0.75", "--epochs", "1", "decoder_mask_ratio=0.5", *overrides)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 1
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["mask"] == "random"

    ft_overrides = [o for o in overrides if not o.startswith("decoder")]
    args = ["--data", tiny_data, "--model", tmp_path / "pre" / "last", "--out", tmp_path / "probe", "--epochs", "1"]
    result = tubelet("probe-linear", *args, *ft_overrides)
    assert result.returncode == 0, result.stderr
    before = checkpoint.load_state_dict(tmp_path / "pre" / "last")
    after = checkpoint.load_state_dict(tmp_path / "probe" / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the encoder stayed frozen
    assert {k for k in after if k not in before} == {"head.weight", "head.bias"}

    bad = tubelet("pretrain", "--data", tiny_data, "--out", tmp_path / "bad", "--mask", "block")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "mask" in bad.stderr


def test_a_restorer_starts_from_the_pretrained_encoder_and_decoder(pretrained, v2v_data, tmp_path):
    """Pretrained 2x16x16 tubelets fold to one frame; the MAE decoder's blocks start the pixel decoder (same shape)."""
    from tubelet.models import load, load_decoder

    _, pre_run = pretrained
    out = tmp_path / "restorer"
    finetune(FinetuneConfig(
        task="denoise", data=str(v2v_data), out=str(out), model=str(pre_run / "best"), decoder_dim=32,
        decoder_depth=1, decoder_heads=2, tile=32, tiles_per_clip=2, frames=2, workers=0, max_steps=1, epochs=1,
    ))  # fmt: skip
    restorer, encoder = load(out / "best"), load(pre_run / "best")
    assert restorer.task == "denoise" and restorer.preprocessing.tubelet == (1, 16, 16)
    assert restorer.model.config.tubelet == (1, 16, 16) and encoder.model.config.tubelet[0] == 2
    old, new = load_decoder(pre_run / "best"), load_decoder(out / "best")
    assert new.config.estimate and not old.config.estimate
    moved = [(name, p) for name, p in old.state_dict().items() if name.startswith("blocks.")]
    # One step of training moved the blocks a little from where the pretraining decoder left them.
    for name, before in moved:
        assert torch.allclose(new.state_dict()[name], before, atol=2e-3), name  # a fresh init differs by ~0.02
