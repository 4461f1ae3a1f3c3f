"""What several recipes share: resolving a model spec (registry name, checkpoint directory or hub id), what a
fine-tuning run trains (freeze, LoRA), evaluating a classifier."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from tubelet import __version__
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import VideoDataset
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.models.encoder import Encoder, EncoderConfig, interleaved_to_half
from tubelet.models.registry import model_config, model_names
from tubelet.models.videomae import is_videomae_checkpoint, load_videomae
from tubelet.tasks.classification import classification_metrics
from tubelet.train import checkpoint
from tubelet.train.loop import mean_over_videos, predict_items, view_windows
from tubelet.train.lora import add_lora
from tubelet.train.optim import ENCODER_KEEP, apply_freeze

log = logging.getLogger("tubelet")

MODEL_TYPE = "tubelet-encoder"
# Fields that may differ from a checkpoint's without changing its weights.
RUNTIME_FIELDS = ("dropout", "attn_dropout", "drop_path", "attention")
# What an import of a Hugging Face VideoMAE checkpoint may also choose: positions="rope" drops its fixed sin-cos table
# for rotary positions over seconds and grid cells (the weights load the same; the model needs fine-tuning after).
IMPORT_FIELDS = ("positions",)
# A Hugging Face hub model id, "owner/name": tried on the hub only when no such local directory exists.
HUB_ID = re.compile(r"[A-Za-z0-9][\w-]*/[\w][\w.-]*")
# What a hub download fetches: configs, labels and safetensors weights; never pickles or training state.
HUB_FILES = (
    "config.json",
    "labels.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
)


@dataclass
class LoadedModel:
    """A model and what came with it.

    Attributes:
        model: the encoder.
        preprocessing: the checkpoint's preprocessing, or None for a fresh registry model.
        labels: the checkpoint's class names, or None.
        source: the spec it came from.
    """

    model: Encoder
    preprocessing: Preprocessing | None
    labels: list[str] | None
    source: str


def load_model(spec: str, **runtime) -> LoadedModel:
    """A registered size (fresh weights) or a checkpoint (its weights, preprocessing and labels).

    Args:
        spec: a name from the registry; a checkpoint directory (tubelet's, or a Hugging Face VideoMAE one written by
            ``save_pretrained``); or a hub id ``owner/name`` of either, downloaded only when no such directory exists.
        runtime: overrides of `RUNTIME_FIELDS` (for a registry size, any `EncoderConfig` field; for a VideoMAE
            checkpoint, also `IMPORT_FIELDS`).

    Raises:
        ConfigError: unknown name, a directory that is not a checkpoint, or weights that do not fit.
    """
    path = Path(spec)
    if path.is_dir():
        return load_checkpoint_model(path, **runtime)
    if spec in model_names():
        return LoadedModel(Encoder(model_config(spec, **runtime)), None, None, spec)
    if HUB_ID.fullmatch(spec) and not path.exists():
        loaded = load_checkpoint_model(_hub_snapshot(spec), **runtime)
        loaded.source = spec
        return loaded
    if "/" in spec or path.suffix:
        raise ConfigError(f"--model {spec}: no such checkpoint directory")
    model_config(spec)  # raises the unknown-name error listing the registry
    raise AssertionError("unreachable")


def _hub_snapshot(repo_id: str) -> Path:
    """The local copy of a hub model's configs and safetensors weights (downloaded once, then from the cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except Exception as exc:  # offline, unknown repo, gated repo: huggingface_hub raises many kinds
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"--model {repo_id}: no such checkpoint directory, and no Hugging Face hub model could be fetched "
            f"({type(exc).__name__}: {reason})"
        ) from None


def load_checkpoint_model(directory: str | Path, **runtime) -> LoadedModel:
    """A tubelet checkpoint directory, or a Hugging Face VideoMAE one (see `tubelet.models.videomae`)."""
    directory = Path(directory)
    if is_videomae_checkpoint(directory):
        _check_runtime(directory, runtime, allowed=RUNTIME_FIELDS + IMPORT_FIELDS)
        try:
            imported = load_videomae(directory, **runtime)
        except ValueError as exc:  # a runtime value EncoderConfig rejects
            raise ConfigError(f"{directory}: {exc}") from exc
        return LoadedModel(imported.model, imported.preprocessing, imported.labels, str(directory))
    config = checkpoint.load_config(directory)
    kind = config.get("model_type")
    if kind != MODEL_TYPE:
        raise ConfigError(f"{directory}/config.json: model_type {kind!r} is not a tubelet checkpoint")
    _check_runtime(directory, runtime)
    try:
        encoder_config = EncoderConfig.from_dict(config["encoder"]).replace(**runtime)
        preprocessing = Preprocessing.from_dict(config["preprocessing"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{directory}/config.json: {exc}") from exc
    model = Encoder(encoder_config.replace(rope_layout="half"))
    checkpoint.load_weights(model, directory)
    if encoder_config.rope_layout == "interleaved":  # written before the rotate-half change: move q/k rows
        interleaved_to_half(model)
    return LoadedModel(model, preprocessing, checkpoint.load_labels(directory), str(directory))


def _check_runtime(directory: Path, runtime: dict, allowed: tuple[str, ...] = RUNTIME_FIELDS) -> None:
    bad = sorted(set(runtime) - set(allowed))
    if bad:
        raise ConfigError(f"{directory}: cannot change {', '.join(bad)} of a trained model")


def checkpoint_config(model: Encoder, preprocessing: Preprocessing) -> dict:
    """The ``config.json`` of a tubelet checkpoint: architecture and the preprocessing that goes with it."""
    return {
        "model_type": MODEL_TYPE,
        "tubelet_version": __version__,
        "encoder": model.config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
    }


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
