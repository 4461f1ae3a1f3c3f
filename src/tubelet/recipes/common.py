"""What several recipes share: what a fine-tuning run trains (freeze, LoRA), evaluating a classifier.

Loading and saving a model of any kind lives in `tubelet.models` (`load`, `save`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from torch import nn

from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import VideoDataset
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.tasks.classification import classification_metrics
from tubelet.train.loop import mean_over_videos, predict_items, view_windows
from tubelet.train.lora import add_lora
from tubelet.train.optim import ENCODER_KEEP, apply_freeze

log = logging.getLogger("tubelet")


def trainable_module(
    model: nn.Module, cfg, *, keep: tuple[str, ...] = ENCODER_KEEP, tower: str = "", fresh: bool = False
) -> nn.Module:
    """What a fine-tuning run trains: ``cfg.freeze`` applied to `model` (or its `tower`), and LoRA for ``cfg.peft``.

    LoRA trains adapters in place of the blocks, so with ``--peft lora`` the freeze spec names what trains in full
    beside them, ``none`` read as ``backbone``: `keep` (a head, and what the model adds to a video encoder), and with
    ``top:K`` the last K blocks and the final norm too. Everything outside `tower` trains.

    Args:
        model: an `Encoder` or `FusionModel`, or a model whose `tower` is an `Encoder`.
        cfg: a `tubelet.recipes.finetune.FinetuneConfig` (freeze, peft, lora_rank, lora_alpha, lora_dropout).
        keep: name prefixes within `tower` trained whatever the freeze spec says.
        tower: the submodule frozen and adapted (``video`` of a `RetrievalModel`); empty for all of `model`.
        fresh: the blocks start from random weights: freezing them is worth a warning.

    Returns:
        The module to train: `model` itself, or its peft wrapper (save `tubelet.train.lora.deployable` of it).
    """
    spec = "backbone" if cfg.peft == "lora" and cfg.freeze == "none" else cfg.freeze
    apply_freeze(model.get_submodule(tower), spec, keep=keep)
    if fresh and spec != "none":
        log.warning("freeze=%s peft=%s on %s: the frozen blocks keep their random weights", spec, cfg.peft, cfg.model)
    if cfg.peft == "none":
        return model
    return add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, tower=tower)


def evaluate_classifier(
    model,
    data: VideoDataset,
    pre: Preprocessing,
    labels: list[str],
    *,
    views: int = 1,
    budget: int = 8192,
    device,
    precision: str = "auto",
    workers: int = 0,
    dataset_for: Callable | None = None,
) -> dict:
    """Accuracy, macro F1 and per-class scores of `model` on labeled `data`, `views` windows averaged per video.

    Videos that cannot be decoded are reported and left out; the metrics say how many were scored.
    `dataset_for(windows)` builds the windows' dataset (default a video `ClipDataset`; the fusion recipe's decodes
    audio too).
    """
    windows = view_windows([info.duration_s for info in data.infos], pre.clip_seconds, views)
    dataset = dataset_for(windows) if dataset_for is not None else ClipDataset(data, pre, windows=windows)
    per_video, failed = windowed_probabilities(
        model, dataset, windows, len(data), budget=budget, device=device, precision=precision, workers=workers
    )
    scored = ~np.isnan(per_video).any(axis=1)
    index = {label: i for i, label in enumerate(labels)}
    y_true = [index[s.label] for s, ok in zip(data.samples, scored) if ok]
    metrics = classification_metrics(y_true, per_video[scored], labels)
    metrics["skipped"] = sorted({path for path, _ in failed})
    return metrics


def windowed_probabilities(
    model, dataset, windows: list, count: int, *, budget: int, device, precision: str, workers: int
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(count, classes) class probabilities averaged over each item's windows (NaN rows: nothing decoded), and the
    (path, reason) of every file that failed, each reported once here."""
    probs, failed = predict_items(model, dataset, budget=budget, device=device, precision=precision, workers=workers)
    for path, reason in failed:
        log.warning("skipping %s: %s", path, reason)
    return mean_over_videos(probs, [w[0] for w in windows], count), failed


def check_labels(data: VideoDataset, labels: list[str] | None, where: str) -> VideoDataset:
    """`data` with the checkpoint's label order; a label the checkpoint does not know is an error naming it."""
    if not labels:
        raise ConfigError(f"{where}: the checkpoint has no labels.json (not a classifier)")
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise DataError(
            f"{data.source}: label(s) {', '.join(repr(u) for u in unknown)} not in the checkpoint's labels "
            f"({', '.join(labels)})"
        )
    data.labels = list(labels)
    return data
