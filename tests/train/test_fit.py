"""The one loop (`tubelet.train.fit`): steps, accumulation, resume inside an epoch, early stopping in the metric's
direction, quarantine of a file that fails. A small in-memory dataset of real particles stands in for decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tubelet.data.dataset import Item
from tubelet.models import model_config
from tubelet.models.encoder import Encoder
from tubelet.particles.tokenize import tokenize
from tubelet.tasks.base import StepLoss
from tubelet.tasks.classification import classification_loss
from tubelet.train.fit import EarlyStopping, Schedule, fit, total_steps
from tubelet.train.optim import build_optimizer, param_groups, warmup_cosine
from tubelet.train.resume import loop_state, resume, trainer_state

CLIPS, LABELS = 10, 2


class Clips(torch.utils.data.Dataset):
    """`CLIPS` clips of random frames (2 frames of 16 x 16: one particle each), labels alternating; `bad` items fail."""

    def __init__(self, bad: frozenset[int] = frozenset()):
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 255, (CLIPS, 2, 16, 16, 3), dtype=np.uint8)
        self.particles = [tokenize(f, timestamps=np.array([0.0, 0.125]), tubelet=(2, 16, 16)) for f in frames]
        self.bad, self.epochs, self.crash_dir, self.read = bad, [], None, []

    def __len__(self) -> int:
        return CLIPS

    def estimates(self) -> list[int]:
        return [1] * CLIPS

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def item_indices_of(self, path: str) -> list[int]:
        return [int(path.removeprefix("clip"))]

    def __getitem__(self, i: int) -> Item:
        self.read.append((self.epochs[-1], i))
        if i in self.bad:
            return Item(i, i, None, i % LABELS, f"clip{i}", (0.0, 0.25), error="cannot decode")
        return Item(i, i, self.particles[i], i % LABELS, f"clip{i}", (0.0, 0.25))


def _run(tmp_path, schedule: Schedule, *, data=None, validate=None, higher=True, resume_from=None, log=None):
    torch.manual_seed(0)
    model = Encoder(model_config("test", num_classes=LABELS, tubelet=(2, 16, 16)))
    optimizer = build_optimizer(param_groups(model, weight_decay=0.0), name="adamw", lr=1e-2)
    data = data or Clips()
    steps, per_epoch = total_steps(data.estimates(), schedule)
    # A constant LR: the first steps of a run cut by max_steps are those of the uninterrupted one.
    scheduler = warmup_cosine(optimizer, warmup_steps=0, total_steps=steps, min_ratio=1.0)
    state = loop_state()
    if resume_from is not None:
        resume(resume_from, module=model, optimizer=optimizer, scheduler=scheduler, state=state)
    saved = []

    def save(name: str, with_trainer: bool):
        from tubelet.data.transforms import Preprocessing
        from tubelet.models import save as save_model

        saved.append((name, state["step"]))
        trainer = trainer_state(optimizer, scheduler, state) if with_trainer else None
        return save_model(tmp_path / name, model, preprocessing=Preprocessing(tubelet=(2, 16, 16)), trainer=trainer)

    def loss_of(module, batch, epoch, index):
        if log is not None:
            log.append((epoch, index))
        return StepLoss(classification_loss(module(batch.packed), batch.labels), len(batch.labels), len(batch.labels))

    summary = fit(
        model, data, schedule=schedule, optimizer=optimizer, scheduler=scheduler, steps=steps, state=state,
        loss_of=loss_of, save=save, out=tmp_path, validate=validate, metric="score", higher_is_better=higher,
    )  # fmt: skip
    return summary, state, model, saved, steps


def test_accumulation_takes_a_step_every_k_batches_and_at_the_end_of_each_epoch(tmp_path):
    schedule = Schedule(epochs=2, batch_particles=2, accum_steps=2)  # 5 batches an epoch: steps after 2, 4, 5
    summary, state, _, saved, steps = _run(tmp_path, schedule)
    assert steps == summary["steps"] == 6 and (state["epoch"], state["batch_in_epoch"]) == (2, 0)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert saved == [("last", 3), ("last", 6), ("best", 6)]  # no validation: best/ is the last weights


def test_a_run_cut_inside_an_epoch_resumes_at_its_batch_to_the_same_weights(tmp_path):
    schedule = Schedule(epochs=2, batch_particles=2)
    _, _, reference, _, _ = _run(tmp_path / "ref", schedule)
    _, state, _, _, _ = _run(tmp_path / "run", Schedule(epochs=2, batch_particles=2, max_steps=3))
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (3, 0, 3)  # the epoch is not finished
    seen = []
    summary, state, resumed, _, _ = _run(tmp_path / "run", schedule, resume_from=tmp_path / "run" / "last", log=seen)
    assert seen[0] == (0, 3) and len(seen) == 7  # from batch 3 of epoch 0: 2 more, then 5 of epoch 1
    assert summary["steps"] == 10 and summary["epochs_run"] == 2
    for name, value in reference.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name


@pytest.mark.parametrize("higher", [True, False])
def test_best_and_early_stopping_follow_the_metric_direction(tmp_path, higher):
    values = iter([0.5, 0.3, 0.4, 0.45, 0.2, 0.9])  # lower is better: best at epoch 2, then two worse -> stop
    summary, state, _, saved, _ = _run(
        tmp_path, Schedule(epochs=6, batch_particles=5, early_stopping=2), validate=lambda: {"score": next(values)},
        higher=higher,
    )  # fmt: skip
    if higher:  # 0.5 best, 0.3 and 0.4 worse: stops after epoch 3
        assert summary["best_val_score"] == 0.5 and summary["epochs_run"] == 3
        assert [s for s in saved if s[0] == "best"] == [("best", 2)]
    else:  # 0.5, 0.3 best, 0.4 and 0.45 worse: stops after epoch 4
        assert summary["best_val_score"] == 0.3 and summary["epochs_run"] == 4
        assert [s for s in saved if s[0] == "best"] == [("best", 2), ("best", 4)]
    val = [json.loads(line)["score"] for line in open(tmp_path / "metrics.jsonl") if '"val"' in line]
    assert val == [0.5, 0.3, 0.4] if higher else [0.5, 0.3, 0.4, 0.45]


def test_a_file_that_fails_is_reported_once_and_left_out_of_later_epochs(tmp_path):
    data = Clips(bad=frozenset({3}))
    summary, _, _, _, _ = _run(tmp_path, Schedule(epochs=3, batch_particles=2), data=data)
    assert summary["skipped"] == [{"path": "clip3", "reason": "cannot decode"}]
    assert data.epochs == [0, 1, 2]
    for epoch in range(3):
        read = sorted(i for e, i in data.read if e == epoch)
        assert read == (list(range(CLIPS)) if epoch == 0 else [i for i in range(CLIPS) if i != 3]), epoch


def test_early_stopping_compares_in_both_directions():
    up, down = EarlyStopping(1, higher_is_better=True), EarlyStopping(1, higher_is_better=False)
    assert [up.update(v) for v in (1.0, 2.0, 1.5)] == [True, True, False] and up.should_stop
    assert [down.update(v) for v in (1.0, 2.0)] == [True, False] and down.should_stop and down.best == 1.0


def test_small_data_gets_batches_small_enough_for_its_steps_per_epoch():
    from tubelet.train.fit import epoch_batches

    estimates = [300] * 100  # 100 clips; a budget of 4096 would take 13 a batch: 8 steps an epoch
    budget_only = epoch_batches(estimates, Schedule(epochs=1, batch_particles=4096), epoch=0)
    assert len(budget_only) == 8
    small = epoch_batches(estimates, Schedule(epochs=1, batch_particles=4096, min_steps_per_epoch=25), epoch=0)
    assert len(small) == 25 and all(len(b) == 4 for b in small)
    accumulated = Schedule(epochs=1, batch_particles=4096, min_steps_per_epoch=25, accum_steps=2)
    assert len(epoch_batches(estimates, accumulated, epoch=0)) == 50  # 25 optimizer steps of 2 batches
    large = epoch_batches([300] * 2000, Schedule(epochs=1, batch_particles=4096, min_steps_per_epoch=25), epoch=0)
    assert max(len(b) for b in large) == 13  # plenty of steps already: the budget decides
    assert sorted(i for b in small for i in b) == list(range(100))  # every clip once
