"""Restoration over particles: the pixel decoder with estimates, tiles, folding time, and trained tiny models that
interpolate a known translation of a real photograph and lower the error of a noisy clip (the runs: conftest.py)."""

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
pytest.importorskip("cv2")

from tubelet.data.sample_pan import photograph  # noqa: E402
from tubelet.data.transforms import Preprocessing  # noqa: E402
from tubelet.errors import ConfigError  # noqa: E402
from tubelet.models import DecoderConfig, MaskedDecoder, create_model  # noqa: E402
from tubelet.tasks.restoration import (  # noqa: E402
    Restorer,
    add_noise,
    clip_frames,
    compress,
    denoise_example,
    feather,
    fold_time,
    frame_particles,
    interpolation_example,
    patch_ssim,
    run_examples,
    tile_origins,
)
from tubelet.video2video.baselines import interpolate  # noqa: E402
from tubelet.video2video.metrics import psnr  # noqa: E402

PRE = Preprocessing(tubelet=(1, 8, 8), sample_fps=None, size=None, max_long_side=None, prune_threshold=0.0)


def shifted(dx: float, size=(48, 64)) -> np.ndarray:
    """(H, W, 3) uint8: a window of a real photograph moved right by `dx` pixels (sub-pixel, bilinear)."""
    import cv2

    photo = photograph("astronaut").astype(np.float32)
    matrix = np.float32([[1, 0, 40 + dx], [0, 1, 30]])
    view = cv2.warpAffine(photo, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(view + 0.5, 0, 255).astype(np.uint8)


def test_an_untrained_restorer_returns_its_estimate_exactly():
    encoder = create_model("test", tubelet=(1, 8, 8))
    decoder = MaskedDecoder(DecoderConfig(encoder_dim=32, patch_dim=192, dim=64, depth=1, heads=2, estimate=True))
    a, b = shifted(0), shifted(4)
    example = interpolation_example(a, b, 0.1, [0.5], PRE, estimate="blend", origin=(0, 0), tile=32)
    out = run_examples(encoder, decoder, [example], device=torch.device("cpu"))
    torch.testing.assert_close(out, example.queries.values)
    # The queries sit at the missing frame's time, between the two known frames' times.
    assert torch.allclose(example.queries.t, torch.tensor(0.05))
    assert sorted(set(example.context.t.tolist())) == pytest.approx([0.0, 0.1])


def test_tiles_cover_every_pixel_and_feather_never_reaches_zero():
    for size, tile in ((240, 64), (64, 64), (50, 64), (100, 32)):
        starts = tile_origins(size, tile)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
            assert s + min(tile, size) <= size
        assert covered.all()
    weights = feather(32, 32, 8)
    assert weights.min() > 0 and weights[16, 16] == 1.0 and weights[0, 0] < weights[4, 4]


def test_frames_come_back_from_particles_bit_for_bit():
    frames = np.stack([shifted(d) for d in (0, 1, 2)])
    times = np.array([0.0, 1 / 30, 2 / 30])
    back, when = clip_frames(frame_particles(frames, times, PRE), PRE)
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_allclose(when, times, atol=1e-6)


def test_fold_time_embeds_a_static_picture_as_before():
    encoder = create_model("test", tubelet=(2, 8, 8))
    frame = torch.rand(1, 8 * 8 * 3)
    before = encoder.patch_embed(frame.reshape(1, 1, -1).repeat(1, 2, 1).reshape(1, -1))  # the frame twice
    fold_time(encoder)
    assert encoder.config.tubelet == (1, 8, 8)
    torch.testing.assert_close(encoder.patch_embed(frame), before)


def test_patch_ssim_is_one_for_equal_patches_and_lower_for_noise():
    a = torch.rand(5, 64 * 3)
    assert torch.allclose(patch_ssim(a, a, 3), torch.ones(5, 3), atol=1e-6)
    assert (patch_ssim(a, (a + 0.2 * torch.randn_like(a)).clamp(0, 1), 3) < 0.9).all()


def test_a_restorer_needs_its_own_kind_of_checkpoint(interpolation_run):
    with pytest.raises(ConfigError, match="not a denoise model"):
        Restorer(interpolation_run, task="denoise")


def test_a_known_translation_is_interpolated_close_to_the_truth(interpolation_run):
    """A photograph moving 1.5 px per frame: the model's frame at t = 0.25 and 0.5 lies close to the truth (a broken
    model -- tiles misplaced, the wrong time, pixels scrambled -- falls far below the bound) and well above a blend."""
    model = Restorer(interpolation_run, task="interpolation")
    a, b = shifted(0.0), shifted(6.0)
    made = model.interpolate(a, b, 4 / 24, [0.25, 0.5])
    for frame, truth_dx, t in zip(made, (1.5, 3.0), (0.25, 0.5)):
        truth = shifted(truth_dx)
        inner = np.s_[4:-4, 8:-8]  # the borders reveal picture that neither known frame shows
        assert psnr(frame[inner], truth[inner]) > 30.0
        assert psnr(frame[inner], truth[inner]) > psnr(interpolate(a, b, t, "blend")[inner], truth[inner]) + 5.0


def test_denoise_lowers_the_error_of_a_noisy_clip(denoise_run):
    model = Restorer(denoise_run, task="denoise")
    clean = np.stack([shifted(0.7 * i) for i in range(3)])
    noisy = add_noise(clean, 25.0, np.random.default_rng(0))
    restored = model.denoise(noisy, np.arange(3) / 24)
    assert psnr(restored, clean) > psnr(noisy, clean) + 1.0


def test_denoising_a_sequence_blends_runs_into_every_frame(denoise_run):
    model = Restorer(denoise_run, task="denoise")
    clean = np.stack([shifted(0.7 * i) for i in range(7)])
    noisy = add_noise(clean, 25.0, np.random.default_rng(1))
    restored = model.denoise_sequence(noisy, np.arange(7) / 24)
    assert restored.shape == clean.shape
    for i in range(7):  # every frame, including those two runs share, is cleaner than its noisy input
        assert psnr(restored[i], clean[i]) > psnr(noisy[i], clean[i])


def test_denoise_examples_hide_nothing_and_target_the_clean_frames():
    clean = np.stack([shifted(i) for i in range(3)])
    noisy = add_noise(clean, 30.0, np.random.default_rng(2))
    example = denoise_example(noisy, np.arange(3) / 24, PRE, origin=(8, 16), tile=32, clean=clean)
    assert len(example.context) == len(example.queries) == len(example.target) == 3 * 4 * 4
    assert not torch.equal(example.queries.values, example.target.values)


def test_compression_adds_blocking_that_lowers_quality_with_the_quality_setting():
    clean = np.stack([shifted(0)])
    low, high = compress(clean, 20), compress(clean, 60)
    assert low.shape == clean.shape and low.dtype == np.uint8
    assert psnr(low, clean) < psnr(high, clean) < 60
