"""The falls sample: measured from the pixels, a fall loses most of the figure's height fast and stays down, a walk
keeps it, a sit ends lower but upright, a bend comes back up; the command writes decodable clips in class folders and
splits, and streams whose truth says when the figure is down."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from tubelet.data import sample_falls as sf
from tubelet.data.sample_falls import LABELS, Key, Script, clip_script, make_room, read_falls, render
from tubelet.io import decode, probe

FPS = 10.0


def quiet_room(seed: int):
    """A room drawn at random, without noise, shake, drift or a seat, so a changed pixel is the figure."""
    room = make_room(np.random.default_rng(seed), seed=seed)
    return replace(room, noise=0.0, shake=0.0, drift=0.0, seat=None)


def boxes(frames: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """(T, 4) top, bottom, left, right of the pixels that differ from the empty room, per frame."""
    out = []
    for frame in frames:
        rows, cols = np.nonzero(np.abs(frame.astype(int) - empty.astype(int)).max(axis=2) > 12)
        out.append((rows.min(), rows.max(), cols.min(), cols.max()) if len(rows) else (0, 0, 0, 0))
    return np.array(out, float)


def performed(label: str, seed: int):
    """(boxes per frame, script) of a `label` clip in a quiet room."""
    rng = np.random.default_rng([7, seed])
    room = quiet_room(seed)
    script, length = clip_script(label, rng, room)
    frames = render(script, room, fps=FPS, seconds=length)
    nobody = Script([Key(0.0, sf.STAND, -10_000.0, 1)])  # the figure far outside the frame: the empty room
    empty = render(nobody, room, fps=FPS, seconds=0.1)[0]
    return boxes(frames, empty), script


def first(script: Script, activity: str) -> tuple[float, float]:
    spans = [(a, b) for name, a, b in script.stretches if name == activity]
    return spans[0][0], spans[-1][1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fall_loses_most_of_the_height_within_a_second_and_stays_down_wider_than_tall(seed):
    box, script = performed("fall", seed)
    height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    start, end = first(script, "fall")
    before, after = int(start * FPS), int(np.ceil(end * FPS)) + 1
    assert end - start < 1.0
    assert height[after:].max() < 0.45 * height[: before + 1].mean()  # down, and stays down
    assert (width[after:] > 1.5 * height[after:]).all()  # lying: wider than tall


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_walk_keeps_its_height_and_moves_sideways(seed):
    box, _ = performed("walk", seed)
    height = box[:, 1] - box[:, 0]
    assert height.min() > 0.85 * height.max()
    centre = (box[:, 2] + box[:, 3]) / 2
    assert np.ptp(centre) > 0.3 * height.mean()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_sit_ends_lower_but_upright_and_slower_than_a_fall(seed):
    box, script = performed("sit", seed)
    height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    start, end = first(script, "sit_down")
    assert end - start >= 1.0
    assert 0.55 * height[0] < height[-1] < 0.85 * height[0] and height[-1] > width[-1]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_bend_goes_down_and_comes_back_up(seed):
    box, _ = performed("bend", seed)
    height = box[:, 1] - box[:, 0]
    assert height.min() < 0.8 * height[0] and height[-1] > 0.9 * height[0]


def test_generate_writes_decodable_clips_in_class_folders_and_a_stream_whose_truth_is_in_the_pixels(tmp_path):
    out = tmp_path / "falls"
    summary = sf.generate_falls(out, seed=3, clips_per_class=3, streams=1, stream_seconds=30.0, workers=1)
    assert summary["clips"] == {"train": 4, "val": 4, "test": 4} and summary["labels"] == list(LABELS)
    for split in ("train", "val", "test"):
        with open(out / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(row["label"] for row in rows) == sorted(LABELS)
        for row in rows:
            assert row["path"].startswith(f"clips/{split}/{row['label']}/")
    info = probe(out / rows[0]["path"])
    assert (info.width, info.height) == (320, 240) and 2.0 <= info.duration_s <= 4.1 and 15 <= info.fps <= 30
    # The stream: the figure's box (against the stream's per-pixel median) is tall before the fall, low after it.
    ((stream, falls),) = read_falls(out).items()
    ((start, end),) = falls
    assert summary["falls"] == 1 and 10.0 <= start < end <= 30.0
    clip = decode(out / stream, fps=5.0, size=120)
    background = np.median(clip.frames, axis=0)
    changed = np.abs(clip.frames.astype(float) - background).max(axis=3) > 40  # (T, H, W)

    def height_at(t: float) -> float:
        rows = np.nonzero(changed[int(np.argmin(np.abs(clip.timestamps - t)))])[0]
        return float(np.percentile(rows, 98) - np.percentile(rows, 2)) if len(rows) > 10 else 0.0

    standing = np.median([height_at(t) for t in (start - 0.6, start - 0.4, start - 0.2)])
    lying = np.median([height_at(t) for t in np.arange(start + 1.2, end - 0.2, 0.4)])
    assert standing > 15 and lying < 0.5 * standing


def test_command_writes_falls_and_refuses_two_datasets_at_once(tmp_path, tubelet_cli):
    bad = tubelet_cli("sample-data", tmp_path / "x", "--falls", "--surveillance", check=False)
    assert bad.returncode != 0 and "--surveillance, --falls write different datasets; choose one" in bad.stderr
    short = tubelet_cli("sample-data", tmp_path / "x", "--falls", "--stream-seconds", "20", check=False)
    assert short.returncode != 0 and "--stream-seconds must be at least 30" in short.stderr
    result = tubelet_cli("sample-data", tmp_path / "f", "--falls", "--streams", "0", "--clips-per-class", "3", "--json")
    summary = json.loads(result.stdout)
    assert summary["clips"] == {"train": 4, "val": 4, "test": 4} and summary["falls"] == 0
