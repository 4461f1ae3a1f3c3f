"""Container facts of a video file, read without decoding pixels."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from tubelet.errors import VideoError
from tubelet.io.container import _AV_ERRORS, _reason, frame_index, frame_rate, open_container, video_stream


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reads from a container.

    Attributes:
        path: the file.
        duration_s: seconds of video from the first frame to the end of the last.
        fps: average frame rate (frames / duration); variable-frame-rate files report their average.
        width, height: frame size in pixels.
        frames: number of video frames (counted from packets when the container has no count).
        codec: video codec name, e.g. ``h264``.
        has_audio: whether the file carries an audio stream.
        audio_sample_rate: its sample rate in Hz, or None.
        start_offset_s: seconds of the first frame's PTS (kept; all other times are relative to it).
        container: container format name, e.g. ``mov,mp4,m4a,3gp,3g2,mj2``.
    """

    path: str
    duration_s: float
    fps: float
    width: int
    height: int
    frames: int
    codec: str
    has_audio: bool
    audio_sample_rate: int | None
    start_offset_s: float
    container: str

    def to_dict(self) -> dict:
        return asdict(self)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read duration, frame rate, size, frame count, codec and audio facts of a video file.

    Raises:
        VideoError: the file cannot be opened or has no readable video stream.
    """
    with open_container(path) as container:
        stream = video_stream(container, path)
        try:
            ctx = stream.codec_context
            width, height, codec = ctx.width, ctx.height, ctx.name
            audio = container.streams.audio[0] if container.streams.audio else None
            index = frame_index(container, stream, path)
        except VideoError:
            raise
        except _AV_ERRORS as exc:
            raise VideoError(path, f"cannot probe ({_reason(exc)})") from exc
        if not width or not height:
            raise VideoError(path, "video stream has no frame size (corrupt header?)")
        if index is not None:
            frames = len(index.pts)
            duration = float(index.times[-1] + index.frame_duration[-1])
            start_offset = index.start_offset
        else:
            frames = stream.frames
            duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
            start_offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        fps = frame_rate(index, stream, frames, duration)
        return VideoInfo(
            path=str(path),
            duration_s=round(duration, 6),
            fps=round(fps, 4),
            width=int(width),
            height=int(height),
            frames=int(frames),
            codec=str(codec),
            has_audio=audio is not None,
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            start_offset_s=round(start_offset, 6),
            container=container.format.name,
        )
