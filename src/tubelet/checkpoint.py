"""Checkpoints as directories of JSON and safetensors: nothing is pickled, so loading one never runs code.

Layout of a checkpoint directory::

    config.json              the caller's config, as given (model_type, encoder, preprocessing, ...)
    model.safetensors        model.state_dict()
    labels.json              class names, when given
    training_args.json       the run's resolved arguments, when given
    trainer/state.json       resume state: optimizer param groups, scheduler, step/epoch, python and numpy RNG
    trainer/tensors.safetensors   its tensors: optimizer moments and steps, torch/CUDA RNG, training module

A save is atomic: it writes a hidden sibling ``.NAME.partial``, moves the old checkpoint aside to ``.NAME.old``,
renames the new one in and deletes the old one. A process killed at any point leaves either the old or the new
checkpoint complete; if it died between the two renames, the loaders read the aside copy. One process writes a
given checkpoint directory at a time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from tubelet.errors import ConfigError
from tubelet.tensor_files import read_safetensors

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LABELS = "labels.json"
TRAINING_ARGS = "training_args.json"
TRAINER_STATE = "trainer/state.json"
TRAINER_TENSORS = "trainer/tensors.safetensors"
TRAINER_KEYS = ("optimizer", "scheduler", "state", "rng", "module")
FORMAT = 1  # version of trainer/state.json

# Tags that let trainer/state.json hold what plain JSON cannot: a tensor (by its key in tensors.safetensors), a
# tuple (Adam's betas, python's RNG state) and a dict with non-string keys (optimizer state is keyed by int).
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


@dataclass(frozen=True)
class LoadReport:
    """How a checkpoint's weights fit a model (`load_weights`)."""

    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (left as they were)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks (ignored)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    # ^ keys in both whose shapes differ: name -> (checkpoint shape, model shape); not loaded

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    config: dict,
    labels: list[str] | None = None,
    training_args: dict | None = None,
    trainer: dict | None = None,
    extra_weights: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any checkpoint already there.

    Args:
        directory: the checkpoint directory (e.g. ``runs/x/last``); its parents are created.
        model: whose ``state_dict()`` goes to ``model.safetensors`` (tied tensors are stored under each name).
        config: written as given to ``config.json`` (tuples become lists).
        labels: class names for ``labels.json``.
        training_args: the run's arguments for ``training_args.json``.
        trainer: resume state, with keys ``optimizer`` (an optimizer's ``state_dict()``, required),
            ``scheduler`` (a scheduler's ``state_dict()`` or None), ``state`` (a JSON-able dict: step, epoch,
            best metric, ...), ``rng`` (True to store the torch, CUDA, python and numpy RNG states now) and
            ``module`` (the training module's ``state_dict()`` when it differs from ``model``, e.g. a peft
            wrapper whose merged weights are in ``model``).
        extra_weights: more safetensors files beside ``model.safetensors``, file name -> state dict (e.g.
            ``{"decoder.safetensors": decoder.state_dict()}``), written in the same atomic swap.

    Returns:
        The checkpoint directory.

    Raises:
        ConfigError: ``directory`` is a file or a non-empty directory that is not a checkpoint (it is never
            replaced), or a value cannot be stored.
    """
    directory = Path(directory)
    if directory.name in ("", ".", ".."):
        raise ConfigError(f"{directory}: name a checkpoint directory (e.g. runs/x/last)")
    _check_replaceable(directory)
    # Serialize everything before touching the disk, so a value that cannot be stored fails without side effects.
    texts = {CONFIG: _to_json(config, directory / CONFIG)}
    if labels is not None:
        texts[LABELS] = _to_json(list(labels), directory / LABELS)
    if training_args is not None:
        texts[TRAINING_ARGS] = _to_json(training_args, directory / TRAINING_ARGS)
    tensors = {WEIGHTS: _prepare_tensors(model.state_dict(), directory / WEIGHTS)}
    for name, named in (extra_weights or {}).items():
        if name in (WEIGHTS, TRAINER_TENSORS) or not name.endswith(".safetensors") or "/" in name:
            raise ConfigError(f"{directory / name}: extra weights need a plain *.safetensors name of their own")
        tensors[name] = _prepare_tensors(named, directory / name)
    if trainer is not None:
        state, trainer_tensors = _split_trainer(trainer)
        texts[TRAINER_STATE] = _to_json(state, directory / TRAINER_STATE)
        tensors[TRAINER_TENSORS] = _prepare_tensors(trainer_tensors, directory / TRAINER_TENSORS)

    partial = _sibling(directory, "partial")
    if partial.exists():  # left by a save that was killed
        shutil.rmtree(partial)
    try:
        for name, text in texts.items():
            _write(partial / name, text.encode("utf-8"))
        for name, named in tensors.items():
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            save_file(named, partial / name, metadata={"format": "pt"})
            _fsync(partial / name)
        if trainer is not None:
            _fsync(partial / "trainer", directory=True)
        _fsync(partial, directory=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _swap_in(partial, directory)
    return directory


def load_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint, as saved.

    Raises:
        ConfigError: no such directory or file, not valid JSON, or not a JSON object.
    """
    return _read_json(_resolve(directory) / CONFIG, dict)


def load_labels(directory: str | os.PathLike) -> list[str] | None:
    """The class names of a checkpoint, or None when it has no ``labels.json``."""
    path = _resolve(directory) / LABELS
    if not path.exists():
        return None
    labels = _read_json(path, list)
    if not all(isinstance(label, str) for label in labels):
        raise ConfigError(f"{path}: expected a JSON list of label names (strings)")
    return labels


def load_training_args(directory: str | os.PathLike) -> dict | None:
    """The ``training_args.json`` of a checkpoint, or None when it has none."""
    path = _resolve(directory) / TRAINING_ARGS
    return _read_json(path, dict) if path.exists() else None


def load_state_dict(directory: str | os.PathLike, name: str = WEIGHTS) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint (CPU tensors), without a model; `name` picks another file (e.g. extra weights)."""
    return read_safetensors(_resolve(directory) / name)


def load_weights(model: nn.Module, directory: str | os.PathLike, *, strict: bool = True) -> LoadReport:
    """Load a checkpoint's weights into `model`.

    Args:
        model: the module to fill (any device; tensors are copied into its own).
        directory: the checkpoint directory.
        strict: raise unless the keys and shapes match exactly. When False, load every key that fits, leave
            the rest as they are, and report them (e.g. a pretrained encoder into a model with a new head).

    Returns:
        A `LoadReport` of missing, unexpected and shape-mismatched keys (all empty when strict).

    Raises:
        ConfigError: (strict) the weights do not fit; one line naming the file and the keys. Nothing is loaded.
    """
    path = _resolve(directory) / WEIGHTS
    return load_state(model, read_safetensors(path), strict=strict, source=str(path))


def load_state(
    model: nn.Module, saved: dict[str, torch.Tensor], *, strict: bool = True, source: str = "weights"
) -> LoadReport:
    """Load the tensors of a state dict (a checkpoint's, or another model's) into `model`, as `load_weights`.

    Args:
        saved: name -> tensor, e.g. ``encoder.state_dict()``.
        source: where `saved` came from, for the error message.
    """
    expected = model.state_dict()
    report = LoadReport(
        missing=[k for k in expected if k not in saved],
        unexpected=[k for k in saved if k not in expected],
        mismatched={  # in the model's order (safetensors returns keys sorted)
            k: (tuple(saved[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in saved and saved[k].shape != v.shape
        },
    )
    if strict and not report.ok:
        raise ConfigError(f"{source}: the weights do not fit the model: {_describe(report)}")
    fits = {k: v for k, v in saved.items() if k in expected and k not in report.mismatched}
    model.load_state_dict(fits, strict=False)
    return report


def has_trainer(directory: str | os.PathLike) -> bool:
    """Whether a checkpoint directory exists and holds resume state (False for a missing directory)."""
    try:
        return (_resolve(directory) / TRAINER_STATE).is_file()
    except ConfigError:
        return False


def load_trainer(
    directory: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    restore_rng: bool = True,
    load_optimizer=None,
) -> dict:
    """Restore the resume state saved with a checkpoint.

    Args:
        directory: the checkpoint directory.
        optimizer: a fresh optimizer over the same parameters, in the same order, as the saved one.
        scheduler: a fresh scheduler over `optimizer`, when the run had one.
        restore_rng: also restore the torch, CUDA, python and numpy RNG states (if they were saved).
        load_optimizer: ``load_optimizer(saved_state_dict)`` loads the optimizer's state instead of its own
            ``load_state_dict`` (an optimizer over sharded parameters).

    Returns:
        The saved ``state`` dict (step, epoch, ...), plus ``"module_state"`` (name -> tensor) when the training
        module's state was saved.

    Raises:
        ConfigError: no resume state, a corrupt file, or saved state that does not fit `optimizer`/`scheduler`.
    """
    root = _resolve(directory)
    path = root / TRAINER_STATE
    saved = _read_json(path, dict)
    if saved.get("format") != FORMAT or not set(TRAINER_KEYS) <= saved.keys():
        raise ConfigError(f"{path}: not a tubelet trainer state (format {FORMAT})")
    tensors = read_safetensors(root / TRAINER_TENSORS)
    try:
        saved = _join(saved, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: corrupt trainer state ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(saved["state"], dict):
        raise ConfigError(f"{path}: corrupt trainer state ('state' is not an object)")
    if load_optimizer is not None:
        _load_into(_Loader(load_optimizer), saved["optimizer"], path, "optimizer")
    else:
        _load_into(optimizer, saved["optimizer"], path, "optimizer")
    if scheduler is not None:
        if saved["scheduler"] is None:
            raise ConfigError(f"{path}: no scheduler state was saved, but a scheduler was given to resume")
        _load_into(scheduler, saved["scheduler"], path, "scheduler")
    if restore_rng and saved["rng"] is not None:
        try:
            _set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{path}: corrupt RNG state ({_one_line(e)})") from None
    state = dict(saved["state"])
    if saved["module"] is not None:
        state["module_state"] = saved["module"]
    return state


class _Loader:
    """A function that loads a state dict, where `_load_into` expects an object with ``load_state_dict``."""

    def __init__(self, load):
        self.load_state_dict = load


def _load_into(target, state_dict: dict, path: Path, what: str) -> None:
    """`target.load_state_dict`, with a saved state that does not fit reported as a ConfigError."""
    try:
        target.load_state_dict(state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{path}: the saved {what} state does not fit this {what} ({_one_line(e)})") from None


# --- trainer state: tensors split out of nested state dicts, and joined back ---


def _split_trainer(trainer: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON-able state, flat tensors) of a `save_checkpoint` ``trainer`` dict."""
    unknown = sorted(set(trainer) - set(TRAINER_KEYS))
    if unknown:
        raise ValueError(f"unknown trainer key(s) {', '.join(unknown)}; expected some of {', '.join(TRAINER_KEYS)}")
    if "optimizer" not in trainer:
        raise ValueError("trainer needs the optimizer's state_dict() under 'optimizer'")
    tensors: dict[str, torch.Tensor] = {}
    state = {
        "format": FORMAT,
        "optimizer": trainer["optimizer"],
        "scheduler": trainer.get("scheduler"),
        "state": dict(trainer.get("state") or {}),
        "rng": _get_rng_state() if trainer.get("rng") else None,
        "module": trainer.get("module"),
    }
    return {key: _split(value, key, tensors) for key, value in state.items()}, tensors


def _split(obj, path: str, tensors: dict[str, torch.Tensor]):
    """A JSON-able copy of `obj`, with each tensor moved into `tensors` under its path (e.g. optimizer/state/0/...)."""
    if isinstance(obj, torch.Tensor):
        key = path
        while key in tensors:  # two dict keys that print alike (1 and "1")
            key += "'"
        tensors[key] = obj
        return {_TENSOR: key}
    if isinstance(obj, tuple):
        return {_TUPLE: [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not {_TENSOR, _TUPLE, _ITEMS} & obj.keys():
            return {k: _split(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        return {_ITEMS: [[_split(k, path, {}), _split(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, np.generic):
        return obj.item()  # e.g. a best metric that came out of numpy or scikit-learn
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"trainer {path}: cannot store a {type(obj).__name__} in a checkpoint (JSON or tensors only)")


def _join(obj, tensors: dict[str, torch.Tensor]):
    """Undo `_split`: tags become tensors, tuples and int-keyed dicts again."""
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == _TENSOR:
            return tensors[value]
        if tag == _TUPLE:
            return tuple(_join(v, tensors) for v in value)
        if tag == _ITEMS:
            return {_join(k, tensors): _join(v, tensors) for k, v in value}
    return {k: _join(v, tensors) for k, v in obj.items()}


def _get_rng_state() -> dict:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        # A resume on fewer GPUs restores the ones it has.
        for index, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    random.setstate(rng["python"])
    n = rng["numpy"]
    keys = np.asarray(n["keys"], dtype=np.uint32)
    np.random.set_state((n["bit_generator"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))


# --- files ---


def _prepare_tensors(named: dict, path: Path) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors that share no memory (safetensors refuses tied or shared tensors)."""
    out, seen = {}, set()
    for name, tensor in named.items():
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"{path}: {name} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.numel():
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen:
                tensor = tensor.clone()  # a tied weight: stored once under each name, tied again by the model
            seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _to_json(obj, path: Path) -> str:
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: cannot be written as JSON ({e})") from None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path, *, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to disk, so a power cut cannot reorder it after the rename."""
    if directory and os.name != "posix":
        return  # Windows cannot open a directory to flush it
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot flush directories; the rename is still atomic
    finally:
        os.close(fd)


def _sibling(directory: Path, tag: str) -> Path:
    return directory.with_name(f".{directory.name}.{tag}")


def _check_replaceable(directory: Path) -> None:
    """Refuse to swap away anything but a checkpoint or an empty directory (e.g. a whole run folder)."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ConfigError(f"{directory}: is a file, not a checkpoint directory")
    if any(directory.iterdir()) and not ((directory / CONFIG).exists() or (directory / WEIGHTS).exists()):
        raise ConfigError(f"{directory}: exists and is not a checkpoint; refusing to replace it (choose another path)")


def _swap_in(new: Path, directory: Path) -> None:
    """Rename `new` to `directory`, keeping a complete checkpoint at `directory` or at its aside copy throughout."""
    old = _sibling(directory, "old")
    if directory.exists():
        if old.exists():  # a finished swap whose clean-up was cut short: `directory` is complete
            shutil.rmtree(old)
        directory.rename(old)
    # else an aside copy, if any, is the last complete checkpoint (a swap cut between its renames): keep it
    # until the new one is in place.
    new.rename(directory)
    _fsync(directory.parent, directory=True)
    if old.exists():
        shutil.rmtree(old)


def _resolve(directory: str | os.PathLike) -> Path:
    """The directory to read: `directory`, or its aside copy when a save died between its two renames."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    if directory.exists():
        raise ConfigError(f"{directory}: is a file, not a checkpoint directory")
    if directory.name not in ("", ".", "..") and _sibling(directory, "old").is_dir():
        return _sibling(directory, "old")
    raise ConfigError(f"{directory}: no such checkpoint directory")


def _read_json(path: Path, expect: type[dict] | type[list]):
    """The JSON object (`expect` dict) or list (`expect` list) in a file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, expect):
        kind = {dict: "an object", list: "a list"}
        raise ConfigError(f"{path}: expected {kind[expect]} in JSON, got {kind.get(type(data), type(data).__name__)}")
    return data


def _describe(report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"missing {len(report.missing)} ({_names(report.missing)})")
    if report.unexpected:
        parts.append(f"unexpected {len(report.unexpected)} ({_names(report.unexpected)})")
    if report.mismatched:
        shapes = [f"{k}: checkpoint {_shape(a)} vs model {_shape(b)}" for k, (a, b) in report.mismatched.items()]
        parts.append(f"shape mismatch {len(shapes)} ({_names(shapes)})")
    return "; ".join(parts)


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
