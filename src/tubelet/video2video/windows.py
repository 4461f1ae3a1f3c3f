"""Reading a long video in overlapping windows of frames (bounded memory), and its audio to copy through.

A window is a run of consecutive source frames decoded together: the `core` frames it is responsible for, plus up to
`overlap` frames of context on each side, so a method that reads neighbouring frames (a temporal median, a flow
pair, scene-cut statistics) sees the same neighbours at a window's edge as in its middle: the output is identical to
processing the whole video at once, with nothing to blend at the seams.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tubelet.io.audio import Audio, decode_audio
from tubelet.io.container import frame_index, open_container, video_stream
from tubelet.io.decode import decode
from tubelet.io.probe import probe
from tubelet.io.write import VideoWriter


@dataclass
class Window:
    """Consecutive frames of a video.

    Attributes:
        first: index (in the whole video) of ``frames[0]``.
        frames: (T, H, W, 3) uint8.
        timestamps: (T,) seconds of each frame (PTS, from the first frame).
        core: (lo, hi): ``frames[lo:hi]`` are the frames this window is responsible for; the rest is context.
    """

    first: int
    frames: np.ndarray
    timestamps: np.ndarray
    core: tuple[int, int]


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """(F,) float64 seconds of every frame of `path` from its packets (no decoding)."""
    with open_container(path) as container:
        stream = video_stream(container, path)
        index = frame_index(container, stream, path)
        if index is not None:
            return index.times
    return decode(path).timestamps  # no packet times: decode once


def windows(path: str | os.PathLike, times: np.ndarray, *, frames: int, overlap: int) -> Iterator[Window]:
    """Windows of `frames` core frames each with `overlap` frames of context each side, over the whole video."""
    count = len(times)
    for lo in range(0, count, frames):
        hi = min(count, lo + frames)
        a, b = max(0, lo - overlap), min(count, hi + overlap)
        # Half a frame of slack either side: decode selects frames by time.
        gap = float(np.median(np.diff(times))) / 2 if count > 1 else 0.5
        start = max(0.0, float(times[a]) - gap)
        end = float(times[b - 1]) + gap
        clip = decode(path, start=start, end=end)
        keep = (clip.timestamps >= times[a] - 1e-6) & (clip.timestamps <= times[b - 1] + 1e-6)
        yield Window(first=a, frames=clip.frames[keep], timestamps=clip.timestamps[keep], core=(lo - a, hi - a))


def source_audio(path: str | os.PathLike) -> Audio | None:
    """The file's audio (mono, at its own sample rate) to copy into the output, or None when it has none."""
    info = probe(path)
    if not info.has_audio:
        return None
    return decode_audio(path, sample_rate=info.audio_sample_rate or 16000)


def finish(writer: VideoWriter, audio: Audio | None) -> None:
    """Close `writer`'s video with the source's soundtrack copied after it (when the source had one)."""
    with writer:
        if audio is not None and len(audio.samples):
            writer.write_audio(audio.samples, audio.start)
