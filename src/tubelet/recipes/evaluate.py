"""Held-out evaluation of a trained checkpoint (``tubelet evaluate``): ``report.json`` and ``report.md``.

`evaluate` loads the checkpoint (`tubelet.models.load`, any kind), finds the task it was trained for
(`tubelet.tasks.base.task_of`) and scores it the way its training run scored the test split, so re-evaluating the
same checkpoint on the same split with the same views gives the same numbers. The task says what the evaluation
data is (`Task.evaluation_data`: labeled clips, (clip, caption) pairs, questions...), how a model is scored
(`Task.evaluate`) and what the report holds (`Task.evaluation_report`):

- a classifier (a video encoder, or a fusion model over video and audio): accuracy, macro F1, per class and the
  confusion matrix, also drawn to ``confusion_matrix.png``; with a baseline checkpoint (e.g. the model before
  fine-tuning) the report compares the two, class by class. Class folders without the split are evaluated whole.
- a retrieval checkpoint: recall@1/5/10 text->video and video->text, and chance, over the (clip, caption) pairs of
  the split's manifest (its ``caption`` column).
- a VQA checkpoint: answer accuracy, macro F1, per question type, over ``DATA/qa_{split}.csv`` (or ``.jsonl``); a
  baseline (e.g. the run's question-only arm) is a second row of the table, as in training's report.
- any other registered task: its metrics, in its report.

Every report carries a ``details`` block: what was evaluated (``task``), on what, and how it was sampled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models import load
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.tasks.base import Reads, task_of

log = logging.getLogger("tubelet.evaluate")


@dataclass(frozen=True)
class Sampling:
    """The checkpoint's sampling overrides given on the command line (None: the checkpoint's own)."""

    sample_fps: float | None = None
    clip_seconds: float | None = None

    def apply(self, pre: Preprocessing) -> Preprocessing:
        if self.sample_fps is not None:
            pre = replace(pre, sample_fps=self.sample_fps)
        if self.clip_seconds is not None:
            pre = replace(pre, clip_seconds=self.clip_seconds)
        return pre


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
    """Evaluate `checkpoint` on a split of `data`; returns the report dict (also written to `out`).

    Args:
        checkpoint: a trained checkpoint directory of any task (its preprocessing is used as is).
        data: class folders, a folder with split manifests, or one manifest (then `split` is ignored). A retrieval
            checkpoint needs a manifest with a ``caption`` column, a VQA one ``qa_{split}.csv`` (or a question
            manifest given as `data`).
        split: the split to read; ``all`` reads every class folder (classifiers only).
        baseline: another checkpoint of the same task, reported beside this one (classifier or VQA).
        views: windows of ``clip_seconds`` per item; the task's predictions are averaged over them.
        sample_fps, clip_seconds: override the checkpoint's sampling (e.g. to test frame-rate robustness).

    Returns:
        The report (``report.json``'s content) and ``files``: the paths written.

    Raises:
        ConfigError: a flag that means nothing for this task (named), or a bad value.
        DataError: a missing split, manifest, caption or question field (one line naming the file and field).
    """
    if views < 1:
        raise ConfigError(f"--views: must be at least 1, got {views}")
    writable_dir(out, "--out")  # before the model runs, not after
    whole = Path(data).is_file()  # one manifest: its rows are the set, whatever the split
    loaded = load(checkpoint)
    task = task_of(loaded)
    task.check_evaluation(split=split, whole=whole, baseline=baseline, loaded=loaded)
    split = None if whole else split
    models = {"model": loaded}
    if baseline is not None:
        models["baseline"] = load(baseline)
        task.check_baseline(loaded, models["baseline"], baseline)
    sampling = Sampling(sample_fps, clip_seconds)
    dev = resolve_device(device)
    scores, evaluated = {}, None
    for name, model in models.items():
        evaluated = task.evaluation_data(data, split, model)
        scores[name] = task.evaluate(
            model.model.to(dev), evaluated, sampling.apply(model.preprocessing), labels=model.labels,
            reads=Reads.of(model), views=views, budget=batch_particles, device=dev, workers=workers,
        )  # fmt: skip
    pre = sampling.apply(loaded.preprocessing)
    details = {
        "task": task.name,
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "views": views,
        "sample_fps": pre.sample_fps,
        "clip_seconds": pre.clip_seconds,
        "tubelet": "x".join(map(str, pre.tubelet)),
        "prune_threshold": pre.prune_threshold,
        "prune_reference": pre.prune_reference,
    }
    if baseline is not None:
        details["baseline"] = str(baseline)
    return task.evaluation_report(scores, models, evaluated, details=details, out=Path(out))
