"""Frame interpolation: `tubelet interpolate FILE --fps F --out OUT.mp4 [--checkpoint C | --method blend|flow|repeat]`.

setup (the source's frame times, the output's times i / F; the model when a checkpoint is given) -> loop over
overlapping windows of source frames (scene cuts found in each window; every output frame built from the two source
frames around its time, never across a cut: the nearer frame there) -> the audio copied through -> a summary. With
``--checkpoint`` an interpolation model (`tubelet.tasks.restoration.Restorer`) builds every frame between a pair at
once, at their real times; without one a classical baseline does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tubelet.errors import ConfigError
from tubelet.io.write import VideoWriter
from tubelet.nn.device import resolve_device
from tubelet.progress import bar
from tubelet.video2video.baselines import INTERPOLATIONS, cuts, interpolate, same_shot
from tubelet.video2video.windows import finish, frame_times, source_audio, windows

MODEL = "model"  # the method name a checkpoint's interpolation is reported under
WINDOW_FRAMES = 64  # source frames a window is responsible for (memory: about this many decoded frames, twice)
CONTEXT_FRAMES = 8  # frames of context each side: cut statistics read 4 each way, a pair reads 1


def output_times(source: np.ndarray, fps: float) -> np.ndarray:
    """(K,) seconds i / fps from 0 up to the source's last frame time (the output covers what the source shows)."""
    count = int(np.floor(float(source[-1]) * fps + 1e-6)) + 1
    return np.arange(count, dtype=np.float64) / fps


def interpolate_video(
    path: str, *, fps: float, out: str, method: str = "blend", checkpoint: str | None = None, crf: int = 18,
    device: str = "auto",
) -> dict:  # fmt: skip
    """Write `path` resampled to `fps` at `out`; returns the summary (frames in/out, seconds, cuts, speed).

    With `checkpoint` (an interpolation model) the model builds the new frames and `method` is not used."""
    if method not in INTERPOLATIONS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(INTERPOLATIONS)}")
    if fps <= 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    model = None
    if checkpoint is not None:
        from tubelet.tasks.restoration import Restorer

        model, method = Restorer(checkpoint, task="interpolation", device=resolve_device(device)), MODEL
    began = time.perf_counter()
    source = frame_times(path)
    targets = output_times(source, fps)
    audio = source_audio(path)
    found: list[int] = []
    written = 0
    writer = None
    try:
        with bar(total=len(targets), desc="interpolate", unit="frame") as progress:
            for window in windows(path, source, frames=WINDOW_FRAMES, overlap=CONTEXT_FRAMES):
                frames, times = window.frames, window.timestamps  # (T, H, W, 3), (T,)
                if writer is None:
                    writer = VideoWriter(out, width=frames.shape[2], height=frames.shape[1], fps=fps,
                                         audio=audio is not None, audio_rate=audio.sample_rate if audio else 16000,
                                         crf=crf)  # fmt: skip
                local_cuts = cuts(frames)
                lo, hi = window.core
                found += [window.first + int(c) for c in local_cuts if lo <= c < hi or (lo == 0 and c == 0)]
                # The output frames whose left source frame is one of this window's core frames.
                end_time = times[hi] if hi < len(times) else np.inf
                mine = targets[(targets >= times[lo] - 1e-6) & (targets < end_time - 1e-6)]
                for left, group in _by_left_frame(times, mine):
                    for target, frame in zip(group, _frames_after(frames, times, local_cuts, left, group, method,
                                                                  model)):  # fmt: skip
                        writer.write(frame, target)
                        written += 1
                    progress.update(len(group))
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is None:
        raise ConfigError(f"{path}: no frames to interpolate")
    finish(writer, audio)
    seconds = time.perf_counter() - began
    return {
        "file": path, "out": str(Path(out)), "method": method, "frames_in": len(source), "frames_out": written,
        "fps": fps, "seconds": round(seconds, 3), "frames_per_second": round(written / max(seconds, 1e-9), 1),
        "cuts": [round(float(source[c]), 3) for c in sorted(set(found))], "audio": audio is not None,
    }  # fmt: skip


def _by_left_frame(times: np.ndarray, targets: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The output times grouped by the source frame at or just before each: [(left index, times)] in order."""
    lefts = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(times) - 1)
    return [(int(left), targets[lefts == left]) for left in np.unique(lefts)]


def _frames_after(
    frames: np.ndarray, times: np.ndarray, shot_cuts: np.ndarray, left: int, targets: np.ndarray, method: str, model
) -> list[np.ndarray]:
    """The output frames at `targets` seconds, all at or after source frame `left` and before the next one."""
    out: dict[int, np.ndarray] = {}
    between = []
    for k, target in enumerate(targets):
        if left == len(times) - 1 or abs(target - times[left]) < 1e-6:
            out[k] = frames[left]
        elif not same_shot(shot_cuts, left, left + 1):  # never blend across a cut: the nearer frame
            t = (target - times[left]) / (times[left + 1] - times[left])
            out[k] = frames[left if t < 0.5 else left + 1]
        else:
            between.append(k)
    if between:
        span = float(times[left + 1] - times[left])
        fractions = [float((targets[k] - times[left]) / span) for k in between]
        if model is not None:  # every frame between the pair in one pass: the context is read once
            made = list(model.interpolate(frames[left], frames[left + 1], span, fractions))
        else:
            made = [interpolate(frames[left], frames[left + 1], f, method) for f in fractions]
        out.update(zip(between, made))
    return [out[k] for k in range(len(targets))]
