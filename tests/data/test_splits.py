import json
import logging

import numpy as np
import pytest

from tubelet.cli import main
from tubelet.data.splits import eval_split, held_out_count, is_class_folders, load_test_split, train_val
from tubelet.errors import ConfigError
from tubelet.io import write_video

# Clips per class: uneven on purpose, and one class with a single clip (never held out).
CLASSES = {"left": 5, "right": 3, "still": 1}
FAST = ["--model", "test", "--size", "32", "--sample-fps", "4", "--clip-seconds", "1", "--workers", "0"]
FAST += ["--epochs", "1", "--batch-particles", "2000"]


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    """``DIR/<label>/*.mp4``: real encoded 1 s clips (64x48, 8 fps), no split manifests or folders."""
    root = tmp_path_factory.mktemp("folders") / "mydata"
    rng = np.random.default_rng(0)
    for c, (label, count) in enumerate(CLASSES.items()):
        for i in range(count):
            frames = rng.integers(0, 60, (8, 48, 64, 3), dtype=np.uint8)
            frames[..., c] += 150  # each class its own colour
            write_video(root / label / f"{label}{i}.mp4", frames, fps=8)
    return root


def _paths(data) -> list[str]:
    return [str(s.path) for s in data.samples]


def test_held_out_count_per_class():
    assert [held_out_count(n, 0.2) for n in (0, 1, 2, 3, 5, 10, 12)] == [0, 0, 1, 1, 1, 2, 2]
    assert held_out_count(3, 0.9) == 2  # a class keeps one clip
    assert held_out_count(10, 0.0) == 0


def test_class_folders_hold_out_a_stratified_deterministic_share(class_dir, caplog):
    with caplog.at_level(logging.INFO, logger="tubelet.data"):
        train, val = train_val(class_dir, val_fraction=0.4, seed=0)
    assert val.class_counts() == {"left": 2, "right": 1, "still": 0}
    assert train.class_counts() == {"left": 3, "right": 2, "still": 1}  # every class trains
    assert train.labels == val.labels == ["left", "right", "still"]
    assert not set(_paths(train)) & set(_paths(val))
    assert sorted(_paths(train) + _paths(val)) == sorted(str(p) for p in class_dir.rglob("*.mp4"))
    held = "holding out 3 of 9 clips as validation, per class"
    assert f"no 'train' split in {class_dir}: class folders; {held}" in caplog.text
    assert "left 2/5, right 1/3, still 0/1" in caplog.text

    again_train, again_val = train_val(class_dir, val_fraction=0.4, seed=0)
    assert _paths(again_val) == _paths(val) and _paths(again_train) == _paths(train)
    others = [_paths(train_val(class_dir, val_fraction=0.4, seed=s)[1]) for s in range(1, 6)]
    assert any(o != _paths(val) for o in others)  # the seed chooses which clips


def test_val_fraction_zero_or_no_val_split_trains_on_every_clip(class_dir):
    for options in ({"val_fraction": 0.0}, {"val_split": "none"}, {"val_split": None}):
        train, val = train_val(class_dir, **options)
        assert val is None and len(train) == sum(CLASSES.values())
    with pytest.raises(ConfigError, match="val_fraction"):
        train_val(class_dir, val_fraction=1.0)


def test_data_with_splits_is_read_split_by_split(class_dir, tmp_path, caplog):
    clips = sorted(class_dir.rglob("*.mp4"))
    rows = "".join(f"{p},{p.parent.name}\n" for p in clips[::2])
    (tmp_path / "train.csv").write_text("path,label\n" + rows)
    assert not is_class_folders(tmp_path) and is_class_folders(class_dir)
    with caplog.at_level(logging.WARNING):
        train, val = train_val(tmp_path)  # a train split and no val split: no validation, as before
    assert val is None and _paths(train) == [str(p) for p in clips[::2]]
    assert f"{tmp_path}: no 'val' split" in caplog.text
    (tmp_path / "val.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in clips[1::2]))
    train, val = train_val(tmp_path)
    assert _paths(val) == [str(p) for p in clips[1::2]] and val.labels == train.labels == list(CLASSES)
    manifest, none = train_val(tmp_path / "val.csv")  # one manifest file: all of it, no validation
    assert none is None and _paths(manifest) == [str(p) for p in clips[1::2]]


def test_test_split_and_evaluation_of_class_folders(class_dir):
    assert load_test_split(class_dir, list(CLASSES)) is None  # the validation share came from the same clips
    data = eval_split(class_dir, "test")
    assert len(data) == sum(CLASSES.values()) and data.note.endswith("evaluating all 9 clips")
    data = eval_split(class_dir, None)
    assert len(data) == 9 and data.note is None


def test_finetune_and_evaluate_on_class_folders(class_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(class_dir), "--out", str(run), *FAST]) == 0
    assert (run / "best" / "model.safetensors").is_file()
    validated = json.loads((run / "best" / "val_metrics.json").read_text())
    _, held = train_val(class_dir, seed=0)  # the run's default fraction and seed
    assert validated["num_samples"] == len(held) == 2  # one of "left" (5 clips), one of "right" (3)
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["kind"] for r in records].count("val") == 1

    out = tmp_path / "report"
    args = ["evaluate", "--checkpoint", str(run / "best"), "--data", str(class_dir), "--out", str(out)]
    assert main([*args, "--views", "1", "--workers", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == sum(CLASSES.values())
    assert report["details"]["split"] is None and "evaluating all 9 clips" in report["details"]["note"]
