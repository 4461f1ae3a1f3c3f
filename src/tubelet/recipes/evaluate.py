"""Held-out evaluation of a trained checkpoint (``tubelet evaluate``): ``report.json`` and ``report.md``.

`evaluate` reads the checkpoint's kind from its ``config.json`` and scores it the way its training run scored
the test split, so re-evaluating the same checkpoint on the same split with the same views gives the same numbers:

- a classifier (a video encoder, or a fusion model over video and audio): accuracy, macro F1, per class and the
  confusion matrix, also drawn to ``confusion_matrix.png`` (`tubelet.recipes.report`); with a baseline
  checkpoint (e.g. the model before fine-tuning) the report compares the two, class by class.
- a retrieval checkpoint (`tubelet.recipes.retrieval`): recall@1/5/10 text->video and video->text, and chance,
  over the (clip, caption) pairs of the split's manifest (its ``caption`` column).
- a VQA checkpoint (a fusion model that reads text, `tubelet.recipes.vqa`): answer accuracy, macro F1, per
  question type, over ``DATA/qa_{split}.csv`` (or ``.jsonl``); a baseline (e.g. the run's question-only arm) is a
  second row of the table, as in training's report.

Every report carries a ``details`` block: what was evaluated (``task``), on what, and how it was sampled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tubelet.data.av_dataset import check_audio
from tubelet.data.captions import caption_pairs
from tubelet.data.qa import load_qa, qa_manifest, tokenize_questions
from tubelet.data.splits import eval_split
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.recipes.common import check_labels, evaluate_classifier, load_model
from tubelet.recipes.fusion import LoadedFusion, evaluate_fusion, is_fusion_checkpoint, load_fusion
from tubelet.recipes.report import write_report
from tubelet.recipes.retrieval import (
    evaluate_retrieval,
    is_retrieval_checkpoint,
    load_retrieval,
    write_retrieval_report,
)
from tubelet.recipes.vqa import QUESTION_ONLY, arm_summary, evaluate_vqa, write_vqa_report
from tubelet.train.loop import resolve_device

log = logging.getLogger("tubelet.evaluate")


@dataclass(frozen=True)
class RunOptions:
    """How to run the model, the same for every kind of checkpoint."""

    views: int  # windows averaged per video
    budget: int  # particles per batch
    device: torch.device  # where the model runs
    workers: int  # decoding processes
    sample_fps: float | None  # None: the checkpoint's sampling rate
    clip_seconds: float | None  # None: the checkpoint's window

    def preprocessing(self, pre: Preprocessing) -> Preprocessing:
        """A checkpoint's preprocessing with the sampling overrides that were given."""
        if self.sample_fps is not None:
            pre = replace(pre, sample_fps=self.sample_fps)
        if self.clip_seconds is not None:
            pre = replace(pre, clip_seconds=self.clip_seconds)
        return pre

    def options(self) -> dict:
        """The keyword arguments every ``evaluate_*`` function of the recipes takes."""
        return {"views": self.views, "budget": self.budget, "device": self.device, "workers": self.workers}


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
        checkpoint: a trained checkpoint directory: classifier, fusion, retrieval or VQA (its preprocessing is used
            as is).
        data: class folders, a folder with split manifests, or one manifest (then `split` is ignored). A retrieval
            checkpoint needs a manifest with a ``caption`` column, a VQA one ``qa_{split}.csv`` (or a question
            manifest given as `data`).
        split: the split to read; ``all`` reads every class folder (classifiers only), as does a split that class
            folders without splits do not have.
        baseline: another checkpoint of the same kind, reported beside this one (classifier or VQA).
        views: windows of ``clip_seconds`` per video; class probabilities, answer probabilities or retrieval
            embeddings are averaged over them.
        sample_fps, clip_seconds: override the checkpoint's sampling (e.g. to test frame-rate robustness).

    Returns:
        The report (``report.json``'s content) and ``files``: the paths written.

    Raises:
        ConfigError: a flag that means nothing for this kind of checkpoint (named), or a bad value.
        DataError: a missing split, manifest, caption or question field (one line naming the file and field).
    """
    if views < 1:
        raise ConfigError(f"--views: must be at least 1, got {views}")
    whole = Path(data).is_file()  # one manifest: its rows are the set, whatever the split
    run = RunOptions(
        views=views,
        budget=batch_particles,
        device=resolve_device(device),
        workers=workers,
        sample_fps=sample_fps,
        clip_seconds=clip_seconds,
    )
    if is_retrieval_checkpoint(checkpoint):
        _refuse(kind="retrieval", split=split, whole=whole, baseline=baseline)
        return _evaluate_retrieval(checkpoint, data, Path(out), split=None if whole else split, run=run)
    fusion = load_fusion(checkpoint) if is_fusion_checkpoint(checkpoint) else None
    if fusion is not None and "text" in fusion.model.config.modalities:
        _refuse(kind="VQA", split=split, whole=whole)
        return _evaluate_vqa(
            fusion, checkpoint, data, Path(out), split=None if whole else split, baseline=baseline, run=run
        )
    split = None if whole or split == "all" else split
    return _evaluate_classifier(fusion, checkpoint, data, Path(out), split=split, baseline=baseline, run=run)


def _evaluate_classifier(
    fusion: LoadedFusion | None,
    checkpoint: str,
    data: str,
    out: Path,
    *,
    split: str | None,
    baseline: str | None,
    run: RunOptions,
) -> dict:
    """A video classifier, or a fusion model (`fusion`) over video and audio, on a labeled split (class folders
    without that split: all their clips)."""
    dataset, note = eval_split(data, split)
    if fusion is not None and baseline is not None:
        raise ConfigError("--baseline: not supported for a fusion checkpoint")
    loaded = fusion if fusion is not None else load_model(checkpoint)
    dataset = check_labels(dataset, loaded.labels, checkpoint)
    pre = run.preprocessing(loaded.preprocessing)

    def score(model) -> dict:
        if fusion is not None:
            check_audio(dataset, fusion.audio)
            fused = replace(fusion, model=model.to(run.device), preprocessing=pre)
            return evaluate_fusion(fused, dataset, **run.options())
        return evaluate_classifier(model.to(run.device), dataset, pre, loaded.labels, **run.options())

    metrics = score(loaded.model)
    before = None
    if baseline is not None:
        base = load_model(baseline)
        if base.labels != loaded.labels:
            raise ConfigError(f"--baseline {baseline}: its labels {base.labels} differ from {loaded.labels}")
        before = score(base.model)
    details = _details("classification", checkpoint, data, split, run.views, pre)
    details.update(clips=metrics["num_samples"], skipped=len(metrics["skipped"]) + len(dataset.skipped))
    if note is not None:  # class folders without the split: every clip was scored
        details.update(split=None, note=note)
    if fusion is not None:
        details["modalities"] = ",".join(fusion.model.config.modalities)
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


def _evaluate_retrieval(checkpoint: str, data: str, out: Path, *, split: str | None, run: RunOptions) -> dict:
    """A retrieval checkpoint on the (clip, caption) pairs of a split's manifest."""
    loaded = load_retrieval(checkpoint)
    loaded.preprocessing = run.preprocessing(loaded.preprocessing)
    clips, captions, token_ids = caption_pairs(data, split, loaded.tokenizer)
    metrics = evaluate_retrieval(loaded, clips, captions, token_ids, **run.options())
    details = _details("retrieval", checkpoint, data, split, run.views, loaded.preprocessing)
    details.update(pairs=metrics["num_pairs"], skipped=len(metrics["skipped"]) + len(clips.skipped))
    report = {**metrics, **_where(details), "details": details}
    return _with_files(report, write_retrieval_report(report, out))


def _evaluate_vqa(
    loaded: LoadedFusion,
    checkpoint: str,
    data: str,
    out: Path,
    *,
    split: str | None,
    baseline: str | None,
    run: RunOptions,
) -> dict:
    """A VQA model (and a baseline VQA model, e.g. the run's question-only arm) on a split's questions."""
    manifest = Path(data) if split is None else qa_manifest(data, split, required=True)
    qa = load_qa(manifest, answers=loaded.labels)
    models = {_arm(loaded): loaded}
    if baseline is not None:
        base = load_fusion(baseline) if is_fusion_checkpoint(baseline) else None
        if base is None or "text" not in base.model.config.modalities:
            raise ConfigError(f"--baseline {baseline}: not a VQA checkpoint (a fusion model that reads text)")
        models[_arm(base) if _arm(base) not in models else "baseline"] = base
    scores = {}
    for name, model in models.items():
        model = replace(model, preprocessing=run.preprocessing(model.preprocessing))
        if "audio" in model.model.config.modalities:
            check_audio(qa.data, model.audio)
        tokenize_questions(qa, model.tokenizer)  # each model reads the questions with its own tokenizer
        scores[name] = evaluate_vqa(model, qa, **run.options())
    main = next(iter(scores))
    metrics = scores[main]
    details = _details("vqa", checkpoint, data, split, run.views, run.preprocessing(loaded.preprocessing))
    details.update(questions=metrics["num_questions"], skipped=len(metrics["skipped"]) + len(qa.data.skipped))
    details["manifest"] = str(manifest)
    report = {**metrics, **_where(details), "modalities": main, "details": details}
    if baseline is not None:
        details["baseline"] = str(baseline)
        report["arms"] = {name: arm_summary(m) for name, m in scores.items()}
    return _with_files(report, write_vqa_report(report, out))


def _arm(loaded: LoadedFusion) -> str:
    """A VQA model's row name, as training names its arms."""
    modalities = loaded.model.config.modalities
    return QUESTION_ONLY if modalities == ("text",) else "+".join(modalities)


def _refuse(*, kind: str, split: str | None, whole: bool, baseline: str | None = None) -> None:
    """One-line errors for the flags a retrieval or VQA checkpoint cannot use."""
    if baseline is not None:
        raise ConfigError(f"--baseline: not supported for a {kind} checkpoint (evaluate each checkpoint on its own)")
    if split == "all" and not whole:
        raise ConfigError(
            f"--split all: a {kind} checkpoint reads one split's manifest; name a split (e.g. test) or give --data "
            "a manifest file"
        )


def _details(task: str, checkpoint: str, data: str, split: str | None, views: int, pre: Preprocessing) -> dict:
    """What every report says about its run: the task, the inputs, and how clips were sampled."""
    return {
        "task": task,
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "views": views,
        "sample_fps": pre.sample_fps,
        "clip_seconds": pre.clip_seconds,
        "tubelet": "x".join(map(str, pre.tubelet)),
        "prune_threshold": pre.prune_threshold,
    }


def _where(details: dict) -> dict:
    """``checkpoint``, ``data`` and ``split`` at the top level, where training's retrieval and VQA reports keep them."""
    return {key: details[key] for key in ("checkpoint", "data", "split")}


def _with_files(report: dict, json_path: Path) -> dict:
    return {**report, "files": {"json": str(json_path), "markdown": str(json_path.with_name("report.md"))}}
