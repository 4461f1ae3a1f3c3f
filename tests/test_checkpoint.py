"""Checkpoint directories: weights, configs and resume state round-trip exactly, atomically, and never via pickle."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tubelet.checkpoint import (
    has_trainer,
    load_config,
    load_labels,
    load_state_dict,
    load_trainer,
    load_training_args,
    load_weights,
    save_checkpoint,
)
from tubelet.errors import ConfigError
from tubelet.models import EncoderConfig, create_model
from tubelet.particles.pack import pack
from tubelet.particles.tokenize import tokenize


def _encoder(**overrides) -> nn.Module:
    return create_model("test", num_classes=3, tubelet=(2, 4, 4), **overrides)


def _packed():
    """Two clips of 4 frames, 8x8 px: 8 particles each."""
    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    return pack([tokenize(f, timestamps=torch.arange(4) / 8, tubelet=(2, 4, 4)) for f in frames])


def _config(model) -> dict:
    preprocessing = {"sample_fps": 8.0, "clip_seconds": 2.0, "mean": (0.45, 0.45, 0.45), "std": (0.225,) * 3}
    return {"model_type": "tubelet-encoder", "encoder": model.config.to_dict(), "preprocessing": preprocessing}


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_round_trip_of_weights_config_labels_and_args(tmp_path):
    torch.manual_seed(0)
    model = _encoder()
    config = _config(model)
    labels = ["cat", "dog", "ünïcode"]
    args = {"lr": 1e-3, "epochs": 3, "data": "clips/"}
    out = save_checkpoint(tmp_path / "ckpt", model=model, config=config, labels=labels, training_args=args)
    assert out == tmp_path / "ckpt"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "labels.json",
        "model.safetensors",
        "training_args.json",
    ]

    torch.manual_seed(1)
    fresh = _encoder()
    assert not torch.equal(fresh.patch_embed.weight, model.patch_embed.weight)
    assert load_weights(fresh, out).ok
    _assert_same_state(model, fresh)
    packed = _packed()
    assert torch.equal(model.eval()(packed), fresh.eval()(packed))

    assert load_config(out) == json.loads(json.dumps(config))  # as given, tuples as lists
    assert load_config(out)["preprocessing"]["mean"] == [0.45, 0.45, 0.45]
    assert EncoderConfig.from_dict(load_config(out)["encoder"]) == model.config
    assert (out / "config.json").read_text().startswith('{\n  "model_type": "tubelet-encoder"')  # pretty-printed
    assert load_labels(out) == labels
    assert load_training_args(out) == args
    assert load_state_dict(out).keys() == model.state_dict().keys()
    assert not has_trainer(out)


def test_labels_and_args_are_optional(tmp_path):
    save_checkpoint(tmp_path / "ckpt", model=nn.Linear(2, 2), config={})
    assert load_labels(tmp_path / "ckpt") is None
    assert load_training_args(tmp_path / "ckpt") is None
    assert load_config(tmp_path / "ckpt") == {}


def test_extra_weights_are_saved_beside_the_model_in_the_same_swap(tmp_path):
    model, other = nn.Linear(2, 2), nn.Linear(3, 1)
    save_checkpoint(
        tmp_path / "ckpt", model=model, config={}, extra_weights={"decoder.safetensors": other.state_dict()}
    )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "decoder.safetensors",
        "model.safetensors",
    ]
    saved = load_state_dict(tmp_path / "ckpt", "decoder.safetensors")
    assert saved.keys() == other.state_dict().keys() and torch.equal(saved["weight"], other.weight.detach())
    assert load_state_dict(tmp_path / "ckpt").keys() == model.state_dict().keys()
    for bad in ("model.safetensors", "trainer/tensors.safetensors", "decoder.pt"):
        with pytest.raises(ConfigError, match="extra weights"):
            save_checkpoint(tmp_path / "ckpt", model=model, config={}, extra_weights={bad: other.state_dict()})
    assert (tmp_path / "ckpt" / "decoder.safetensors").exists()  # a refused save leaves the old checkpoint


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6, bias=False)
        self.unembed = nn.Linear(4, 6, bias=False)
        self.unembed.weight = self.embed.weight


def test_tied_weights_are_saved_under_both_names_and_stay_tied(tmp_path):
    torch.manual_seed(0)
    model = _Tied()
    save_checkpoint(tmp_path / "ckpt", model=model, config={})
    assert set(load_state_dict(tmp_path / "ckpt")) == {"embed.weight", "unembed.weight"}
    fresh = _Tied()
    load_weights(fresh, tmp_path / "ckpt")
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    assert fresh.unembed.weight is fresh.embed.weight


# --- exact resume ---


def _model_and_batch(kind: str):
    if kind == "encoder":
        return _encoder(dropout=0.2), _packed()
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return model, torch.randn(4, 8, generator=torch.Generator().manual_seed(0))


def _optimizer(kind: str, params) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)


def _warmup(optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 5))


def _train_step(model, batch, optimizer, scheduler) -> None:
    """One step whose result depends on the torch (dropout), python and numpy RNGs, and on the LR schedule."""
    model.train()
    out = model(batch)
    loss = out.square().mean() * (1 + random.random()) + out.mean() * float(np.random.rand())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


@pytest.mark.parametrize("model_kind", ["linear", "encoder"])
@pytest.mark.parametrize("optimizer_kind", ["adamw", "sgd"])
def test_resume_matches_an_uninterrupted_run_bitwise(tmp_path, model_kind, optimizer_kind):
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    model, batch = _model_and_batch(model_kind)
    optimizer = _optimizer(optimizer_kind, model.parameters())
    scheduler = _warmup(optimizer)
    for _ in range(2):
        _train_step(model, batch, optimizer, scheduler)
    state = {"step": 2, "epoch": 0, "batch_in_epoch": 2, "best_metric": -math.inf, "bad_epochs": 0}
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state, "rng": True}
    save_checkpoint(tmp_path / "last", model=model, config={}, trainer=trainer)

    for _ in range(3):  # the uninterrupted twin
        _train_step(model, batch, optimizer, scheduler)
    draws = (torch.rand(3), random.random(), np.random.rand())

    torch.manual_seed(1), random.seed(1), np.random.seed(1)  # a new process would start elsewhere
    resumed, batch = _model_and_batch(model_kind)
    load_weights(resumed, tmp_path / "last")
    optimizer2 = _optimizer(optimizer_kind, resumed.parameters())
    scheduler2 = _warmup(optimizer2)
    assert has_trainer(tmp_path / "last")
    assert load_trainer(tmp_path / "last", optimizer=optimizer2, scheduler=scheduler2) == state
    for _ in range(3):
        _train_step(resumed, batch, optimizer2, scheduler2)

    _assert_same_state(model, resumed)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(torch.rand(3), draws[0])
    assert (random.random(), np.random.rand()) == draws[1:]


def test_restore_rng_false_leaves_the_generators_alone(tmp_path):
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c", model=model, config={}, trainer={"optimizer": optimizer.state_dict(), "rng": True})
    saved_next = torch.rand(3)
    torch.manual_seed(7)
    load_trainer(tmp_path / "c", optimizer=optimizer, restore_rng=False)
    assert not torch.equal(torch.rand(3), saved_next)


def test_training_module_state_comes_back_as_module_state(tmp_path):
    merged, wrapped = nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3, bias=False))
    optimizer = torch.optim.AdamW(wrapped.parameters())
    trainer = {"optimizer": optimizer.state_dict(), "state": {"step": 5}, "module": wrapped.state_dict()}
    save_checkpoint(tmp_path / "c", model=merged, config={}, trainer=trainer)
    state = load_trainer(tmp_path / "c", optimizer=torch.optim.AdamW(wrapped.parameters()))
    assert state["step"] == 5
    assert state["module_state"].keys() == wrapped.state_dict().keys()
    assert all(torch.equal(state["module_state"][k], v) for k, v in wrapped.state_dict().items())


# --- no pickle ---


def test_nothing_is_pickled_and_loading_never_unpickles(tmp_path, monkeypatch):
    model = _encoder()
    optimizer = torch.optim.AdamW(model.parameters())
    _train_step(model, _packed(), optimizer, _warmup(optimizer))
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": None, "state": {"step": 1}, "rng": True}
    save_checkpoint(tmp_path / "c", model=model, config=_config(model), labels=["a", "b", "c"], trainer=trainer)

    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "model.safetensors", "state.json", "tensors.safetensors"}
    for path in files:
        head = path.read_bytes()[:4]
        assert not head.startswith((b"\x80", b"PK\x03\x04")), f"{path} looks like a pickle or a torch.save zip"
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.suffix == ".safetensors" and load_file(path)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint loader unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_config(tmp_path / "c"), load_labels(tmp_path / "c"), load_weights(_encoder(), tmp_path / "c")
    load_trainer(tmp_path / "c", optimizer=torch.optim.AdamW(model.parameters()))


# --- atomic replacement ---


def _filled(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _saved_value(directory: Path) -> float:
    """The one value every weight of a `_filled` checkpoint holds, checked against its config."""
    version = load_config(directory)["version"]
    for key, tensor in load_state_dict(directory).items():
        assert torch.all(tensor == version), f"{key} of a version {version} checkpoint"
    return version


def test_save_replaces_a_checkpoint_and_leaves_no_siblings(tmp_path):
    for version in (1, 2):
        save_checkpoint(tmp_path / "last", model=_filled(version), config={"version": version})
    assert _saved_value(tmp_path / "last") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_interrupted_swap_falls_back_to_the_aside_copy(tmp_path, monkeypatch):
    ckpt = tmp_path / "last"
    optimizer = torch.optim.SGD(_filled(0).parameters(), lr=0.1)
    trainer = {"optimizer": optimizer.state_dict(), "state": {"step": 1}}
    save_checkpoint(ckpt, model=_filled(1), config={"version": 1}, trainer=trainer)

    renames = []
    real_rename = Path.rename

    def killed_after_first_rename(self, target):
        if renames:
            raise KeyboardInterrupt  # stands in for SIGKILL between moving the old copy aside and renaming in
        renames.append((self, target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, model=_filled(2), config={"version": 2})
    monkeypatch.undo()

    assert not ckpt.exists() and renames[0][0] == ckpt  # only the aside copy is left
    assert _saved_value(ckpt) == 1
    assert has_trainer(ckpt) and load_trainer(ckpt, optimizer=optimizer) == {"step": 1}
    fresh = _filled(0)
    load_weights(fresh, ckpt)
    assert torch.all(fresh[0].weight == 1)

    save_checkpoint(ckpt, model=_filled(3), config={"version": 3})  # the next save recovers and tidies up
    assert _saved_value(ckpt) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def _save_forever(directory: Path) -> None:
    torch.set_num_threads(1)
    version = 1
    while True:
        save_checkpoint(directory, model=_filled(version), config={"version": version})
        version += 1


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_mid_save_always_leaves_a_complete_checkpoint(tmp_path):
    ckpt = tmp_path / "last"
    save_checkpoint(ckpt, model=_filled(0), config={"version": 0})
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    versions = []
    for _ in range(6):
        child = context.Process(target=_save_forever, args=(ckpt,))
        child.start()
        time.sleep(rng.uniform(0.05, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        versions.append(_saved_value(ckpt))  # raises if the kill left a torn or mixed checkpoint
    assert versions[-1] > 0  # the children did save (each starts over at version 1)


# --- errors name the file ---


def test_missing_and_unexpected_keys_raise_naming_them(tmp_path):
    save_checkpoint(tmp_path / "c", model=nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), config={})

    with pytest.raises(ConfigError) as missing:
        load_weights(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(2, 2)), tmp_path / "c")
    message = str(missing.value)
    assert str(tmp_path / "c" / "model.safetensors") in message and "\n" not in message
    assert message.endswith(": the weights do not fit the model: missing 2 (2.weight, 2.bias)")

    smaller = nn.Sequential(nn.Linear(4, 4))
    before = smaller[0].weight.clone()
    with pytest.raises(ConfigError, match=r"unexpected 2 \(1\.bias, 1\.weight\)"):
        load_weights(smaller, tmp_path / "c")
    assert torch.equal(smaller[0].weight, before)  # a strict failure loads nothing

    report = load_weights(smaller, tmp_path / "c", strict=False)
    assert report.unexpected == ["1.bias", "1.weight"] and not report.missing
    assert torch.equal(smaller[0].weight, load_state_dict(tmp_path / "c")["0.weight"])


def test_shape_mismatch_raises_naming_the_shapes_and_non_strict_skips_it(tmp_path):
    torch.manual_seed(0)
    model = _encoder()
    save_checkpoint(tmp_path / "c", model=model, config={})
    other = create_model("test", num_classes=5, tubelet=(2, 4, 4))
    with pytest.raises(
        ConfigError, match=r"shape mismatch 2 \(head\.weight: checkpoint 3x32 vs model 5x32, head\.bias"
    ):
        load_weights(other, tmp_path / "c")

    head = other.head.weight.clone()
    report = load_weights(other, tmp_path / "c", strict=False)
    assert report.mismatched == {"head.weight": ((3, 32), (5, 32)), "head.bias": ((3,), (5,))}
    assert torch.equal(other.head.weight, head)
    assert torch.equal(other.patch_embed.weight, model.patch_embed.weight)


def test_long_key_lists_are_cut_short(tmp_path):
    save_checkpoint(tmp_path / "c", model=nn.Linear(2, 2), config={})
    model = _encoder()
    with pytest.raises(ConfigError) as error:
        load_weights(model, tmp_path / "c")
    expected = len(model.state_dict())
    assert f"missing {expected} (" in str(error.value)
    assert f"and {expected - 10} more)" in str(error.value)


def test_missing_directory_and_files_name_the_path(tmp_path):
    nowhere = tmp_path / "runs" / "x" / "last"
    for load in (load_config, load_labels, load_state_dict, lambda d: load_weights(nn.Linear(2, 2), d)):
        with pytest.raises(ConfigError, match=f"^{nowhere}: no such checkpoint directory$"):
            load(nowhere)
    assert not has_trainer(nowhere)

    nowhere.mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"^{nowhere / 'config.json'}: no such file$"):
        load_config(nowhere)
    with pytest.raises(ConfigError, match=f"^{nowhere / 'model.safetensors'}: no such file$"):
        load_weights(nn.Linear(2, 2), nowhere)
    with pytest.raises(ConfigError, match="trainer/state.json: no such file"):
        load_trainer(nowhere, optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))


def test_corrupt_files_name_the_file(tmp_path):
    ckpt = tmp_path / "c"
    save_checkpoint(ckpt, model=nn.Linear(2, 2), config={"a": 1}, labels=["x"])
    (ckpt / "config.json").write_text('{"a": 1,')
    with pytest.raises(ConfigError, match=f"^{ckpt / 'config.json'}: not valid JSON"):
        load_config(ckpt)
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config.json: expected an object in JSON, got a list"):
        load_config(ckpt)
    (ckpt / "labels.json").write_text('{"x": 1}')
    with pytest.raises(ConfigError, match="labels.json: expected a list in JSON, got an object"):
        load_labels(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ConfigError, match=f"^{ckpt / 'model.safetensors'}: not a valid safetensors file"):
        load_weights(nn.Linear(2, 2), ckpt)


def test_resume_state_that_does_not_fit_raises(tmp_path):
    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "c", model=model, config={}, trainer={"optimizer": optimizer.state_dict()})
    other = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias]}])
    with pytest.raises(ConfigError, match="state.json: the saved optimizer state does not fit this optimizer"):
        load_trainer(tmp_path / "c", optimizer=other)
    with pytest.raises(ConfigError, match="no scheduler state was saved"):
        load_trainer(tmp_path / "c", optimizer=optimizer, scheduler=_warmup(optimizer))


def test_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"^{run}: exists and is not a checkpoint"):
        save_checkpoint(run, model=nn.Linear(2, 2), config={})
    assert (run / "metrics.json").exists()
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", model=nn.Linear(2, 2), config={})  # an empty directory is fine
    assert load_config(tmp_path / "empty") == {}
