"""The motion crop (``Preprocessing.crop = "motion"``): the square around what moves, the same in every path a
window takes to the model, and saved with the checkpoint."""

import numpy as np
import pytest
import torch

from tubelet.data.crop import frame_differences, motion_box, motion_crop
from tubelet.data.pipeline import clip_particles
from tubelet.data.transforms import Preprocessing


def scene(moves: bool = True, *, height: int = 96, width: int = 128, frames: int = 8) -> torch.Tensor:
    """(T, H, W, 3) uint8: a static noisy texture, and a 12x8 bright block moving right by 3 px a frame from
    (60, 20) when `moves` (else standing still there)."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    out = np.repeat(background[None], frames, axis=0)
    for i in range(frames):
        x = 20 + (3 * i if moves else 0)
        out[i, 60:72, x : x + 8] = 230
    return torch.from_numpy(out)


def test_the_box_is_a_square_around_the_moving_block_and_the_crop_is_that_square_resized():
    top, left, side = motion_box(scene())
    # The block covers rows 60-71 and columns 20-48 over the window: 29 px wide, 1.25 times is 36 px; the floor is
    # 0.3 of the short side (29 px). Centred on (65.5, 34): inside the frame.
    assert side == pytest.approx(36, abs=2)
    assert top <= 60 and top + side >= 72 and left <= 20 and left + side >= 48
    cropped = motion_crop(scene(), 24)
    assert cropped.shape == (8, 24, 24, 3) and cropped.dtype == torch.uint8
    # The same as cutting the square by hand and resizing it.
    by_hand = scene()[:, top : top + side, left : left + side].permute(0, 3, 1, 2).float()
    by_hand = torch.nn.functional.interpolate(by_hand, size=(24, 24), mode="bilinear", antialias=True)
    assert (cropped.int() - by_hand.round().permute(0, 2, 3, 1).int()).abs().max() <= 1


def test_a_window_where_nothing_moves_keeps_the_whole_frame():
    still = scene(moves=False)
    assert motion_box(still) is None and motion_box(still[:1]) is None
    whole = torch.nn.functional.interpolate(still.permute(0, 3, 1, 2).float(), size=(24, 24), mode="bilinear",
                                            antialias=True)  # fmt: skip
    assert torch.equal(motion_crop(still, 24), whole.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))


def test_sensor_noise_alone_is_not_motion():
    rng = np.random.default_rng(1)
    still = scene(moves=False).numpy().astype(int) + rng.integers(-4, 5, (8, 96, 128, 3))
    assert motion_box(torch.from_numpy(still.clip(0, 255).astype(np.uint8))) is None


def test_the_crop_is_saved_with_the_preprocessing_and_old_checkpoints_load_without_one():
    pre = Preprocessing(size=64, crop="motion", crop_size=32)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    old = pre.to_dict()
    del old["crop"], old["crop_size"]
    assert Preprocessing.from_dict(old).crop is None
    assert Preprocessing(size=48, crop="motion").crop_side == 48
    with pytest.raises(ValueError, match="crop"):
        Preprocessing(crop="person")


def test_particles_of_a_cropped_window_lie_on_the_crops_grid():
    pre = Preprocessing(tubelet=(2, 8, 8), size=None, crop="motion", crop_size=32, prune_threshold=0.0)
    frames = scene()
    particles = clip_particles((0.0, 1.0), pre=pre, frames=frames, timestamps=np.arange(8) / 8)
    assert len(particles.t) == 4 * 4 * 4 == pre.estimate_particles(96, 128, 8.0, 1.0)
    assert int(particles.y.max()) == 3 and int(particles.x.max()) == 3
    plain = clip_particles((0.0, 1.0), pre=Preprocessing(tubelet=(2, 8, 8), size=None, prune_threshold=0.0),
                           frames=frames, timestamps=np.arange(8) / 8)  # fmt: skip
    assert len(plain.t) == 4 * 12 * 16


def test_frame_differences_show_what_moved_and_nothing_of_what_stood_still():
    moving = scene()
    diff = frame_differences(moving)
    assert diff.shape == moving.shape and diff.dtype == torch.uint8
    grey = moving.float().mean(-1)
    assert torch.equal(diff[3, :, :, 0], (grey[3] - grey[2]).abs().round().to(torch.uint8))
    assert torch.equal(diff[0], diff[1]) and torch.equal(diff[..., 0], diff[..., 2])
    assert diff[:, :60].max() == 0 and diff[:, 60:72].max() > 100  # only the block's rows change
    assert frame_differences(scene(moves=False)).max() == 0


def test_a_difference_window_keeps_only_the_moving_particles():
    """Static pruning after differencing: a still background is zero in every frame, so only the moving block's
    particles (and the first tubelet's grid) are kept."""
    pre = Preprocessing(tubelet=(2, 8, 8), size=None, pixels="difference", prune_threshold=1.0)
    particles = clip_particles((0.0, 1.0), pre=pre, frames=scene(), timestamps=np.arange(8) / 8)
    later = particles.t > particles.t.min()
    assert int(later.sum()) > 0 and set(particles.y[later].tolist()) <= {7, 8}  # rows 56-71 hold the block
    with pytest.raises(ValueError, match="pixels"):
        Preprocessing(pixels="flow")
