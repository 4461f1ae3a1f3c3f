"""`decode_audio`: mono float32 on the video's seconds axis, windows, resampling."""

import numpy as np
import pytest

from tubelet.errors import VideoError
from tubelet.io import decode_audio, write_video

RATE = 16000


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Hz of the strongest bin of the spectrum of (N,) samples."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sample_rate)[spectrum.argmax()])


def onset(audio, level: float = 0.1) -> float:
    """Seconds (on the file's axis) of the first sample louder than `level`."""
    loud = np.flatnonzero(np.abs(audio.samples) > level)
    assert len(loud), "no sound at all"
    return audio.start + loud[0] / audio.sample_rate


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory, sine):
    """Factory: 2 s of video at 15 fps with a 440 Hz track, in container `ext`."""
    folder = tmp_path_factory.mktemp("tones")
    frames = np.full((30, 48, 64, 3), 90, dtype=np.uint8)

    def write(ext):
        return write_video(folder / f"tone.{ext}", frames, fps=15, audio=sine(440, 2.0, RATE), audio_rate=RATE)

    return write


@pytest.fixture(scope="module")
def step_file(tmp_path_factory, sine):
    """Factory: 2 s of video at 15 fps, silent for 1 s then a 440 Hz tone; first frame at `first_pts` s."""
    folder = tmp_path_factory.mktemp("steps")
    frames = np.full((30, 48, 64, 3), 90, dtype=np.uint8)
    audio = sine(440, 2.0, RATE)
    audio[:RATE] = 0.0

    def write(ext, first_pts):
        times = first_pts + np.arange(30) / 15
        return write_video(folder / f"step{first_pts}.{ext}", frames, timestamps=times, audio=audio, audio_rate=RATE)

    return write


def test_full_track_is_mono_float32_at_the_asked_rate(tone_mp4):
    audio = decode_audio(tone_mp4)

    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert audio.sample_rate == RATE
    assert audio.path == str(tone_mp4)
    assert audio.start == pytest.approx(0.0, abs=0.05)
    assert audio.duration >= 2.0 * 0.98  # AAC may pad the end to a whole frame
    assert 0.45 < np.abs(audio.samples).max() <= 0.55  # the written amplitude, in [-1, 1] units


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm"])
def test_window_has_its_length_start_and_the_tone(tone_file, tone_mp4, ext):
    path = tone_mp4 if ext == "mp4" else tone_file(ext)

    audio = decode_audio(path, sample_rate=RATE, start=0.5, end=1.5)

    assert len(audio.samples) == pytest.approx(1.0 * RATE, rel=0.02)
    assert audio.start == pytest.approx(0.5, abs=0.05)
    assert dominant_frequency(audio.samples, RATE) == pytest.approx(440, abs=3)


def test_resampling_to_8_khz_keeps_the_tone(tone_mp4):
    audio = decode_audio(tone_mp4, sample_rate=8000, start=0.5, end=1.5)

    assert audio.sample_rate == 8000
    assert len(audio.samples) == pytest.approx(8000, rel=0.02)
    assert audio.samples.dtype == np.float32
    assert dominant_frequency(audio.samples, 8000) == pytest.approx(440, abs=3)


def test_end_alone_cuts_from_the_start(tone_mp4):
    audio = decode_audio(tone_mp4, end=0.5)

    assert len(audio.samples) == pytest.approx(0.5 * RATE, rel=0.02)
    assert audio.start == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize(("ext", "first_pts"), [("mp4", 0.0), ("mp4", 1.5), ("mkv", 0.0), ("webm", 0.0)])
def test_sound_lands_at_its_time_on_the_video_axis(step_file, ext, first_pts):
    path = step_file(ext, first_pts)

    whole = decode_audio(path)
    window = decode_audio(path, start=0.8, end=1.3)

    # The tone starts 1.0 s after the first frame, wherever that frame sits in the container.
    assert onset(whole) == pytest.approx(1.0, abs=0.02)
    assert onset(window) == pytest.approx(1.0, abs=0.02)
    assert np.abs(window.samples[: int(0.15 * RATE)]).max() < 0.05  # 0.80 .. 0.95 s is still silent


def test_file_without_audio_raises_video_error(cfr_mp4):
    with pytest.raises(VideoError, match="no audio stream") as caught:
        decode_audio(cfr_mp4)

    assert str(cfr_mp4) in str(caught.value)
