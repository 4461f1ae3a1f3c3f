"""Video-to-video sample data: real photographs, clean frames on a time axis in seconds, a hard cut where stated."""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("skimage")

from tubelet.data.sample_v2v import TEST_PHOTOS, TRAIN_PHOTOS, generate_v2v, make_scene, render  # noqa: E402
from tubelet.io import decode  # noqa: E402
from tubelet.video2video.baselines import cuts  # noqa: E402
from tubelet.video2video.metrics import psnr  # noqa: E402


def test_the_same_second_shows_the_same_view_at_any_frame_rate():
    a = make_scene(0, photos=TRAIN_PHOTOS, fps=24.0, size=(64, 48), duration=0.5, seed=0)
    b = make_scene(0, photos=TRAIN_PHOTOS, fps=24.0, size=(64, 48), duration=0.5, seed=0)
    b.fps = 48.0
    at24, at48 = render(a), render(b)
    assert len(at24) == 12 and len(at48) == 24
    assert np.array_equal(at24[6], at48[12])  # both at 0.25 s
    assert psnr(at24[1], at24[0]) < 40  # the camera moves


def test_files_manifests_and_the_cut(tmp_path):
    summary = generate_v2v(tmp_path, duration=0.5, per_setting={"train": 1, "test": 1}, rates=(24.0,),
                           sizes=((96, 64),), workers=1)  # fmt: skip
    assert summary == {"train": 2, "test": 2, "cuts": 2}
    rows = list(csv.DictReader(open(tmp_path / "test.csv")))
    scenes = [json.loads(line) for line in open(tmp_path / "scenes.jsonl")]
    assert not {s["photo"] for s in scenes if s["split"] == "test"} & set(TRAIN_PHOTOS)
    assert {s["photo"] for s in scenes if s["split"] == "test"} <= set(TEST_PHOTOS)
    cut_row = next(r for r in rows if r["cut_seconds"])
    clip = decode(tmp_path / cut_row["path"])
    assert len(clip) == 12 and np.allclose(clip.timestamps, np.arange(12) / 24.0, atol=1e-4)
    assert cuts(clip.frames).tolist() == [6]  # 0.25 s at 24 fps
    plain = decode(tmp_path / next(r for r in rows if not r["cut_seconds"])["path"])
    assert len(cuts(plain.frames)) == 0
