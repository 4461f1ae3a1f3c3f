"""Audio particles: log-mel patches from real AAC tracks, on the video's seconds axis."""

import numpy as np
import pytest
import torch

from tubelet.errors import ConfigError, VideoError
from tubelet.io import decode, decode_audio, write_video
from tubelet.particles import AUDIO, VIDEO, pack, tokenize, tokenize_audio, unpack
from tubelet.particles.audio import log_mel, mel_centres
from tubelet.particles.patchify import to_grid, unpatchify

RATE = 16000
FRAMES = np.full((30, 32, 32, 3), 90, dtype=np.uint8)  # 2 s at 15 fps


@pytest.fixture(scope="module")
def tone(tmp_path_factory, sine):
    """Factory ``(hz) -> path``: 2 s of video at 15 fps with a pure tone as an AAC track."""
    folder = tmp_path_factory.mktemp("audio_tones")
    return lambda hz: write_video(folder / f"tone{hz}.mp4", FRAMES, fps=15, audio=sine(hz, 2.0, RATE), audio_rate=RATE)


@pytest.fixture(scope="module")
def late_tone(tmp_path_factory, sine):
    """2 s whose first frame has PTS 1.5 s; silent for 1.0 s after it, then 1 kHz."""
    audio = sine(1000, 2.0, RATE)
    audio[:RATE] = 0.0
    times = 1.5 + np.arange(30) / 15
    path = tmp_path_factory.mktemp("audio_late") / "late.mp4"
    return write_video(path, FRAMES, timestamps=times, audio=audio, audio_rate=RATE)


def expected_band(hz: float, n_mels: int = 64, bins_per_band: int = 16) -> int:
    """The patch row (`y`) whose mel bins include the filter peaking nearest to `hz`."""
    return int((mel_centres(n_mels, RATE) - hz).abs().argmin()) // bins_per_band


@pytest.mark.parametrize("hz", [300, 1500, 3000])
def test_a_tone_lights_its_mel_band(tone, hz):
    particles = tokenize_audio(decode_audio(tone(hz)))

    band_energy = torch.stack([particles.values[particles.y == b].mean() for b in range(4)])  # (4,) mean log-mel
    assert int(band_energy.argmax()) == expected_band(hz)
    # Bin level: the loudest mel bin of the middle frames is the filter that peaks nearest the tone.
    spec = log_mel(torch.from_numpy(decode_audio(tone(hz)).samples), RATE)
    loudest = spec[50:150].mean(0).argmax()
    assert abs(float(mel_centres(64, RATE)[loudest]) - hz) < 80


def test_bands_differ_between_low_and_high_tones():
    assert [expected_band(hz) for hz in (300, 1500, 3000)] == [0, 1, 2]


def test_fields_shapes_and_tags(tone):
    audio = decode_audio(tone(1500))
    particles = tokenize_audio(audio)

    frames = 1 + len(audio.samples) // 160
    Tp = -(-frames // 16)
    assert particles.grid == (Tp, 4, 1)
    assert len(particles) == Tp * 4
    assert particles.values.shape == (Tp * 4, 16 * 16)
    assert particles.values.dtype == torch.float32
    assert torch.equal(particles.x, torch.zeros_like(particles.x))
    assert torch.equal(particles.span, torch.ones_like(particles.span))
    assert torch.equal(particles.modality, torch.full_like(particles.modality, AUDIO))
    assert particles.channels == 1 and particles.tubelet == (16, 16, 1)


def test_patches_put_back_are_the_spectrogram(tone):
    audio = decode_audio(tone(300))
    particles = tokenize_audio(audio)

    restored = unpatchify(to_grid(particles), particles.tubelet, particles.frame_shape)  # (frames, mels, 1, 1)
    assert torch.equal(restored[:, :, 0, 0], log_mel(torch.from_numpy(audio.samples), RATE))


def test_times_are_patch_centres_on_the_file_axis_from_a_non_zero_start(late_tone):
    audio = decode_audio(late_tone, start=0.5, end=1.8)
    particles = tokenize_audio(audio)

    assert audio.start == pytest.approx(0.5, abs=0.05)
    first = particles.t[particles.ti == 0]
    # Frame k is centred k * 10 ms after the first sample; a patch is the mean of its 16 frames' centres.
    assert torch.allclose(first, torch.full_like(first, audio.start + 7.5 * 0.01), atol=1e-5)
    steps = particles.t[particles.y == 0].diff()[:-1]  # the padded last patch has fewer real frames
    assert torch.allclose(steps, torch.full_like(steps, 0.16), atol=1e-5)


def test_sound_lands_at_its_second_like_the_video(late_tone):
    """The tone starts 1.0 s after the first frame (PTS 1.5): audio and video particles both see it at ~1.0 s."""
    particles = tokenize_audio(decode_audio(late_tone))
    loudness = torch.stack([particles.values[particles.ti == i].mean() for i in range(particles.grid[0])])
    silent, loud = loudness.min(), loudness.max()
    onset = particles.t[particles.ti == int((loudness > (silent + loud) / 2).nonzero()[0])][0]
    assert float(onset) == pytest.approx(1.0, abs=0.16)  # one patch is 0.16 s

    video = tokenize(decode(late_tone), tubelet=(2, 16, 16))
    assert float(video.t.min()) == pytest.approx(1 / 30, abs=0.01)  # the same axis: 0 is the first frame
    assert float(video.t.max()) > float(onset) > float(video.t.min())


def test_audio_clips_pack_together_but_not_with_video(tone, late_tone):
    short = tokenize_audio(decode_audio(late_tone, end=0.7))
    long = tokenize_audio(decode_audio(tone(300)))

    packed = pack([short, long])
    assert packed.cu_seqlens.tolist() == [0, len(short), len(short) + len(long)]
    assert torch.equal(packed.modality, torch.full((len(packed),), AUDIO))
    assert torch.equal(unpack(packed)[1].values, long.values)

    video = tokenize(decode(late_tone), tubelet=(2, 16, 16))
    assert torch.equal(video.modality, torch.full((len(video),), VIDEO))  # untagged particles are video
    with pytest.raises(ValueError, match="share one"):
        pack([video, long])


def test_a_file_without_audio_is_a_one_line_error_naming_it(cfr_mp4):
    with pytest.raises(VideoError, match="no audio stream") as caught:
        tokenize_audio(decode_audio(cfr_mp4))

    assert str(caught.value).startswith(str(cfr_mp4))
    assert "\n" not in str(caught.value)


def test_too_short_audio_and_bad_patch_are_clear_errors(late_tone):
    with pytest.raises(VideoError, match="too short") as caught:
        tokenize_audio(decode_audio(late_tone, start=0.5, end=0.51))
    assert str(late_tone) in str(caught.value)

    with pytest.raises(ConfigError, match="n_mels"):
        tokenize_audio(decode_audio(late_tone), patch=(16, 10))
