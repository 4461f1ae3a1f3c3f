"""Audio decoding to mono float32 on the same seconds axis as the video frames."""

from __future__ import annotations

import os
from dataclasses import dataclass

import av
import numpy as np

from tubelet.errors import VideoError
from tubelet.io.container import _AV_ERRORS, _reason, open_container


@dataclass
class Audio:
    """Mono audio samples with their own start time.

    Attributes:
        samples: (N,) float32 in [-1, 1].
        sample_rate: Hz.
        start: seconds of the first sample, on the file's time axis (0 = the video stream's first frame,
            or the audio stream's first sample when the file has no video).
        path: the file it came from.
    """

    samples: np.ndarray
    sample_rate: int
    start: float
    path: str

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> Audio:
    """Decode the first audio stream, resampled to mono float32 at `sample_rate` by FFmpeg's resampler.

    Args:
        start, end: window in seconds on the file's time axis; default all of it.

    Raises:
        VideoError: the file has no audio stream or it cannot be decoded.
    """
    with open_container(path) as container:
        if not container.streams.audio:
            raise VideoError(path, "no audio stream")
        stream = container.streams.audio[0]
        origin = _time_origin(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_time = None
        try:
            if start:  # seek a little early: audio frames are long and some containers round times
                target = max(0.0, start - 0.25) + origin
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time) - origin
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                if end is not None and first_time is not None:
                    if first_time + sum(map(len, chunks)) / sample_rate >= end:
                        break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except _AV_ERRORS as exc:
            raise VideoError(path, f"cannot decode audio ({_reason(exc)})") from exc
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    first_time = first_time or 0.0
    # Trim to the requested window by sample position.
    lo = 0 if start is None else max(0, round((start - first_time) * sample_rate))
    hi = len(samples) if end is None else max(lo, round((end - first_time) * sample_rate))
    return Audio(samples=samples[lo:hi], sample_rate=sample_rate, start=first_time + lo / sample_rate, path=str(path))


def _time_origin(container, audio_stream) -> float:
    """Seconds of the file's time origin: the video stream's first PTS, else the audio stream's."""
    stream = container.streams.video[0] if container.streams.video else audio_stream
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)
