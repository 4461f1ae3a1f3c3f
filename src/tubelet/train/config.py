"""Typed run configs: the fields every run shares (once), each task's own, and reading them from YAML files,
``key=value`` overrides and command-line flags.

A run's config class is composed (`run_config`): the shared groups below (run, optimizer and schedule, model with
freeze and PEFT, preprocessing, augmentation; supervised runs add splits and validation) plus the task's own frozen
dataclass (``Task.Config``). A field of another task is therefore an unknown field for the task that runs: an error
naming it and the task, never silently ignored. Every field is declared with `tubelet.typed.opt`, whose text is
its ``--help``.

Precedence: dataclass defaults < YAML file < ``key=value`` overrides < explicit flags. An unknown key or a
value of the wrong type is an error that names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, PRUNE_REFERENCES
from tubelet.errors import ConfigError
from tubelet.typed import opt


@dataclasses.dataclass(frozen=True)
class RunFields:
    """Where a run reads and writes, where it computes, and how long."""

    data: str = opt("", "class folders, a folder with split manifests, or one manifest")
    out: str = opt("runs/finetune", "run directory: best/, last/, metrics.jsonl, tensorboard/, config.json")
    epochs: int = opt(30, "passes over the training clips")
    workers: int = opt(2, "DataLoader decoding processes (0 decodes in the main process)")
    seed: int = opt(0, "seed of initialisation, sampling and augmentation")
    device: str = opt("auto", "auto, cpu, cuda, cuda:1 ...")
    precision: str = opt("auto", "auto (bf16 autocast on CUDA), bf16 or fp32")
    save_every_steps: int = opt(0, "also save last/ every this many optimizer steps (0: each epoch only)")
    resume: bool = opt(
        False,
        "continue from out/last if it holds trainer state; only epochs, max_steps, workers, device and how it "
        "saves may change (tubelet.train.run_dir)",
    )
    overwrite: bool = opt(False, "start over: delete the run already in out")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (smoke tests)")
    parallel: str = opt(
        "ddp",
        "under torchrun: ddp (each process holds the model) or fsdp (FSDP2: parameters, gradients and optimizer "
        "state sharded over the processes, for models that do not fit one device)",
    )


@dataclasses.dataclass(frozen=True)
class OptimFields:
    """The optimizer, its schedule and the batches it steps on."""

    lr: float = opt(1e-3, "peak learning rate")
    min_lr_ratio: float = opt(0.01, "final LR as a fraction of the peak (cosine)")
    warmup_epochs: float = opt(1.0, "linear warmup length")
    optimizer: str = opt("adamw", "adamw or sgd")
    momentum: float = opt(0.9, "SGD momentum (Nesterov)")
    weight_decay: float = opt(0.05, "decoupled weight decay (not on biases, norms, position parameters)")
    batch_particles: int = opt(4096, "particle budget per batch (clips of any size share it; no padding)")
    max_clips_per_batch: int | None = opt(None, "optional cap on clips per batch")
    min_steps_per_epoch: int = opt(
        25, "small data gets smaller batches, so that an epoch makes at least this many optimizer steps (0: off)"
    )
    accum_steps: int = opt(1, "gradient accumulation: batches per optimizer step")
    grad_clip: float | None = opt(1.0, "max global gradient norm; none disables")
    layer_decay: float = opt(1.0, "layer-wise LR decay (< 1 trains lower blocks slower)")


@dataclasses.dataclass(frozen=True)
class ModelFields:
    """Which model, what of it trains, and how it computes."""

    model: str = opt("micro", "a registered size (micro, tiny, small, base, large, test) or a checkpoint directory")
    dropout: float = opt(0.0, "dropout in blocks and before the head")
    drop_path: float = opt(0.0, "stochastic depth of the last block")
    pooling: str = opt("mean", "clip pooling for a fresh model: mean or attention")
    time_mode: str = opt("seconds", "time positions for a fresh model: seconds or index (ablation)")
    embed_init: str = opt("motion", "patch embedding of a fresh model: motion (half on frame differences) or random")
    tubelet: tuple[int, int, int] | None = opt(None, "frames x rows x cols; none takes the model's")
    attention: str = opt("auto", "attention backend (auto, sdpa, dense, varlen, flash, flex)")
    freeze: str = opt("none", "none | backbone (head, new embeddings; retrieval: text tower) | top:K (+ last K blocks)")
    peft: str = opt("none", "none or lora (peft adapters on the blocks; trains them and what freeze=backbone keeps)")
    lora_rank: int = opt(8, "LoRA rank")
    lora_alpha: float = opt(16.0, "LoRA scaling numerator")
    lora_dropout: float = opt(0.0, "dropout inside the LoRA branch")


@dataclasses.dataclass(frozen=True)
class PreprocessFields:
    """How a window of video becomes particles (saved in the checkpoint, so inference samples the same way)."""

    sample_fps: float | None = opt(8.0, "frames per second read; none reads native frames")
    clip_seconds: float = opt(2.0, "seconds per training clip")
    size: int | None = opt(112, "short side after resizing; none keeps the source size")
    max_long_side: int | None = opt(224, "cap on the long side after resizing")
    prune_threshold: float = opt(4.0, "static pruning threshold in 0-255 levels (0 keeps all)")
    prune_reference: str = opt(
        DEFAULT_PRUNE_REFERENCE,
        "what pruning compares a tubelet with: previous (the tubelet before it) or anchor (the particle that "
        "opened its run, so a slow pan's drift adds up and keeps a new particle)",
    )
    crop: str | None = opt(
        None,
        "motion: cut each window to the square around what moves in it (frame differences over the window; the "
        "whole frame when nothing moves), resized to crop_size; saved with the checkpoint, so predict, evaluate "
        "and watch crop the same way",
    )
    crop_size: int | None = opt(None, "side in pixels of the motion crop (none: size)")
    pixels: str = opt(
        "rgb",
        "rgb, or difference: each frame replaced by its grey level's absolute change from the frame before (what "
        "moved, not what it looks like); saved with the checkpoint",
    )


@dataclasses.dataclass(frozen=True)
class AugmentFields:
    """Training-only augmentation of the frames."""

    crop_scale_min: float = opt(0.6, "random resized crop keeps at least this area fraction (1 disables)")
    flip: bool = opt(False, "horizontal flips (off: they swap left and right motion)")
    fps_jitter: float = opt(0.0, "sample at sample_fps * U(1/(1+j), 1+j)")


@dataclasses.dataclass(frozen=True)
class SupervisedFields:
    """Splits and validation of a supervised run (``tubelet finetune``)."""

    task: str = opt("classification", "what to learn: one of `tubelet tasks` (classification, retrieval, vqa, ...)")
    train_split: str = opt("train", "split read for training (ignored when data is one manifest)")
    val_split: str | None = opt("val", "split for validation, best/ and early stopping; none to skip")
    val_fraction: float = opt(
        0.2, "fraction of each class held out for validation when class folders have no val split; 0 turns it off"
    )
    early_stopping: int | None = opt(None, "stop after this many validations without improvement")
    metric: str | None = opt(None, "validation metric for best/ and early stopping (default: the task's first)")
    eval_views: int = opt(1, "windows averaged per validation video")


SUPERVISED = (RunFields, OptimFields, ModelFields, PreprocessFields, AugmentFields, SupervisedFields)
UNSUPERVISED = (RunFields, OptimFields, ModelFields, PreprocessFields, AugmentFields)
# What pretraining has no use for: no head to pool for or to freeze around, no blocks to decay by depth.
UNSUPERVISED_DROP = (
    "dropout", "pooling", "freeze", "peft", "lora_rank", "lora_alpha", "lora_dropout", "layer_decay",
)  # fmt: skip
UNSUPERVISED_DEFAULTS = {"out": "runs/pretrain", "epochs": 20, "batch_particles": 16384}
_CLASSES: dict[str, type] = {}


def run_config(task_name: str) -> type:
    """The config class of a run of task `task_name`: the shared fields and the task's own (`Task.Config`)."""
    from tubelet.tasks.base import get_task

    task = get_task(task_name)
    if task.name not in _CLASSES:
        if task.supervised:
            groups, drop, defaults = SUPERVISED, (), {"task": task.name}
        else:
            groups, drop, defaults = UNSUPERVISED, UNSUPERVISED_DROP, dict(UNSUPERVISED_DEFAULTS)
        cls = compose(
            f"{type(task).__name__}Config", (*groups, task.Config), drop=drop,
            defaults={**defaults, **task.config_defaults}, doc=f"The fields of a run of task {task.name}.",
        )  # fmt: skip
        cls.task_name = task.name
        checks = cls.validate

        def validate(self, checks=checks, task=task) -> None:
            checks(self)
            if getattr(self, "metric", None) and self.metric not in task.metrics:
                raise ConfigError(f"metric: task {task.name} measures {', '.join(task.metrics)}, not {self.metric!r}")

        cls.validate = validate
        _CLASSES[task.name] = cls
    return _CLASSES[task.name]


def make_config(task_name: str, **values):
    """A run config of task `task_name` from keyword values (a field of another task is a ConfigError)."""
    return build_config(run_config(task_name), values)


def compose(name: str, groups: tuple, *, defaults: dict | None = None, drop: tuple[str, ...] = (), doc: str = ""):
    """One frozen config dataclass with the fields of `groups` in order (a later group's field replaces an
    earlier one of the same name), `defaults` changed and `drop` left out.

    The class's ``validate()`` checks the shared fields (`check_shared`) and then calls each group's own
    ``validate`` (a task's config checks its fields there).
    """
    fields: dict[str, tuple] = {}
    for group in groups:
        hints = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            fields[f.name] = (f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
    for key, value in (defaults or {}).items():
        f = fields[key][2]
        fields[key] = (key, fields[key][1], dataclasses.field(default=value, metadata=f.metadata))
    own = [g for g in groups if hasattr(g, "validate")]

    def validate(self) -> None:
        check_shared(self)
        for group in own:
            group.validate(self)

    cls = dataclasses.make_dataclass(
        name, [v for k, v in fields.items() if k not in drop], frozen=True, namespace={"validate": validate}
    )
    cls.__doc__ = doc or f"The fields of a {name} run."
    cls.__module__ = __name__
    return cls


def check_shared(cfg) -> None:
    """Range checks of the shared fields a config has; a ConfigError names the field."""
    if hasattr(cfg, "data") and not cfg.data:
        raise ConfigError("data: give a dataset directory or manifest (--data)")
    for name in ("epochs", "batch_particles", "accum_steps", "eval_views"):
        if hasattr(cfg, name) and getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(cfg, name)}")
    if getattr(cfg, "min_steps_per_epoch", 0) < 0:
        raise ConfigError(f"min_steps_per_epoch: must be 0 (off) or more, got {cfg.min_steps_per_epoch}")
    for name in ("lr", "clip_seconds"):
        if hasattr(cfg, name) and not getattr(cfg, name) > 0:  # also refuses nan
            raise ConfigError(f"{name}: must be positive, got {getattr(cfg, name)}")
    if getattr(cfg, "optimizer", "adamw") not in ("adamw", "sgd"):
        raise ConfigError(f"optimizer: expected adamw or sgd, got {cfg.optimizer!r}")
    if getattr(cfg, "prune_reference", DEFAULT_PRUNE_REFERENCE) not in PRUNE_REFERENCES:
        raise ConfigError(f"prune_reference: expected {' or '.join(PRUNE_REFERENCES)}, got {cfg.prune_reference!r}")
    if getattr(cfg, "parallel", "ddp") not in ("ddp", "fsdp"):
        raise ConfigError(f"parallel: expected ddp or fsdp, got {cfg.parallel!r}")
    if getattr(cfg, "parallel", "ddp") == "fsdp" and getattr(cfg, "peft", "none") != "none":
        raise ConfigError("parallel: fsdp shards the whole model; with --peft lora only the adapters train, use ddp")
    if getattr(cfg, "peft", "none") not in ("none", "lora"):
        raise ConfigError(f"peft: expected none or lora, got {cfg.peft!r}")
    if not 0.0 <= getattr(cfg, "val_fraction", 0.0) < 1.0:
        raise ConfigError(f"val_fraction: must be in [0, 1), got {cfg.val_fraction}")
    if hasattr(cfg, "freeze"):
        from tubelet.train.optim import parse_freeze

        parse_freeze(cfg.freeze)


def load_config(cls, *, path: str | Path | None = None, overrides: list[str] = (), flags: dict | None = None):
    """Build a frozen dataclass `cls` from a YAML file, ``key=value`` strings and a dict of flags."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else None
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return build_config(cls, values)


def build_config(cls, values: dict):
    """`cls` from plain values, each coerced to its field's type; an unknown field is a ConfigError naming it."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        task = getattr(cls, "task_name", None)
        known_text = f"fields of task {task}" if task else "known"
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)} ({known_text}: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    return cls(**{key: coerce(key, value, hints[key]) for key, value in values.items()})


def coerce(name: str, value, annotation):
    """Convert a YAML/CLI value to the field's annotated type, or raise ConfigError naming the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else str
        if len(args) == 2 and args[1] is Ellipsis or len(args) <= 1:
            return tuple(coerce(name, v, inner) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {list(value)}")
        return tuple(coerce(name, v, a) for v, a in zip(value, args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return str(value)
    return value


def to_dict(config) -> dict:
    """A config dataclass as plain JSON-able values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
