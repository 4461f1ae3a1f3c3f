"""One clip pipeline: windows in seconds over a source -> decoded media -> the particles a model reads.

Three steps, each usable alone:

- `iter_windows`: the (start, end) seconds of the windows over a source; a live stream has no duration, so its
  windows never end.
- `decode_window`: one window of a FILE decoded as the preprocessing says (frames resized, and augmented in
  training; the soundtrack resampled, or silence when allowed). The datasets, ``predict`` and ``explain`` call it.
- `clip_particles`: a PURE function from already-decoded media (frames (T, H, W, 3) uint8 with their timestamps in
  seconds, audio samples, a question's token ids) to particles, with times in seconds from the window's start.
  No file path inside: a camera stream calls it with the frames it holds.

Every clip a model reads, in training, evaluation, prediction and explanation, goes through `clip_particles`, so
they all see the same particles for the same window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from tubelet.data.crop import frame_differences, motion_crop
from tubelet.data.transforms import AudioPreprocessing, Augment, Preprocessing, random_resized_crop
from tubelet.errors import ConfigError, VideoError
from tubelet.io.audio import Audio, decode_audio
from tubelet.io.decode import decode
from tubelet.io.probe import probe
from tubelet.particles.audio import tokenize_audio
from tubelet.particles.structure import Particles
from tubelet.particles.text import tokenize_text
from tubelet.particles.tokenize import tokenize

ClipParticles = Particles | dict[str, Particles]  # a video encoder's clip, or a fusion model's (modality -> part)


# The shortest uncovered tail, as a fraction of the stride, that `iter_windows` covers with one more window.
MIN_TAIL = 0.25


def iter_windows(
    duration_s: float | None, window_s: float, stride_s: float, start: float = 0.0
) -> Iterator[tuple[float, float]]:
    """Windows ``(start, end)`` in seconds of `window_s` every `stride_s` over a source, from `start`.

    A source of known duration is covered to its end: the last window ends flush with it (unless the seconds left
    after the regular windows are under `MIN_TAIL` of a stride: a window that would only repeat the one before it is
    left out), and a source no longer than one window (after `start`) is that one window ``(start, duration_s)``.
    Starts are rounded to the microsecond.

    Args:
        duration_s: the source's duration; None for an unbounded source (a live stream): windows never stop.

    Raises:
        ValueError: a window or stride that is not positive, or `start` after the source's end.
    """
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"windows need a positive length and stride, got {window_s} and {stride_s} s")
    if duration_s is None:
        k = 0
        while True:
            begin = round(start + k * stride_s, 6)
            yield begin, begin + window_s
            k += 1
    if duration_s < start:
        raise ValueError(f"start {start} s is after the source's end ({duration_s} s)")
    span = duration_s - start
    if span <= window_s:
        yield start, duration_s
        return
    count = math.ceil((span - window_s) / stride_s)
    for k in range(count):
        begin = round(start + k * stride_s, 6)
        yield begin, min(begin + window_s, duration_s)
    # The seconds after the last window are seen by one more window, flush with the end, when they are worth one: a
    # tail shorter than `MIN_TAIL` of a stride (the last 4 ms of a clip) would only repeat the window before it.
    tail = duration_s - (start + (count - 1) * stride_s + window_s)
    if tail >= MIN_TAIL * stride_s:
        begin = round(duration_s - window_s, 6)
        yield begin, min(begin + window_s, duration_s)


MAX_WINDOWS = 10_000  # windows per file a command accepts: more is a stride typed wrong, not a wish


def window_count(duration_s: float, window_s: float, stride_s: float) -> int:
    """How many windows `iter_windows` yields over a source of `duration_s`, without listing them."""
    span = max(duration_s, 0.0)
    if span <= window_s:
        return 1
    count = math.ceil((span - window_s) / stride_s)
    tail = span - ((count - 1) * stride_s + window_s)  # the seconds after the regular windows (see `iter_windows`)
    return count + (tail >= MIN_TAIL * stride_s)


def window_and_stride(
    pre: Preprocessing, window_seconds: float | None, stride_seconds: float | None
) -> tuple[float, float]:
    """The (window, stride) seconds a command slides over a long video: the flags', or the checkpoint's clip length
    and a stride of one window.

    Raises:
        ConfigError: a value that is not positive, or a window shorter than one tubelet (`check_window`).
    """
    window = window_seconds or pre.clip_seconds
    stride = stride_seconds or window
    if window <= 0 or stride <= 0:
        raise ConfigError("--window-seconds and --stride-seconds must be positive")
    check_window(window, pre, flag="--window-seconds")
    return window, stride


def check_window(seconds: float, pre: Preprocessing, *, flag: str) -> None:
    """Refuse a window shorter than one tubelet of frames at the checkpoint's sampling rate.

    Raises:
        ConfigError: naming `flag`, the frames the window holds and the tubelet's.
    """
    frames = pre.tubelet[0]
    if pre.sample_fps is not None and seconds * pre.sample_fps < frames:
        raise ConfigError(
            f"{flag} {seconds:g}: holds {seconds * pre.sample_fps:g} frames at {pre.sample_fps:g} fps, fewer than "
            f"one tubelet ({frames} frames); use at least {frames / pre.sample_fps:g} s"
        )


@dataclass
class DecodedWindow:
    """One window of a source, decoded: what `clip_particles` turns into particles.

    Attributes:
        window: (start, end) seconds on the source's axis.
        frames: (T, H, W, 3) uint8, resized as the preprocessing says (and augmented in training); None when
            the video was not read.
        timestamps: (T,) float64 seconds of each frame on the source's axis.
        audio: the window's soundtrack (silence for a file without one, when allowed); None when not read.
    """

    window: tuple[float, float]
    frames: torch.Tensor | None = None
    timestamps: np.ndarray | None = None
    audio: Audio | None = None


def decode_window(
    path: str | os.PathLike,
    window: tuple[float, float],
    *,
    pre: Preprocessing | None = None,
    modalities: Sequence[str] = ("video",),
    audio_pre: AudioPreprocessing | None = None,
    source_size: tuple[int, int] | None = None,
    augment: Augment | None = None,
    rng: np.random.Generator | None = None,
) -> DecodedWindow:
    """Decode the `modalities` of one window of a file (``text`` is no part of a file and is skipped).

    Args:
        window: (start, end) seconds.
        pre: how frames are sampled and resized (needed for ``video``).
        audio_pre: how the soundtrack is resampled, and whether a file without one gives silence (for ``audio``).
        source_size: (H, W) of the file's frames, as probed; None probes the file.
        augment, rng: training augmentation (frame-rate jitter, random resized crop, flip), drawn from `rng`;
            no augmentation without both.

    Raises:
        VideoError: the file (or its audio stream) cannot be decoded.
    """
    decoded = DecodedWindow(window)
    augmenting = augment is not None and rng is not None
    if "video" in modalities:
        fps = pre.sample_fps
        if augmenting and augment.fps_jitter and fps:
            jitter = 1.0 + augment.fps_jitter
            fps = fps * float(np.exp(rng.uniform(-np.log(jitter), np.log(jitter))))
        if source_size is None:
            info = probe(path)
            source_size = (info.height, info.width)
        clip = decode(path, start=window[0], end=window[1], fps=fps, size=pre.output_size(*source_size))
        frames = torch.from_numpy(clip.frames)
        if augmenting:
            frames = random_resized_crop(frames, augment, rng)
            if augment.flip and rng.random() < 0.5:
                frames = frames.flip(2)
        decoded.frames, decoded.timestamps = frames, clip.timestamps
    if "audio" in modalities:
        decoded.audio = read_audio(path, window, audio_pre)
    return decoded


def read_audio(path: str | os.PathLike, window: tuple[float, float], audio_pre: AudioPreprocessing) -> Audio:
    """The soundtrack of `window` (start, end seconds) of a file, resampled to ``audio_pre.sample_rate``.

    A file with no audio stream gives silence (at least one STFT window of it) when ``audio_pre.allow_missing_audio``.

    Raises:
        VideoError: no audio stream (and silence not allowed), or audio that cannot be decoded.
    """
    start, end = window
    try:
        return decode_audio(path, sample_rate=audio_pre.sample_rate, start=start, end=end)
    except VideoError as exc:
        if not (audio_pre.allow_missing_audio and exc.reason == "no audio stream"):
            raise
    samples = np.zeros(max(round((end - start) * audio_pre.sample_rate), audio_pre.n_fft), np.float32)
    return Audio(samples, audio_pre.sample_rate, start, str(path))


def clip_particles(
    window: tuple[float, float],
    *,
    pre: Preprocessing | None = None,
    modalities: Sequence[str] | None = None,
    frames: torch.Tensor | np.ndarray | None = None,
    timestamps: np.ndarray | Sequence[float] | None = None,
    audio: Audio | None = None,
    audio_pre: AudioPreprocessing | None = None,
    question: Sequence[int] | None = None,
) -> ClipParticles:
    """The particles of one window as a model reads them, from media already decoded. Pure: no file is read.

    Every particle's time is in seconds from the window's start, whatever the window's offset in the source (seconds
    since the start of an hour-long recording would lose float32 precision).

    Args:
        window: (start, end) seconds, on the axis of `timestamps` and ``audio.start``.
        pre: how frames become particles (tubelet, normalization, pruning); needed for ``video``.
        modalities: None for a video encoder (plain video `Particles`); else a fusion model's modalities, in its
            order, each of ``video``, ``audio``, ``text``.
        frames: (T, H, W, 3) uint8, already resized.
        timestamps: (T,) seconds of each frame.
        audio: the window's decoded samples; `audio_pre` says how they become log-mel particles.
        question: token ids of the question asked about the window (``text``).

    Returns:
        `Particles` when `modalities` is None; else a dict modality -> `Particles` in the order of `modalities`
        (what `tubelet.particles.modalities.pack_modalities` packs and `ModalClip` flattens).

    Raises:
        ValueError: a modality whose media was not given, or an unknown modality.
    """
    if modalities is None:
        return to_particles(_need(frames, "video", "frames"), _relative(timestamps, window), _need(pre, "video", "pre"))
    parts = {}
    for name in modalities:
        if name == "video":
            parts[name] = clip_particles(window, pre=pre, frames=frames, timestamps=timestamps)
        elif name == "audio":
            parts[name] = _audio_particles(_need(audio, name, "audio"), _need(audio_pre, name, "audio_pre"), window)
        elif name == "text":
            parts[name] = question_particles(_need(question, name, "question"), window)
        else:
            raise ValueError(f"unknown modality {name!r}; expected video, audio or text")
    return parts


def to_particles(frames: torch.Tensor | np.ndarray, timestamps, pre: Preprocessing) -> Particles:
    """Frames (T, H, W, 3) uint8 at their times (T,) seconds -> normalized, pruned particles (of the window's motion
    crop when the preprocessing has one)."""
    frames = torch.as_tensor(frames)
    if pre.crop == "motion":
        frames = motion_crop(frames, pre.crop_side)  # (T, S, S, 3)
    if pre.pixels == "difference":
        frames = frame_differences(frames)
    return tokenize(
        frames,
        timestamps=timestamps,
        tubelet=pre.tubelet,
        prune_threshold=pre.prune_threshold,
        prune_reference=pre.prune_reference,
        mean=pre.mean,
        std=pre.std,
    )


def question_particles(token_ids: Sequence[int], window: tuple[float, float]) -> Particles:
    """The text particles of a question asked about one window (start, end seconds) of its clip.

    The question is about the whole window: its tokens sit at the window's centre, in seconds from the window's
    start (the origin of the clip's video and audio particles). Training, evaluation, ``predict --question`` and
    ``explain --question`` all build them here, so a model is always asked the same way.

    Returns:
        `Particles` of values (L, 1) token ids (`tubelet.particles.text.tokenize_text`).
    """
    start, end = window
    return tokenize_text(token_ids, time=(end - start) / 2)


def _audio_particles(audio: Audio, audio_pre: AudioPreprocessing, window: tuple[float, float]) -> Particles:
    """Normalized log-mel particles of a window's samples, times from the window's start."""
    particles = tokenize_audio(
        audio, patch=audio_pre.patch, n_fft=audio_pre.n_fft, hop=audio_pre.hop, n_mels=audio_pre.n_mels
    )
    # The same origin as the window's video particles: seconds after its start.
    return replace(particles, values=(particles.values - audio_pre.mean) / audio_pre.std, t=particles.t - window[0])


def _relative(timestamps, window: tuple[float, float]) -> np.ndarray:
    return np.asarray(_need(timestamps, "video", "timestamps"), dtype=np.float64) - window[0]


def _need(value, modality: str, name: str):
    if value is None:
        raise ValueError(f"clip_particles: modality {modality} needs {name}")
    return value
