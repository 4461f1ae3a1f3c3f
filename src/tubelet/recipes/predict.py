"""Predictions on new videos: one per file and, for long videos, one per window in seconds.

Any checkpoint whose task predicts (`tubelet.tasks.base.task_of`): a video classifier, a fusion model (video and
audio, audio alone, or a VQA model that also reads a question), or a model of any registered task (a regression
prints its value). Windows are decoded as the model was trained: each window's audio beside its frames, and for a
question-answering model each question's tokens, so every file is answered for every ``--question``. A file without
an audio stream is a per-file error for a model that reads audio, unless the checkpoint's audio preprocessing allows
missing audio (silence then).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tubelet.data.av_dataset import MISSING_AUDIO
from tubelet.data.manifest import Sample, VideoDataset, expand_inputs, try_probe
from tubelet.data.pipeline import MAX_WINDOWS, iter_windows, window_and_stride, window_count
from tubelet.data.qa import UNTYPED, QAData, asked_questions
from tubelet.errors import ConfigError
from tubelet.models import load
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.tasks.base import Reads, task_of
from tubelet.tasks.inference import mean_over_videos, run_model

log = logging.getLogger("tubelet.predict")


def predict(
    checkpoint: str,
    inputs: list[str],
    *,
    questions: list[str] | None = None,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    topk: int = 5,
    batch_particles: int = 8192,
    workers: int = 0,
    device: str = "auto",
    plot_dir: str | None = None,
) -> Iterator[dict]:
    """Yield one result per input file: ``path``, the task's prediction (``label, score, topk`` for a classifier,
    ``value`` for a regression), ``duration_s`` and ``windows`` for long videos.

    Args:
        checkpoint: a checkpoint directory of a task that predicts (not retrieval: `tubelet index` / `search`).
        inputs: files and/or directories.
        questions: what to ask a VQA checkpoint (one that reads text) about every file: one result per file and
            question, with its ``question``, in that order; required by such a checkpoint, an error for others.
        window_seconds: window length; default the checkpoint's ``clip_seconds``.
        stride_seconds: step between windows; default the window length.
        plot_dir: also write ``<name>_timeline.png`` per file (``<name>_q<k>_timeline.png`` per question when
            several are asked) there.

    Unreadable files (and, for a model that reads audio, files without audio) yield ``{"path": ..., "error": ...}``
    once and the rest go on.
    """
    if topk < 1:
        raise ConfigError(f"--topk: must be at least 1, got {topk}")
    if plot_dir is not None:
        writable_dir(plot_dir, "--plot")  # before the model runs, not after
    loaded = load(checkpoint)
    task = task_of(loaded)
    plan = plan_windows(
        loaded, inputs, questions=questions, window_seconds=window_seconds, stride_seconds=stride_seconds,
        source=checkpoint,
    )  # fmt: skip
    yield from plan.failed
    if not plan.samples:
        return
    device_ = resolve_device(device)
    outputs, bad = run_model(
        loaded.model.to(device_), plan.dataset, forward=task.forward, budget=batch_particles, device=device_,
        workers=workers, desc="predict",
    )  # fmt: skip
    yield from results(plan, loaded, outputs, bad, topk=topk, plot_dir=plot_dir)


@dataclass
class Plan:
    """The windows `predict` runs the model over: one item per readable file and question, its windows in seconds."""

    samples: list[Sample]  # the readable files
    infos: list  # their probes (`VideoInfo`)
    failed: list[dict]  # {"path", "error"} of the files that could not be read
    asked: list[str | None]  # the questions (``[None]``: none)
    items: list[tuple[int, int]]  # (file, question) per item
    windows: list[tuple[int, float, float]]  # (item, start s, end s)
    dataset: object  # the windows' dataset (`window_dataset`), item i of it is windows[i]


def plan_windows(
    loaded,
    inputs: list[str],
    *,
    questions: list[str] | None = None,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    source: str = "",
) -> Plan:
    """Probe `inputs` and cut each readable file into windows of `window_seconds` every `stride_seconds` (default the
    checkpoint's ``clip_seconds``, and the window): what `predict` and ``tubelet serve`` run `loaded` over.

    Raises:
        ConfigError: a task that does not predict, bad window lengths, or a file cut into too many windows.
    """
    task = task_of(loaded)
    task.check_predict(loaded)
    reads = Reads.of(loaded)
    asked = asked_questions(source or loaded.source, reads.modalities, questions)
    pre = loaded.preprocessing
    window, stride = window_and_stride(pre, window_seconds, stride_seconds)

    samples, infos, failed = [], [], []
    for path in expand_inputs(inputs):
        info, reason = try_probe(path)
        if (
            info is not None
            and "audio" in reads.modalities
            and not (info.has_audio or loaded.audio.allow_missing_audio)
        ):
            info, reason = None, f"{path}: {MISSING_AUDIO}"
        if info is None:
            failed.append({"path": str(path), "error": reason})
        else:
            count = window_count(info.duration_s, window, stride)
            if count > MAX_WINDOWS:
                raise ConfigError(
                    f"--stride-seconds {stride:g}: {path} would be cut into {count} windows (at most {MAX_WINDOWS}); "
                    f"use a longer stride"
                )
            samples.append(Sample(path=path))
            infos.append(info)
    # One item per file and question (per file when nothing is asked); windows index items.
    items = [(v, q) for v in range(len(samples)) for q in range(len(asked))]
    data = VideoDataset(samples=[samples[v] for v, _ in items], infos=[infos[v] for v, _ in items], labels=[])
    windows = [
        (i, start, end)
        for i, (v, _) in enumerate(items)
        for start, end in iter_windows(infos[v].duration_s, window, stride)
    ]
    dataset = window_dataset(loaded, data, replace(pre, clip_seconds=window), windows, [asked[q] for _, q in items])
    return Plan(samples, infos, failed, asked, items, windows, dataset)


def results(
    plan: Plan, loaded, outputs: np.ndarray | None, bad: list[tuple[str, str]], *, topk: int = 5,
    plot_dir: str | None = None,
) -> Iterator[dict]:  # fmt: skip
    """What `predict` yields for the readable files of `plan`, from the model's `outputs` (len(plan.windows), K) of
    `run_model` (None when nothing decoded; NaN rows for windows that failed, `bad` saying why)."""
    task, labels, items, windows, asked = task_of(loaded), loaded.labels, plan.items, plan.windows, plan.asked
    bad_paths = dict(bad)
    predictions = task.postprocess(outputs) if outputs is not None else np.full((len(windows), 1), np.nan)
    per_item = mean_over_videos(predictions, [w[0] for w in windows], len(items))
    k = min(topk, len(labels)) if labels else 0
    reported = set()
    for i, (v, q) in enumerate(items):
        path = plan.samples[v].path
        if np.isnan(per_item[i]).any():
            if v not in reported:  # once per file, however many questions were asked
                reported.add(v)
                yield {"path": str(path), "error": bad_paths.get(str(path), "no window could be decoded")}
            continue
        question = {"question": asked[q]} if asked[q] is not None else {}
        described = task.describe(per_item[i], labels, topk=k)
        result = {"path": str(path), **question, **described, "duration_s": plan.infos[v].duration_s}
        rows = [(w, predictions[j]) for j, w in enumerate(windows) if w[0] == i and not np.isnan(predictions[j]).any()]
        if len(rows) > 1:
            result["windows"] = [
                {"start": round(w[1], 3), "end": round(w[2], 3), **task.describe(p, labels, topk=0)} for w, p in rows
            ]
        if plot_dir is not None:
            name = f"{path.stem}_q{q + 1}" if len(asked) > 1 else path.stem
            curves = labels or [f"output {c}" for c in range(per_item.shape[1])]
            result["timeline"] = str(
                _plot_timeline(plot_dir, path, rows, curves, name=name, question=asked[q], probabilities=bool(labels))
            )
        yield result


def window_dataset(loaded, data: VideoDataset, pre, windows: list[tuple[int, float, float]], questions: list):
    """The windows' dataset, decoded as the loaded model reads them (`Task.dataset`).

    Args:
        data: one sample per item; `windows` are (item, start, end).
        questions: per item, the question a VQA model is asked (ignored by a model that reads no text).
    """
    reads = Reads.of(loaded)
    if "text" in reads.modalities:  # the questions are the items' text: each file is asked each question
        data = QAData(data, list(questions), [UNTYPED] * len(questions), Path("--question"))
    return task_of(loaded).dataset(data, pre, reads, windows=windows)


def _plot_timeline(
    plot_dir: str, path: Path, rows, labels: list[str], *, name: str, question: str | None = None,
    probabilities: bool = True,
) -> Path:  # fmt: skip
    """Each output of every window over the video's seconds (a classifier's class probabilities, on 0-1), in
    ``plot_dir/<name>_timeline.png``."""
    from matplotlib.figure import Figure

    os.makedirs(plot_dir, exist_ok=True)
    fig = Figure(figsize=(9, 3), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    centres = [(w[1] + w[2]) / 2 for w, _ in rows]
    values = np.stack([p for _, p in rows]) if rows else np.zeros((0, len(labels)))
    for c, label in enumerate(labels):
        ax.plot(centres, values[:, c], marker="o", label=label)
    ax.set_xlabel("seconds (window centre)")
    ax.set_ylabel("probability" if probabilities else "value")
    if probabilities:
        ax.set_ylim(0, 1)
    ax.set_title(path.name if question is None else f"{path.name}: {question}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a curve
    target = Path(plot_dir) / f"{name}_timeline.png"
    fig.savefig(target)
    return target
