import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tubelet.data.av_dataset import AudioPreprocessing, AVClipDataset
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import Sample, VideoDataset
from tubelet.data.pipeline import clip_particles, decode_window, iter_windows, window_count
from tubelet.data.transforms import Preprocessing
from tubelet.io import decode, probe
from tubelet.particles.tokenize import tokenize

PRE = Preprocessing(tubelet=(2, 16, 16), sample_fps=10.0, clip_seconds=1.0, size=32, max_long_side=64)


def test_windows_cover_a_source_flush_to_its_end():
    assert list(iter_windows(5.0, 2.0, 2.0)) == [(0.0, 2.0), (2.0, 4.0), (3.0, 5.0)]
    assert list(iter_windows(5.0, 2.0, 1.5)) == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]
    assert list(iter_windows(1.5, 2.0, 1.0)) == [(0.0, 1.5)]  # shorter than a window: all of it
    assert list(iter_windows(10.0, 4.0, 3.0, start=1.0)) == [(1.0, 5.0), (4.0, 8.0), (6.0, 10.0)]
    assert list(iter_windows(0.7, 0.3, 0.1)) == [(0.0, 0.3), (0.1, 0.4), (0.2, 0.5), (0.3, 0.6), (0.4, 0.7)]


def test_windows_of_a_stream_never_end():
    windows = iter_windows(None, 2.0, 0.5, start=3.0)
    assert list(itertools.islice(windows, 4)) == [(3.0, 5.0), (3.5, 5.5), (4.0, 6.0), (4.5, 6.5)]
    assert next(itertools.islice(windows, 1000, None)) == (505.0, 507.0)  # window 1004: 3 + 1004 * 0.5 s
    with pytest.raises(ValueError):
        list(iter_windows(5.0, 0.0, 1.0))


def test_clip_particles_take_times_from_the_window_start(numbered_frames):
    frames = numbered_frames(8, 32, 32)
    times = 100.0 + np.arange(8) / 8  # a window 100 s into a stream
    particles = clip_particles((100.0, 101.0), pre=PRE, frames=frames, timestamps=times)
    reference = tokenize(torch.from_numpy(frames), timestamps=np.arange(8) / 8, tubelet=(2, 16, 16),
                         prune_threshold=PRE.prune_threshold, mean=PRE.mean, std=PRE.std)  # fmt: skip
    assert torch.equal(particles.values, reference.values) and torch.equal(particles.t, reference.t)
    assert particles.t.min().item() == pytest.approx(1 / 16)  # centre of the first two frames, from the start


def test_clip_particles_of_several_modalities_in_the_order_asked(tone_mp4):
    audio_pre = AudioPreprocessing()
    window = (0.5, 1.5)
    decoded = decode_window(tone_mp4, window, pre=PRE, modalities=("video", "audio"), audio_pre=audio_pre)
    parts = clip_particles(
        window, pre=PRE, modalities=("audio", "video", "text"), frames=decoded.frames,
        timestamps=decoded.timestamps, audio=decoded.audio, audio_pre=audio_pre, question=[2, 7, 9],
    )  # fmt: skip
    assert list(parts) == ["audio", "video", "text"]
    assert torch.all(parts["text"].t == 0.5)  # the question sits at the window's centre
    assert 0.0 <= parts["audio"].t.min().item() < 0.2 and parts["audio"].t.max().item() < 1.0
    assert len(parts["audio"]) == audio_pre.estimate_particles(1.0)
    with pytest.raises(ValueError, match="text needs question"):
        clip_particles(window, modalities=("text",))


def test_datasets_read_the_particles_of_the_pure_function(cfr_mp4):
    info = probe(cfr_mp4)
    data = VideoDataset(samples=[Sample(path=Path(cfr_mp4))], infos=[info], labels=[])
    window = (0.5, 1.5)
    # The same window decoded by hand (io.decode) and turned into particles by the pure function.
    clip = decode(cfr_mp4, start=0.5, end=1.5, fps=PRE.sample_fps, size=PRE.output_size(info.height, info.width))
    expected = clip_particles(window, pre=PRE, frames=clip.frames, timestamps=clip.timestamps)
    item = ClipDataset(data, PRE, windows=[(0, *window)])[0]
    assert torch.equal(item.particles.values, expected.values) and torch.equal(item.particles.t, expected.t)
    fused = AVClipDataset(data, PRE, AudioPreprocessing(), modalities=("video",), windows=[(0, *window)])[0]
    assert list(fused.particles) == ["video"] and torch.equal(fused.particles["video"].values, expected.values)


def test_a_tail_too_short_for_a_window_adds_none():
    # 4 ms after the last regular window: a flush window [2.004, 4.004] would repeat [2, 4].
    assert list(iter_windows(4.004, 2.0, 2.0)) == [(0.0, 2.0), (2.0, 4.0)]
    # Half a stride left: worth a window, flush with the end.
    assert list(iter_windows(5.0, 2.0, 2.0))[-1] == (3.0, 5.0)


@pytest.mark.parametrize(
    "duration, window, stride",
    [(0.5, 1.0, 0.5), (1.0, 1.0, 0.3), (10.0, 2.0, 0.7), (7.3, 1.5, 1.5), (4.004, 2.0, 2.0), (4.1, 2.0, 0.5)],
)
def test_window_count_is_what_iter_windows_yields(duration, window, stride):
    assert window_count(duration, window, stride) == len(list(iter_windows(duration, window, stride)))
