"""The surveillance sample: each planted anomaly shows in the pixels at the seconds the truth gives, and the command
writes streams, truth and labelled clips that decode as said."""

import csv
import json

import numpy as np
import pytest

from tubelet.data import sample_surveillance as sv
from tubelet.data.sample_surveillance import KINDS, RUN, WALK, Scene, make_scene, read_truth, render
from tubelet.io import decode, probe

FPS = 10.0


def planted(kind: str) -> tuple[Scene, float, float]:
    """A scene with no traffic, no noise and no drift, holding anomaly `kind` only (start 2 s)."""
    scene = Scene("brick", 160, 120, seed=1, noise=0.0, drift=0.0)
    start, end = sv._plant(scene, kind, 2.0, np.random.default_rng(0))
    return scene, start, end


def changed(scene: Scene, t: float) -> np.ndarray:
    """(H, W) bool: pixels where the frame at `t` differs from the empty background."""
    frame = render(scene, fps=FPS, start=t, end=t + 0.1)[0].astype(int)
    empty = Scene(scene.background, scene.width, scene.height, seed=1, noise=0.0, drift=0.0)
    background = render(empty, fps=FPS, start=0, end=0.1)[0].astype(int)
    return np.abs(frame - background).max(axis=2) > 8


def centre_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


@pytest.mark.parametrize("kind, direction", [("wrong_way", -1), ("running", 1)])
def test_moving_anomalies_go_their_way_at_their_speed_while_the_truth_says(kind, direction):
    scene, start, end = planted(kind)
    assert not changed(scene, start - 0.5).any() and not changed(scene, end + 0.5).any()  # out of view outside
    a, b = start + 0.2 * (end - start), start + 0.6 * (end - start)
    speed = (centre_x(changed(scene, b)) - centre_x(changed(scene, a))) / (b - a)
    low, high = WALK if kind == "wrong_way" else RUN
    assert direction * speed == pytest.approx((low + high) / 2, rel=0.35)


def test_a_bag_left_behind_stays_put_until_its_end():
    scene, start, end = planted("left_behind")
    early, late = changed(scene, start + 0.1 * (end - start)), changed(scene, end - 0.2)
    assert late.sum() > 40 and np.array_equal(late, late & early)  # the bag's pixels at the end were there early
    assert not changed(scene, end + 3.0).any()


def test_a_fall_turns_the_walker_on_its_side():
    scene, start, end = planted("fall")
    upright, lying = changed(scene, start - 0.3), changed(scene, end - 0.5)
    rows, cols = np.nonzero(upright)
    assert np.ptp(rows) > 1.5 * np.ptp(cols)  # taller than wide
    rows, cols = np.nonzero(lying)
    assert np.ptp(cols) > 1.5 * np.ptp(rows)  # wider than tall
    assert not changed(scene, end + 0.2).any()


def test_a_light_change_scales_brightness_only_inside_its_seconds():
    scene, start, end = planted("light")
    ((_, _, gain),) = scene.lights
    frames = render(scene, fps=FPS, start=0.0, end=end + 1.0).astype(float)
    times = np.arange(len(frames)) / FPS
    inside, before = frames[(times > start + 0.05) & (times < end - 0.05)], frames[times < start]
    ratio = inside.mean() / before.mean()
    assert ratio == pytest.approx(gain, rel=0.05) and abs(ratio - 1) > 0.3
    assert frames[times > end + 0.05].mean() == pytest.approx(before.mean(), rel=0.01)


def test_loitering_stays_in_a_small_area_for_its_seconds():
    scene, start, end = planted("loitering")
    xs = [centre_x(changed(scene, t)) for t in np.linspace(start + 0.5, end - 0.5, 6)]
    assert np.ptp(xs) < 40  # a walker would cover (end - start) * WALK, over 200 px
    assert (end - start) * WALK[0] > 200


def test_normal_traffic_walks_left_to_right():
    scene = make_scene(20.0, seed=4, width=160, height=120)
    assert scene.anomalies == [] and len(scene.actors) >= 3
    assert all(actor.keys[-1][1] > actor.keys[0][1] for actor in scene.actors)
    speeds = [(a.keys[-1][1] - a.keys[0][1]) / (a.keys[-1][0] - a.keys[0][0]) for a in scene.actors]
    assert WALK[0] <= min(speeds) and max(speeds) <= WALK[1]


def test_generate_writes_streams_truth_and_labelled_clips(tmp_path):
    out = tmp_path / "cam"
    summary = sv.generate_surveillance(
        out, streams=1, stream_seconds=51, clips_per_class=3, clip_seconds=2, fps=5, width=96, height=64, workers=1
    )
    truth = read_truth(out)
    ((stream, events),) = truth.items()
    info = probe(out / stream)
    assert (info.width, info.height) == (96, 64) and info.duration_s == pytest.approx(51.0, abs=0.3)
    assert [kind for kind, _, _ in events] == [KINDS[0]] and summary["anomalies"] == 1  # stream 0: the first kind
    ((_, start, end),) = events
    assert 30.0 < start < end <= 51.0
    labels = {"normal", *KINDS}
    for split in ("train", "val", "test"):
        with open(out / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {row["label"] for row in rows} == labels and len(rows) == len(labels)
    clip = decode(out / rows[0]["path"])
    assert clip.frames.shape[1:] == (64, 96, 3) and len(clip.frames) == 10  # 2 s at 5 fps


def test_command_refuses_a_stream_too_short_for_calibration_and_an_anomaly(tmp_path, tubelet_cli):
    bad = tubelet_cli("sample-data", tmp_path / "x", "--surveillance", "--stream-seconds", "20", check=False)
    assert bad.returncode != 0 and "--stream-seconds must exceed 50" in bad.stderr


def test_command_writes_the_labelled_clips(tmp_path, tubelet_cli):
    out = tmp_path / "cam"
    result = tubelet_cli("sample-data", out, "--surveillance", "--streams", "0", "--clips-per-class", "3", "--json")
    summary = json.loads(result.stdout)
    assert summary["clips"] == {"train": 7, "val": 7, "test": 7} and summary["anomalies"] == 0
    with open(out / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fall = next(row["path"] for row in rows if row["label"] == "fall")
    info = probe(out / fall)
    assert (info.width, info.height) == (320, 240) and info.duration_s == pytest.approx(4.0, abs=0.1)
