"""patchify / unpatchify: the one place video is cut into tubelets; the round trip is exact at any size."""

import pytest
import torch

from tubelet.particles import grid_shape, patchify, unpatchify

SHAPES = [(4, 32, 32, 3), (5, 17, 23, 3), (3, 16, 33, 3), (1, 7, 9, 1), (7, 40, 24, 2)]  # (T, H, W, C)
TUBELETS = [(2, 16, 16), (2, 8, 8), (3, 5, 7), (1, 1, 1)]


def random_video(shape, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return torch.randn(shape, dtype=dtype, generator=generator) * 100  # fractional values, any sign


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("tubelet", TUBELETS, ids=lambda t: "x".join(map(str, t)))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_round_trip_is_exact(shape, tubelet, dtype):
    video = random_video(shape, dtype)

    patches = patchify(video, tubelet)
    back = unpatchify(patches, tubelet, frame_shape=shape[:3])

    assert back.dtype == dtype
    assert back.shape == video.shape
    assert torch.equal(back, video)


@pytest.mark.parametrize(
    ("frame_shape", "tubelet", "expected"),
    [
        ((4, 32, 32), (2, 16, 16), (2, 2, 2)),
        ((5, 17, 23), (2, 16, 16), (3, 2, 2)),
        ((1, 7, 9), (2, 16, 16), (1, 1, 1)),
        ((16, 224, 224), (2, 16, 16), (8, 14, 14)),
        ((9, 10, 11), (3, 5, 7), (3, 2, 2)),
    ],
)
def test_grid_shape_rounds_up(frame_shape, tubelet, expected):
    assert grid_shape(frame_shape, tubelet) == expected


def test_patch_shape_is_grid_by_tubelet_pixels():
    patches = patchify(random_video((5, 17, 23, 3), torch.uint8), (2, 16, 16))

    assert patches.shape == (3, 2, 2, 2 * 16 * 16 * 3)  # (T', H', W', t*p*q*C)
    assert patches.dtype == torch.uint8


def test_tubelet_pixels_are_flattened_frames_then_rows_then_columns_then_channels():
    video = random_video((4, 8, 12, 3), torch.uint8)

    patches = patchify(video, (2, 4, 6))  # (2, 2, 2, 144)

    # The tubelet at grid (1, 0, 1): frames 2-3, rows 0-3, columns 6-11, in (t p q c) order.
    torch.testing.assert_close(patches[1, 0, 1], video[2:4, 0:4, 6:12].reshape(-1), rtol=0, atol=0)


def test_padding_replicates_the_last_frame_row_and_column():
    video = random_video((3, 10, 13, 3), torch.uint8)

    padded = unpatchify(patchify(video, (2, 8, 8)), (2, 8, 8))  # no frame_shape: keep whole tubelets

    assert padded.shape == (4, 16, 16, 3)
    assert torch.equal(padded[:3, :10, :13], video)  # the original sits top-left, untouched
    assert torch.equal(padded[3, :10, :13], video[2])  # extra frame = last frame
    assert torch.equal(padded[:, 10:], padded[:, 9:10].expand(-1, 6, -1, -1))  # extra rows = last row
    assert torch.equal(padded[:, :, 13:], padded[:, :, 12:13].expand(-1, -1, 3, -1))  # extra columns = last column


def test_whole_tubelets_need_no_padding():
    video = random_video((4, 32, 32, 3), torch.float32)

    assert torch.equal(unpatchify(patchify(video, (2, 16, 16)), (2, 16, 16)), video)
