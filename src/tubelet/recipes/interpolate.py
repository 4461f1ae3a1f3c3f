"""Frame interpolation: `tubelet interpolate FILE --fps F --out OUT.mp4 --method blend|flow|repeat`.

setup (the source's frame times, the output's times i / F) -> loop over overlapping windows of source frames (scene
cuts found in each window; every output frame built from the two source frames around its time, never across a
cut) -> the audio copied through -> a summary. Only the classical baselines run today: the learned model of
issue 18 is not built yet.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tubelet.errors import ConfigError
from tubelet.io.write import VideoWriter
from tubelet.progress import bar
from tubelet.video2video.baselines import INTERPOLATIONS, cuts, interpolate, same_shot
from tubelet.video2video.windows import finish, frame_times, source_audio, windows

NO_MODEL = "the learned interpolation model is not available yet (issue 18); use --method repeat|blend|flow"
WINDOW_FRAMES = 64  # source frames a window is responsible for (memory: about this many decoded frames, twice)
CONTEXT_FRAMES = 8  # frames of context each side: cut statistics read 4 each way, a pair reads 1


def output_times(source: np.ndarray, fps: float) -> np.ndarray:
    """(K,) seconds i / fps from 0 up to the source's last frame time (the output covers what the source shows)."""
    count = int(np.floor(float(source[-1]) * fps + 1e-6)) + 1
    return np.arange(count, dtype=np.float64) / fps


def interpolate_video(
    path: str, *, fps: float, out: str, method: str = "blend", checkpoint: str | None = None, crf: int = 18
) -> dict:
    """Write `path` resampled to `fps` at `out`; returns the summary (frames in/out, seconds, cuts, speed)."""
    if checkpoint is not None:
        raise ConfigError(f"--checkpoint {checkpoint}: {NO_MODEL}")
    if method not in INTERPOLATIONS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(INTERPOLATIONS)}")
    if fps <= 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
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
                for target in mine:
                    writer.write(_frame_at(frames, times, local_cuts, target, method), target)
                    written += 1
                progress.update(len(mine))
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


def _frame_at(frames: np.ndarray, times: np.ndarray, shot_cuts: np.ndarray, target: float, method: str) -> np.ndarray:
    """The output frame at `target` seconds from the window's frames (T, H, W, 3) at `times` (T,)."""
    left = int(np.clip(np.searchsorted(times, target + 1e-6, side="right") - 1, 0, len(times) - 1))
    if left == len(times) - 1 or abs(target - times[left]) < 1e-6:
        return frames[left]
    right = left + 1
    t = float((target - times[left]) / (times[right] - times[left]))
    if not same_shot(shot_cuts, left, right):
        return frames[left if t < 0.5 else right]  # never blend across a cut: the nearer frame
    return interpolate(frames[left], frames[right], t, method)
