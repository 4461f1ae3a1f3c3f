import numpy as np
import pytest
from skimage import data

from tubelet.video2video.baselines import cuts, denoise, interpolate, same_shot
from tubelet.video2video.metrics import flicker, psnr, ssim


def constant(value: int, size=(8, 10)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def test_blend_of_constant_frames_is_the_weighted_mean():
    a, b = constant(10), constant(110)
    assert np.all(interpolate(a, b, 0.25, "blend") == 35)  # 0.75 * 10 + 0.25 * 110
    assert np.all(interpolate(a, b, 0.5, "blend") == 60)


def test_repeat_takes_the_nearer_frame():
    a, b = constant(1), constant(2)
    assert np.all(interpolate(a, b, 0.49, "repeat") == 1)
    assert np.all(interpolate(a, b, 0.5, "repeat") == 2)
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(a, b, 0.5, "magic")


def test_median_of_three_frames():
    frames = np.stack([constant(5), constant(200), constant(7)])
    frames[1, 0, 0] = 6
    out = denoise(frames, 1, "median", window=3)
    assert out[0, 0, 0] == 6 and out[1, 1, 1] == 7  # median(5, 6, 7), median(5, 200, 7)
    assert np.all(denoise(frames, 0, "median", window=3) == out)  # shifted inside at the edge


def test_cut_is_found_and_pan_is_not():
    photo = data.astronaut()[100:260, 100:260]
    other = data.coffee()[100:260, 100:260]
    pan = np.stack([photo[:, i : i + 120] for i in range(0, 20, 2)])  # (10, 160, 120, 3) a slow pan
    assert len(cuts(pan)) == 0
    video = np.concatenate([pan[:6], np.stack([other[:, i : i + 120] for i in range(0, 8, 2)])])
    found = cuts(video)
    assert found.tolist() == [6]
    assert same_shot(found, 4, 5) and not same_shot(found, 5, 6)


def test_flow_warps_a_known_translation_close_to_the_truth():
    photo = data.astronaut()[120:312, 120:376]  # (192, 256, 3) real texture
    shift = 6  # pixels the content moves right between a and b
    a = photo[:, 20 : 20 + 200]
    b = photo[:, 20 - shift : 20 - shift + 200]
    truth = photo[:, 20 - shift // 2 : 20 - shift // 2 + 200]  # half way
    inner = np.s_[8:-8, 8:-8]  # the border has content that neither frame shows
    flow = psnr(interpolate(a, b, 0.5, "flow")[inner], truth[inner])
    blend = psnr(interpolate(a, b, 0.5, "blend")[inner], truth[inner])
    assert flow > blend + 5, (flow, blend)
    assert flow > 30, flow


def test_metrics_against_hand_values():
    clean = constant(100)
    assert psnr(constant(110), clean) == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(clean, clean) == float("inf")
    assert ssim(clean, clean) == pytest.approx(1.0)
    video = np.stack([constant(100), constant(120)])
    assert flicker(video + 5, video) == 0.0  # a constant error does not flicker
    assert flicker(np.stack([constant(100), constant(125)]), video) == pytest.approx(5.0)


def test_nlm_lowers_noise_on_a_photo():
    rng = np.random.default_rng(0)
    clean = np.stack([data.astronaut()[100:164, 100:164]] * 3)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    assert psnr(denoise(noisy, 1, "nlm", window=3, sigma=25), clean[1]) > psnr(noisy[1], clean[1]) + 3
