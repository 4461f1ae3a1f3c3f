"""Vital-signs sample data: a sub-level pulse in the skin only, truth per second, manifests and splits."""

import csv
import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("skimage")

from tubelet.cli import main  # noqa: E402
from tubelet.data.sample_vitals import frames, generate_vitals, make_subject, waveform  # noqa: E402
from tubelet.io import probe  # noqa: E402


def test_the_pulse_is_under_one_level_and_only_in_the_skin():
    subject = make_subject(0, seed=0, motion="still", compression="low", fps=15.0, size=(160, 120), duration=2.0)
    subject = dataclasses.replace(subject, noise=0.0)
    flat = dataclasses.replace(subject, pulse_levels=0.0)
    with_pulse = np.stack([f for _, f in frames(subject)]).astype(float)  # (T, H, W, 3)
    without = np.stack([f for _, f in frames(flat)]).astype(float)
    change = with_pulse - without
    # Under one level: the face's mean green moves by less than 1, and 99% of the changed pixels by one step of
    # rounding (the brightest skin moves proportionally more and can round to 2).
    assert np.percentile(np.abs(change[change != 0]), 99) <= 1.0
    skin_rows = np.abs(change[..., 1]).mean(axis=(0, 2))  # (H,) where the green channel changed
    assert skin_rows[:60].sum() > 20 * skin_rows[80:].sum()  # the face (top half), not the suit below
    # Mean green change over the face follows minus the waveform (blood darkens the skin).
    times = np.arange(len(change)) / subject.fps
    from tubelet.data.sample_vitals import phases

    beat = waveform(phases(subject, times)[0])
    face = change[:, 10:60, 50:110, 1].mean(axis=(1, 2))
    assert np.corrcoef(face, beat)[0, 1] < -0.8
    assert np.abs(face).max() < 1.0


def test_files_manifests_truth_and_splits(tmp_path, capsys):
    summary = generate_vitals(tmp_path, duration=3.0, per_cell={"train": 1, "test": 1}, no_pulse=1, rates=(15.0,),
                              sizes=((160, 120),), motions=("still",), compressions=("low",), workers=1)  # fmt: skip
    assert summary == {"train": 2, "test": 2, "no_pulse": 2, "seconds": 12.0}
    rows = {split: list(csv.DictReader(open(tmp_path / f"{split}.csv"))) for split in ("train", "test")}
    for table in rows.values():
        assert {r["motion"] for r in table} == {"still"} and {r["compression"] for r in table} == {"low"}
        assert sorted(r["pulse"] for r in table) == ["0", "1"]
        info = probe(tmp_path / table[0]["path"])
        assert info.width == 160 and info.height == 120 and info.frames == 45 and abs(info.fps - 15.0) < 0.01
    truth = list(csv.DictReader(open(tmp_path / "truth.csv")))
    assert len(truth) == 4 * 3
    for row in truth:
        pulse = next(r for t in rows.values() for r in t if r["path"] == row["path"])["pulse"] == "1"
        assert (row["heart_rate_bpm"] != "") == pulse
        assert 8 <= float(row["breathing_rate_bpm"]) <= 30
        assert not pulse or 40 <= float(row["heart_rate_bpm"]) <= 160
    subjects = [json.loads(line) for line in open(tmp_path / "subjects.jsonl")]
    assert {s["mirror"] for s in subjects if s["split"] == "test"} == {True}
    assert {s["mirror"] for s in subjects if s["split"] == "train"} == {False}
    assert main(["sample-data", str(tmp_path / "x"), "--vitals", "--video2video"]) == 2
    assert "choose one" in capsys.readouterr().err
