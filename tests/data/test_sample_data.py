import csv
import json

import numpy as np
import pytest

from tubelet.data.sample import CLASSES, generate, load_scenes, make_scene, object_box
from tubelet.io import decode, probe
from tubelet.particles import tokenize


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    summary = generate(out, seed=3, clips_per_class=4)
    return out, summary


def _rows(root):
    return [json.loads(line) for line in open(root / "metadata.jsonl")]


def test_every_class_and_split_is_written(sample):
    root, summary = sample
    assert summary["clips"] == 4 * len(CLASSES) >= 20
    for label in CLASSES:
        assert len(list((root / label).iterdir())) == 4
    splits = {s: list(csv.DictReader(open(root / f"{s}.csv"))) for s in ("train", "val", "test")}
    paths = [r["path"] for rows in splits.values() for r in rows]
    assert len(paths) == len(set(paths)) == summary["clips"]  # disjoint and complete
    for rows in splits.values():
        assert {r["label"] for r in rows} == set(CLASSES)  # every class in every split


def test_files_are_real_encoded_videos_matching_their_scene(sample):
    root, _ = sample
    for row in _rows(root):
        info = probe(root / row["path"])
        scene = row["scene"]
        assert (info.width, info.height) == (scene["width"], scene["height"])
        assert info.codec == "h264"
        assert info.fps == pytest.approx(scene["fps"], rel=0.01)
        assert info.duration_s == pytest.approx(scene["duration"], abs=1.5 / scene["fps"])
        assert info.has_audio == scene["audio"]


def test_scene_parameters_cover_the_variety_asked_for():
    scenes = [make_scene(label, i, seed=0) for label in CLASSES for i in range(12)]
    assert {s.fps for s in scenes} == {15, 24, 30, 60}
    assert any(s.width > s.height for s in scenes) and any(s.height > s.width for s in scenes)
    assert any(s.width % 16 or s.height % 16 for s in scenes)
    assert all(1.0 <= s.duration <= 8.0 for s in scenes)
    assert 0 < sum(s.audio for s in scenes) < len(scenes)
    assert {s.background for s in scenes} == {"textured", "noisy", "flicker"}
    assert {s.container for s in scenes} == {".mp4", ".mkv"}
    for label in CLASSES:  # every class at every frame rate
        assert {s.fps for s in scenes if s.label == label} == {15, 24, 30, 60}


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = generate(tmp_path / "a", seed=5, clips_per_class=3)
    b = generate(tmp_path / "b", seed=5, clips_per_class=3)
    generate(tmp_path / "c", seed=6, clips_per_class=3)
    assert a["splits"] == b["splits"]
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert _rows(tmp_path / "a") != _rows(tmp_path / "c")
    first = _rows(tmp_path / "a")[0]["path"]
    np.testing.assert_array_equal(decode(tmp_path / "a" / first).frames, decode(tmp_path / "b" / first).frames)


def test_object_box_finds_the_object_in_the_decoded_frames(sample):
    root, _ = sample
    scenes = load_scenes(root)
    checked = 0
    for path, scene in scenes.items():
        clip = decode(root / path, num_frames=4)
        for frame, t in zip(clip.frames, clip.timestamps):
            x0, y0, x1, y1 = object_box(scene, float(t))
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            if not (2 <= cx < scene.width - 2 and 2 <= cy < scene.height - 2):
                continue  # wrapped out of the frame at this instant
            patch = frame[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).astype(float).mean(0)
            assert np.abs(patch - np.array(scene.color)).max() < 40, (path, t)
            checked += 1
    assert checked > 50


def test_static_class_prunes_far_more_than_moving_classes(sample):
    root, _ = sample
    kept = {label: [] for label in CLASSES}
    for row in _rows(root):
        if row["scene"]["background"] == "flicker":
            continue  # flicker is change by design
        particles = tokenize(decode(root / row["path"]), prune_threshold=4)
        kept[row["label"]].append(len(particles) / particles.total)
    static = np.mean(kept["static"])
    assert static < 0.1
    for label in ("move_left", "move_right", "rotate", "grow"):
        assert np.mean(kept[label]) > static
