"""A task defined here, outside tubelet, trains, evaluates and predicts through the functions the CLI calls.

The task regresses a clip's mean brightness: its targets come from the clip's own particles (no label column), its
head has one output, its metric (mean absolute error) is lower-is-better, and it has a config field of its own.
Nothing in tubelet is edited for it: it subclasses `tubelet.tasks.base.Task` and registers itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tubelet.cli import main
from tubelet.errors import ConfigError
from tubelet.io import write_video
from tubelet.recipes.evaluate import evaluate
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.predict import predict
from tubelet.tasks.base import Task, register
from tubelet.typed import opt

LEVELS = (40, 80, 120, 160, 200, 240)  # grey levels of the clips, 0-255


@dataclass(frozen=True)
class BrightnessFields:
    """The brightness task's own field."""

    brightness_loss: str = opt("l1", "l1 or mse: the regression loss")

    def validate(self) -> None:
        if self.brightness_loss not in ("l1", "mse"):
            raise ConfigError(f"brightness_loss: expected l1 or mse, got {self.brightness_loss!r}")


@register
class Brightness(Task):
    name = "brightness-test"
    summary = "mean brightness of a clip (a regression on one output)"
    Config = BrightnessFields
    metrics = {"mae": False, "mae_of_the_mean": False}

    def num_outputs(self, prepared) -> int:
        return 1

    def targets(self, batch, prepared=None) -> dict[str, torch.Tensor]:
        packed = batch.packed  # (N, C*t*p*q) normalized pixels of every particle, clip after clip
        per_particle = packed.values.float().mean(dim=1)  # (N,)
        sums = torch.zeros(packed.num_clips).index_add_(0, packed.seq.long(), per_particle)
        counts = torch.bincount(packed.seq.long(), minlength=packed.num_clips).clamp(min=1)
        return {"value": (sums / counts)[:, None]}  # (B, 1)

    def objective(self, outputs, targets, cfg) -> torch.Tensor:
        loss = F.l1_loss if cfg.brightness_loss == "l1" else F.mse_loss
        return loss(outputs[:, 0], targets["value"][:, 0])

    def score(self, predictions, data, labels, *, targets) -> dict:
        ok = ~np.isnan(predictions[:, 0])
        truth, guess = targets["value"][ok, 0], predictions[ok, 0]
        return {
            "mae": float(np.abs(guess - truth).mean()),
            "mae_of_the_mean": float(np.abs(truth.mean() - truth).mean()),  # the baseline that knows no clip
            "num_samples": int(ok.sum()),
        }

    def describe(self, prediction, labels, *, topk: int) -> dict:
        return {"value": round(float(prediction[0]), 4)}


@pytest.fixture(scope="module")
def brightness_data(tmp_path_factory):
    """Flat grey clips with texture noise at six levels, per split manifests without any label column."""
    root = tmp_path_factory.mktemp("brightness")
    rng = np.random.default_rng(0)
    for split, copies in (("train", 3), ("val", 1), ("test", 1)):
        rows = []
        for level in LEVELS:
            for k in range(copies):
                noise = rng.integers(-20, 21, (8, 32, 32, 3))
                frames = np.clip(level + noise, 0, 255).astype(np.uint8)
                path = write_video(root / f"{split}_{level}_{k}.mp4", frames, fps=8)
                rows.append([path.name])
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["path"], *rows])
    return root


RUN = dict(
    model="test", size=32, max_long_side=32, sample_fps=4.0, clip_seconds=1.0, prune_threshold=0.0,
    batch_particles=48, workers=0, epochs=12, lr=1e-2, warmup_epochs=0, crop_scale_min=1.0,
)  # fmt: skip


def test_the_registry_lists_it_and_finetune_help_shows_its_field(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = next(r for r in rows if r["name"] == "brightness-test")
    assert mine["fields"] == ["brightness_loss"] and mine["metrics"] == {"mae": False, "mae_of_the_mean": False}
    assert {"classification", "retrieval", "vqa", "reconstruction"} <= {r["name"] for r in rows}
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--task", "brightness-test", "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert "--brightness-loss" in shown and "--lr" in shown
    assert "--label-column" not in shown  # classification's field, not this task's


def test_a_field_of_another_task_is_an_error_naming_it(brightness_data, tmp_path, capsys):
    args = ["finetune", "--task", "brightness-test", "--data", str(brightness_data), "--out", str(tmp_path / "x")]
    assert main([*args, "--label-column", "sentiment"]) == 2
    error = capsys.readouterr().err
    assert "--label-column" in error and "brightness-test" in error
    with pytest.raises(ConfigError, match="label_column"):
        FinetuneConfig(task="brightness-test", data="d", label_column="label")


def test_it_trains_evaluates_and_predicts_through_the_public_functions(brightness_data, tmp_path):
    cfg = FinetuneConfig(task="brightness-test", data=str(brightness_data), out=str(tmp_path / "run"), **RUN)
    summary = finetune(cfg)
    # Lower is better: best/ holds the epoch of the lowest validation error, and every epoch's error was logged.
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val = [r["mae"] for r in records if r["kind"] == "val"]
    assert len(val) == RUN["epochs"] and summary["best_val_mae"] == pytest.approx(min(val))
    assert json.loads((tmp_path / "run" / "best" / "training_args.json").read_text())["task"] == "brightness-test"

    report = evaluate(str(tmp_path / "run" / "best"), str(brightness_data), out=str(tmp_path / "eval"), views=1)
    assert report["num_samples"] == len(LEVELS)
    # It learned brightness: far better than predicting the mean brightness for every clip.
    assert report["mae"] < 0.35 * report["mae_of_the_mean"]
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["mae"] == report["mae"]

    files = [str(brightness_data / f"test_{level}_0.mp4") for level in LEVELS]
    values = [r["value"] for r in predict(str(tmp_path / "run" / "best"), files)]
    assert values == sorted(values)  # brighter clips, higher predictions
