"""The learned `vitals` task: windows of a trace become particles of spectra in seconds, the two heads (heart rate
and breathing rate as distributions over bins) learn synthetic traces well past a constant guess, the task trains
through `tubelet finetune`, and `tubelet vitals --method model` reads its checkpoint end to end on an encoded file
(both rates, gated by the model's confidence, the heart rate also by POS's spectrum: a video without a pulse gets low
quality); any other checkpoint is refused in one line."""

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from tubelet.cli import main  # noqa: E402
from tubelet.data.sample_vitals import generate_vitals  # noqa: E402
from tubelet.data.transforms import Preprocessing  # noqa: E402
from tubelet.models.encoder import Encoder, EncoderConfig  # noqa: E402
from tubelet.tasks.base import get_task  # noqa: E402
from tubelet.tasks.vitals import (  # noqa: E402
    BR_BINS,
    HR_BINS,
    PARTICLE_DIM,
    PARTICLES,
    SPECTRA_DIM,
    TraceWindows,
    Videos,
    VitalsModel,
    evaluate_windows,
    load_videos,
    load_vitals,
    mean_rate,
    read_rates,
    soft_targets,
    sub_windows,
    trace_file,
    vitals_loss,
    window_features,
    window_logits,
    window_particles,
)
from tubelet.vitals.estimate import LEARNED_MIN_QUALITY_DB, learned_quality, read_window  # noqa: E402
from tubelet.vitals.traces import Trace  # noqa: E402


def _trace(bpm: float, fps: float, seconds: float = 12.0, *, breaths: float = 15.0, seed: int = 0) -> Trace:
    """A trace with a sinusoidal pulse in the skin's colour (blood's channel ratios) and a breathing chest."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / fps)
    pulse = 0.5 * np.sin(2 * np.pi * bpm / 60 * t + rng.uniform(0, 6))
    rgb = np.stack([150 + 0.33 * pulse, 110 + 0.77 * pulse, 90 + 0.53 * pulse], axis=1)
    rgb += rng.normal(0, 0.15, rgb.shape) + rng.normal(0, 0.15, (len(t), 1))  # sensor noise and white flicker
    chest = np.sin(2 * np.pi * breaths / 60 * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, len(t))
    return Trace(t, rgb, np.full(len(t), 500), chest, rng.normal(0, 0.02, len(t)))


def test_window_particles_are_rate_bins_and_do_not_depend_on_the_frame_rate():
    a = window_features(_trace(72, 30.0, breaths=20), 1.0, 11.0, 150, 15.0)
    b = window_features(_trace(72, 60.0, breaths=20), 1.0, 11.0, 150, 15.0)
    assert sub_windows(10.0) == [8.0, 8.5, 9.0, 9.5, 10.0] and sub_windows(6.0) == [6.0] * 5
    assert a.shape == (5, SPECTRA_DIM)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # the same spectra from 30 and 60 fps footage
    pos_spectrum, breath_spectrum = a[0, : len(HR_BINS)], a[0, -len(BR_BINS) :]
    assert HR_BINS[pos_spectrum.argmax()] == pytest.approx(72, abs=2)  # POS's peak on the heart-rate bins
    assert BR_BINS[breath_spectrum.argmax()] == pytest.approx(20, abs=1)  # the chest's on the breathing bins
    particles = window_particles(a, 10.0)
    assert particles.values.shape == (PARTICLES, PARTICLE_DIM) and particles.tubelet == (1, 1, 1)
    assert torch.equal(particles.y[[0, len(HR_BINS)]], torch.tensor([0, 1]))  # heart-rate row, then breathing row
    assert torch.equal(particles.x[: len(HR_BINS)], torch.arange(len(HR_BINS)))  # a particle stands at its bin
    assert torch.allclose(particles.t, torch.full((PARTICLES,), 5.0))  # the window's centre, in seconds
    at_72 = int(np.argmin(np.abs(HR_BINS - 72)))
    assert particles.values[at_72, 0] == pytest.approx(np.log1p(a[0, at_72]))  # POS power, first sub-window
    assert particles.values[:, -1].sum() == len(BR_BINS)  # the breathing flag
    stretched = window_features(_trace(72, 30.0), 1.0, 9.0, 150, 15.0)  # 8 s read as 10: every rate times 0.8
    assert HR_BINS[stretched[0, : len(HR_BINS)].argmax()] == pytest.approx(72 * 0.8, abs=2)
    no_skin = _trace(72, 30.0)
    no_skin.rgb[::2] = np.nan
    assert window_features(no_skin, 1.0, 11.0, 150, 15.0) is None


def test_mean_rate_weights_seconds_by_overlap():
    assert mean_rate(np.array([60.0, 90.0, 120.0]), 0.5, 2.0) == pytest.approx((0.5 * 60 + 90) / 1.5)


def test_soft_targets_read_back_to_their_rate_and_a_flat_one_is_not_confident():
    target = soft_targets(torch.tensor([73.0, float("nan")]), HR_BINS, 3.0)  # (2, bins)
    assert torch.allclose(target.sum(dim=1), torch.ones(2))
    assert torch.allclose(target[1], torch.full((len(HR_BINS),), 1 / len(HR_BINS)))  # no pulse: uniform
    rate, quality = read_rates(target.numpy(), HR_BINS, 6.0)
    assert rate[0] == pytest.approx(73.0, abs=0.5)  # between bins 72 and 74, read by the local mean
    assert quality[0] > 5.0 > LEARNED_MIN_QUALITY_DB > quality[1]  # a sharp peak is trusted, a flat one is not


def _synthetic(count: int, seed: int) -> Videos:
    rng = np.random.default_rng(seed)
    traces, truth = [], []
    for k in range(count):
        bpm, breaths = rng.uniform(50, 140), rng.uniform(9, 28)
        traces.append(_trace(bpm, 30.0, 16.0, breaths=breaths, seed=seed * 1000 + k))
        truth.append(np.tile([bpm, breaths], (16, 1)))
    return Videos([f"v{k}" for k in range(count)], traces, truth, windows_per_video=8, stretch=1.2)


def test_both_heads_learn_synthetic_traces_far_better_than_a_constant():
    """Loss falls and held-out traces are read far better than the best constant guess: a bounded-cost check that the
    spectral particles and the two distribution heads can learn, apart from video and compression."""
    torch.manual_seed(0)
    pre = Preprocessing(tubelet=(1, 1, 1), size=None, max_long_side=None, sample_fps=15.0, clip_seconds=10.0)
    train = TraceWindows(_synthetic(16, 0), pre, train=True)
    held = TraceWindows(_synthetic(6, 1), pre, train=False)
    config = EncoderConfig(dim=32, depth=1, heads=2, tubelet=(1, 1, 1), channels=PARTICLE_DIM, num_classes=1,
                           pooling="mean", embed_init="random")  # fmt: skip
    model = Encoder(config)
    before = evaluate_windows(model, held)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(80):
        batch = train.collate([train[i] for i in np.random.default_rng(step).choice(len(train), 32)])
        model.train()
        loss = vitals_loss(window_logits(model, batch.packed), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = evaluate_windows(model, held)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 2.0  # nats; the targets' own entropy is about 3.9
    truth = np.array([held[i][1] for i in range(len(held))])  # (n, 2)
    constant_hr = np.abs(truth[:, 0] - np.median(truth[:, 0])).mean()  # the best constant guess, known truth
    constant_br = np.abs(truth[:, 1] - np.median(truth[:, 1])).mean()
    assert after["mae_bpm"] < min(0.3 * constant_hr, 6.0) and after["mae_bpm"] < 0.3 * before["mae_bpm"]
    assert after["breathing_mae"] < min(0.3 * constant_br, 2.0)
    assert after["pearson_r"] > 0.9


@pytest.fixture(scope="module")
def vitals_run(tmp_path_factory):
    """Two 12 s still videos (one a pulse, one not) and a model trained on them; val is the train split: the test is
    that the task fits through the loop, the benchmark is what says how it generalises."""
    root = tmp_path_factory.mktemp("vitals_data")
    generate_vitals(root, seed=3, duration=12.0, per_cell={"train": 1}, no_pulse=1, motions=("still",),
                    compressions=("low",), rates=(15.0,), sizes=((160, 120),), workers=1)  # fmt: skip
    shutil.copy(root / "train.csv", root / "val.csv")
    out = tmp_path_factory.mktemp("vitals_run")
    code = main(["finetune", "--task", "vitals", "--data", str(root), "--out", str(out), "--epochs", "15",
                 "--windows-per-video", "24", "--model-dim", "32", "--model-depth", "1", "--lr", "3e-3",
                 "--batch-particles", "1232", "--seed", "0"])  # fmt: skip
    assert code == 0
    return root, out


def test_the_task_trains_and_its_validation_error_falls(vitals_run):
    root, out = vitals_run
    task = get_task("vitals")
    assert task.name == "vitals"
    val = load_videos(root, "val")
    assert len(val) == 2 and len(val.pulsed()) == 1  # the no-pulse video is read for breathing, its pulse is NaN
    assert json.loads((out / "best" / "training_args.json").read_text())["task"] == "vitals"
    trained = load_vitals(out / "best")
    windows = TraceWindows(val, trained.preprocessing, train=False)
    torch.manual_seed(0)
    before = evaluate_windows(Encoder(trained.model.config), windows)  # the same model untrained
    after = evaluate_windows(trained.model, windows)
    assert after["windows"] == before["windows"] == 3  # 10 s windows every second of 12 s, pulsed video only
    assert after["mae_bpm"] < 0.5 * before["mae_bpm"] and after["mae_bpm"] < 8.0
    # An untrained model already follows the breathing spectrum's peak (a bin's logit rises with its power for one
    # sign of the random weights), so breathing is held to the truth, and both heads' loss must fall.
    assert after["breathing_mae"] < 1.5
    assert after["loss"] < before["loss"] - 0.5
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
    direct = [model.read(trace, r["start"], r["end"]) for r in rows]
    assert all(abs(heart.bpm - bpm) < 8.0 for heart, _ in direct)  # it fitted its training video
    for row, (heart, breath) in zip(rows, direct):  # the CLI gives those rates, or refuses them for low quality
        spectral = read_window(trace, row["start"], row["end"], "pos")[1].heart  # POS's peak must agree
        assert learned_quality(heart, spectral) <= heart.quality_db
        pairs = (("heart_rate_bpm", "quality", heart, learned_quality(heart, spectral)),
                 ("breathing_rate_bpm", "breathing_quality", breath, breath.quality_db))  # fmt: skip
        for key, quality, rate, expected in pairs:
            assert row[quality] == pytest.approx(expected, abs=0.01)
            if row[key] is None:
                assert expected < LEARNED_MIN_QUALITY_DB and "low" in row["reason"]
            else:
                assert expected >= LEARNED_MIN_QUALITY_DB and row[key] == pytest.approx(rate.bpm, abs=0.06)
    assert all(row["breathing_rate_bpm"] is not None for row in rows)
    flat = root / "train" / next(p.name for p in (root / "train").iterdir() if not p.name.startswith("pulse"))
    assert main(["vitals", str(flat), "--method", "model", "--checkpoint", str(out / "best"), "--json"]) == 0
    empty = json.loads(capsys.readouterr().out)["windows"]  # no pulse: low quality, whatever the model's confidence
    assert len(empty) == 3 and all(r["heart_rate_bpm"] is None for r in empty)
    assert max(r["quality"] for r in empty) < min(LEARNED_MIN_QUALITY_DB, *(r["quality"] for r in rows)) - 1.0

    from tubelet.models import load, save

    other = save(tmp_path / "micro", load("micro", num_classes=2).model, preprocessing=Preprocessing())
    assert main(["vitals", str(video), "--method", "model", "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a vitals model" in err
