"""Supervised fine-tuning: labeled videos in, a classifier with `best/` and `last/` checkpoints out.

Read top to bottom: config -> data -> model -> optimizer -> (resume) -> loop -> checkpoints.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from tubelet.data.dataset import ClipDataset, budget_batches
from tubelet.data.manifest import VideoDataset
from tubelet.data.splits import train_val
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.models.registry import model_names
from tubelet.recipes.common import LoadedModel, checkpoint_config, evaluate_classifier, load_model, trainable_module
from tubelet.recipes.fusion import finetune_fusion, parse_modalities
from tubelet.recipes.retrieval import finetune_retrieval
from tubelet.recipes.vqa import finetune_vqa
from tubelet.tasks.classification import classification_loss
from tubelet.train import checkpoint
from tubelet.train.config import to_dict
from tubelet.train.loader import iterate_batches
from tubelet.train.loop import EarlyStopping, autocast, optimizer_step, resolve_device, seed_everything, steps_in
from tubelet.train.lora import deployable
from tubelet.train.metrics_log import MetricsLog
from tubelet.train.optim import build_optimizer, param_groups, parse_freeze, warmup_cosine
from tubelet.train.resume import loop_state, resume, trainer_state

log = logging.getLogger("tubelet.finetune")

TASKS = ("classification", "retrieval", "vqa")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run needs. Saved as ``RUN/config.json`` and in every checkpoint."""

    data: str = ""  # class folders, a folder with train/val manifests, or one manifest
    model: str = "micro"  # a registered size (micro, tiny, small, base, large, test) or a checkpoint directory
    out: str = "runs/finetune"  # run directory: best/, last/, metrics.jsonl, tensorboard/, config.json
    train_split: str = "train"  # split read for training (ignored when data is one manifest)
    val_split: str | None = "val"  # split for validation, best/ and early stopping; none to skip
    val_fraction: float = 0.2  # share of each class held out for validation when class folders have no splits; 0: none
    epochs: int = 10  # passes over the training clips
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.01  # final LR as a fraction of the peak (cosine)
    warmup_epochs: float = 1.0  # linear warmup length
    optimizer: str = "adamw"  # adamw or sgd
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 0.05  # decoupled weight decay (not on biases, norms, position parameters)
    batch_particles: int = 4096  # particle budget per batch (clips of any size share it; no padding)
    max_clips_per_batch: int | None = None  # optional cap on clips per batch
    accum_steps: int = 1  # gradient accumulation: batches per optimizer step
    grad_clip: float | None = 1.0  # max global gradient norm; none disables
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    dropout: float = 0.0  # dropout in blocks and before the head
    drop_path: float = 0.0  # stochastic depth of the last block
    pooling: str = "mean"  # clip pooling for a fresh model: mean or attention
    time_mode: str = "seconds"  # time positions for a fresh model: seconds or index (ablation)
    freeze: str = "none"  # none | backbone (head, new embeddings; retrieval: text tower) | top:K (+ last K blocks)
    layer_decay: float = 1.0  # layer-wise LR decay (< 1 trains lower blocks slower)
    peft: str = "none"  # none or lora (peft adapters on the blocks; trains them and what freeze=backbone keeps)
    lora_rank: int = 8  # LoRA rank
    lora_alpha: float = 16.0  # LoRA scaling numerator
    lora_dropout: float = 0.0  # dropout inside the LoRA branch
    early_stopping: int | None = None  # stop after this many validations without improvement
    metric: str = "accuracy"  # validation metric for best/ and early stopping: accuracy or macro_f1
    tubelet: tuple[int, int, int] | None = None  # frames x rows x cols; none takes the model's
    sample_fps: float | None = 8.0  # frames per second read; none reads native frames
    clip_seconds: float = 2.0  # seconds per training clip
    size: int | None = 112  # short side after resizing; none keeps the source size
    max_long_side: int | None = 224  # cap on the long side after resizing
    prune_threshold: float = 4.0  # static pruning threshold in 0-255 levels (0 keeps all)
    crop_scale_min: float = 0.6  # random resized crop keeps at least this area fraction (1 disables)
    flip: bool = False  # horizontal flips (off: they swap left and right motion)
    fps_jitter: float = 0.0  # sample at sample_fps * U(1/(1+j), 1+j)
    eval_views: int = 1  # windows averaged per validation video
    workers: int = 2  # DataLoader decoding processes (0 decodes in the main process)
    seed: int = 0  # seed of initialisation, sampling and augmentation
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    precision: str = "auto"  # auto (bf16 autocast on CUDA), bf16 or fp32
    attention: str = "auto"  # attention backend (auto, sdpa, dense, varlen, flash, flex)
    save_every_steps: int = 0  # also save last/ every this many optimizer steps (0: each epoch only)
    resume: bool = False  # continue from out/last if it holds trainer state
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    modalities: str = "video"  # comma-separated: video, audio; video,audio trains one early-fusion model
    ablate: bool = True  # with several modalities, also train each alone (same budget) and report all arms
    allow_missing_audio: bool = False  # a file without an audio stream gets silence instead of an error
    task: str = "classification"  # classification; retrieval: (clip, caption) pairs; vqa: qa_{split}.csv answers
    tokenizer: str | None = None  # retrieval, vqa: tokenizer dir, tokenizer.json or hub id; none trains one
    label_column: str = "label"  # classification: the manifest column holding the class (e.g. sentiment)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data: give a dataset directory or manifest (--data)")
        for name in ("epochs", "batch_particles", "accum_steps", "eval_views"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be positive, got {self.lr}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer: expected adamw or sgd, got {self.optimizer!r}")
        if self.peft not in ("none", "lora"):
            raise ConfigError(f"peft: expected none or lora, got {self.peft!r}")
        if self.metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"metric: expected accuracy or macro_f1, got {self.metric!r}")
        if self.clip_seconds <= 0:
            raise ConfigError(f"clip_seconds: must be positive, got {self.clip_seconds}")
        if self.task not in TASKS:
            raise ConfigError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        parse_freeze(self.freeze)
        parse_modalities(self.modalities)


def finetune(cfg: FinetuneConfig) -> dict:
    """Run fine-tuning; returns a summary with the best validation metrics and the checkpoint paths."""
    cfg.validate()
    if cfg.task == "retrieval":  # two towers on (clip, caption) pairs: `tubelet.recipes.retrieval`
        return finetune_retrieval(cfg)
    if cfg.task == "vqa":  # (clip, question) -> answer class with one fusion model: `tubelet.recipes.vqa`
        return finetune_vqa(cfg)
    if parse_modalities(cfg.modalities) != ("video",):  # audio, or video with audio: `tubelet.recipes.fusion`
        return finetune_fusion(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)

    # --- data ------------------------------------------------------------------------------------------
    train_data, val_data = _load_data(cfg)
    labels = train_data.labels

    # --- model -----------------------------------------------------------------------------------------
    loaded = _build_model(cfg, labels)
    model = loaded.model.to(device)
    pre = preprocessing_for(cfg, loaded)
    train_module = trainable_module(model, cfg, fresh=loaded.preprocessing is None)
    groups = param_groups(
        train_module, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay, depth_of=model.block_index
    )
    optimizer = build_optimizer(groups, name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum)

    augment = Augment(crop_scale=(cfg.crop_scale_min, 1.0), flip=cfg.flip, fps_jitter=cfg.fps_jitter)
    train_set = ClipDataset(train_data, pre, augment=augment, seed=cfg.seed)
    estimates = train_set.estimates()
    quarantine: set[int] = set()
    epoch_batches = [_epoch_batches(cfg, estimates, e, quarantine) for e in range(cfg.epochs)]
    total_steps = sum(steps_in(b, cfg.accum_steps) for b in epoch_batches)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = round(cfg.warmup_epochs * steps_in(epoch_batches[0], cfg.accum_steps))
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total_steps, min_ratio=cfg.min_lr_ratio)

    # --- state, resume ---------------------------------------------------------------------------------
    state = loop_state()
    if cfg.resume and resume(out / "last", module=train_module, optimizer=optimizer, scheduler=scheduler, state=state):
        quarantine.update(_indices(train_data, [p for p, _ in state["skipped"]]))
    stopper = EarlyStopping(cfg.early_stopping, state["best"], state["bad_epochs"])
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    metrics_log = MetricsLog(out)
    _log_plan(cfg, model, train_data, val_data, total_steps, device)

    def save(name: str, with_trainer: bool) -> None:
        trainer = None
        if with_trainer:
            module = train_module if train_module is not model else None
            trainer = trainer_state(optimizer, scheduler, state, module=module)
        checkpoint.save_checkpoint(
            out / name,
            model=deployable(train_module),
            config=checkpoint_config(model, pre),
            labels=labels,
            training_args=to_dict(cfg),
            trainer=trainer,
        )

    # --- loop ------------------------------------------------------------------------------------------
    last_metrics: dict = {}
    for epoch in range(state["epoch"], cfg.epochs):
        if state["step"] >= total_steps or stopper.should_stop:
            break
        train_set.set_epoch(epoch)
        batches = _epoch_batches(cfg, estimates, epoch, quarantine)
        skip = state["batch_in_epoch"]
        train_module.train()
        progress = tqdm(
            total=len(batches),
            initial=skip,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            dynamic_ncols=True,
            disable=None,
        )
        seen, loss_sum, started = 0, 0.0, time.perf_counter()
        step_loss, step_clips = 0.0, 0  # over the batches of one optimizer step

        def on_crash(path, reason):
            state["skipped"].append((path, reason))
            quarantine.update(_indices(train_data, [path]))

        for i, batch in enumerate(
            iterate_batches(train_set, batches[skip:], workers=cfg.workers, on_crash=on_crash), start=skip
        ):
            for item in batch.failed:
                log.warning("skipping %s: %s", item.path, item.error)
                on_crash(item.path, item.error)
            if batch.packed is not None:
                with autocast(device, cfg.precision):
                    logits = train_module(batch.packed.to(device))
                loss = classification_loss(logits.float(), batch.labels.to(device), label_smoothing=cfg.label_smoothing)
                (loss / cfg.accum_steps).backward()
                seen += len(batch.labels)
                loss_sum += loss.item() * len(batch.labels)
                step_loss += loss.item() * len(batch.labels)
                step_clips += len(batch.labels)
            progress.update(1)
            if (i + 1) % cfg.accum_steps and i + 1 != len(batches):
                continue
            if step_clips == 0:  # every clip of these batches failed to decode: nothing to learn from
                continue
            grad_norm = optimizer_step(train_module, optimizer, scheduler, cfg.grad_clip)
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            rate = seen / max(time.perf_counter() - started, 1e-9)
            progress.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", clips_s=f"{rate:.1f}")
            metrics_log.write(
                "train",
                state["step"],
                loss=step_loss / step_clips,
                lr=scheduler.get_last_lr()[0],
                grad_norm=grad_norm,
                clips_per_s=rate,
                epoch=epoch,
            )
            step_loss, step_clips = 0.0, 0
            if cfg.save_every_steps and state["step"] % cfg.save_every_steps == 0:
                save("last", with_trainer=True)
            if state["step"] >= total_steps:
                break
        progress.close()
        if seen == 0 and skip < len(batches):
            raise DataError(f"{cfg.data}: no training clip could be decoded in epoch {epoch + 1} (see warnings)")
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        summary = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "clips_per_s": round(seen / max(time.perf_counter() - started, 1e-9), 2),
        }

        if val_data is not None:
            metrics = evaluate_classifier(
                train_module,
                val_data,
                pre,
                labels,
                views=cfg.eval_views,
                budget=cfg.batch_particles,
                device=device,
                precision=cfg.precision,
                workers=cfg.workers,
            )
            value = metrics[cfg.metric]
            improved = stopper.update(value)
            state["best"], state["bad_epochs"] = stopper.best, stopper.bad_epochs
            summary.update(val_accuracy=round(metrics["accuracy"], 4), val_macro_f1=round(metrics["macro_f1"], 4))
            metrics_log.write(
                "val", state["step"], accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], epoch=epoch + 1
            )
            last_metrics = metrics
            if improved:
                save("best", with_trainer=False)
                (out / "best" / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save("last", with_trainer=True)
        print(json.dumps(summary), flush=True)
        if stopper.should_stop:
            log.info("early stopping: no %s improvement in %d validations", cfg.metric, stopper.bad_epochs)

    if val_data is None:  # nothing to choose by: the last weights are the best we know
        save("best", with_trainer=False)
    metrics_log.close()
    result = {
        "out": str(out),
        "best": str(out / "best"),
        "last": str(out / "last"),
        "steps": state["step"],
        "epochs_run": state["epoch"],
        f"best_val_{cfg.metric}": stopper.best,
        "skipped": [{"path": p, "reason": r} for p, r in state["skipped"]],
    }
    if last_metrics:
        result["last_val_accuracy"] = last_metrics["accuracy"]
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- helpers (plain functions; the loop above is the recipe) -----------------------------------------------


def _load_data(cfg: FinetuneConfig) -> tuple[VideoDataset, VideoDataset | None]:
    """Training and validation clips: the data's splits, or class folders less a validation share per class."""
    return train_val(
        cfg.data, train_split=cfg.train_split, val_split=cfg.val_split, val_fraction=cfg.val_fraction,
        label_column=cfg.label_column, seed=cfg.seed,
    )  # fmt: skip


def _build_model(cfg: FinetuneConfig, labels: list[str]) -> LoadedModel:
    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    if Path(cfg.model).is_dir() or cfg.model not in model_names():  # a checkpoint: a directory or a hub id
        loaded = load_model(cfg.model, **runtime)
        if loaded.labels != labels:
            loaded.model.reset_head(len(labels))
        return loaded
    fresh = dict(runtime, num_classes=len(labels), pooling=cfg.pooling, time_mode=cfg.time_mode)
    if cfg.tubelet is not None:
        fresh["tubelet"] = tuple(cfg.tubelet)
    try:
        return load_model(cfg.model, **fresh)
    except ValueError as exc:
        raise ConfigError(f"model {cfg.model}: {exc}") from exc


def preprocessing_for(cfg, loaded: LoadedModel) -> Preprocessing:
    """The model's preprocessing with the run's sampling, resizing and pruning (a FinetuneConfig or PretrainConfig)."""
    tubelet = loaded.model.config.tubelet
    if cfg.tubelet is not None and tuple(cfg.tubelet) != tuple(tubelet):
        raise ConfigError(f"tubelet: {cfg.model} was trained with {'x'.join(map(str, tubelet))}; it cannot change")
    base = loaded.preprocessing or Preprocessing()
    pre = replace(
        base,
        tubelet=tuple(tubelet),
        sample_fps=cfg.sample_fps,
        clip_seconds=cfg.clip_seconds,
        size=cfg.size,
        max_long_side=cfg.max_long_side,
        prune_threshold=cfg.prune_threshold,
    )
    check_fits(pre)
    return pre


def check_fits(pre: Preprocessing) -> None:
    """A tubelet larger than every clip would make every clip fail: say so before training starts."""
    t, p, q = pre.tubelet
    name = "x".join(map(str, pre.tubelet))
    frames = round(pre.clip_seconds * pre.sample_fps) if pre.sample_fps is not None else None
    if frames is not None and frames < t:
        raise ConfigError(
            f"tubelet: {name} needs {t} frames per clip but clip_seconds x sample_fps gives {frames}; "
            "raise clip_seconds or sample_fps"
        )
    if pre.size is not None and pre.size < max(p, q):
        raise ConfigError(f"tubelet: {name} is larger than frames resized to a {pre.size}-px short side")


def _epoch_batches(cfg, estimates, epoch, quarantine) -> list[list[int]]:
    return budget_batches(
        estimates,
        cfg.batch_particles,
        shuffle=True,
        seed=cfg.seed,
        epoch=epoch,
        max_clips=cfg.max_clips_per_batch,
        exclude=quarantine,
    )


def _indices(data: VideoDataset, paths: list[str]) -> list[int]:
    wanted = set(paths)
    return [i for i, s in enumerate(data.samples) if str(s.path) in wanted]


def _log_plan(cfg, model, train_data, val_data, total_steps, device) -> None:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "fine-tuning %s on %d clips (%d classes), validating on %s; %d steps on %s; %.2fM of %.2fM parameters "
        "trainable",
        cfg.model,
        len(train_data),
        len(train_data.labels),
        f"{len(val_data)} clips" if val_data else "nothing",
        total_steps,
        device,
        trainable / 1e6,
        total / 1e6,
    )
