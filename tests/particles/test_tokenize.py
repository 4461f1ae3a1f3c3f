"""tokenize: frames to particles whose time is seconds from the decoder's timestamps, not frame indices."""

import numpy as np
import pytest
import torch

from tubelet.errors import ConfigError
from tubelet.io import decode, write_video
from tubelet.particles import patchify, tokenize, tubelet_times


def random_frames(count, height=32, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_particles_cover_the_grid_in_time_row_column_order():
    frames = random_frames(4)  # grid (2, 2, 3) with 2x16x16 tubelets

    particles = tokenize(frames, timestamps=np.arange(4) / 10, tubelet=(2, 16, 16))

    assert len(particles) == particles.total == 12
    assert particles.grid == (2, 2, 3)
    assert particles.frame_shape == (4, 32, 48)
    assert particles.tubelet == (2, 16, 16)
    assert particles.channels == 3
    ti, y, x = torch.meshgrid(torch.arange(2), torch.arange(2), torch.arange(3), indexing="ij")
    assert torch.equal(particles.ti, ti.reshape(-1))
    assert torch.equal(particles.y, y.reshape(-1))
    assert torch.equal(particles.x, x.reshape(-1))
    assert torch.equal(particles.span, torch.ones(12, dtype=torch.long))
    assert torch.equal(particles.seq, torch.zeros(12, dtype=torch.long))
    # Without mean/std the values are the tubelet's pixels in 0-255 levels.
    assert particles.values.dtype == torch.float32
    assert torch.equal(particles.values, patchify(torch.from_numpy(frames), (2, 16, 16)).reshape(12, -1).float())


def test_time_is_the_mean_of_the_tubelet_frames_timestamps():
    times = np.array([0.0, 0.1, 0.15, 0.45, 0.5, 1.2, 1.25])  # irregular, and 7 frames: the last tubelet is padded

    particles = tokenize(random_frames(7), timestamps=times, tubelet=(2, 16, 16))

    expected = np.array([0.05, 0.3, 0.85, 1.25])  # the padded tail keeps its one real frame's time
    assert particles.t.dtype == torch.float32
    np.testing.assert_allclose(particles.t.numpy(), expected[particles.ti.numpy()], atol=1e-6)
    np.testing.assert_allclose(tubelet_times(torch.tensor(times), 2).numpy(), expected, atol=1e-6)


def test_clip_times_come_from_the_decoded_pts(vfr_mp4):
    path, written = vfr_mp4  # 10 frames of 64x48 at irregular times

    particles = tokenize(decode(path), tubelet=(2, 16, 16))

    assert particles.grid == (5, 3, 4)
    centres = written.reshape(5, 2).mean(axis=1)
    np.testing.assert_allclose(particles.t.numpy(), centres[particles.ti.numpy()], atol=1e-4)


# The same motion filmed at three frame rates -------------------------------------------------------------------

SPEED = 40  # px/s: a 16x16 white square starts just off the left edge and slides right


def render_by_time(fps, seconds=2.0, height=48, width=64):
    """(T, H, W, 3) uint8 frames of the square at each frame's own time i / fps."""
    times = np.arange(round(seconds * fps)) / fps
    frames = np.zeros((len(times), height, width, 3), dtype=np.uint8)
    for i, t in enumerate(times):
        left = round(-16 + SPEED * t)
        frames[i, 16:32, max(left, 0) : max(left + 16, 0)] = 255
    return frames


@pytest.fixture(scope="module")
def same_motion(tmp_path_factory):
    """{fps: Particles} of the motion written to mp4 at 15, 30 and 60 fps, decoded and cut into 2x16x16."""
    folder = tmp_path_factory.mktemp("motion")
    out = {}
    for fps in (15, 30, 60):
        path = write_video(folder / f"square{fps}.mp4", render_by_time(fps), fps=fps, crf=10)
        out[fps] = tokenize(decode(path), tubelet=(2, 16, 16))
    return out


def arrival(particles, y=1, x=3, level=64):
    """(seconds, tubelet index) of the first particle at (y, x) whose mean brightness passes `level`."""
    here = (particles.y == y) & (particles.x == x)
    bright = particles.values[here].mean(dim=1) > level
    first = int(bright.nonzero()[0])
    return float(particles.t[here][first]), int(particles.ti[here][first])


def test_same_motion_at_15_30_60_fps_reaches_a_cell_at_the_same_seconds(same_motion):
    arrivals = {fps: arrival(particles) for fps, particles in same_motion.items()}
    seconds = np.array([t for t, _ in arrivals.values()])

    # A quarter of the cell of columns 48..63 is covered when the square's right edge reaches 52: t = 1.3 s.
    assert seconds.max() - seconds.min() <= 2 / 15  # within one tubelet at the slowest rate
    np.testing.assert_allclose(seconds, 1.3, atol=2 / 15)
    # ...while the tubelet indices differ about fourfold, so an index-based position would not agree.
    assert arrivals[60][1] > 3 * arrivals[15][1]


def test_particle_times_span_the_clip_in_seconds_at_any_fps(same_motion):
    for fps, particles in same_motion.items():
        assert particles.grid[0] == fps  # 2 s at `fps` in 2-frame tubelets
        assert float(particles.t.min()) == pytest.approx(0.5 / fps, abs=1e-4)  # centre of frames 0 and 1
        assert float(particles.t.max()) == pytest.approx(2.0 - 1.5 / fps, abs=1e-4)


# Errors and normalization -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 32, 32), (4, 8, 32), (4, 32, 15)], ids=["frames", "height", "width"])
def test_tubelet_larger_than_the_clip_raises_config_error(shape):
    frames = random_frames(shape[0], shape[1], shape[2])

    with pytest.raises(ConfigError, match="larger than the clip"):
        tokenize(frames, timestamps=np.arange(shape[0]) / 30, tubelet=(2, 16, 16))


def test_config_error_names_the_clip_file(cfr_mp4):
    clip = decode(cfr_mp4, num_frames=4)

    with pytest.raises(ConfigError) as caught:
        tokenize(clip, tubelet=(8, 16, 16))

    assert str(cfr_mp4) in str(caught.value)


def test_bare_frames_need_one_timestamp_each():
    with pytest.raises(ValueError, match="timestamps"):
        tokenize(random_frames(4))
    with pytest.raises(ValueError, match="3 timestamps for 4 frames"):
        tokenize(random_frames(4), timestamps=[0.0, 0.1, 0.2])


def test_mean_std_normalize_each_channel_in_0_1_units():
    frames = np.empty((2, 16, 16, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 0, 51
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.25, 0.2)

    particles = tokenize(frames, timestamps=[0.0, 0.04], tubelet=(2, 16, 16), mean=mean, std=std)

    pixels = particles.values.reshape(len(particles), -1, 3)  # (N, t*p*q, C)
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, (0.2 - 0.1) / 0.2])
    torch.testing.assert_close(pixels, expected.expand_as(pixels))


def test_mean_alone_keeps_unit_std():
    frames = np.full((2, 16, 16, 3), 102, dtype=np.uint8)  # 0.4 in 0-1 units

    particles = tokenize(frames, timestamps=[0.0, 0.04], tubelet=(2, 16, 16), mean=(0.4, 0.0, 0.4))

    pixels = particles.values.reshape(-1, 3)
    torch.testing.assert_close(pixels, torch.tensor([0.0, 0.4, 0.0]).expand_as(pixels))
