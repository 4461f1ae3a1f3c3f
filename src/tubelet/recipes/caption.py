"""``tubelet caption``: one caption per window of a video, with its seconds, from a caption checkpoint.

    tubelet caption --checkpoint RUN/best FILE [--window-seconds S --stride-seconds S]
                    [--decode greedy|beam|sample --beam N --temperature T --top-k K --max-tokens N] [--json]

Windows default to the checkpoint's ``clip_seconds``, one every window length; each is read as training read its
events (`tubelet.tasks.caption.caption_windows`) and decoded as asked (`tubelet.tasks.generate`).
"""

from __future__ import annotations

from dataclasses import replace

from tubelet.data.pipeline import MAX_WINDOWS, iter_windows, window_and_stride, window_count
from tubelet.errors import ConfigError, DataError
from tubelet.nn.device import resolve_device
from tubelet.tasks.caption import caption_windows, file_data, load_captioner
from tubelet.tasks.generate import Decoding


def caption_video(
    checkpoint: str,
    file: str,
    *,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    decoding: Decoding | None = None,
    batch_particles: int = 8192,
    workers: int = 0,
    device: str = "auto",
) -> dict:
    """Captions of `file`'s windows.

    Returns:
        ``path``, ``duration_s``, ``windows`` [{``start``, ``end``, ``caption``, ``score``}] (score: the caption's
        mean token log-probability).

    Raises:
        ConfigError: not a captioner checkpoint, bad window lengths. DataError: the file cannot be read.
    """
    loaded = load_captioner(checkpoint)
    if loaded.task == "dialogue":
        raise ConfigError(f"--checkpoint {checkpoint}: a dialogue model answers questions: tubelet chat")
    if not loaded.model.modalities:
        raise ConfigError(f"--checkpoint {checkpoint}: a text-only model (question-only arm) reads no video")
    pre = loaded.preprocessing
    window, stride = window_and_stride(pre, window_seconds, stride_seconds)
    data = file_data(file)
    duration = data.infos[0].duration_s
    if window_count(duration, window, stride) > MAX_WINDOWS:
        raise ConfigError(f"--stride-seconds {stride:g}: {file} would be cut into more than {MAX_WINDOWS} windows")
    windows = [(0, start, end) for start, end in iter_windows(duration, window, stride)]
    dev = resolve_device(device)
    out = caption_windows(
        loaded.model.to(dev), data, windows, replace(pre, clip_seconds=window), loaded.tokenizer, audio=loaded.audio,
        decoding=decoding or Decoding(), budget=batch_particles, device=dev, workers=workers,
    )  # fmt: skip
    if out["failed"]:
        raise DataError(out["failed"][0][1])
    rows = [
        {"start": round(start, 3), "end": round(end, 3), "caption": caption, "score": round(score, 4)}
        for (_, start, end), caption, score in zip(windows, out["captions"], out["scores"])
    ]
    return {"path": str(file), "duration_s": round(duration, 3), "windows": rows}
