"""The learned `vitals` task: windows of a trace become particles in seconds, it trains through `tubelet finetune`
(validation error falls from the untrained model's), and `tubelet vitals --method model` reads its checkpoint end to
end on an encoded file; any other checkpoint is refused in one line."""

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from tubelet.cli import main  # noqa: E402
from tubelet.data.sample_vitals import generate_vitals  # noqa: E402
from tubelet.models.encoder import Encoder  # noqa: E402
from tubelet.tasks.base import get_task  # noqa: E402
from tubelet.tasks.vitals import (  # noqa: E402
    CHANNELS,
    CHUNK,
    TraceWindows,
    VitalsModel,
    evaluate_windows,
    load_videos,
    load_vitals,
    mean_rate,
    trace_file,
    window_features,
    window_particles,
)
from tubelet.vitals.pulse import MIN_QUALITY_DB  # noqa: E402
from tubelet.vitals.traces import Trace  # noqa: E402


def _trace(bpm: float, fps: float, seconds: float = 12.0) -> Trace:
    t = np.arange(0, seconds, 1 / fps)
    pulse = 0.5 * np.sin(2 * np.pi * bpm / 60 * t)
    rgb = np.stack([150 + 0.33 * pulse, 110 + 0.77 * pulse, 90 + 0.53 * pulse], axis=1)
    rgb += np.random.default_rng(0).normal(0, 0.01, rgb.shape)
    zeros = np.zeros(len(t))
    return Trace(t, rgb, np.full(len(t), 500), zeros, zeros)


def test_window_particles_carry_seconds_and_do_not_depend_on_the_frame_rate():
    a = window_features(_trace(72, 30.0), 1.0, 11.0, 150, 15.0)
    b = window_features(_trace(72, 60.0), 1.0, 11.0, 150, 15.0)
    assert a.shape == (150, CHANNELS)
    assert np.corrcoef(a[:, 3], b[:, 3])[0, 1] > 0.98  # the same POS pulse from 30 and 60 fps footage
    particles = window_particles(a, 15.0)
    assert particles.values.shape == (150 // CHUNK, CHUNK * CHANNELS)
    assert torch.allclose(particles.t[:2], torch.tensor([1 / 15, 4 / 15]))  # centres of samples 0-2 and 3-5
    assert torch.equal(particles.values[1, :CHANNELS], torch.from_numpy(a[3]))  # flattened as (t c)
    no_skin = _trace(72, 30.0)
    no_skin.rgb[::2] = np.nan
    assert window_features(no_skin, 1.0, 11.0, 150, 15.0) is None


def test_mean_rate_weights_seconds_by_overlap():
    assert mean_rate(np.array([60.0, 90.0, 120.0]), 0.5, 2.0) == pytest.approx((0.5 * 60 + 90) / 1.5)


@pytest.fixture(scope="module")
def vitals_run(tmp_path_factory):
    """Two 12 s still videos (one a pulse, one not) and a model trained on the first; val is the train split: the
    test is that the task fits through the loop, the benchmark is what says how it generalises."""
    root = tmp_path_factory.mktemp("vitals_data")
    generate_vitals(root, seed=3, duration=12.0, per_cell={"train": 1}, no_pulse=1, motions=("still",),
                    compressions=("low",), rates=(15.0,), sizes=((160, 120),), workers=1)  # fmt: skip
    shutil.copy(root / "train.csv", root / "val.csv")
    out = tmp_path_factory.mktemp("vitals_run")
    code = main(["finetune", "--task", "vitals", "--data", str(root), "--out", str(out), "--epochs", "12",
                 "--windows-per-video", "16", "--model-dim", "32", "--model-depth", "2", "--lr", "3e-3",
                 "--batch-particles", "400", "--seed", "0"])  # fmt: skip
    assert code == 0
    return root, out


def test_the_task_trains_and_its_validation_error_falls(vitals_run):
    root, out = vitals_run
    task = get_task("vitals")
    assert task.name == "vitals"
    val = load_videos(root, "val")
    assert len(val.pulsed()) == 1  # the no-pulse video has no rate to learn
    assert json.loads((out / "best" / "training_args.json").read_text())["task"] == "vitals"
    trained = load_vitals(out / "best")
    windows = TraceWindows(val, trained.preprocessing, train=False)
    torch.manual_seed(0)
    before = evaluate_windows(Encoder(trained.model.config), windows)  # the same model untrained
    after = evaluate_windows(trained.model, windows)
    assert after["windows"] == before["windows"] == 3  # 10 s windows every second of 12 s
    assert after["mae_bpm"] < 0.5 * before["mae_bpm"] and after["mae_bpm"] < 8.0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(x.get("kind") == "val" for x in lines)
    assert {"config.json", "model.safetensors", "training_args.json"} <= {p.name for p in (out / "best").iterdir()}
    assert not list((out / "best").glob("*.pt")) and not list((out / "best").glob("*.bin"))


def test_vitals_reads_the_checkpoint_end_to_end_and_refuses_others(vitals_run, capsys, tmp_path):
    root, out = vitals_run
    video = root / "train" / next(p.name for p in (root / "train").iterdir() if p.name.startswith("pulse"))
    assert main(["vitals", str(video), "--method", "model", "--checkpoint", str(out / "best"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = summary["windows"]
    assert summary["method"] == "model" and len(rows) == 3
    assert set(rows[0]) >= {"start", "end", "heart_rate_bpm", "breathing_rate_bpm", "quality"}
    truth = [ln.split(",") for ln in (root / "truth.csv").read_text().splitlines()[1:] if video.name in ln]
    bpm = np.mean([float(r[2]) for r in truth])
    model = VitalsModel(out / "best")
    trace = trace_file(video)
    direct = [model.heart_rate(trace, r["start"], r["end"]) for r in rows]
    assert all(abs(v - bpm) < 8.0 for v in direct)  # it fitted its training video
    for row, value in zip(rows, direct):  # the CLI gives that rate, or refuses it for POS's low SNR there
        if row["heart_rate_bpm"] is None:
            assert row["quality"] < MIN_QUALITY_DB and "low pulse signal quality" in row["reason"]
        else:
            assert row["quality"] >= MIN_QUALITY_DB and row["heart_rate_bpm"] == pytest.approx(value, abs=0.06)

    from tubelet.data.transforms import Preprocessing
    from tubelet.models import load, save

    other = save(tmp_path / "micro", load("micro", num_classes=2).model, preprocessing=Preprocessing())
    assert main(["vitals", str(video), "--method", "model", "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a vitals model" in err
