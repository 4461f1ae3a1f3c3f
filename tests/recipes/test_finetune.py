import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import tubelet.data.pipeline as pipeline_module
from tubelet import checkpoint
from tubelet.cli import main
from tubelet.errors import ConfigError
from tubelet.models import load
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.train.config import load_config, run_config
from tubelet.train.optim import build_optimizer, param_groups

# Small and fast: the `test` encoder (dim 32, 2 blocks) on 64-px frames, 1 s clips at 4 fps.
FAST = dict(
    model="test", size=64, max_long_side=96, sample_fps=4.0, clip_seconds=1.0, batch_particles=400, workers=0, lr=3e-3
)


def run(tiny_data, tmp_path, **changes):
    cfg = FinetuneConfig(data=str(tiny_data), out=str(tmp_path / "run"), **{**FAST, "epochs": 2, **changes})
    return finetune(cfg), tmp_path / "run"


def test_run_writes_checkpoints_metrics_and_config(classifier_run):
    summary, out = classifier_run  # run(tiny_data, ...) with epochs=2, once per session (conftest)
    for name in ("best", "last"):
        assert {"config.json", "model.safetensors", "labels.json", "training_args.json"} <= set(os.listdir(out / name))
    assert checkpoint.has_trainer(out / "last") and not checkpoint.has_trainer(out / "best")
    config = checkpoint.load_config(out / "best")
    assert config["preprocessing"]["sample_fps"] == 4.0 and config["preprocessing"]["tubelet"] == [2, 16, 16]
    assert checkpoint.load_labels(out / "best") == ["grow", "move_left", "move_right", "rotate", "static"]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, summary["steps"] + 1))
    assert sum(r["kind"] == "val" for r in records) == 2
    assert any((out / "tensorboard").iterdir())
    assert json.loads((out / "config.json").read_text())["lr"] == 3e-3
    loaded = load(str(out / "best"))  # reloads cleanly, with its preprocessing
    assert loaded.preprocessing.clip_seconds == 1.0 and loaded.model.num_classes == 5


def test_training_reduces_the_loss_on_a_fixed_batch(tiny_data, tmp_path):
    # Overfit check: windows longer than every clip and no crops make each epoch see the same particles; many
    # steps must then drive the training loss well down.
    _, out = run(
        tiny_data,
        tmp_path,
        epochs=20,
        val_split="none",
        crop_scale_min=1.0,
        lr=1e-2,
        warmup_epochs=0.0,
        clip_seconds=10.0,
        sample_fps=2.0,
        weight_decay=0.0,
        min_steps_per_epoch=0,  # one batch of every clip: the same batch each step
        embed_init="random",  # at lr 1e-2 the amplified motion half overfits these 5 clips slower (1.61 -> 1.39)
    )
    losses = [json.loads(line)["loss"] for line in open(out / "metrics.jsonl") if '"train"' in line]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)


def test_freeze_backbone_trains_only_the_head(classifier_run, tiny_data, tmp_path):
    _, base_out = classifier_run
    _, out = run(tiny_data, tmp_path / "b", epochs=1, model=str(base_out / "best"), freeze="backbone")
    before = checkpoint.load_state_dict(base_out / "best")
    after = checkpoint.load_state_dict(out / "last")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed), changed


def test_freeze_top_k_keeps_lower_blocks(classifier_run, tiny_data, tmp_path):
    _, base_out = classifier_run
    _, out = run(tiny_data, tmp_path / "b", epochs=1, model=str(base_out / "best"), freeze="top:1")
    before, after = checkpoint.load_state_dict(base_out / "best"), checkpoint.load_state_dict(out / "last")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("blocks.1.") for k in changed)
    assert not any(k.startswith(("blocks.0.", "patch_embed")) for k in changed)


def test_lora_adapters_are_merged_into_a_plain_checkpoint(classifier_run, tiny_data, tmp_path):
    _, base_out = classifier_run
    _, out = run(tiny_data, tmp_path / "b", epochs=1, model=str(base_out / "best"), peft="lora", lora_rank=2)
    merged = checkpoint.load_state_dict(out / "best")
    assert not any("lora" in k for k in merged)  # loads without peft
    before = checkpoint.load_state_dict(base_out / "best")
    assert not torch.equal(before["blocks.0.attn.qkv.weight"], merged["blocks.0.attn.qkv.weight"])  # merged delta
    load(str(out / "best"))


def test_sgd_layer_decay_label_smoothing_and_accumulation_run(tiny_data, tmp_path):
    # One clip per batch: the 5 training clips make 5 batches an epoch, so accumulating 2 takes ceil(5 / 2) = 3
    # optimizer steps an epoch (the last on one batch), 6 in 2 epochs (not ceil(10 / 2) = 5: no step spans epochs).
    # A constant LR makes every parameter's LR known at every step.
    summary, out = run(
        tiny_data,
        tmp_path,
        epochs=2,
        max_clips_per_batch=1,
        optimizer="sgd",
        lr=0.05,
        warmup_epochs=0.0,
        min_lr_ratio=1.0,
        layer_decay=0.7,
        label_smoothing=0.1,
        accum_steps=2,
        pooling="attention",
        drop_path=0.1,
        dropout=0.1,
    )
    train = [json.loads(line) for line in open(out / "metrics.jsonl") if '"train"' in line]
    assert summary["steps"] == 6 and [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in train] == [0, 0, 0, 1, 1, 1]

    # Layer decay: a parameter at depth d (0 the embeddings, i + 1 block i, depth + 1 the norm, pooling and head)
    # trains at 0.05 * 0.7 ** (depth + 1 - d). The run's optimizer state holds each group's LR.
    model = load(str(out / "last")).model
    assert model.config.pooling == "attention"
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.7, depth_of=model.block_index)
    optimizer = build_optimizer(groups, name="sgd", lr=1.0)  # LRs replaced by the run's own below
    checkpoint.load_trainer(out / "last", optimizer=optimizer, restore_rng=False)
    lr_of = {name: torch_group["lr"] for group, torch_group in zip(groups, optimizer.param_groups)
             for name in group["names"]}  # fmt: skip
    top = model.config.depth + 1
    expected = {name: 0.05 * 0.7 ** (top - model.block_index(name)) for name, _ in model.named_parameters()}
    assert lr_of == pytest.approx(expected)
    assert lr_of["patch_embed.weight"] == pytest.approx(0.05 * 0.7**top) and lr_of["head.weight"] == pytest.approx(0.05)
    assert lr_of["blocks.0.attn.qkv.weight"] == pytest.approx(0.7 * lr_of["blocks.1.attn.qkv.weight"])
    assert [r["lr"] for r in train] == pytest.approx([lr_of["patch_embed.weight"]] * 6)  # the first group's, logged


def test_early_stopping_stops_before_the_last_epoch_and_a_run_near_chance_says_what_to_do(tiny_data, tmp_path, caplog):
    # lr so small the validation metric cannot improve after the first evaluation.
    caplog.set_level(logging.WARNING, logger="tubelet.train")
    summary, _ = run(tiny_data, tmp_path, epochs=6, lr=1e-9, early_stopping=2, warmup_epochs=0.0)
    assert summary["epochs_run"] == 3
    hints = [r.getMessage() for r in caplog.records if "near chance" in r.getMessage()]
    assert summary["best_val_accuracy"] < 1.5 / 5 and len(hints) == 1 and "tubelet pretrain" in hints[0]


def test_a_budget_smaller_than_one_clip_is_said_not_silent(tiny_data, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tubelet.train")
    summary, _ = run(tiny_data, tmp_path, epochs=1, batch_particles=10)
    said = [r.getMessage() for r in caplog.records if "batch_particles 10" in r.getMessage()]
    assert len(said) == 1 and "5 of 5 training clips each make a batch of their own" in said[0]
    assert summary["steps"] == 5  # one clip a step, as it says


def test_a_clip_that_crashes_a_worker_is_skipped(tiny_data, tmp_path, monkeypatch):
    real_decode = pipeline_module.decode
    victim = (tiny_data / "train.csv").read_text().splitlines()[1].split(",")[0]  # a training clip

    def decode_or_segfault(path, **kw):
        if victim in str(path):
            ctypes.string_at(0)  # a real SIGSEGV in the worker process, as a broken decoder would cause
        return real_decode(path, **kw)

    monkeypatch.setattr(pipeline_module, "decode", decode_or_segfault)  # forked workers inherit the patch
    summary, out = run(tiny_data, tmp_path, epochs=2, workers=2)
    assert [s["path"].endswith(victim) for s in summary["skipped"]] == [True]
    assert summary["epochs_run"] == 2
    assert checkpoint.has_trainer(out / "last")


def test_a_clip_that_fails_to_decode_is_skipped(tiny_data, tmp_path, monkeypatch):
    real_decode = pipeline_module.decode

    victim = (tiny_data / "train.csv").read_text().splitlines()[2].split(",")[0]

    def decode_or_fail(path, **kw):
        if str(path).endswith(victim):
            from tubelet.errors import VideoError

            raise VideoError(path, "cannot decode (Invalid data found when processing input)")
        return real_decode(path, **kw)

    monkeypatch.setattr(pipeline_module, "decode", decode_or_fail)
    summary, _ = run(tiny_data, tmp_path, epochs=1, val_split="none")
    assert [s["path"].endswith(victim) for s in summary["skipped"]] == [True]


def test_yaml_config_with_overrides_and_bad_fields(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "d", "epochs": 3, "lr": 0.01, "tubelet": [2, 8, 8]}))
    cfg = load_config(
        run_config("classification"), path=path, overrides=["lr=0.5", "sample_fps=none"], flags={"epochs": "7"}
    )
    assert (cfg.epochs, cfg.lr, cfg.tubelet, cfg.sample_fps) == (7, 0.5, (2, 8, 8), None)
    with pytest.raises(ConfigError, match="unknown config field.*epohcs"):
        load_config(run_config("classification"), overrides=["epohcs=3"])
    with pytest.raises(ConfigError, match="^epochs: expected int"):
        load_config(run_config("classification"), overrides=["epochs=many"])
    with pytest.raises(ConfigError, match="freeze"):
        FinetuneConfig(data="d", freeze="half").validate()


def test_killed_run_resumes_to_the_same_step_count(tiny_data, tmp_path, tubelet_cli):
    """SIGKILL a real training process after its first checkpoint; --resume finishes with the same steps."""
    args = [
        sys.executable,
        "-m",
        "tubelet",
        "finetune",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "3",
        "save_every_steps=1",
        "val_split=none",
    ]
    args += [f"{k}={v}" for k, v in FAST.items()]
    reference = finetune(
        FinetuneConfig(data=str(tiny_data), out=str(tmp_path / "ref"), epochs=3, val_split="none", **FAST)
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "run" / "last" / "trainer" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["state"]["step"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["state"]["step"]
    assert 2 <= killed_at < reference["steps"]
    resumed = tubelet_cli(*args[3:], "--resume")
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["steps"] == reference["steps"]
    assert "resumed from" in resumed.stderr
    load(str(tmp_path / "run" / "last"))


def test_a_tubelet_larger_than_the_clips_is_refused_up_front(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="tubelet: 8x16x16 needs 8 frames"):
        run(tiny_data, tmp_path, tubelet=(8, 16, 16))
    with pytest.raises(ConfigError, match="tubelet: 2x80x80 is larger"):
        run(tiny_data, tmp_path, tubelet=(2, 80, 80))


# --- an out directory holds one run: never silently replaced, resumed only as itself ---


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _train_steps(out):
    return [json.loads(line)["step"] for line in open(out / "metrics.jsonl") if '"train"' in line]


def test_a_new_run_on_an_old_one_is_refused_unless_it_overwrites(tiny_data, tmp_path, capsys):
    first, out = run(tiny_data, tmp_path, epochs=1)
    best = _files(out / "best")
    args = [
        "finetune",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--epochs",
        "1",
        *(f"{k}={v}" for k, v in FAST.items()),
    ]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--resume" in err[0] and "--overwrite" in err[0], err
    assert _files(out / "best") == best  # untouched, byte for byte
    assert _train_steps(out) == list(range(1, first["steps"] + 1))

    again, _ = run(tiny_data, tmp_path, epochs=1, overwrite=True, seed=1)
    assert _train_steps(out) == list(range(1, again["steps"] + 1))  # one run's steps, from 1, once
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert _files(out / "best") != best


def test_a_resume_with_another_lr_is_refused_naming_it(tiny_data, tmp_path):
    run(tiny_data, tmp_path, epochs=1, max_steps=1)
    saved = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"^resume: .*config.json .*lr 0.003 -> 0.01\b"):
        run(tiny_data, tmp_path, epochs=1, resume=True, lr=0.01)
    assert (tmp_path / "run" / "config.json").read_text() == saved


def test_a_resume_with_more_epochs_continues_on_the_schedule_of_the_new_length(tiny_data, tmp_path, caplog):
    # No warmup: the 1-epoch run ends its cosine at min_lr; resumed for 4 epochs, the cosine is laid anew over
    # all 4 (only its position is saved), so from the resumed step on the LRs are those of a 4-epoch run.
    settings = dict(val_split="none", warmup_epochs=0.0)
    reference, ref_out = run(tiny_data, tmp_path / "ref", epochs=4, **settings)
    first, out = run(tiny_data, tmp_path, epochs=1, **settings)
    caplog.set_level(logging.INFO, logger="tubelet.train")
    resumed, _ = run(tiny_data, tmp_path, epochs=4, resume=True, **settings)
    assert "epochs 1 -> 4" in caplog.text
    assert resumed["steps"] == reference["steps"] > first["steps"]
    assert _train_steps(out) == list(range(1, reference["steps"] + 1))
    lrs, ref = _train_lrs(out), _train_lrs(ref_out)
    later = range(first["steps"] + 1, reference["steps"] + 1)
    assert [lrs[s] for s in later] == pytest.approx([ref[s] for s in later], rel=1e-9)
    assert lrs[first["steps"] + 1] > 10 * lrs[first["steps"]]  # the LR rises again: the old run had decayed it
    assert json.loads((out / "config.json").read_text())["epochs"] == 4


def _train_lrs(out) -> dict[int, float]:
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return {r["step"]: r["lr"] for r in records if r["kind"] == "train"}


def test_a_resume_drops_the_records_written_after_its_checkpoint(tiny_data, tmp_path):
    settings = dict(epochs=2, val_split="none")
    reference, _ = run(tiny_data, tmp_path / "ref", **settings)
    _, out = run(tiny_data, tmp_path, max_steps=1, **settings)
    shutil.copytree(out / "last", tmp_path / "last_at_1")
    run(tiny_data, tmp_path, max_steps=2, resume=True, **settings)
    assert _train_steps(out) == [1, 2]
    # A kill after step 2 was logged but before it was saved: last/ is still at step 1.
    shutil.rmtree(out / "last")
    shutil.copytree(tmp_path / "last_at_1", out / "last")
    resumed, _ = run(tiny_data, tmp_path, resume=True, **settings)
    assert resumed["steps"] == reference["steps"]
    assert _train_steps(out) == list(range(1, reference["steps"] + 1))  # step 2 once, from the resumed run
    # A kill before the first save: no last/ at all, so the resume starts afresh, with a fresh log.
    shutil.rmtree(out / "last")
    run(tiny_data, tmp_path, resume=True, **settings)
    assert _train_steps(out) == list(range(1, reference["steps"] + 1))


def test_an_epoch_with_nothing_left_to_train_prints_null_not_zero(tiny_data, tmp_path, capsys):
    first, out = run(tiny_data, tmp_path, epochs=1, val_split="none")
    # last/ as a save_every_steps save after the epoch's last batch leaves it, killed before the epoch's own save.
    path = out / "last" / "trainer" / "state.json"
    trainer = json.loads(path.read_text())
    trainer["state"].update(epoch=0, batch_in_epoch=first["steps"])  # one batch per step (accum_steps 1)
    path.write_text(json.dumps(trainer))
    capsys.readouterr()
    resumed, _ = run(tiny_data, tmp_path, epochs=2, val_split="none", resume=True)
    assert resumed["steps"] > first["steps"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"epoch"')]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[0] == {"epoch": 1, "train_loss": None, "clips_per_s": None}
    assert lines[1]["train_loss"] > 0 and lines[1]["clips_per_s"] > 0
    epochs = [r for r in map(json.loads, open(out / "metrics.jsonl")) if r["kind"] == "epoch"]
    assert [(r["epoch"], r["loss"] is None, r["clips_per_s"] is None) for r in epochs] == [
        (1, False, False),  # the first run's
        (1, True, True),  # the resumed run's: nothing left of epoch 1
        (2, False, False),
    ]
