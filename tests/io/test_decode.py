"""`decode`: frames at real times (PTS), sampling by time, windows, resizing, sparse seeking, bad files."""

import contextlib
import importlib

import av
import numpy as np
import pytest

from tubelet.errors import VideoError
from tubelet.io import decode, probe, write_video
from tubelet.io.container import frame_index, open_container

# `tubelet.io.decode` the attribute is the function; the module is reached by its import name.
decode_module = importlib.import_module("tubelet.io.decode")


def test_decode_returns_every_frame_as_uint8_rgb(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4)

    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (60, 48, 64, 3)
    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(60))
    np.testing.assert_allclose(clip.timestamps, np.arange(60) / 30, atol=1e-6)
    assert clip.fps == pytest.approx(30.0, abs=0.01)
    assert clip.path == str(cfr_mp4)
    assert clip.start_offset == 0.0


def test_timestamps_of_a_variable_frame_rate_file_are_its_pts(vfr_mp4, frame_numbers):
    path, written = vfr_mp4

    clip = decode(path)

    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(len(written)))
    np.testing.assert_allclose(clip.timestamps, written, atol=1e-4)
    # What a decoder that counts frames would have said instead:
    assert not np.allclose(clip.timestamps, np.arange(len(written)) / clip.fps, atol=1e-2)


def test_timestamps_start_at_zero_when_the_first_pts_does_not(offset_mp4, frame_numbers):
    clip = decode(offset_mp4)

    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(30))
    np.testing.assert_allclose(clip.timestamps, np.arange(30) / 15, atol=1e-4)
    assert clip.start_offset == pytest.approx(1.5, abs=1e-4)


def test_window_is_measured_from_the_first_frame(offset_mp4, frame_numbers):
    clip = decode(offset_mp4, start=0.5, end=1.0)  # frames at 8/15 .. 14/15 s

    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(8, 15))


def test_start_end_window_keeps_frames_in_start_inclusive_end_exclusive(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, start=0.5, end=1.0)

    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(15, 30))
    # Times stay on the video's axis, not restarted at the window.
    np.testing.assert_allclose(clip.timestamps, np.arange(15, 30) / 30, atol=1e-6)


@pytest.mark.parametrize(("start", "end"), [(1.5, 1.0), (5.0, None), (-0.5, 1.0)])
def test_empty_or_negative_window_raises_video_error(cfr_mp4, start, end):
    with pytest.raises(VideoError, match="window"):
        decode(cfr_mp4, start=start, end=end)


def test_fps_resamples_to_the_nearest_frame_in_time(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, fps=9)  # targets k/9 s on a 30 fps source: frame round(10k/3), never a tie

    expected = np.rint(np.arange(18) * 30 / 9).astype(int)
    np.testing.assert_array_equal(frame_numbers(clip.frames), expected)
    # Each frame keeps its own PTS, not the target time.
    np.testing.assert_allclose(clip.timestamps, expected / 30, atol=1e-6)


def test_fps_above_the_source_rate_repeats_frames_with_their_real_times(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, fps=45)  # targets k/45 s: frame round(2k/3)

    expected = np.rint(np.arange(90) * 2 / 3).astype(int)
    np.testing.assert_array_equal(frame_numbers(clip.frames), expected)
    np.testing.assert_allclose(clip.timestamps, expected / 30, atol=1e-6)


def test_fps_on_a_variable_frame_rate_file_picks_nearest_pts(vfr_mp4, frame_numbers):
    path, written = vfr_mp4

    clip = decode(path, end=0.9, fps=10)  # the frame at 0.90 s lies outside [0, 0.9)

    targets = np.arange(9) / 10
    inside = written[written < 0.9]
    expected = np.abs(inside[None, :] - targets[:, None]).argmin(axis=1)
    np.testing.assert_array_equal(frame_numbers(clip.frames), expected)
    np.testing.assert_allclose(clip.timestamps, written[expected], atol=1e-4)


def test_num_frames_samples_centres_of_equal_segments(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, num_frames=5)  # segments of 0.4 s: centres 0.2, 0.6, 1.0, 1.4, 1.8 s

    np.testing.assert_array_equal(frame_numbers(clip.frames), [6, 18, 30, 42, 54])


def test_num_frames_inside_a_window(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, start=0.5, end=1.5, num_frames=4)  # centres 0.625, 0.875, 1.125, 1.375 s

    np.testing.assert_array_equal(frame_numbers(clip.frames), [19, 26, 34, 41])
    assert clip.timestamps[0] >= 0.5 and clip.timestamps[-1] < 1.5


def test_fps_and_num_frames_together_are_refused(cfr_mp4):
    with pytest.raises(ValueError, match="not both"):
        decode(cfr_mp4, fps=10, num_frames=4)


def test_size_int_scales_the_short_side(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, size=24)

    assert clip.frames.shape == (60, 24, 32, 3)
    np.testing.assert_array_equal(frame_numbers(clip.frames), np.arange(60))


def test_size_int_can_upscale(cfr_mp4):
    assert decode(cfr_mp4, num_frames=2, size=96).frames.shape == (2, 96, 128, 3)


def test_size_tuple_is_exact_height_width(cfr_mp4, frame_numbers):
    clip = decode(cfr_mp4, num_frames=3, size=(20, 30))

    assert clip.frames.shape == (3, 20, 30, 3)
    np.testing.assert_array_equal(frame_numbers(clip.frames), [10, 30, 50])


# Sparse sampling on a long GOP -----------------------------------------------------------------------------


class SeekCounter:
    """Stands in for an open container, forwarding everything and recording each `seek`."""

    def __init__(self, container):
        self._container = container
        self.seeks = []

    def seek(self, *args, **kwargs):
        self.seeks.append(args[0] if args else kwargs.get("offset"))
        return self._container.seek(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


@pytest.fixture
def counted_seeks(monkeypatch):
    """The seeks of the containers `decode` opens, one list per open; the frame index is built beforehand."""
    opened = []
    real_open = decode_module.open_container

    @contextlib.contextmanager
    def counting_open(path):
        with real_open(path) as container:
            counter = SeekCounter(container)
            opened.append(counter.seeks)
            yield counter

    monkeypatch.setattr(decode_module, "open_container", counting_open)
    return opened


def test_long_gop_file_has_a_keyframe_every_50_frames(long_gop_mp4):
    with open_container(long_gop_mp4) as container:
        index = frame_index(container, container.streams.video[0], long_gop_mp4)

    assert len(index.pts) == 200
    np.testing.assert_allclose(index.keyframe_pts * float(index.time_base), [0.0, 2.0, 4.0, 6.0], atol=1e-6)


def test_sparse_frames_equal_the_same_frames_of_a_full_decode(long_gop_mp4, frame_numbers):
    full = decode(long_gop_mp4)
    sparse = decode(long_gop_mp4, num_frames=16)

    chosen = frame_numbers(sparse.frames)
    # 16 centres of 0.5 s segments of the 8 s video at 25 fps: frame round(6.25 + 12.5 k), ties to even
    np.testing.assert_array_equal(chosen, [6, 19, 31, 44, 56, 69, 81, 94, 106, 119, 131, 144, 156, 169, 181, 194])
    np.testing.assert_array_equal(sparse.frames, full.frames[chosen])
    np.testing.assert_allclose(sparse.timestamps, full.timestamps[chosen], atol=1e-9)


def test_sparse_decode_seeks_once_per_gop_not_once_per_frame(long_gop_mp4, counted_seeks):
    probe(long_gop_mp4)  # builds and caches the frame index, whose own pass rewinds once

    clip = decode(long_gop_mp4, num_frames=16)

    gops_touched = len(np.unique(clip.timestamps // 2.0))  # keyframes every 2 s
    assert gops_touched == 4
    assert 1 <= len(counted_seeks[-1]) <= gops_touched


def test_sparse_decode_within_one_gop_seeks_once(long_gop_mp4, counted_seeks, frame_numbers):
    probe(long_gop_mp4)

    clip = decode(long_gop_mp4, start=2.2, end=3.8, num_frames=4)  # all inside the GOP of frames 50..99

    assert frame_numbers(clip.frames).min() >= 50 and frame_numbers(clip.frames).max() < 100
    assert len(counted_seeks[-1]) == 1


# Unreadable files ------------------------------------------------------------------------------------------


def _random_bytes(path, good):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated(path, good):
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _empty(path, good):
    path.write_bytes(b"")


def _text(path, good):
    path.write_text("this is a shopping list, not a video\n" * 20)


def _missing(path, good):
    pass


@pytest.mark.parametrize("make", [_random_bytes, _truncated, _empty, _text, _missing], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("read", [probe, decode], ids=["probe", "decode"])
def test_unreadable_file_raises_one_line_video_error_naming_it(tmp_path, cfr_mp4, make, read):
    path = tmp_path / "broken clip.mp4"
    make(path, cfr_mp4)

    with pytest.raises(VideoError) as caught:
        read(path)

    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    assert caught.value.path == str(path)


def test_decoding_a_file_with_its_video_bytes_overwritten_raises_video_error(tmp_path, long_gop_mp4):
    data = bytearray(long_gop_mp4.read_bytes())
    data[100:5000] = np.random.default_rng(0).integers(0, 256, 4900, dtype=np.uint8).tobytes()  # mdat precedes moov
    path = tmp_path / "garbled.mp4"
    path.write_bytes(bytes(data))

    with pytest.raises(VideoError, match="garbled.mp4"):
        decode(path)


def test_audio_only_file_has_no_video_stream(tmp_path, sine):
    path = tmp_path / "voice.mp4"
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    write_video(path, frames, fps=2, audio=sine(440, 1.0, 16000))
    # Re-mux only the audio stream with PyAV so the file has no video at all.
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(path)) as src, av.open(str(audio_only), "w", format="mp4") as dst:
        out = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)

    with pytest.raises(VideoError, match="no video stream"):
        decode(audio_only)
