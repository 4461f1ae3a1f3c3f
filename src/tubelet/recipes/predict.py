"""Predictions on new videos: a label per file and, for long videos, one per window in seconds.

Any classifier checkpoint: a video encoder's, or a fusion model's (``tubelet finetune --modalities video,audio``,
audio alone, or ``--task vqa``), whose windows are decoded as it was trained: each window's audio beside its
frames, and for a question-answering model (it reads text) each question's tokens, so every file is answered for
every ``--question``. A file without an audio stream is a per-file error for a model that reads audio, unless
the checkpoint's audio preprocessing allows missing audio (silence then).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from tubelet.data.av_dataset import MISSING_AUDIO, AVClipDataset
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import VIDEO_EXTENSIONS, Sample, VideoDataset, try_probe
from tubelet.data.pipeline import iter_windows
from tubelet.data.qa import UNTYPED, QAClipDataset, QAData, tokenize_questions
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.recipes.common import LoadedModel, load_model
from tubelet.recipes.fusion import LoadedFusion, is_fusion_checkpoint, load_fusion
from tubelet.recipes.vqa import asked_questions
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
    questions: list[str] | None = None,
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
        checkpoint: a classifier checkpoint directory (video encoder or fusion model).
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
    fusion = is_fusion_checkpoint(checkpoint)
    loaded = load_fusion(checkpoint) if fusion else load_model(checkpoint)
    if not loaded.labels:
        raise ConfigError(f"{checkpoint}: the checkpoint has no labels.json (not a classifier)")
    modalities = loaded.model.config.modalities if fusion else ("video",)
    asked = asked_questions(checkpoint, modalities, questions)
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
        if info is not None and "audio" in modalities and not (info.has_audio or loaded.audio.allow_missing_audio):
            info, reason = None, f"{path}: {MISSING_AUDIO}"
        if info is None:
            failed.append({"path": str(path), "error": reason})
        else:
            samples.append(Sample(path=path))
            infos.append(info)
    yield from failed
    if not samples:
        return
    # One item per file and question (per file when nothing is asked); windows index items.
    items = [(v, q) for v in range(len(samples)) for q in range(len(asked))]
    data = VideoDataset(samples=[samples[v] for v, _ in items], infos=[infos[v] for v, _ in items], labels=[])
    windows = [
        (i, start, end)
        for i, (v, _) in enumerate(items)
        for start, end in iter_windows(infos[v].duration_s, window, stride)
    ]
    dataset = window_dataset(loaded, data, replace(pre, clip_seconds=window), windows, [asked[q] for _, q in items])
    probs, bad = predict_items(model, dataset, budget=batch_particles, device=device_, workers=workers)
    bad_paths = {p: r for p, r in bad}
    per_item = mean_over_videos(probs, [w[0] for w in windows], len(items))
    k = min(topk, len(labels))
    reported = set()
    for i, (v, q) in enumerate(items):
        path = samples[v].path
        if np.isnan(per_item[i]).any():
            if v not in reported:  # once per file, however many questions were asked
                reported.add(v)
                yield {"path": str(path), "error": bad_paths.get(str(path), "no window could be decoded")}
            continue
        question = {"question": asked[q]} if asked[q] is not None else {}
        result = {"path": str(path), **question, **_ranked(per_item[i], labels, k), "duration_s": infos[v].duration_s}
        rows = [(w, probs[j]) for j, w in enumerate(windows) if w[0] == i and not np.isnan(probs[j]).any()]
        if len(rows) > 1:
            result["windows"] = [
                {"start": round(w[1], 3), "end": round(w[2], 3), **_ranked(p, labels, 1, with_topk=False)}
                for w, p in rows
            ]
        if plot_dir is not None:
            name = f"{path.stem}_q{q + 1}" if len(asked) > 1 else path.stem
            result["timeline"] = str(_plot_timeline(plot_dir, path, rows, labels, name=name, question=asked[q]))
        yield result


def window_dataset(
    loaded: LoadedModel | LoadedFusion,
    data: VideoDataset,
    pre: Preprocessing,
    windows: list[tuple[int, float, float]],
    questions: list[str | None],
) -> ClipDataset:
    """The windows' dataset, decoded as the model reads them.

    Args:
        data: one sample per item; `windows` are (item, start, end).
        questions: per item, the question a VQA model is asked (ignored by a model that reads no text).

    Returns:
        A `ClipDataset` (frames) for a video encoder; an `AVClipDataset` (frames and/or audio) for a fusion model;
        a `QAClipDataset` (also the question's tokens) for one that reads text.
    """
    if isinstance(loaded, LoadedModel):
        return ClipDataset(data, pre, windows=windows)
    modalities = loaded.model.config.modalities
    if "text" not in modalities:
        return AVClipDataset(data, pre, loaded.audio, modalities=modalities, windows=windows)
    qa = tokenize_questions(
        QAData(data, list(questions), [UNTYPED] * len(questions), Path("--question")), loaded.tokenizer
    )
    return QAClipDataset(qa, pre, loaded.audio, modalities=modalities, windows=windows)


def _ranked(p: np.ndarray, labels: list[str], k: int, *, with_topk: bool = True) -> dict:
    order = np.argsort(-p)[:k]
    out = {"label": labels[order[0]], "score": round(float(p[order[0]]), 4)}
    if with_topk:
        out["topk"] = [{"label": labels[i], "score": round(float(p[i]), 4)} for i in order]
    return out


def _plot_timeline(
    plot_dir: str, path: Path, rows, labels: list[str], *, name: str, question: str | None = None
) -> Path:
    """Class probabilities of every window over the video's seconds, in ``plot_dir/<name>_timeline.png``."""
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
    ax.set_title(path.name if question is None else f"{path.name}: {question}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a curve
    target = Path(plot_dir) / f"{name}_timeline.png"
    fig.savefig(target)
    return target
