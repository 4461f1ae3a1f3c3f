"""Writers: encoded video (round trip through probe and decode), GIF, PNG contact sheet."""

import numpy as np
import pytest
from PIL import Image

from tubelet.io import decode, probe, write_contact_sheet, write_gif, write_video


def moving_scene(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8: colour ramps, a blue level that rises 8 per frame, and a white square moving right."""
    yy, xx = np.mgrid[:height, :width]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (xx * 255 // max(width - 1, 1))[None]
    frames[..., 1] = (yy * 255 // max(height - 1, 1))[None]
    frames[..., 2] = (12 * np.arange(count) % 256)[:, None, None]
    for i in range(count):
        frames[i, 10:20, 3 * i : 3 * i + 10] = 255
    return frames


def nearest_source(decoded: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(T,) index of the source frame each decoded frame is closest to (mean absolute difference)."""
    distance = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    return distance.argmin(axis=1)


# MPEG-4 part 2 gets FFmpeg's default rate control (write_video's crf is for libx264/VP9): tens of bytes a frame.
@pytest.mark.parametrize(
    ("ext", "codec", "max_error"), [("mp4", "h264", 4), ("mkv", "h264", 4), ("webm", "vp9", 4), ("avi", "mpeg4", 12)]
)
def test_round_trip_through_probe_and_decode(tmp_path, ext, codec, max_error):
    frames = moving_scene(20)

    path = write_video(tmp_path / f"scene.{ext}", frames, fps=10)
    info = probe(path)
    clip = decode(path)

    assert path.is_file()
    assert (info.frames, info.width, info.height, info.codec) == (20, 64, 48, codec)
    assert info.fps == pytest.approx(10, abs=0.05)
    assert clip.frames.shape == frames.shape
    assert np.abs(clip.frames.astype(np.int16) - frames).mean() < max_error  # mean error in 0-255 levels


def test_h264_frames_come_back_in_order(tmp_path):
    frames = moving_scene(20)

    clip = decode(write_video(tmp_path / "scene.mp4", frames, fps=10))

    np.testing.assert_array_equal(nearest_source(clip.frames, frames), np.arange(20))


@pytest.mark.parametrize(
    "ext",
    [
        "mp4",
        "mkv",
        "webm",
    ],
)
def test_odd_frame_size_is_preserved(tmp_path, ext):
    frames = moving_scene(6, height=47, width=63)

    path = write_video(tmp_path / f"odd.{ext}", frames, fps=10)
    clip = decode(path)

    assert (probe(path).width, probe(path).height) == (63, 47)
    assert clip.frames.shape == (6, 47, 63, 3)
    # The last row and column are real pixels, not cropped or padded: the red ramp reaches 255 at the right edge.
    assert clip.frames[:, :, -1, 0].mean() > 240
    np.testing.assert_array_equal(nearest_source(clip.frames, frames), np.arange(6))


def test_timestamps_are_written_as_given(tmp_path):
    times = np.array([0.0, 0.04, 0.5, 0.52, 1.25])

    clip = decode(write_video(tmp_path / "irregular.mkv", moving_scene(5), timestamps=times))

    np.testing.assert_allclose(clip.timestamps, times, atol=1e-3)  # Matroska keeps milliseconds


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(frames=np.zeros((4, 16, 16, 3), dtype=np.float32)), "uint8"),
        (dict(frames=np.zeros((4, 16, 16), dtype=np.uint8)), r"\(T, H, W, 3\)"),
        (dict(timestamps=np.arange(4) / 10), "exactly one of fps or timestamps"),
        (dict(fps=None), "exactly one of fps or timestamps"),
        (dict(fps=None, timestamps=np.array([0.0, 0.2, 0.1, 0.3])), "strictly increasing"),
        (dict(fps=None, timestamps=np.array([0.0, 0.1])), "one per frame"),
        (dict(path="clip.flv"), "unknown video container extension"),
    ],
    ids=["float-frames", "no-channels", "fps-and-timestamps", "neither", "unsorted", "count", "extension"],
)
def test_bad_arguments_raise_value_error(tmp_path, change, match):
    args = dict(path="clip.mp4", frames=np.zeros((4, 16, 16, 3), dtype=np.uint8), fps=10.0, timestamps=None)
    args.update(change)

    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / args.pop("path"), args.pop("frames"), **args)


# AVI (MPEG-4 part 2) counts frames instead of storing times -------------------------------------------------


def test_avi_with_odd_size_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="even frame sizes"):
        write_video(tmp_path / "odd.avi", moving_scene(6, height=47, width=63), fps=10)


def test_avi_with_audio_is_refused_instead_of_shifting_frames(tmp_path, sine):
    # mp3's encoder delay makes the AVI muxer shift the video (frames read back at 0, 0.2, 0.267, ... s).
    with pytest.raises(ValueError, match="audio into AVI"):
        write_video(tmp_path / "talk.avi", moving_scene(30), fps=15, audio=sine(440, 2.0, 16000))


@pytest.mark.parametrize("timestamps", [1.0 + np.arange(30) / 15, np.cumsum(np.r_[0, [1 / 15, 1 / 30] * 14, 1 / 15])])
def test_avi_refuses_timing_it_cannot_store(tmp_path, timestamps):
    # AVI counts frames: a late first frame or a variable rate would be written at wrong times.
    with pytest.raises(ValueError, match="constant-rate"):
        write_video(tmp_path / "late.avi", moving_scene(30), timestamps=timestamps)


def test_half_frame_times_do_not_collide_in_a_frame_counting_clock(tmp_path):
    # 1.5 + k/15 at a 1/15 s clock lands on 22.5, 23.5, ...: rounding half to even would repeat PTS.
    path = write_video(tmp_path / "half.mkv", moving_scene(30), timestamps=1.5 + np.arange(30) / 15)
    assert probe(path).frames == 30
    assert np.all(np.diff(decode(path).timestamps) > 0)


# GIF and contact sheet ----------------------------------------------------------------------------------------


def gif_frames(path) -> tuple[list[np.ndarray], list[int]]:
    """Every frame of a GIF as (H, W, 3) uint8 and its delay in milliseconds."""
    frames, delays = [], []
    with Image.open(path) as image:
        for k in range(image.n_frames):
            image.seek(k)
            frames.append(np.asarray(image.convert("RGB")))
            delays.append(image.info["duration"])
    return frames, delays


def test_gif_has_every_frame_in_order_with_fps_delays(tmp_path):
    frames = np.stack([np.full((47, 63, 3), 20 * i, dtype=np.uint8) for i in range(12)])  # distinct greys

    path = write_gif(tmp_path / "clip.gif", frames, fps=10)
    read, delays = gif_frames(path)

    assert Image.open(path).format == "GIF"
    assert len(read) == 12
    assert read[0].shape == (47, 63, 3)
    np.testing.assert_allclose([f.mean() for f in read], 20 * np.arange(12), atol=2)
    assert delays == [100] * 12


def test_gif_delays_follow_timestamps(tmp_path):
    frames = np.stack([np.full((16, 16, 3), 40 * i, dtype=np.uint8) for i in range(4)])

    _, delays = gif_frames(write_gif(tmp_path / "vfr.gif", frames, timestamps=[0.0, 0.1, 0.4, 0.5]))

    assert delays == [100, 300, 100, 100]  # the last frame gets the median gap


def test_contact_sheet_is_a_png_grid_of_the_frames(tmp_path):
    frames = np.stack([np.full((47, 63, 3), 25 * i, dtype=np.uint8) for i in range(10)])

    path = write_contact_sheet(tmp_path / "sheet.png", frames, np.arange(10) / 10, columns=4)

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        sheet = np.asarray(image.convert("RGB"))
    assert width == 4 * 63
    assert 3 * 47 < height < 3 * (47 + 40)  # three rows of frames, each with a caption strip
    # The first cell is frame 0 (black), the second frame 1 (grey 25), at full size.
    assert sheet[5:40, 5:55].max() == 0
    assert np.all(sheet[5:40, 63 + 5 : 63 + 55] == 25)


def test_contact_sheet_shrinks_wide_frames_to_max_width(tmp_path):
    frames = np.zeros((16, 48, 640, 3), dtype=np.uint8)

    path = write_contact_sheet(tmp_path / "wide.png", frames, np.arange(16) / 8, columns=8, max_width=800)

    with Image.open(path) as image:
        assert image.size[0] == 800
        assert 2 * 6 <= image.size[1] <= 2 * (6 + 40)  # two rows of 640x48 frames shrunk 8x
