"""Held-out evaluation of a classifier checkpoint: report.json, report.md, confusion_matrix.png.

With a baseline checkpoint (e.g. the model before fine-tuning) the report compares the two, class by class.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tubelet.data.manifest import load_dataset
from tubelet.errors import ConfigError
from tubelet.recipes.common import check_labels, evaluate_classifier, load_model
from tubelet.recipes.fusion import evaluate_fusion, is_fusion_checkpoint, load_fusion
from tubelet.recipes.report import write_report
from tubelet.train.av_dataset import check_audio
from tubelet.train.loop import resolve_device

log = logging.getLogger("tubelet.evaluate")


def evaluate(
    checkpoint: str,
    data: str,
    *,
    out: str,
    split: str | None = "test",
    baseline: str | None = None,
    views: int = 3,
    batch_particles: int = 8192,
    workers: int = 2,
    device: str = "auto",
    sample_fps: float | None = None,
    clip_seconds: float | None = None,
) -> dict:
    """Evaluate `checkpoint` on a labeled split; returns the report dict (also written to `out`).

    Args:
        checkpoint: a fine-tuned checkpoint directory (its preprocessing is used as is).
        data: class folders, a folder with split manifests, or one manifest (then `split` is ignored).
        split: the split to read; ``all`` reads every class folder.
        baseline: another checkpoint with the same labels, reported as "before".
        views: windows of ``clip_seconds`` averaged per video.
        sample_fps, clip_seconds: override the checkpoint's sampling (e.g. to test frame-rate robustness).
    """
    if views < 1:
        raise ConfigError(f"--views: must be at least 1, got {views}")
    device_ = resolve_device(device)
    split = None if Path(data).is_file() or split == "all" else split
    dataset = load_dataset(data, split=split)
    fusion = is_fusion_checkpoint(checkpoint)  # a model over video and audio particles (recipes.fusion)
    if fusion and baseline is not None:
        raise ConfigError("--baseline: not supported for a fusion checkpoint")
    loaded = load_fusion(checkpoint) if fusion else load_model(checkpoint)
    dataset = check_labels(dataset, loaded.labels, checkpoint)
    pre = loaded.preprocessing
    if sample_fps is not None:
        pre = replace(pre, sample_fps=sample_fps)
    if clip_seconds is not None:
        pre = replace(pre, clip_seconds=clip_seconds)

    def score(model) -> dict:
        if fusion:
            check_audio(dataset, loaded.audio)
            fused = replace(loaded, model=model.to(device_), preprocessing=pre)
            return evaluate_fusion(fused, dataset, views=views, budget=batch_particles, device=device_, workers=workers)
        return evaluate_classifier(
            model.to(device_),
            dataset,
            pre,
            loaded.labels,
            views=views,
            budget=batch_particles,
            device=device_,
            workers=workers,
        )

    metrics = score(loaded.model)
    before = None
    if baseline is not None:
        base = load_model(baseline)
        if base.labels != loaded.labels:
            raise ConfigError(f"--baseline {baseline}: its labels {base.labels} differ from {loaded.labels}")
        before = score(base.model)
    details = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "clips": metrics["num_samples"],
        "skipped": len(metrics["skipped"]) + len(dataset.skipped),
        "views": views,
        "sample_fps": pre.sample_fps,
        "clip_seconds": pre.clip_seconds,
        "tubelet": "x".join(map(str, pre.tubelet)),
        "prune_threshold": pre.prune_threshold,
    }
    if fusion:
        details["modalities"] = ",".join(loaded.model.config.modalities)
    if baseline is not None:
        details["baseline"] = str(baseline)
    paths = write_report(
        metrics,
        out,
        title=f"Evaluation of {checkpoint}",
        details=details,
        baseline=before,
        baseline_name=str(baseline) if baseline else "baseline",
    )
    return {**metrics, "details": details, "files": {k: str(v) for k, v in paths.items()}}
