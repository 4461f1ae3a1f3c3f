"""Opening containers and indexing their frames, with every FFmpeg failure turned into one `VideoError`.

Frame indices and container time bases stay inside `io/`; everything that leaves it is in seconds.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tubelet.errors import VideoError

# Exceptions PyAV raises for files it cannot read; all become VideoError.
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration, EOFError, UnicodeDecodeError)


@contextmanager
def open_container(path: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """Open a media file for reading and close it deterministically, even on error.

    Raises:
        VideoError: the file is missing or FFmpeg cannot open it.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except _AV_ERRORS as exc:
        raise VideoError(path, f"cannot open container ({_reason(exc)})") from exc
    try:
        yield container
    finally:
        container.close()


def video_stream(container, path) -> av.video.stream.VideoStream:
    """The first video stream of `container`, or a VideoError naming the file."""
    if not container.streams.video:
        raise VideoError(path, "no video stream")
    return container.streams.video[0]


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for a failure, without the errno and file name (the VideoError prefix names the file)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).split("; last error log")[0].strip()


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of every frame of a video stream and which are keyframes.

    Attributes:
        pts: (F,) int64, every frame's PTS in stream time-base units, sorted (presentation order).
        keyframe_pts: (K,) int64, sorted PTS of keyframes (seek targets).
        time_base: seconds per PTS unit.
        start_pts: PTS of the stream's time origin (its first frame).
        frame_duration: (F,) float64 seconds each frame is shown (next PTS minus this one; last from the packet).
    """

    pts: np.ndarray
    keyframe_pts: np.ndarray
    time_base: Fraction
    start_pts: int
    frame_duration: np.ndarray

    @property
    def times(self) -> np.ndarray:
        """(F,) float64 seconds of each frame from the stream's first frame."""
        return (self.pts - self.start_pts).astype(np.float64) * float(self.time_base)

    @property
    def start_offset(self) -> float:
        """Seconds of the first frame's PTS in the container (non-zero for trimmed or streamed files)."""
        return float(self.start_pts * self.time_base)


# Demuxing reads the file once without decoding; cached per (path, size, mtime) so repeated clips of
# one long video pay for it once. Small arrays only: a 2 h video at 30 fps is ~2 MB of int64.
_INDEX_CACHE: OrderedDict[tuple, FrameIndex | None] = OrderedDict()
_INDEX_CACHE_SIZE = 256


def frame_index(container, stream, path) -> FrameIndex | None:
    """Index of the frames of `stream`, or None when the container lacks usable packet PTS (then decode linearly)."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if key in _INDEX_CACHE:
        _INDEX_CACHE.move_to_end(key)
        return _INDEX_CACHE[key]
    index = _build_index(container, stream, path)
    _INDEX_CACHE[key] = index
    if len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.popitem(last=False)
    return index


def _build_index(container, stream, path) -> FrameIndex | None:
    pts, keys, durations = [], [], []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            durations.append(packet.duration or 0)
            if packet.is_keyframe:
                keys.append(packet.pts)
    except _AV_ERRORS as exc:
        raise VideoError(path, f"cannot read packets ({_reason(exc)})") from exc
    finally:
        container.seek(0)  # leave the container where a fresh reader expects it
    if not pts:
        raise VideoError(path, "video stream has no frames")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_arr = np.asarray(pts, dtype=np.int64)[order]
    tb = stream.time_base
    last = durations[int(order[-1])] * float(tb)
    if last <= 0:
        rate = stream.average_rate or stream.guessed_rate or 30
        last = 1.0 / float(rate)
    frame_duration = np.append(np.diff(pts_arr).astype(np.float64) * float(tb), last)
    start = stream.start_time if stream.start_time is not None else int(pts_arr[0])
    start = min(int(start), int(pts_arr[0]))
    keys_arr = np.unique(np.asarray(keys or [pts_arr[0]], dtype=np.int64))
    return FrameIndex(pts_arr, keys_arr, tb, start, frame_duration)


def frame_rate(index, stream, frames: int, duration: float) -> float:
    """Average frame rate measured from the PTS; the container's nominal rate when it agrees within 0.5%.

    Matroska stores milliseconds, so a 60 fps file measures 60.005; its nominal 60 is the honest answer.
    Variable-frame-rate files report the measured average.
    """
    if index is not None and frames > 1 and index.times[-1] > 0:
        measured = (frames - 1) / float(index.times[-1])
    else:
        measured = frames / duration if duration > 0 else 0.0
    nominal = float(stream.average_rate or 0)
    if nominal and abs(nominal - measured) <= 0.005 * nominal:
        return nominal
    return measured
