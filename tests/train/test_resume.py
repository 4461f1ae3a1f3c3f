"""`trainer_state` and `resume`: a run saved mid-way continues from the same step, optimizer and schedule."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from tubelet.checkpoint import save_checkpoint
from tubelet.errors import ConfigError
from tubelet.train.optim import build_optimizer, param_groups, warmup_cosine
from tubelet.train.resume import loop_state, resume, trainer_state

BATCH = torch.linspace(-1, 1, 24).reshape(6, 4)


def build(seed: int, kind: str = "adamw"):
    """A tiny model, its optimizer (two parameter groups) and a warmup + cosine schedule over 10 steps."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    optimizer = build_optimizer(param_groups(model, weight_decay=0.05), name=kind, lr=0.1)
    return model, optimizer, warmup_cosine(optimizer, warmup_steps=2, total_steps=10)


def step(model, optimizer, scheduler) -> None:
    loss = model(BATCH).square().mean() + 0.1 * torch.rand(())  # depends on the torch RNG too
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_loop_state_starts_at_nothing():
    assert loop_state() == {
        "step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "bad_epochs": 0, "skipped": [], "ranks": 1
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_a_resumed_run_has_the_step_optimizer_schedule_and_rng_of_the_saved_one(tmp_path, kind):
    model, optimizer, scheduler = build(0, kind)
    for _ in range(3):
        step(model, optimizer, scheduler)
    state = loop_state() | {"step": 3, "epoch": 1, "batch_in_epoch": 1, "best": 0.5, "bad_epochs": 1}
    state["skipped"] = [["broken.mp4", "cannot decode"]]
    trainer = trainer_state(optimizer, scheduler, state)
    assert trainer["optimizer"]["state"] and trainer["scheduler"]["last_epoch"] == 3
    save_checkpoint(tmp_path / "last", model=model, config={}, trainer=trainer)
    saved_optimizer, saved_lr = optimizer.state_dict(), scheduler.get_last_lr()
    draws = (torch.rand(2), random.random(), np.random.rand())  # what the RNGs give next, as saved

    fresh_model, fresh_optimizer, fresh_scheduler = build(1, kind)  # another start, as a new process would have
    assert not torch.equal(fresh_model[0].weight, model[0].weight)
    restored = loop_state()
    assert resume(tmp_path / "last", module=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler,
                  state=restored)  # fmt: skip
    assert restored == state
    assert_same_tensors(fresh_model.state_dict(), model.state_dict())
    assert_same_tensors(fresh_optimizer.state_dict(), saved_optimizer)
    if kind == "adamw":
        assert fresh_optimizer.state_dict()["state"][0]["step"].item() == 3
    assert fresh_scheduler.last_epoch == 3 and fresh_scheduler.get_last_lr() == saved_lr
    assert torch.equal(torch.rand(2), draws[0]) and (random.random(), np.random.rand()) == draws[1:]

    # both continue identically: same weights after two more steps
    torch.manual_seed(5)
    for _ in range(2):
        step(model, optimizer, scheduler)
    torch.manual_seed(5)
    for _ in range(2):
        step(fresh_model, fresh_optimizer, fresh_scheduler)
    assert_same_tensors(fresh_model.state_dict(), model.state_dict())
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_a_training_module_other_than_the_saved_model_gets_its_own_state_back(tmp_path):
    wrapper, optimizer, scheduler = build(0)  # stands for a peft wrapper; its merged copy is what is saved
    step(wrapper, optimizer, scheduler)
    merged = nn.Linear(4, 3)
    trainer = trainer_state(optimizer, scheduler, loop_state() | {"step": 1}, module=wrapper)
    save_checkpoint(tmp_path / "last", model=merged, config={}, trainer=trainer)

    fresh, fresh_optimizer, fresh_scheduler = build(1)
    state = loop_state()
    assert resume(tmp_path / "last", module=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler, state=state)
    assert state["step"] == 1
    assert_same_tensors(fresh.state_dict(), wrapper.state_dict())


def test_a_checkpoint_without_trainer_state_starts_fresh(tmp_path):
    model, optimizer, scheduler = build(0)
    save_checkpoint(tmp_path / "best", model=model, config={})
    fresh, fresh_optimizer, fresh_scheduler = build(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    state = loop_state()
    assert not resume(tmp_path / "best", module=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler,
                      state=state)  # fmt: skip
    assert state == loop_state()
    assert_same_tensors(fresh.state_dict(), before)
    assert fresh_scheduler.last_epoch == 0


def test_an_optimizer_built_differently_is_refused_naming_the_file(tmp_path):
    model, optimizer, scheduler = build(0)
    step(model, optimizer, scheduler)
    trainer = trainer_state(optimizer, scheduler, loop_state())
    save_checkpoint(tmp_path / "last", model=model, config={}, trainer=trainer)
    fresh, _, _ = build(1)
    other = torch.optim.AdamW(fresh.parameters(), lr=0.1)  # one group, where the run had two
    schedule = warmup_cosine(other, warmup_steps=2, total_steps=10)
    with pytest.raises(ConfigError, match=r"last/trainer/state\.json"):
        resume(tmp_path / "last", module=fresh, optimizer=other, scheduler=schedule, state=loop_state())
