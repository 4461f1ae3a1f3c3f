"""Camera pans over real photographs: motion in pixels per second, the same at every frame rate."""

import csv

import numpy as np
import pytest

pytest.importorskip("skimage")

from tubelet.data.sample_pan import CLASSES, TEST_PHOTOS, TRAIN_PHOTOS, generate_pans, make_pan, render_pan  # noqa: E402
from tubelet.io import probe  # noqa: E402


def test_test_photographs_are_never_trained_on():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)


@pytest.mark.parametrize("label, index", [("slow_right", 4), ("fast_left", 3)])  # both over `grass`
def test_the_same_second_shows_the_same_view_at_any_frame_rate(label, index):
    pan = make_pan(label, index, 0, TRAIN_PHOTOS)
    assert pan.photo == "grass"
    at15, at60 = render_pan(pan, 15.0), render_pan(pan, 60.0)
    assert len(at15) == 30 and len(at60) == 120  # 2 s
    same = np.abs(at15[15].astype(int) - at60[60]).mean()  # both at t = 1 s: noise apart, the same pixels
    later = np.abs(at15[15].astype(int) - at60[110]).mean()  # t = 1 s against t = 1.83 s: the view has moved
    assert same < 4 and later > 2 * same


def test_speeds_are_in_pixels_per_second_and_static_does_not_move():
    from skimage.registration import phase_cross_correlation

    for label, (low, high) in (("static", (0, 0.5)), ("slow_left", (12, 24)), ("fast_right", (48, 96))):
        pan = make_pan(label, 1, 0, TRAIN_PHOTOS)
        frames = render_pan(pan, 30.0).astype(np.float32).mean(-1)
        shift = phase_cross_correlation(frames[0], frames[15], upsample_factor=10)[0][1] * 2  # over 0.5 s
        assert low - 1 <= abs(shift) <= high + 1, (label, shift)
        assert label == "static" or np.sign(shift) == (-1 if label.endswith("left") else 1)  # the window's way


def test_a_pan_longer_than_its_photograph_continues_mirrored():
    pan = make_pan("fast_left", 2, 0, TEST_PHOTOS, duration=30.0)
    assert abs(pan.speed) * 30 > 1000  # far more than any photograph is wide at this scale
    frames = render_pan(pan, 4.0)
    assert len(frames) == 120 and min(f.std() for f in frames) > 5  # texture all the way


def test_generate_writes_split_manifests_at_each_rate(tmp_path):
    sizes = generate_pans(tmp_path, counts={"train": 1, "test": 1}, fps={"test": (15.0, 60.0)}, workers=1)
    assert sizes == {"train": 5, "test_15": 5, "test_60": 5}
    with open(tmp_path / "test_60.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["label"] for r in rows) == sorted(CLASSES)
    info = probe(tmp_path / rows[0]["path"])
    assert round(info.fps) == 60 and abs(info.duration_s - 2.0) < 0.1
