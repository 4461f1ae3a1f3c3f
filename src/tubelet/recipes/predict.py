"""Predictions on new videos: a label per file and, for long videos, one per window in seconds."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tubelet.data.manifest import VIDEO_EXTENSIONS, Sample, VideoDataset, try_probe
from tubelet.data.transforms import window_starts
from tubelet.errors import ConfigError, DataError
from tubelet.recipes.common import load_model
from tubelet.train.dataset import ClipDataset
from tubelet.train.loop import mean_over_videos, predict_items, resolve_device

log = logging.getLogger("tubelet.predict")


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, and every video file under each directory (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise DataError(f"{path}: no video files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def predict(
    checkpoint: str,
    inputs: list[str],
    *,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    topk: int = 5,
    batch_particles: int = 8192,
    workers: int = 0,
    device: str = "auto",
    plot_dir: str | None = None,
) -> Iterator[dict]:
    """Yield one result per input file: ``path, label, score, topk`` and ``windows`` for long videos.

    Args:
        checkpoint: a classifier checkpoint directory.
        inputs: files and/or directories.
        window_seconds: window length; default the checkpoint's ``clip_seconds``.
        stride_seconds: step between windows; default the window length.
        plot_dir: also write ``<name>_timeline.png`` per file there.

    Unreadable files yield ``{"path": ..., "error": ...}`` and the rest go on.
    """
    loaded = load_model(checkpoint)
    if not loaded.labels:
        raise ConfigError(f"{checkpoint}: the checkpoint has no labels.json (not a classifier)")
    pre = loaded.preprocessing
    window = window_seconds or pre.clip_seconds
    stride = stride_seconds or window
    if window <= 0 or stride <= 0:
        raise ConfigError("--window-seconds and --stride-seconds must be positive")
    device_ = resolve_device(device)
    model = loaded.model.to(device_)
    labels = loaded.labels

    samples, infos, failed = [], [], []
    for path in expand_inputs(inputs):
        info, reason = try_probe(path)
        if info is None:
            failed.append({"path": str(path), "error": reason})
        else:
            samples.append(Sample(path=path))
            infos.append(info)
    yield from failed
    if not samples:
        return
    data = VideoDataset(samples=samples, infos=infos, labels=[])
    windows = [
        (v, s, min(s + window, info.duration_s))
        for v, info in enumerate(infos)
        for s in window_starts(info.duration_s, window, stride)
    ]
    dataset = ClipDataset(data, _with_window(pre, window), windows=windows)
    probs, bad = predict_items(model, dataset, budget=batch_particles, device=device_, workers=workers)
    bad_paths = {p: r for p, r in bad}
    per_video = mean_over_videos(probs, [w[0] for w in windows], len(samples))
    k = min(topk, len(labels))
    for v, sample in enumerate(samples):
        if np.isnan(per_video[v]).any():
            yield {"path": str(sample.path), "error": bad_paths.get(str(sample.path), "no window could be decoded")}
            continue
        result = _ranked(per_video[v], labels, k)
        result = {"path": str(sample.path), **result, "duration_s": infos[v].duration_s}
        rows = [(w, probs[i]) for i, w in enumerate(windows) if w[0] == v and not np.isnan(probs[i]).any()]
        if len(rows) > 1:
            result["windows"] = [
                {"start": round(w[1], 3), "end": round(w[2], 3), **_ranked(p, labels, 1, with_topk=False)}
                for w, p in rows
            ]
        if plot_dir is not None:
            result["timeline"] = str(_plot_timeline(plot_dir, sample.path, rows, labels))
        yield result


def _with_window(pre, window: float):
    from dataclasses import replace

    return replace(pre, clip_seconds=window)


def _ranked(p: np.ndarray, labels: list[str], k: int, *, with_topk: bool = True) -> dict:
    order = np.argsort(-p)[:k]
    out = {"label": labels[order[0]], "score": round(float(p[order[0]]), 4)}
    if with_topk:
        out["topk"] = [{"label": labels[i], "score": round(float(p[i]), 4)} for i in order]
    return out


def _plot_timeline(plot_dir: str, path: Path, rows, labels: list[str]) -> Path:
    """Class probabilities of every window over the video's seconds."""
    from matplotlib.figure import Figure

    os.makedirs(plot_dir, exist_ok=True)
    fig = Figure(figsize=(9, 3), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    centres = [(w[1] + w[2]) / 2 for w, _ in rows]
    probs = np.stack([p for _, p in rows]) if rows else np.zeros((0, len(labels)))
    for c, label in enumerate(labels):
        ax.plot(centres, probs[:, c], marker="o", label=label)
    ax.set_xlabel("seconds (window centre)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(path.name)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a curve
    target = Path(plot_dir) / f"{path.stem}_timeline.png"
    fig.savefig(target)
    return target
