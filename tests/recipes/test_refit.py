"""Re-fine-tuning as new video arrives: ``finetune --model PREV/best --data NEW --replay OLD`` (issue 16).

OLD is three classes of the tiny sample data, NEW the other two (a class in both is the same class: labels and head
rows are matched by name, tested on their own); PREV is a 1-epoch classifier of OLD. Every run here is a few seconds
of the `test` encoder.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tubelet import checkpoint
from tubelet.cli import main
from tubelet.data.manifest import Sample, VideoDataset
from tubelet.data.replay import continual_labels, replay_count, replay_share
from tubelet.data.sample import write_subset
from tubelet.errors import ConfigError
from tubelet.models import create_model
from tubelet.recipes.evaluate import evaluate
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.base import Arm, carry_head, get_task

from .conftest import CLASSIFIER

OLD = ("move_left", "move_right", "rotate")
GROWN = [*OLD, "grow", "static"]  # PREV's labels in their order, then the new ones sorted


@pytest.fixture(scope="module")
def refit(tiny_data, tmp_path_factory):
    """OLD and NEW manifests over `tiny_data`, and PREV (1 epoch on OLD). Read-only."""
    root = tmp_path_factory.mktemp("refit")
    old = write_subset(tiny_data, root / "old", dict.fromkeys(OLD))
    new = write_subset(tiny_data, root / "new", {"static": None, "grow": None})
    finetune(FinetuneConfig(data=str(old), out=str(root / "prev"), epochs=1, **CLASSIFIER))
    return {"old": old, "new": new, "prev": root / "prev" / "best", "root": root}


def replay_config(refit, out, **changes):
    values = {**CLASSIFIER, "model": str(refit["prev"]), "data": str(refit["new"]), "replay": str(refit["old"])}
    return FinetuneConfig(out=str(out), epochs=1, **{**values, **changes})


@pytest.fixture(scope="module")
def replay_run(refit):
    """One replay run (with its no-replay arm) by the command line; returns (summary, directory). Read-only."""
    out = refit["root"] / "run"
    args = ["finetune", "--model", str(refit["prev"]), "--data", str(refit["new"]), "--replay", str(refit["old"])]
    args += ["--replay-fraction", "0.4", "--out", str(out), "--epochs", "1"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in CLASSIFIER.items() if k != "model"]
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text()), out


def test_the_head_grows_keeping_old_rows_bit_for_bit_in_prev_label_order(refit, tmp_path):
    task = get_task("classification")
    cfg = replay_config(refit, tmp_path / "run")
    prepared = task.prepare(cfg, tmp_path / "run")
    assert prepared.labels == GROWN and checkpoint.load_labels(refit["prev"]) == list(OLD)
    torch.manual_seed(0)
    head = task.build(cfg, prepared, Arm("replay", tmp_path / "run")).model.head
    before = checkpoint.load_state_dict(refit["prev"])
    assert head.weight.shape == (5, before["head.weight"].shape[1])
    assert torch.equal(head.weight[:3], before["head.weight"]) and torch.equal(head.bias[:3], before["head.bias"])
    # new rows start like a fresh head: small random weights (std 0.02), zero bias
    assert 0.005 < head.weight[3:].std() < 0.05 and not head.bias[3:].any()


def test_a_head_keeps_rows_by_label_name_whatever_their_order():
    model = create_model("test", num_classes=3)
    old = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    kept = carry_head(model, ["a", "b", "c"], ["c", "a", "z"], 3)
    assert kept == ["c", "a"]
    assert torch.equal(model.head.weight[0], old[0][2]) and torch.equal(model.head.weight[1], old[0][0])
    assert torch.equal(model.head.bias[:2], old[1][[2, 0]]) and not torch.equal(model.head.weight[2], old[0][1])
    assert carry_head(model, None, ["x"], 1) == [] and model.num_classes == 1  # no labels: a fresh head
    assert continual_labels(["b", "a"], ["z", "a", "c", "z"]) == ["b", "a", "c", "z"]


def fake_old(per_class: int) -> VideoDataset:
    samples = [Sample(f"/old/{label}_{i}.mp4", label) for label in ("p", "q", "r") for i in range(per_class)]
    return VideoDataset(samples=samples, infos=list(range(len(samples))), labels=["p", "q", "r"])


def test_replay_draws_the_asked_fraction_spread_over_old_classes_once_per_seed(caplog):
    old = fake_old(10)
    share = replay_share(old, fraction=0.3, new_count=14, seed=0)
    assert len(share) == replay_count(0.3, 14, 30) == 6  # 6 / (14 + 6) = 0.3
    assert [s.label for s in share.samples].count("p") == 2 == [s.label for s in share.samples].count("r")
    assert share.infos == [old.samples.index(s) for s in share.samples]  # each clip keeps its probe result
    assert share.samples == replay_share(old, fraction=0.3, new_count=14, seed=0).samples
    assert share.samples != replay_share(old, fraction=0.3, new_count=14, seed=1).samples
    assert len(replay_share(old, fraction=0.9, new_count=14, seed=0)) == 30  # asks for 126: all 30, and says so
    assert "fewer than the 126" in caplog.text


def test_a_replay_run_trains_on_new_and_replayed_clips_and_its_ablation_on_new_alone(refit, tmp_path):
    task = get_task("classification")
    cfg = replay_config(refit, tmp_path / "run", replay_fraction=0.5)
    prepared = task.prepare(cfg, tmp_path / "run")
    new = {str(s.path) for s in prepared.extra["new_train"].samples}
    old = [s for s in prepared.train.samples if str(s.path) not in new]
    assert len(new) == 2 and len(old) == 2  # 2 / (2 + 2) = 0.5
    assert len({s.label for s in old}) == 2 and {s.label for s in old} < set(OLD)  # spread over the old classes
    assert prepared.extra["replay"]["replayed_fraction"] == 0.5
    assert {s.label for s in prepared.val.samples} == set(GROWN)  # NEW's val and OLD's
    arms = task.arms(cfg, prepared)
    assert [a.name for a in arms] == ["replay", "no-replay"] and arms[1].out == tmp_path / "run/ablation/no-replay"
    assert len(task.training_data(prepared, arms[0])) == 4 and len(task.training_data(prepared, arms[1])) == 2


def test_the_report_gives_before_after_and_forgetting_on_old_and_new_test_splits(replay_run, refit, tmp_path):
    summary, out = replay_run
    report = json.loads((out / "continual" / "report.json").read_text())
    assert summary["continual"]["arms"] == report["arms"] and summary["continual"]["before"] == report["before"]
    assert checkpoint.load_labels(out / "best") == GROWN == checkpoint.load_labels(out / "ablation/no-replay/best")
    # before and after on OLD's test split, recomputed by `tubelet evaluate` of each checkpoint
    scored = {}
    for name, ckpt in (
        ("before", refit["prev"]),
        ("replay", out / "best"),
        ("no-replay", out / "ablation/no-replay/best"),
    ):
        scored[name] = evaluate(str(ckpt), str(refit["old"]), out=str(tmp_path / name), views=1, workers=0)["accuracy"]
    assert report["before"]["old_test"] == pytest.approx(scored["before"], abs=1e-4)
    for arm in ("replay", "no-replay"):
        assert report["arms"][arm]["old_test"] == pytest.approx(scored[arm], abs=1e-4)
        assert report["arms"][arm]["forgetting"] == pytest.approx(scored["before"] - scored[arm], abs=2e-4)
    after = evaluate(str(out / "best"), str(refit["new"]), out=str(tmp_path / "new"), views=1, workers=0)
    assert report["arms"]["replay"]["new_test"] == pytest.approx(after["accuracy"], abs=1e-4)
    # PREV knows none of NEW's classes: every clip counts as wrong
    assert report["before"]["new_test"] == 0.0 and report["chance"] == 0.2
    assert report["train"]["replayed_clips"] == 1 and report["test_clips"] == {"old_test": 3, "new_test": 2}
    markdown = (out / "continual" / "report.md").read_text()
    assert f"| {report['arms']['replay']['forgetting']:.3f} |" in markdown and "chance (1 / 5 classes)" in markdown


def test_bad_replay_flags_are_one_line_errors(refit, tmp_path, capsys):
    base = ["finetune", "--data", str(refit["new"]), "--out", str(tmp_path / "run"), "--replay", str(refit["old"])]
    encoder = tmp_path / "encoder"  # a checkpoint without labels.json: not a fine-tuned classifier
    shutil.copytree(refit["prev"], encoder)
    (encoder / "labels.json").unlink()
    cases = [
        (["--model", "test"], "--replay: needs --model PREV/best"),
        (["--model", str(encoder)], "--replay: needs --model PREV/best"),
        (["--model", str(refit["prev"]), "--replay-fraction", "1.5"], "replay_fraction: must be between 0 and 1"),
        (["--model", str(refit["prev"]), "--replay-fraction", "0"], "replay_fraction: must be between 0 and 1"),
    ]
    for flags, message in cases:
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_replay_run_resumes_with_its_replay_fields_and_refuses_other_ones(replay_run, tmp_path):
    summary, run = replay_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["replay"] and saved["replay_fraction"] == 0.4
    cfg = FinetuneConfig(**{**saved, "out": str(out), "epochs": 2, "resume": True})
    resumed = finetune(cfg)
    assert resumed["steps"] > summary["steps"] and resumed["arms"]["no-replay"]["epochs_run"] == 2
    assert json.loads((out / "config.json").read_text())["replay"] == saved["replay"]
    with pytest.raises(ConfigError, match="replay_fraction 0.4 -> 0.3"):
        finetune(FinetuneConfig(**{**saved, "out": str(out), "replay_fraction": 0.3, "resume": True}))


def test_subsets_of_the_sample_data_share_no_clip_when_one_excludes_the_other(tiny_data, tmp_path):
    new = write_subset(tiny_data, tmp_path / "new", {"grow": None, "rotate": 1})
    old = write_subset(tiny_data, tmp_path / "old", {"rotate": None, "static": None}, exclude=new)
    rows = {
        name: [line.split(",") for line in (d / "train.csv").read_text().split()[1:]]
        for name, d in (("new", new), ("old", old))
    }
    assert sorted(label for _, label in rows["new"]) == ["grow", "rotate"]
    assert [label for _, label in rows["old"]] == ["static"]  # tiny_data's one rotate train clip went to NEW
    assert rows["new"][0][0].startswith(str(tiny_data.resolve()))  # absolute paths: the manifests live elsewhere
