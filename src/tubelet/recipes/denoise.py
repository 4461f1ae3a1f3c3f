"""Video denoising: `tubelet denoise FILE --out OUT.mp4 [--checkpoint C | --method median|nlm --window 5 --sigma 25]`.

setup (the source's frame times; the model when a checkpoint is given) -> loop over overlapping windows of source
frames (scene cuts found in each window; every frame denoised from the frames around it within its own shot) -> the
audio copied through -> a summary. The output keeps the source's timestamps. With ``--checkpoint`` a denoise model
(`tubelet.tasks.restoration.Restorer`) restores each shot's frames by overlapping runs, blended where they overlap;
without one a classical baseline does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tubelet.errors import ConfigError
from tubelet.io.write import VideoWriter
from tubelet.nn.device import resolve_device
from tubelet.progress import bar
from tubelet.video2video.baselines import DENOISERS, cuts, denoise
from tubelet.video2video.windows import finish, frame_times, source_audio, windows

MODEL = "model"  # the method name a checkpoint's denoising is reported under
WINDOW_FRAMES = 64  # source frames a window is responsible for


def denoise_video(
    path: str, *, out: str, method: str = "median", window: int = 5, sigma: float = 25.0,
    checkpoint: str | None = None, crf: int = 18, device: str = "auto",
) -> dict:  # fmt: skip
    """Write `path` denoised at `out`; returns the summary (frames, seconds, cuts, speed).

    With `checkpoint` (a denoise model) the model restores the frames; `method`, `window` and `sigma` are not used."""
    model = None
    if checkpoint is not None:
        from tubelet.tasks.restoration import Restorer

        model, method = Restorer(checkpoint, task="denoise", device=resolve_device(device)), MODEL
    elif method not in DENOISERS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(DENOISERS)}")
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"--window must be an odd number of frames, got {window}")
    began = time.perf_counter()
    source = frame_times(path)
    audio = source_audio(path)
    found: list[int] = []
    writer = None
    written = 0
    # The denoiser's half window (the model's run of frames), and the cut statistics' 4 frames each way.
    context = max((model.frames if model is not None else window) // 2, 4)
    try:
        with bar(total=len(source), desc="denoise", unit="frame") as progress:
            for part in windows(path, source, frames=WINDOW_FRAMES, overlap=context):
                frames, times = part.frames, part.timestamps  # (T, H, W, 3), (T,)
                if writer is None:
                    writer = VideoWriter(out, width=frames.shape[2], height=frames.shape[1], fps=_rate(source),
                                         audio=audio is not None, audio_rate=audio.sample_rate if audio else 16000,
                                         crf=crf)  # fmt: skip
                local_cuts = cuts(frames)
                lo, hi = part.core
                found += [part.first + int(c) for c in local_cuts if lo <= c < hi]
                bounds = np.concatenate([[0], local_cuts, [len(frames)]])  # shots of this window
                shots = {}  # the model's output for each shot of the window, made once
                for i in range(lo, hi):
                    shot = int(np.searchsorted(bounds, i, side="right")) - 1
                    a, b = int(bounds[shot]), int(bounds[shot + 1])
                    if model is not None:
                        if shot not in shots:
                            shots = {shot: model.denoise_sequence(frames[a:b], times[a:b])}
                        frame = shots[shot][i - a]
                    else:
                        frame = denoise(frames[a:b], i - a, method, window=window, sigma=sigma)
                    writer.write(frame, times[i])
                    written += 1
                progress.update(hi - lo)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is None:
        raise ConfigError(f"{path}: no frames to denoise")
    finish(writer, audio)
    seconds = time.perf_counter() - began
    return {
        "file": path, "out": str(Path(out)), "method": method,
        **({"frames": model.frames} if model is not None else {"window": window, "sigma": sigma}),
        "frames_in": len(source), "frames_out": written, "fps": round(_rate(source), 3), "seconds": round(seconds, 3),
        "frames_per_second": round(written / max(seconds, 1e-9), 1),
        "cuts": [round(float(source[c]), 3) for c in sorted(set(found))], "audio": audio is not None,
    }  # fmt: skip


def _rate(times: np.ndarray) -> float:
    """The nominal frame rate of frames at `times` (30 for a single frame)."""
    return (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 30.0
