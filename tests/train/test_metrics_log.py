"""`MetricsLog`: one JSON line per record in ``metrics.jsonl``, and its numbers as TensorBoard scalars."""

import json
import time

import pytest

from tubelet.train.metrics_log import MetricsLog


def records(run) -> list[dict]:
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def test_each_write_is_one_json_line_with_kind_step_time_and_values(tmp_path):
    run = tmp_path / "run"  # created on demand
    before = time.time()
    log = MetricsLog(run)
    log.write("train", 1, loss=2.5, lr=0.001, epoch=0)
    log.write("train", 2, loss=1.25, lr=0.002, epoch=0)
    log.write("val", 2, accuracy=0.75, note="best so far", improved=True)
    log.close()
    got = records(run)
    assert [{k: v for k, v in r.items() if k != "time"} for r in got] == [
        {"kind": "train", "step": 1, "loss": 2.5, "lr": 0.001, "epoch": 0},
        {"kind": "train", "step": 2, "loss": 1.25, "lr": 0.002, "epoch": 0},
        {"kind": "val", "step": 2, "accuracy": 0.75, "note": "best so far", "improved": True},
    ]
    times = [r["time"] for r in got]
    assert times == sorted(times) and before - 0.01 <= times[0] <= time.time()


def test_a_second_log_on_the_same_run_appends(tmp_path):
    first = MetricsLog(tmp_path)
    first.write("train", 1, loss=1.0)
    first.close()
    second = MetricsLog(tmp_path)  # a resumed run keeps the records of the first
    second.write("train", 2, loss=0.5)
    second.close()
    assert [(r["step"], r["loss"]) for r in records(tmp_path)] == [(1, 1.0), (2, 0.5)]


def test_numbers_go_to_tensorboard_under_kind_slash_name(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    log = MetricsLog(tmp_path)
    assert log.tb is not None
    log.write("train", 1, loss=2.5, epoch=0)
    log.write("train", 3, loss=0.5, epoch=1)
    log.write("val", 3, accuracy=0.75, note="text", improved=True)
    log.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/epoch", "train/loss", "val/accuracy"]  # no text, no booleans
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (3, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("val/accuracy")] == [(3, 0.75)]


def test_a_resumed_log_drops_the_records_after_its_step(tmp_path):
    first = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        first.write("train", step, loss=float(step))
    first.write("epoch", 3, loss=2.0)
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')  # a kill in mid-write
    resumed = MetricsLog(tmp_path, from_step=2)  # last/ was saved at step 2
    resumed.write("train", 3, loss=0.5)
    resumed.close()
    assert [(r["kind"], r["step"], r["loss"]) for r in records(tmp_path)] == [
        ("train", 1, 1.0),
        ("train", 2, 2.0),
        ("train", 3, 0.5),
    ]
    MetricsLog(tmp_path, from_step=0).close()  # no checkpoint to resume from: a fresh log
    assert records(tmp_path) == []
