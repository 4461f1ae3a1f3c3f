"""Looking at videos and datasets: probe, tokenize and scan reports (plain dicts, JSON-ready)."""

from __future__ import annotations

import os
from collections import Counter

from tubelet.data.manifest import load_dataset
from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, DEFAULT_PRUNE_THRESHOLD, DEFAULT_TUBELET
from tubelet.io.decode import decode
from tubelet.io.probe import probe


def probe_report(path: str | os.PathLike) -> dict:
    """Container facts of one file; keys ``duration_s, fps, width, height, frames, codec, has_audio`` and more."""
    return probe(path).to_dict()


def tokenize_report(
    path: str | os.PathLike,
    *,
    tubelet: tuple[int, int, int] = DEFAULT_TUBELET,
    fps: float | None = None,
    prune_threshold: float | None = DEFAULT_PRUNE_THRESHOLD,
    prune_reference: str = DEFAULT_PRUNE_REFERENCE,
    start: float | None = None,
    end: float | None = None,
    size: int | None = None,
) -> dict:
    """Particles of one file: kept count after pruning, total, kept fraction, time span and grid."""
    from tubelet.particles.tokenize import tokenize  # torch: imported only by the commands that need it

    clip = decode(path, start=start, end=end, fps=fps, size=size)
    particles = tokenize(clip, tubelet=tubelet, prune_threshold=prune_threshold, prune_reference=prune_reference)
    total = particles.total
    return {
        "path": str(path),
        "particles": len(particles),
        "total": total,
        "kept_fraction": round(len(particles) / total, 4),
        "t_min": round(float(particles.t.min()), 4),
        "t_max": round(float(particles.t.max()), 4),
        "grid": list(particles.grid),
        "tubelet": list(tubelet),
        "frames": len(clip),
        "frame_size": [int(clip.frames.shape[1]), int(clip.frames.shape[2])],
        "source_fps": round(clip.fps, 4),
        "prune_threshold": prune_threshold or 0.0,
        "prune_reference": prune_reference,
    }


def scan_report(source: str | os.PathLike, *, split: str | None = None, require_labels: bool = False) -> dict:
    """Probe every file of a dataset once: per-class counts, frame rates, sizes, total duration, unreadable files."""
    dataset = load_dataset(source, split=split, require_labels=require_labels)
    infos = dataset.infos
    return {
        "source": str(source),
        "split": split,
        "clips": len(dataset),
        "classes": dataset.class_counts(),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
        "total_duration_s": round(sum(i.duration_s for i in infos), 3),
        "duration_s_range": [min(i.duration_s for i in infos), max(i.duration_s for i in infos)],
        "fps": dict(sorted(Counter(str(round(i.fps, 3)) for i in infos).items())),
        "sizes": dict(Counter(f"{i.width}x{i.height}" for i in infos).most_common()),
        "codecs": dict(Counter(i.codec for i in infos)),
        "with_audio": sum(i.has_audio for i in infos),
    }


def task_table() -> list[dict]:
    """Every registered task: ``name``, ``summary``, ``metrics`` ({name: higher is better}) and its own ``fields``."""
    import dataclasses

    from tubelet.tasks.base import get_task, task_names

    rows = []
    for name in task_names():
        task = get_task(name)
        fields = [f.name for f in dataclasses.fields(task.Config)]
        command = "tubelet finetune --task " + name if task.supervised else "tubelet pretrain"
        rows.append(
            {"name": name, "summary": task.summary, "metrics": dict(task.metrics), "fields": fields, "run": command}
        )
    return rows
