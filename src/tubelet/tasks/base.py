"""What a task is, and the registry that finds one by name.

A task is one thing a model learns: its own config fields (a small frozen dataclass, `Task.Config`), its data
(`prepare`), its model or head (`build`), its targets and loss (`loss`), what its outputs mean (`postprocess`,
`describe`), its metrics with their direction (`metrics`, `score`) and its report (`report_markdown`). The loop
in `tubelet.train` runs every task the same way; ``tubelet finetune --task NAME`` finds it here.

The defaults below are a task that reads video clips and puts a head on the encoder's pooled features: a new task of
that shape (a regression of a clip's brightness, say) sets `name`, `metrics`, `num_outputs`, `targets`,
`objective`, `score` and `describe`, registers itself with `register`, and trains, evaluates and predicts through the
same commands, touching no tubelet module.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from tubelet.data.av_dataset import AVClipDataset
from tubelet.data.dataset import Batch, ClipDataset
from tubelet.data.manifest import VideoDataset, load_dataset
from tubelet.data.splits import has_split, train_val
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError
from tubelet.models.encoder import ENCODER_KEEP
from tubelet.nn.device import autocast, resolve_device
from tubelet.tasks.files import write_report_files
from tubelet.tasks.inference import view_windows, windowed_outputs

log = logging.getLogger("tubelet.tasks")


@dataclass
class StepLoss:
    """What a task's `Task.loss` returns for one batch.

    Attributes:
        loss: () scalar, the mean over `weight` units (clips, hidden particles, pairs).
        weight: how many units the mean is over; epoch means weight each batch by it.
        clips: clips that went into it (for clips/s).
        logs: more scalars for the step's ``metrics.jsonl`` line (e.g. ``temperature``).
    """

    loss: torch.Tensor
    weight: int
    clips: int
    logs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NoFields:
    """A task with no fields of its own."""


@dataclass
class Prepared:
    """A run's data, as its task read it.

    Attributes:
        train: the training set (a `VideoDataset`, or what the task reads, e.g. questions).
        val: the validation set, or None.
        labels: class names (a classifier's ``labels.json``), or None.
        tokenizer: the text tokenizer of a task that reads text, or None.
        extra: anything else the task keeps for its run.
    """

    train: object
    val: object | None = None
    labels: list[str] | None = None
    tokenizer: object | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reads:
    """What a model reads from a window: its modalities, how audio becomes particles, the text tokenizer."""

    modalities: tuple[str, ...] = ("video",)
    audio: object | None = None  # `tubelet.data.av_dataset.AudioPreprocessing` of a model that reads audio
    tokenizer: object | None = None  # of a model that reads text

    @classmethod
    def of(cls, loaded) -> Reads:
        """What a loaded checkpoint (`tubelet.models.Loaded`) reads."""
        modalities = tuple(getattr(loaded.model.config, "modalities", ("video",)))
        return cls(modalities, getattr(loaded, "audio", None), getattr(loaded, "tokenizer", None))


@dataclass(frozen=True)
class Arm:
    """One model a run trains: the main one (``out``) or an ablation arm (``out/ablation/NAME``)."""

    name: str
    out: Path
    modalities: tuple[str, ...] = ("video",)


@dataclass
class Built:
    """A model to train and what came with it.

    Attributes:
        model: the model.
        preprocessing: the checkpoint's preprocessing when it started from one (None: fresh).
        keep: name prefixes that train under any ``freeze`` (a head, new embeddings).
        tower: the submodule ``freeze``/``peft`` apply to (empty: the whole model).
        load_report: what a model started from another kind of checkpoint took from it (written beside it).
        extra: the model's other modules saved beside it (e.g. a decoder), name -> module.
    """

    model: torch.nn.Module
    preprocessing: Preprocessing | None = None
    keep: tuple[str, ...] = ENCODER_KEEP
    tower: str = ""
    load_report: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tubelet(self) -> tuple[int, int, int]:
        """The model's tubelet (a retrieval model's video tower's)."""
        return tuple((getattr(self.model, "video_config", None) or self.model.config).tubelet)


@torch.no_grad()
def carry_head(model, old_labels: list[str] | None, new_labels: list[str] | None, outputs: int) -> list[str]:
    """Give `model` (an `Encoder`) a fresh head of `outputs` classes, with the rows of the classes it already had.

    A class of `new_labels` named like one of `old_labels` keeps its trained row (weight and bias, bit for bit) at
    its new index; the other rows start as a fresh head does. Without labels on both sides nothing is kept.

    Returns:
        The labels whose rows were kept, in `new_labels` order.
    """
    head = model.head
    had = bool(old_labels) and model.num_classes == len(old_labels)
    model.reset_head(outputs)
    if not had or not new_labels or len(new_labels) != outputs:
        return []
    kept = [label for label in new_labels if label in old_labels]
    for label in kept:
        row, old = new_labels.index(label), old_labels.index(label)
        model.head.weight[row] = head.weight[old]
        model.head.bias[row] = head.bias[old]
    return kept


class Task:
    """A task: subclass it, set the class attributes, override what differs from a head on video clips."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = NoFields
    metrics: ClassVar[dict[str, bool]] = {"loss": False}  # name -> higher is better; the first is the default
    config_defaults: ClassVar[dict] = {}  # shared fields whose default differs for this task
    supervised: ClassVar[bool] = True  # reads labeled splits (train/val); False: unlabeled video (pretraining)
    judged_on_train_loss: ClassVar[bool] = False  # no held-out set: best/ is the epoch of the lowest training loss
    uses_labels: ClassVar[bool] = False  # reads a label column and saves labels.json (a classifier)

    # --- data -------------------------------------------------------------------------------------------------
    def prepare(self, cfg, out: Path) -> Prepared:
        """The run's training and validation data (class folders without a val split: a stratified share)."""
        if self.uses_labels:
            train, val = train_val(
                cfg.data, train_split=cfg.train_split, val_split=cfg.val_split, val_fraction=cfg.val_fraction,
                label_column=getattr(cfg, "label_column", "label"), seed=cfg.seed,
            )  # fmt: skip
            return Prepared(train, val, labels=train.labels)
        # Unlabeled clips (the targets come from the clips): the splits as they are.
        train = load_dataset(cfg.data, split=cfg.train_split, require_labels=False)
        val = None
        if Path(cfg.data).is_dir() and cfg.val_split not in (None, "none") and has_split(cfg.data, cfg.val_split):
            val = load_dataset(cfg.data, split=cfg.val_split, require_labels=False)
        return Prepared(train, val)

    def arms(self, cfg, prepared: Prepared) -> list[Arm]:
        """The models this run trains, the main one first."""
        return [Arm(self.name, Path(cfg.out))]

    def training_data(self, prepared: Prepared, arm: Arm):
        """What `arm` trains on: ``prepared.train`` (an arm may train on other data, e.g. without replay)."""
        return prepared.train

    def num_outputs(self, prepared: Prepared) -> int:
        """Outputs of the head (classes of a classifier, 1 for a scalar regression)."""
        return len(prepared.labels) if prepared.labels else 1

    def reads(self, prepared: Prepared, arm: Arm) -> Reads:
        """What the model of `arm` reads from a window while it trains."""
        return Reads(arm.modalities, prepared.extra.get("audio"), prepared.tokenizer)

    def dataset(
        self, data, pre: Preprocessing, reads: Reads, *, augment: Augment | None = None, seed: int = 0,
        windows: list | None = None,
    ) -> ClipDataset:  # fmt: skip
        """The items of `data` as a model that `reads` them sees them: video clips, with their audio beside them
        when it reads audio (training with `augment`; explicit `windows` (item, start, end) to infer)."""
        if reads.modalities == ("video",):
            return ClipDataset(data, pre, augment=augment, seed=seed, windows=windows)
        return AVClipDataset(
            data, pre, reads.audio, modalities=reads.modalities, augment=augment, seed=seed, windows=windows
        )

    # --- model -------------------------------------------------------------------------------------------------
    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        """An encoder with a head of `num_outputs`: fresh of a registered size, or from a checkpoint."""
        from tubelet.models import load, model_names

        runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
        outputs = self.num_outputs(prepared)
        if Path(cfg.model).is_dir() or cfg.model not in model_names():  # a checkpoint: a directory or a hub id
            loaded = load(cfg.model, kind="encoder", **runtime)  # another kind is an error naming its config.json
            if loaded.labels != prepared.labels or loaded.model.num_classes != outputs:
                kept = carry_head(loaded.model, loaded.labels, prepared.labels, outputs)
                if kept:
                    log.info("%s: head rows of %d classes kept by name (%s)", cfg.model, len(kept), ", ".join(kept))
            return Built(loaded.model, loaded.preprocessing)
        fresh = dict(
            runtime, num_classes=outputs, pooling=cfg.pooling, time_mode=cfg.time_mode, embed_init=cfg.embed_init
        )
        if cfg.tubelet is not None:
            fresh["tubelet"] = tuple(cfg.tubelet)
        try:
            return Built(load(cfg.model, **fresh).model)
        except ValueError as exc:
            raise ConfigError(f"model {cfg.model}: {exc}") from exc

    # --- training ----------------------------------------------------------------------------------------------
    def targets(self, batch: Batch, prepared: Prepared | None = None) -> dict[str, torch.Tensor]:
        """The batch's targets, by name (class ids, a value per clip, pixels, a signal...)."""
        return {"label": batch.labels}

    def forward(self, model, packed) -> torch.Tensor:
        """Per-clip outputs (B, K) of `model` on a packed batch (on the model's device)."""
        return model(packed)

    def objective(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor], cfg) -> torch.Tensor:
        """The training loss (a scalar, mean over the batch's clips) of outputs against targets."""
        raise NotImplementedError(f"task {self.name} has no objective")

    # --- inference ---------------------------------------------------------------------------------------------
    def postprocess(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs (n, K) -> predictions (n, K') that can be averaged over windows (probabilities, values)."""
        return outputs

    def score(self, predictions: np.ndarray, data, labels: list[str] | None, *, targets: dict) -> dict:
        """Metrics (holding every name of `metrics`) of per-item `predictions` (NaN rows: not decoded).

        Args:
            data: the evaluated items (their samples carry labels, for a classifier).
            targets: `targets` of every item's windows, averaged per item ({name: (n, k)}): what a task whose
                targets come from the clips themselves scores against.
        """
        raise NotImplementedError(f"task {self.name} has no metrics")

    def describe(self, prediction: np.ndarray, labels: list[str] | None, *, topk: int) -> dict:
        """What ``tubelet predict`` prints for one item (or window): a label and score, or a value."""
        return {"value": [round(float(v), 6) for v in prediction]}

    def loss(
        self, module, batch: Batch, *, cfg, prepared: Prepared, arm: Arm, pre: Preprocessing, epoch: int, index: int,
        device,
    ):  # fmt: skip
        """One batch's `StepLoss` (None: nothing to learn from it): `forward`, `targets`, `objective`."""
        with autocast(device, cfg.precision):
            outputs = self.forward(module, batch.packed.to(device))
        targets = {k: v.to(device) for k, v in self.targets(batch, prepared).items()}
        clips = len(batch.indices)
        return StepLoss(self.objective(outputs.float(), targets, cfg), clips, clips)

    def validate(self, model, prepared: Prepared, arm: Arm, pre: Preprocessing, *, cfg, device):
        """Metrics of `model` on the validation data (holding every name of `metrics`), or None."""
        if prepared.val is None:
            return None
        return self.evaluate(
            model, prepared.val, pre, labels=prepared.labels, views=cfg.eval_views, budget=cfg.batch_particles,
            device=device, precision=cfg.precision, workers=cfg.workers, reads=self.reads(prepared, arm),
        )  # fmt: skip

    def clips(self, data) -> VideoDataset:
        """The clips whose windows `data`'s items are (the data itself; one clip per question for VQA)."""
        return data

    def evaluate(
        self, model, data, pre: Preprocessing, *, labels: list[str] | None, reads: Reads, views: int = 1,
        budget: int = 8192, device, precision: str = "auto", workers: int = 0,
    ) -> dict:  # fmt: skip
        """`score` of `model` on `data`, `views` windows averaged per item; files that cannot be decoded are
        reported and left out (``skipped``)."""
        clips = self.clips(data)
        windows = view_windows(clips, pre.clip_seconds, views)
        dataset = self.dataset(data, pre, reads, windows=windows)
        targets: dict = {}
        per_item, failed = windowed_outputs(
            self, model, dataset, windows, len(clips), budget=budget, device=device, precision=precision,
            workers=workers, targets=targets,
        )  # fmt: skip
        metrics = self.score(per_item, data, labels, targets=targets)
        metrics["skipped"] = sorted({path for path, _ in failed})
        return metrics

    def evaluate_checkpoint(self, directory: Path, data, cfg) -> dict:
        """Metrics of a saved checkpoint of a run on `data`, as `tubelet evaluate` scores it (a run's test report)."""
        from tubelet.models import load

        loaded = load(directory)
        device = resolve_device(cfg.device)
        return self.evaluate(
            loaded.model.to(device), data, loaded.preprocessing, labels=loaded.labels, reads=Reads.of(loaded),
            views=cfg.eval_views, budget=cfg.batch_particles, device=device, precision=cfg.precision,
            workers=cfg.workers,
        )  # fmt: skip

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        """The run's summary (``summary.json``) after every arm trained: by default the main arm's numbers."""
        out = Path(cfg.out)
        return {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), **summaries[arms[0].name]}

    def on_epoch_end(self, model, prepared: Prepared, arm: Arm, pre: Preprocessing, *, cfg, device, epoch: int):
        """More keys for an epoch's line (and files it writes, e.g. pictures); none by default.

        Under torchrun rank 0 calls it, or every rank when the model is FSDP-sharded (a forward pass gathers the
        shards from every rank): write files only where ``tubelet.distributed.world().main``."""
        return {}

    def checkpoint_extras(self, prepared: Prepared, arm: Arm) -> dict:
        """What a checkpoint of this task holds beside the model: ``labels``, ``tokenizer``, ``audio``..."""
        audio = prepared.extra.get("audio") if arm.modalities != ("video",) else None  # a fusion model's
        return {"labels": prepared.labels, "tokenizer": prepared.tokenizer, "audio": audio}

    def check_predict(self, loaded) -> None:
        """A ConfigError when this task's checkpoint cannot predict (``tubelet predict``): a classifier needs labels."""
        if self.uses_labels and not loaded.labels:
            raise ConfigError(f"{loaded.source}: the checkpoint has no labels.json (not a classifier)")

    # --- evaluation of a checkpoint (``tubelet evaluate``) -------------------------------------------------------
    def check_evaluation(self, *, split: str | None, whole: bool, baseline: str | None, loaded) -> None:
        """One-line errors for the flags this task's checkpoints cannot use (by default: a baseline)."""
        if baseline is not None:
            raise ConfigError(
                f"--baseline: not supported for a {self.name} checkpoint (evaluate each checkpoint on its own)"
            )

    def check_baseline(self, loaded, base, name: str) -> None:
        """A ConfigError when `base` cannot be reported beside `loaded`."""

    def evaluation_data(self, source: str, split: str | None, loaded):
        """What a checkpoint is evaluated on: a split of `source` (None: `source` is one manifest)."""
        return load_dataset(source, split=split, require_labels=self.uses_labels)

    def evaluation_report(self, scores: dict, models: dict, data, *, details: dict, out: Path) -> dict:
        """Write the report of an evaluation (``scores["model"]``, and ``scores["baseline"]`` when one was given)
        into `out`; the report with ``files`` (the paths written)."""
        metrics = scores["model"]
        details.update(items=metrics.get("num_samples"), skipped=len(metrics["skipped"]) + len(data.skipped))
        report = {**metrics, "details": details}
        markdown = self.report_markdown(report, title=f"Evaluation of {details['checkpoint']}")
        return {**report, "files": {k: str(v) for k, v in write_report_files(report, out, markdown).items()}}

    # --- reports -----------------------------------------------------------------------------------------------
    def report_markdown(self, report: dict, *, title: str) -> str:
        """The ``report.md`` of an evaluation."""
        rows = [f"| {k} | {v:.4f} |" for k, v in report.items() if k in self.metrics]
        return "\n".join([f"# {title}", "", "| metric | value |", "|---|---:|", *rows]) + "\n"

    def summary_line(self, report: dict) -> str:
        """One line for the terminal after ``tubelet evaluate``."""
        return "   ".join(f"{k} {report[k]:.4f}" for k in self.metrics if k in report)


# --- the registry -------------------------------------------------------------------------------------------------

_TASKS: dict[str, Task] = {}


def refuse_frame_options(cfg, task: str) -> None:
    """For a task that makes its own particles (not through `Preprocessing`'s crop and pixels): a motion crop or
    frame differences asked for would be silently ignored, so they are refused, naming the field.

    Raises:
        ConfigError: ``crop`` or ``pixels`` set to anything but the whole RGB frame.
    """
    if cfg.crop is not None:
        raise ConfigError(f"crop: the {task} task reads whole frames; a motion crop ({cfg.crop!r}) is for classifiers")
    if cfg.pixels != "rgb":
        raise ConfigError(f"pixels: the {task} task reads RGB frames, not {cfg.pixels!r}")


def register(task: type[Task] | Task) -> type[Task] | Task:
    """Add a task (class or instance) under its `name`; usable as a class decorator. A name is registered once."""
    instance = task() if isinstance(task, type) else task
    if not instance.name:
        raise ValueError(f"{task}: a task needs a name")
    known = _TASKS.get(instance.name)
    if known is not None and type(known) is not type(instance):
        raise ValueError(f"task {instance.name!r} is already registered ({type(known).__name__})")
    if not dataclasses.is_dataclass(instance.Config):
        raise ValueError(f"task {instance.name}: Config must be a dataclass")
    _TASKS[instance.name] = instance
    return task


def get_task(name: str) -> Task:
    """The registered task `name`; a ConfigError listing the known ones otherwise."""
    _load_builtin()
    if name not in _TASKS:
        raise ConfigError(f"task: expected one of {', '.join(task_names())}, got {name!r}")
    return _TASKS[name]


def task_of(loaded) -> Task:
    """The task a loaded checkpoint (`tubelet.models.Loaded`) was trained for: the one its training run named, or,
    for checkpoints that name none (imports, older runs), the one its kind implies."""
    if loaded.task:
        if loaded.task not in task_names():
            raise ConfigError(
                f"{loaded.source}: trained for task {loaded.task!r}, which is not registered here "
                f"(known: {', '.join(task_names())})"
            )
        return get_task(loaded.task)
    if loaded.kind == "retrieval":
        return get_task("retrieval")
    if "text" in Reads.of(loaded).modalities:
        return get_task("vqa")
    return get_task("classification")


def task_names() -> list[str]:
    _load_builtin()
    return list(_TASKS)


def _load_builtin() -> None:
    """Import the built-in task modules (each registers itself) the first time the registry is read."""
    import tubelet.tasks.caption  # noqa: F401
    import tubelet.tasks.classification  # noqa: F401
    import tubelet.tasks.dialogue  # noqa: F401
    import tubelet.tasks.importance  # noqa: F401
    import tubelet.tasks.reconstruction  # noqa: F401
    import tubelet.tasks.restoration  # noqa: F401
    import tubelet.tasks.retrieval  # noqa: F401
    import tubelet.tasks.vitals  # noqa: F401
    import tubelet.tasks.vqa  # noqa: F401
