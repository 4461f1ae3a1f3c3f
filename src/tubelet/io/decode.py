"""Decoding frames at real times.

A frame's time is its presentation timestamp (PTS) in seconds from the stream's first frame, never
``index / fps``: variable-frame-rate files and files whose first PTS is not 0 get the right times.
Sampling asks for *times*; each target time takes the decoded frame whose PTS is nearest to it.

Sparse sampling seeks once per group of targets: sorted targets are decoded forward from the keyframe at
or before the first of them, and a new seek happens only when the next wanted frame lies past a keyframe
that the decoder has not reached (seeking then skips whole GOPs of work). Never one seek per frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from tubelet.errors import VideoError
from tubelet.io.container import (
    _AV_ERRORS,
    FrameIndex,
    _reason,
    frame_index,
    frame_rate,
    open_container,
    video_stream,
)


@dataclass
class Clip:
    """Frames decoded from one video with their real times.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        timestamps: (T,) float64 seconds of each frame from the stream's first frame (from PTS).
        fps: the source's average frame rate.
        path: the file it came from.
        start_offset: seconds of the stream's first PTS in the container (times above are relative to it).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    path: str
    start_offset: float = 0.0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        """Seconds covered from the first to the last frame (0 for one frame)."""
        return float(self.timestamps[-1] - self.timestamps[0]) if len(self.timestamps) else 0.0


def sample_times(start: float, end: float, *, fps: float | None = None, num_frames: int | None = None) -> np.ndarray:
    """Target times in seconds for sampling [start, end).

    Args:
        fps: one target every 1/fps seconds from `start`.
        num_frames: that many targets, uniformly over [start, end] (centres of equal segments).

    Returns:
        (K,) float64 seconds.
    """
    if fps is not None and num_frames is not None:
        raise ValueError("give fps or num_frames, not both")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        # 5% of a period of slack: containers such as Matroska round times to milliseconds.
        count = max(1, math.ceil((end - start) * fps - 0.05))
        return start + np.arange(count, dtype=np.float64) / fps
    if num_frames is not None:
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        step = (end - start) / num_frames
        return start + (np.arange(num_frames, dtype=np.float64) + 0.5) * step
    raise ValueError("give fps or num_frames")


def nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into sorted `times` (F,) of the nearest element to each of `targets` (K,); ties take the earlier."""
    right = np.clip(np.searchsorted(times, targets, side="left"), 1, max(len(times) - 1, 1))
    left = right - 1
    take_right = np.abs(times[right] - targets) < np.abs(targets - times[left])
    return np.where(take_right, right, left) if len(times) > 1 else np.zeros(len(targets), dtype=np.int64)


def decode(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    threads: int = 1,
) -> Clip:
    """Decode frames of a video by time.

    Args:
        path: any container FFmpeg reads (mp4, mkv, webm, avi, ...).
        start, end: window in seconds from the first frame; default the whole video.
        fps: resample by time to this rate (nearest decoded frame to each target time).
        num_frames: sample this many frames uniformly over [start, end].
        size: output size: an int scales the short side to it keeping the aspect ratio, ``(H, W)`` is exact.
        threads: FFmpeg decoding threads (1 suits DataLoader workers that decode in parallel).

    Returns:
        A `Clip`: frames (T, H, W, 3) uint8 and their PTS times in seconds. With neither `fps` nor
        `num_frames`, every frame in the window. Upsampling repeats frames, with their real times.

    Raises:
        VideoError: the file cannot be opened or decoded, or the window holds no frame.
    """
    if fps is not None and num_frames is not None:
        raise ValueError("give fps or num_frames, not both")
    if (fps is not None and fps <= 0) or (num_frames is not None and num_frames <= 0):
        raise ValueError(f"fps and num_frames must be positive, got fps={fps} num_frames={num_frames}")
    with open_container(path) as container:
        stream = video_stream(container, path)
        stream.thread_count = max(0, int(threads))
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        try:
            out_h, out_w = _output_size(stream.codec_context.height, stream.codec_context.width, size)

            def convert(frame):
                return _to_rgb(frame, out_h, out_w)

            index = frame_index(container, stream, path)
            if index is None:  # no packet PTS: decode everything once and select afterwards
                decoded, times = _decode_all(container, stream, convert)
                start_offset = 0.0
            else:
                times = index.times
                start_offset = index.start_offset
            chosen = _choose(times, start, end, fps, num_frames, path)
            if index is None:
                picked = [decoded[i] for i in chosen]
            else:
                wanted = np.unique(chosen)
                by_frame = _decode_sparse(container, stream, index, wanted, convert)
                picked = [by_frame[i] for i in chosen]
        except VideoError:
            raise
        except _AV_ERRORS as exc:
            raise VideoError(path, f"cannot decode ({_reason(exc)})") from exc
        count = len(index.pts) if index is not None else len(times)
        rate = frame_rate(index, stream, count, float(times[-1]) if len(times) else 0.0)
    frames = np.stack([frame for _, frame in picked])  # (T, H, W, 3)
    timestamps = np.array([t for t, _ in picked], dtype=np.float64)
    return Clip(frames=frames, timestamps=timestamps, fps=rate, path=str(path), start_offset=start_offset)


def _choose(times, start, end, fps, num_frames, path) -> np.ndarray:
    """Indices of the frames (into `times`) that the request selects, in output order."""
    last_end = float(times[-1]) + (float(times[-1] - times[-2]) if len(times) > 1 else 0.0)
    lo = 0.0 if start is None else float(start)
    hi = last_end if end is None else min(float(end), last_end)
    if lo < 0 or hi <= lo:
        raise VideoError(path, f"empty time window [{lo:.3f}, {hi:.3f}) s (video lasts {last_end:.3f} s)")
    inside = np.flatnonzero((times >= lo - 1e-9) & (times < hi - 1e-9))
    if fps is None and num_frames is None:
        if len(inside) == 0:
            raise VideoError(path, f"no frame in [{lo:.3f}, {hi:.3f}) s")
        return inside
    targets = sample_times(lo, hi, fps=fps, num_frames=num_frames)
    pool = inside if len(inside) else np.arange(len(times))
    return pool[nearest(times[pool], targets)]


def _decode_sparse(container, stream, index: FrameIndex, wanted: np.ndarray, convert) -> dict[int, tuple]:
    """Decode the frames at sorted indices `wanted`, seeking only when a keyframe lies ahead of the decoder."""
    out: dict[int, tuple[float, np.ndarray]] = {}
    wanted_pts = index.pts[wanted]
    tb = float(index.time_base)
    frames = None  # the decoding generator, or None before the first seek
    position = None  # PTS of the last frame decoded
    for i, pts in zip(wanted.tolist(), wanted_pts.tolist()):
        key = int(index.keyframe_pts[max(np.searchsorted(index.keyframe_pts, pts, side="right") - 1, 0)])
        if frames is None or position is None or key > position or pts < position:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            position = None
        for frame in frames:
            if frame.pts is None:
                continue
            position = frame.pts
            if frame.pts >= pts:
                # The nearest frame by the index; if the decoder skipped it, take the next one it produced,
                # reporting that frame's own time.
                out[i] = ((frame.pts - index.start_pts) * tb, convert(frame))
                break
        else:
            raise VideoError(getattr(container, "name", "?"), f"decoder stopped before frame at {pts * tb:.3f} s")
    return out


def _decode_all(container, stream, convert) -> tuple[list[tuple[float, np.ndarray]], np.ndarray]:
    decoded = []
    for frame in container.decode(stream):
        t = frame.time if frame.time is not None else (len(decoded) / float(stream.average_rate or 30))
        decoded.append((float(t), convert(frame)))
    if not decoded:
        raise VideoError(container.name, "no frame could be decoded")
    decoded.sort(key=lambda item: item[0])
    t0 = decoded[0][0]
    decoded = [(t - t0, f) for t, f in decoded]
    return decoded, np.array([t for t, _ in decoded])


def _output_size(h: int, w: int, size) -> tuple[int, int]:
    if not h or not w:
        raise ValueError("video stream has no frame size")
    if size is None:
        return h, w
    if isinstance(size, int):
        scale = size / min(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))
    return int(size[0]), int(size[1])


def _to_rgb(frame, height: int, width: int) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB, resized by FFmpeg's swscale when asked."""
    if frame.height != height or frame.width != width:
        frame = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    return frame.to_ndarray(format="rgb24")
