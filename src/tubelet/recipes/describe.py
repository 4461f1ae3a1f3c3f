"""Looking at videos and datasets: probe, tokenize and scan reports (plain dicts, JSON-ready)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from tubelet.data.manifest import load_dataset
from tubelet.data.probe_index import create_index, default_index_path
from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, DEFAULT_PRUNE_THRESHOLD, DEFAULT_TUBELET
from tubelet.io.decode import decode
from tubelet.io.probe import probe
from tubelet.outputs import writable_dir


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


def scan_report(
    source: str | os.PathLike,
    *,
    split: str | None = None,
    require_labels: bool = False,
    index: bool | str | os.PathLike = False,
    workers: int = 4,
) -> dict:
    """Probe every file of a dataset once: per-class counts, frame rates, sizes, total duration, unreadable files.

    Args:
        index: write or refresh a probe index (`tubelet.data.probe_index`) at this path, or beside the source
            with True; only new or changed files are probed. False uses an existing index at the default path.
        workers: threads probing files in parallel.

    Returns:
        The report, with ``index`` (its path, or None), ``probed`` and ``reused`` (distinct files opened, and
        taken from the index) next to the dataset's facts.
    """
    if index is True:
        index = default_index_path(source)
    if index:
        writable_dir(Path(index).parent, "--index")
        create_index(index)
    dataset = load_dataset(source, split=split, require_labels=require_labels, index=index or None, workers=workers)
    # (file's info, rows reading it): a million windows over a thousand files are counted from a thousand objects
    files = dataset.infos.per_file() if hasattr(dataset.infos, "per_file") else [(i, 1) for i in dataset.infos]

    def count(key) -> Counter:
        counts = Counter()
        for info, n in files:
            counts[key(info)] += n
        return counts

    return {
        "source": str(source),
        "split": split,
        "clips": len(dataset),
        "classes": dataset.class_counts(),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
        "total_duration_s": round(sum(i.duration_s * n for i, n in files), 3),
        "duration_s_range": [min(i.duration_s for i, _ in files), max(i.duration_s for i, _ in files)],
        "fps": dict(sorted(count(lambda i: str(round(i.fps, 3))).items())),
        "sizes": dict(count(lambda i: f"{i.width}x{i.height}").most_common()),
        "codecs": dict(count(lambda i: i.codec)),
        "with_audio": sum(n for i, n in files if i.has_audio),
        "index": str(index) if index else None,
        "probed": dataset.probed,
        "reused": dataset.reused,
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
