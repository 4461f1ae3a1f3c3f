"""Reconstruction targets and the norm-pix loss: hand-computed examples, hidden particles only, pixels back."""

import math

import numpy as np
import pytest
import torch

from tubelet.particles import mask_particles, normalize, tokenize
from tubelet.tasks.reconstruction import (
    predicted_pixels,
    reconstruction_frames,
    reconstruction_loss,
    reconstruction_targets,
    unnormalize,
)

MEAN, STD = (0.45, 0.40, 0.35), (0.225, 0.25, 0.20)


def test_unnormalize_inverts_the_tokenizer_normalization():
    levels = torch.rand(5, 2 * 4 * 4 * 3) * 255
    pixels = unnormalize(normalize(levels, 3, mean=MEAN, std=STD), 3, mean=MEAN, std=STD)
    torch.testing.assert_close(pixels, levels / 255)
    torch.testing.assert_close(unnormalize(levels, 3), levels / 255)  # no mean/std: 0-255 levels


def test_norm_pix_by_hand_is_per_patch_and_per_channel():
    # One patch of two pixels and two channels (channels last): channel 0 is (0.0, 0.4), channel 1 is (0.2, 0.6).
    values = torch.tensor([[0.0, 0.2, 0.4, 0.6]])
    target = reconstruction_targets(values, 2, mean=(0.0, 0.0), std=(1.0, 1.0))

    # Each channel: mean 0.2 (0.4), unbiased variance 0.08, so (v - mean) / sqrt(0.08 + 1e-6) = -/+ 0.7071.
    z = 0.2 / math.sqrt(0.08 + 1e-6)
    torch.testing.assert_close(target, torch.tensor([[-z, -z, z, z]]))
    # Over the whole patch it would be (0 - 0.3) / sqrt(0.0667) = -1.16 for the first value: not what we do.
    assert not math.isclose(target[0, 0].item(), -0.3 / math.sqrt(0.2 / 3), rel_tol=0.05)


def test_flat_patches_give_zero_targets_not_nan():
    values = torch.full((3, 2 * 2 * 2 * 3), 0.7)
    target = reconstruction_targets(values, 3, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert torch.equal(target, torch.zeros_like(target))


def test_targets_do_not_depend_on_the_preprocessing_normalization():
    # Nearly flat patches (variance near eps in 0-1 units): targets from values normalized with two different
    # mean/std agree only because they are un-normalized to 0-1 pixels first.
    levels = 100.0 + 0.3 * torch.randn(4, 2 * 4 * 4 * 3, generator=torch.Generator().manual_seed(0))
    a = reconstruction_targets(normalize(levels, 3, mean=MEAN, std=STD), 3, mean=MEAN, std=STD)
    b = reconstruction_targets(
        normalize(levels, 3, mean=(0.5,) * 3, std=(1.0,) * 3), 3, mean=(0.5,) * 3, std=(1.0,) * 3
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert a.std() < 0.9  # eps tempers near-flat patches (a unit spread otherwise) instead of blowing noise up


def test_norm_pix_false_predicts_the_values_as_given():
    values = torch.randn(3, 12)
    assert torch.equal(reconstruction_targets(values, 3, mean=MEAN, std=STD, norm_pix=False), values)


def test_loss_is_taken_over_the_hidden_particles_only():
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(10, 2 * 2 * 2 * 3, generator=generator)
    hidden = torch.tensor([1, 4, 7])
    pred = torch.randn(3, values.shape[1], generator=generator)
    kwargs = dict(channels=3, mean=MEAN, std=STD)
    loss = reconstruction_loss(pred, values, hidden, **kwargs)

    expected = (pred - reconstruction_targets(values[hidden], 3, mean=MEAN, std=STD)).pow(2).mean()
    torch.testing.assert_close(loss, expected)
    # A zero prediction costs (n - 1) / n per channel of n pixels: the mean square of unbiased-normalized values.
    zero = reconstruction_loss(torch.zeros_like(pred), values, hidden, **kwargs)
    torch.testing.assert_close(zero, torch.tensor(7 / 8), rtol=1e-4, atol=0)
    changed = values.clone()
    changed[[0, 2, 3, 5, 6, 8, 9]] = torch.randn(7, values.shape[1], generator=generator)  # every visible one
    torch.testing.assert_close(reconstruction_loss(pred, changed, hidden, **kwargs), loss)
    changed[4] = torch.randn(values.shape[1], generator=generator)  # one hidden one
    assert not torch.isclose(reconstruction_loss(pred, changed, hidden, **kwargs), loss)
    perfect = reconstruction_targets(values[hidden], 3, mean=MEAN, std=STD)
    assert reconstruction_loss(perfect, values, hidden, **kwargs).item() < 1e-10
    with pytest.raises(ValueError, match="2 predictions for 3 hidden particles"):
        reconstruction_loss(pred[:2], values, hidden, **kwargs)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_a_perfect_prediction_comes_back_as_the_true_pixels(norm_pix):
    levels = torch.randint(0, 256, (6, 2 * 4 * 4 * 3)).float()
    values = normalize(levels, 3, mean=MEAN, std=STD)
    perfect = reconstruction_targets(values, 3, mean=MEAN, std=STD, norm_pix=norm_pix)
    pixels = predicted_pixels(perfect, values, 3, mean=MEAN, std=STD, norm_pix=norm_pix)
    torch.testing.assert_close(pixels, levels / 255, rtol=0, atol=1e-5)


def test_reconstruction_frames_grey_out_hidden_places_and_paste_predictions():
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    particles = tokenize(frames, timestamps=np.arange(4) / 8, tubelet=(2, 16, 16), mean=MEAN, std=STD)
    _, _, hidden = mask_particles(particles, 0.5, mode="tube", generator=torch.Generator().manual_seed(0))
    perfect = reconstruction_targets(particles.values[hidden], 3, mean=MEAN, std=STD)

    masked, filled = reconstruction_frames(particles, hidden, perfect, mean=MEAN, std=STD)

    assert masked.shape == filled.shape == (4, 32, 48, 3) and filled.dtype == torch.uint8
    assert (filled.int() - torch.from_numpy(frames).int()).abs().max() <= 1  # rounding only
    y, x = particles.y[hidden[0]].item(), particles.x[hidden[0]].item()
    assert (masked[:, y * 16 : (y + 1) * 16, x * 16 : (x + 1) * 16] == 128).all()  # a hidden place is grey
    shown = [i for i in range(len(particles)) if i not in set(hidden.tolist())][0]
    y, x = particles.y[shown].item(), particles.x[shown].item()
    place = (slice(None), slice(y * 16, (y + 1) * 16), slice(x * 16, (x + 1) * 16))
    assert (masked[place].int() - torch.from_numpy(frames[place]).int()).abs().max() <= 1
