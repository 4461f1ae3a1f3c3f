"""Why did the classifier decide? Scores per particle (where, when) for one window of a video, and pictures of them.

Read top to bottom: load the checkpoint -> decode the window exactly as training did -> particles -> predict ->
attribute (one of `tubelet.explain.METHODS`) -> files: ``particles.csv`` (every particle with its seconds, cell and
score), ``heatmap.mp4/.gif/.png``, ``timeline.png``, ``report.html`` (self-contained) and ``explanation.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch

from tubelet.data.transforms import clip_window
from tubelet.errors import ConfigError
from tubelet.explain.checks import particle_boxes
from tubelet.explain.methods import METHODS, Explanation, class_probs, explain_particles
from tubelet.explain.render import plot_timeline, write_heatmap_video, write_html
from tubelet.io import decode, probe
from tubelet.recipes.common import LoadedModel, load_model
from tubelet.train.dataset import to_particles
from tubelet.train.loop import resolve_device

log = logging.getLogger("tubelet.explain")

METHOD_NOTES = {
    "occlusion": "Occlusion: each score is how much the target's probability falls when that particle (or its "
    "space-time window) is removed from the clip.",
    "ig": "Integrated gradients on the particle embeddings from an all-mean-colour clip; scores sum to the change "
    "of the target's logit.",
    "gradxinput": "Gradient x input on the particle embeddings (target logit): a fast, local estimate.",
    "rollout": "Attention rollout across layers: how much each particle flows into the pooled feature. It is the "
    "same for every target class.",
}


def explain(
    checkpoint: str | LoadedModel,
    path: str | Path,
    *,
    out: str | Path,
    method: str = "occlusion",
    target: str | None = None,
    start: float | None = None,
    seconds: float | None = None,
    topk: int = 10,
    window: tuple[int, int, int] = (1, 1, 1),
    steps: int = 32,
    device: str = "auto",
    pictures: bool = True,
) -> dict:
    """Explain the classifier's decision on one window of `path`; returns the ``explanation.json`` content.

    Args:
        checkpoint: a classifier checkpoint directory (or an already loaded model).
        method: occlusion, ig, gradxinput or rollout.
        target: class name to explain; default the predicted class.
        start, seconds: the window in the video; default the checkpoint's ``clip_seconds``, centred.
        window: occlusion window in tubelets (time, rows, columns).
        steps: integrated-gradients steps.
        pictures: write the heatmap video, timeline and HTML (False: scores and JSON only).
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    if not loaded.labels or loaded.preprocessing is None:
        raise ConfigError(f"{loaded.source}: not a classifier checkpoint (no labels.json)")
    if method not in METHODS:
        raise ConfigError(f"method: expected {' | '.join(METHODS)}, got {method!r}")
    labels, pre = loaded.labels, loaded.preprocessing
    model = loaded.model.to(resolve_device(device)).eval()

    clip = decode_window(path, pre, start=start, seconds=seconds)
    particles = to_particles(torch.from_numpy(clip["frames"]), clip["times"] - clip["start"], pre)
    probs = class_probs(model, [particles])[0]
    index = int(probs.argmax()) if target is None else _label_index(target, labels)
    explanation = explain_particles(model, particles, index, method, window=tuple(window), steps=steps)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = (clip["source_size"][0] / clip["frames"].shape[1], clip["source_size"][1] / clip["frames"].shape[2])
    rows = particle_rows(explanation, scale, clip["start"])
    write_particles_csv(out / "particles.csv", rows)
    order = np.argsort([-r["score"] for r in rows], kind="stable")[:topk]
    ranked = np.argsort(-probs.numpy())[: min(5, len(labels))]
    result = {
        "path": str(path),
        "method": method,
        "target": labels[index],
        "target_score": round(float(probs[index]), 4),
        "prediction": {"label": labels[int(probs.argmax())], "score": round(float(probs.max()), 4)},
        "topk_classes": [{"label": labels[i], "score": round(float(probs[i]), 4)} for i in ranked],
        "window": {"start": round(clip["start"], 3), "end": round(clip["end"], 3)},
        "num_particles": len(particles),
        "top_particles": [rows[i] for i in order],
        "method_note": METHOD_NOTES[method],
        "meta": explanation.meta,
        "files": {"particles": str(out / "particles.csv")},
    }
    if pictures:
        video_times = clip["times"]
        # The overlay goes on the source-resolution frames at the same times (the model saw them resized).
        source = decode(path, start=clip["start"], end=clip["end"], fps=pre.sample_fps)
        shown = source.frames if len(source.frames) == len(clip["frames"]) else clip["frames"]
        result["files"].update(write_heatmap_video(out, shown, video_times, explanation))
        timeline = plot_timeline(
            out / "timeline.png", explanation, video_times, label=labels[index], top=result["top_particles"]
        )
        result["files"]["timeline"] = str(timeline)
        result["files"]["html"] = str(write_html(out / "report.html", result))
    (out / "explanation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def decode_window(path: str | Path, pre, *, start: float | None = None, seconds: float | None = None) -> dict:
    """Frames of one window, decoded and resized as the checkpoint's preprocessing says.

    Returns:
        ``frames`` (T, H, W, 3) uint8, ``times`` (T,) seconds in the video, ``start``/``end`` of the window and
        ``source_size`` (H, W) of the video's own frames.
    """
    info = probe(path)
    length = seconds or pre.clip_seconds
    if start is None:
        begin, end = clip_window(info.duration_s, length, None)
    else:
        if start < 0 or start >= info.duration_s:
            raise ConfigError(f"start: {start} s is outside {path} (duration {info.duration_s:.2f} s)")
        begin, end = start, min(start + length, info.duration_s)
    size = pre.output_size(info.height, info.width)
    clip = decode(path, start=begin, end=end, fps=pre.sample_fps, size=size)
    return {
        "frames": clip.frames,
        "times": np.asarray(clip.timestamps, dtype=np.float64),
        "start": float(begin),
        "end": float(end),
        "source_size": (info.height, info.width),
    }


def particle_rows(explanation: Explanation, scale: tuple[float, float], offset: float) -> list[dict]:
    """One dict per particle: seconds in the video, tubelet index, grid cell, its pixels in the source, score."""
    particles = explanation.particles
    boxes = particle_boxes(particles, scale).round().astype(int)
    return [
        {
            "t": round(float(particles.t[i]) + offset, 4),
            "ti": int(particles.ti[i]),
            "row": int(particles.y[i]),
            "col": int(particles.x[i]),
            "span": int(particles.span[i]),
            "y_px": [int(boxes[i, 1]), int(boxes[i, 3])],
            "x_px": [int(boxes[i, 0]), int(boxes[i, 2])],
            "score": float(explanation.scores[i]),
        }
        for i in range(len(particles))
    ]


def write_particles_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t", "ti", "row", "col", "span", "y0", "y1", "x0", "x1", "score"])
        for r in rows:
            writer.writerow([r["t"], r["ti"], r["row"], r["col"], r["span"], *r["y_px"], *r["x_px"], r["score"]])
    return path


def _label_index(target: str, labels: list[str]) -> int:
    if target not in labels:
        raise ConfigError(f"target: {target!r} is not a class of this checkpoint ({', '.join(labels)})")
    return labels.index(target)
