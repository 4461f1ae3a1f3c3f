"""Writers: encoded video (libx264 through PyAV), GIF, and a PNG contact sheet of frames with their times."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Video codec per container extension; every one of them ships in PyAV's wheels.
_VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
_AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "mp3"}
# 1/90000 s is MPEG's clock: fine enough that variable-frame-rate times survive the round trip.
_TIME_BASE = Fraction(1, 90000)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: float | None = None,
    timestamps: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    crf: int = 23,
    gop: int | None = None,
    preset: str = "veryfast",
    codec: str | None = None,
) -> Path:
    """Encode frames (and optionally a mono audio track) into a video file.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        fps: constant frame rate; frame i is shown at ``i / fps`` seconds.
        timestamps: (T,) seconds per frame instead of `fps`: variable frame rate, or a first PTS other than 0.
        audio: (N,) float32 mono samples in [-1, 1] starting at the first frame's time.
        crf, gop, preset: libx264 quality, keyframe interval (frames) and speed.
        codec: override the codec picked from the extension (.mp4/.mkv/.mov: libx264, .webm: VP9, .avi: MPEG-4).

    Returns:
        The path written.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if (fps is None) == (timestamps is None):
        raise ValueError("give exactly one of fps or timestamps")
    if timestamps is None:
        timestamps = np.arange(len(frames)) / fps
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if len(timestamps) != len(frames) or np.any(np.diff(timestamps) <= 0):
        raise ValueError("timestamps must be one per frame and strictly increasing")
    if path.suffix.lower() == ".avi":
        _check_avi(path, timestamps, frames.shape[2], frames.shape[1], audio)
    nominal = fps or (len(frames) - 1) / max(timestamps[-1] - timestamps[0], 1e-6)
    with VideoWriter(path, width=frames.shape[2], height=frames.shape[1], fps=nominal, audio=audio is not None,
                     audio_rate=audio_rate, crf=crf, gop=gop, preset=preset, codec=codec) as writer:  # fmt: skip
        for frame_rgb, t in zip(frames, timestamps):
            writer.write(frame_rgb, t)
        if audio is not None:
            writer.write_audio(np.asarray(audio, dtype=np.float32), timestamps[0])
    return path


class VideoWriter:
    """An encoder that takes frames one at a time (bounded memory for long outputs); `write_video` writes through it.

    Use as a context manager: ``writer.write(frame, seconds)`` per frame in time order, then optionally
    ``writer.write_audio(samples, start)`` once; leaving the block flushes the encoders and closes the file.
    """

    def __init__(
        self, path: str | os.PathLike, *, width: int, height: int, fps: float, audio: bool = False,
        audio_rate: int = 16000, crf: int = 23, gop: int | None = None, preset: str = "veryfast",
        codec: str | None = None,
    ):  # fmt: skip
        path = Path(path)
        ext = path.suffix.lower()
        codec = codec or _VIDEO_CODECS.get(ext)
        if codec is None:
            raise ValueError(f"{path}: unknown video container extension {ext!r}; use one of {sorted(_VIDEO_CODECS)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = Fraction(fps).limit_denominator(1001)
        # AVI is constant-rate by design (and MPEG-4 part 2 caps the clock at 65535), so it counts frames.
        self.time_base = 1 / rate if ext == ".avi" else _TIME_BASE
        self.path, self.audio_rate = path, audio_rate
        self.container = container = av.open(str(path), mode="w")
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        # 4:2:0 needs even sizes; odd ones keep full chroma so no pixel is cropped.
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        options = {}
        if codec == "libx264":
            options = {"crf": str(crf), "preset": preset}
        elif codec == "libvpx-vp9":
            options = {"crf": str(crf + 10), "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        stream.options = options
        if gop:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                stream.options = {**options, "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        self.stream, self.astream = stream, None
        if audio:
            acodec = _AUDIO_CODECS.get(ext)
            if acodec is None:
                container.close()
                raise ValueError(f"{path}: no audio codec for {ext!r}")
            self.astream = container.add_stream(acodec, rate=audio_rate, layout="mono")

    def write(self, frame_rgb: np.ndarray, seconds: float) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at `seconds`."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        frame.pts = math.floor(seconds / self.time_base + 0.5)  # half up: round() sends 22.5 and 23.5 both to even
        frame.time_base = self.time_base
        self.container.mux(self.stream.encode(frame))

    def write_audio(self, samples: np.ndarray, start: float) -> None:
        """Encode (N,) float32 mono samples in [-1, 1] from `start` seconds (needs ``audio=True``)."""
        if self.astream is None:
            raise ValueError(f"{self.path}: opened without audio=True")
        self._flush_video()
        _encode_audio(self.container, self.astream, np.asarray(samples, dtype=np.float32), self.audio_rate, start)

    def discard(self) -> None:
        """Close without finishing and delete the file: a failed run leaves no half-written video behind."""
        self.container.close()
        self.path.unlink(missing_ok=True)

    def _flush_video(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode(None))
            self.stream = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self._flush_video()
        finally:
            self.container.close()


def _check_avi(path: Path, timestamps: np.ndarray, width: int, height: int, audio) -> None:
    """AVI stores frame numbers, not times: refuse what it cannot represent instead of writing wrong times."""
    steps = np.diff(timestamps)
    if timestamps[0] != 0 or (len(steps) and np.ptp(steps) > 1e-6 * steps.mean()):
        raise ValueError(f"{path}: AVI holds constant-rate video starting at 0 s; use .mp4 or .mkv for other timing")
    if audio is not None:
        raise ValueError(f"{path}: writing audio into AVI shifts its frames (encoder delay); use .mp4 or .mkv")
    if width % 2 or height % 2:
        raise ValueError(f"{path}: AVI (MPEG-4 part 2) needs even frame sizes, got {width}x{height}")


def _encode_audio(container, stream, samples: np.ndarray, rate: int, start: float) -> None:
    ctx = stream.codec_context
    chunk = ctx.frame_size or 1024
    layout_fmt = ctx.format.name  # e.g. fltp for AAC
    offset = round(start * rate)
    for i in range(0, len(samples), chunk):
        piece = samples[i : i + chunk]
        if len(piece) < chunk and ctx.frame_size:
            piece = np.pad(piece, (0, chunk - len(piece)))
        data = piece.reshape(1, -1)
        if not layout_fmt.endswith("p"):
            data = data.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data.astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = offset + i
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_gif(path: str | os.PathLike, frames: np.ndarray, *, fps: float | None = None, timestamps=None) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF (Pillow's encoder; frame delays from fps or timestamps)."""
    path = Path(path)
    frames = np.asarray(frames)
    if timestamps is not None and len(timestamps) > 1:
        delays = np.diff(np.asarray(timestamps, dtype=np.float64))
        delays = np.append(delays, np.median(delays))
    else:
        delays = np.full(len(frames), 1.0 / (fps or 10))
    # GIF delays are in hundredths of a second; browsers clamp below 2.
    durations = [max(20, int(round(d * 100)) * 10) for d in delays]
    images = [Image.fromarray(f) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)
    return path


def write_contact_sheet(
    path: str | os.PathLike,
    frames: np.ndarray,
    timestamps: np.ndarray,
    *,
    columns: int = 8,
    titles: list[str] | None = None,
    max_width: int = 1600,
) -> Path:
    """A PNG grid of frames, each captioned with its time in seconds (and an optional title).

    Args:
        frames: (T, H, W, 3) uint8.
        timestamps: (T,) seconds.
        titles: optional extra caption per frame.
    """
    path = Path(path)
    frames = np.asarray(frames)
    count, height, width = frames.shape[:3]
    columns = max(1, min(columns, count))
    scale = min(1.0, max_width / (columns * width))
    cell_w, cell_h = max(1, int(width * scale)), max(1, int(height * scale))
    caption = 14
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * (cell_h + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (frame, t) in enumerate(zip(frames, timestamps)):
        r, c = divmod(i, columns)
        x0, y0 = c * cell_w, r * (cell_h + caption)
        sheet.paste(Image.fromarray(frame).resize((cell_w, cell_h)), (x0, y0))
        text = f"{t:.3f}s" + (f" {titles[i]}" if titles else "")
        draw.text((x0 + 2, y0 + cell_h + 1), text, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
