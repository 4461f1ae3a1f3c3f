"""`probe`: container facts read from real encoded files, without decoding pixels."""

import numpy as np
import pytest

from tubelet.io import probe, write_video

FORMATS = [  # extension, codec name FFmpeg reports
    ("mp4", "h264"),
    ("mkv", "h264"),
    ("webm", "vp9"),
    ("avi", "mpeg4"),
]


@pytest.fixture(scope="module")
def two_seconds_at_15(tmp_path_factory, numbered_frames):
    """Factory: 30 numbered frames at 15 fps (2.0 s), 64x48, written as `ext`."""
    folder = tmp_path_factory.mktemp("formats")

    def write(ext):
        return write_video(folder / f"clip.{ext}", numbered_frames(30), fps=15)

    return write


@pytest.mark.parametrize(("ext", "codec"), FORMATS)
def test_probe_reads_facts_of_each_container(two_seconds_at_15, ext, codec):
    path = two_seconds_at_15(ext)

    info = probe(path)

    assert info.path == str(path)
    assert info.codec == codec
    assert (info.width, info.height) == (64, 48)
    assert info.frames == 30
    assert info.duration_s == pytest.approx(2.0, abs=0.01)  # Matroska rounds times to milliseconds
    assert info.fps == pytest.approx(15.0, abs=0.05)
    assert info.has_audio is False
    assert info.audio_sample_rate is None
    assert info.start_offset_s == 0.0


def test_probe_reports_the_audio_track(tone_mp4):
    info = probe(tone_mp4)

    assert info.has_audio is True
    assert info.audio_sample_rate == 16000
    assert info.frames == 30  # the audio stream does not count as frames


def test_probe_of_variable_frame_rate_counts_real_frames(vfr_mp4):
    path, times = vfr_mp4

    info = probe(path)

    assert info.frames == len(times)
    # From the first frame to the end of the last: past the last frame's time, by less than the longest gap.
    assert times[-1] < info.duration_s <= times[-1] + np.diff(times).max()
    # An average of what is in the file (frames per second of duration, or frame gaps per second of the first
    # to last frame), not a nominal rate from the container header.
    gaps_rate = (len(times) - 1) / times[-1]
    frames_rate = info.frames / info.duration_s
    assert min(gaps_rate, frames_rate) - 1e-3 <= info.fps <= max(gaps_rate, frames_rate) + 1e-3


def test_probe_of_a_file_whose_first_pts_is_not_zero(offset_mp4):
    info = probe(offset_mp4)

    assert info.start_offset_s == pytest.approx(1.5, abs=1e-4)
    assert info.frames == 30
    assert info.duration_s == pytest.approx(2.0, abs=1e-3)  # measured from the first frame, not from 0
    assert info.fps == pytest.approx(15.0, abs=0.01)


def test_probe_to_dict_is_plain_data(cfr_mp4):
    facts = probe(cfr_mp4).to_dict()

    assert facts["frames"] == 60
    assert facts["width"] == 64 and facts["height"] == 48
    assert facts["fps"] == pytest.approx(30.0, abs=0.01)
