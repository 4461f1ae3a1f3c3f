"""A training run of any task: data -> per arm (model -> what trains -> optimizer -> (resume) -> `fit`) -> summary.

``tubelet finetune --task NAME`` and ``tubelet pretrain`` (task ``reconstruction``) both come here. The task
(`tubelet.tasks.base.Task`) says what the data, the model, the loss, the metrics and the report are; this module
does the same set-up for all of them: seeds, ``RUN/config.json``, the preprocessing a checkpoint brings (sampling
flags applied on top), freeze and LoRA (`trainable_module`), layer-decayed parameter groups, the warmup + cosine
schedule over the run's real step count, resume from ``last/`` and saving through `tubelet.models.save`.

A task may train several arms with the same data, seed and budget (the single-modality ablations of a fused model,
VQA's question-only arm): each is a model of its own under ``RUN/ablation/NAME``, resumed from its own ``last/``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from tubelet import distributed
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError
from tubelet.models.encoder import ENCODER_KEEP
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.tasks.base import Arm, Built, Prepared, Task, get_task
from tubelet.train.config import to_dict
from tubelet.train.fit import Schedule, fit, total_steps
from tubelet.train.lora import add_lora, deployable
from tubelet.train.optim import apply_freeze, build_optimizer, param_groups, warmup_cosine
from tubelet.train.parallel import full_state, wrap
from tubelet.train.resume import check_ranks, loop_state, resume, trainer_state
from tubelet.train.run_dir import LEGACY_VALUES, claim
from tubelet.train.seed import seed_everything

log = logging.getLogger("tubelet.train")


def run_task(cfg, task: Task | None = None) -> dict:
    """Train `cfg`'s task (``cfg.task``, or `task`); returns the summary also written to ``RUN/summary.json``.

    Under torchrun (``torchrun --nproc_per_node=N -m tubelet finetune ...``) every process calls it: they join one
    process group, rank 0 checks and claims the run directory, reads the data for every rank and writes what the
    run holds, and every rank trains its share (`tubelet.train.fit.fit`) and evaluates its share of the held-out
    data (`tubelet.distributed.shard`).
    """
    task = task or get_task(cfg.task_name)
    cfg.validate()
    device = distributed.init(cfg.device) or resolve_device(cfg.device)
    try:
        return _run(task, cfg, device)
    finally:
        distributed.finish()


def _run(task: Task, cfg, device) -> dict:
    here = distributed.world()
    values = None
    if here.main:
        writable_dir(cfg.out, "--out")  # before the work, not when the first checkpoint is saved
        values = claim(cfg)  # refuses to replace a run, or to resume one with other hyperparameters
    values = distributed.broadcast(values)  # the other ranks wait for rank 0's verdict (an error ends the run)
    kept = {k: values[k] for k in LEGACY_VALUES if k in values and values[k] != getattr(cfg, k, values[k])}
    cfg = dataclasses.replace(cfg, **kept)  # a resumed run from before a field existed keeps what it trained with
    out = Path(cfg.out)
    if here.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    seed_everything(cfg.seed)
    # Rank 0 reads the data (probing every file once, training a tokenizer) and hands it to the others: every rank
    # then holds the same clips, labels and vocabulary (a tokenizer trained twice can differ), with no file probed
    # N times.
    prepared = distributed.broadcast(task.prepare(cfg, out) if here.main else None)
    arms = task.arms(cfg, prepared)
    summaries = {}
    for arm in arms:
        if len(arms) > 1:
            log.info("training arm %s (%s)", arm.name, ", ".join(arm.modalities))
        summaries[arm.name] = train_arm(task, cfg, prepared, arm, named=len(arms) > 1, device=device)
    result = task.finish(cfg, prepared, arms, summaries)  # every rank: the test split is evaluated in shards
    if here.main:
        (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    distributed.barrier()
    return result


def train_arm(task: Task, cfg, prepared: Prepared, arm: Arm, *, named: bool = False, device=None) -> dict:
    """Train one model of the run (`arm`) into ``arm.out/best`` and ``arm.out/last``; its `fit` summary.

    Args:
        named: the run trains several arms: progress and epoch lines carry the arm's name.
        device: where it trains (this rank's device under torchrun); None: the run's ``device`` field.
    """
    here = distributed.world()
    seed_everything(cfg.seed)  # every arm starts from the same seed: equal budget, same batches
    device = device or resolve_device(cfg.device)
    built = task.build(cfg, prepared, arm)
    if here.main:
        arm.out.mkdir(parents=True, exist_ok=True)
        if built.load_report is not None:
            (arm.out / "load_report.json").write_text(json.dumps(built.load_report, indent=2) + "\n")
    model = built.model
    pre = preprocessing_for(cfg, built.tubelet, built.preprocessing)
    adapted = trainable_module(model, cfg, keep=built.keep, tower=built.tower, fresh=built.preprocessing is None)
    module = adapted  # what trains: the model (or its LoRA wrapper), with the modules saved beside it (a decoder)
    if built.extra:
        module = nn.ModuleDict({"model": adapted, **built.extra})
    fsdp = cfg.parallel == "fsdp" and here.distributed
    # Under FSDP no rank holds the whole model: rank 0 keeps an unsharded copy on the CPU for the gathered weights
    # it saves, and sharding moves each rank's shards to its device.
    template = copy.deepcopy(module) if fsdp and here.main else None
    if not fsdp:
        module.to(device)
    trainer = wrap(module, parallel=cfg.parallel, device=device)  # before the optimizer: FSDP swaps in shards
    depth_of = model.block_index if module is adapted else None  # layer decay is by the model's own blocks
    groups = param_groups(
        module, weight_decay=cfg.weight_decay, layer_decay=getattr(cfg, "layer_decay", 1.0), depth_of=depth_of
    )
    optimizer = build_optimizer(groups, name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum)
    augment = Augment(crop_scale=(cfg.crop_scale_min, 1.0), flip=cfg.flip, fps_jitter=cfg.fps_jitter)
    train_set = task.dataset(
        task.training_data(prepared, arm), pre, task.reads(prepared, arm), augment=augment, seed=cfg.seed
    )
    schedule = dataclasses.replace(Schedule.of(cfg), ranks=here.size)
    estimates = train_set.estimates()
    if estimates and cfg.batch_particles < max(estimates):
        alone = sum(e > cfg.batch_particles for e in estimates)
        log.warning(
            "batch_particles %d is smaller than one clip (up to %d particles before pruning): %d of %d training "
            "clips each make a batch of their own; raise --batch-particles to batch clips together",
            cfg.batch_particles, max(estimates), alone, len(estimates),
        )  # fmt: skip
    steps, per_epoch = total_steps(estimates, schedule)
    warmup = round(cfg.warmup_epochs * per_epoch)
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup, total_steps=steps, min_ratio=cfg.min_lr_ratio)

    state = loop_state(ranks=here.size)
    if cfg.resume:
        resume(arm.out / "last", module=module, optimizer=optimizer, scheduler=scheduler, state=state, trainer=trainer)
        check_ranks(state, here.size, arm.out / "last")
    if here.distributed:  # after a resume restored rank 0's generators: dropout differs from rank to rank
        torch.manual_seed(cfg.seed + 7919 * here.rank + state["step"])
    sizes = [sum(p.numel() for p in module.parameters() if p.requires_grad or every) / 1e6 for every in (True, False)]
    what = task.name if arm.name == task.name else f"{task.name} ({arm.name})"
    ranks = f" x {here.size} processes ({cfg.parallel})" if here.distributed else ""
    log.info(
        "%s: %s on %d training items, %s; %d steps on %s%s; %.2fM parameters, %.2fM trainable",
        what, cfg.model, len(train_set), "validating" if prepared.val is not None else "no validation", steps,
        device, ranks, *sizes,
    )  # fmt: skip
    extras = task.checkpoint_extras(prepared, arm)
    args = {**to_dict(cfg), "task": task.name, "arm_modalities": list(arm.modalities)}

    def save(name: str, with_trainer: bool) -> Path:
        """Write ``arm.out/name`` on rank 0; every rank calls it (sharded weights are gathered first)."""
        from tubelet.models import save as save_model

        saved, optim = module, None
        if fsdp:  # gathered from every rank's shards (a collective), into rank 0's unsharded copy
            weights, optim = full_state(trainer, module, optimizer if with_trainer else None)
            if here.main:
                template.load_state_dict(weights)
                saved = template
        if not here.main:
            return arm.out / name
        saved_adapted = saved["model"] if built.extra else saved
        trainer_dict = None
        if with_trainer:  # the training module's own state too when it is not the saved model (LoRA, decoder)
            trainer_dict = trainer_state(
                optimizer, scheduler, state, module=saved if module is not model else None, optimizer_state=optim
            )
        return save_model(
            arm.out / name,
            deployable(saved_adapted),
            preprocessing=pre,
            training_args=args,
            trainer=trainer_dict,
            decoder=saved["decoder"] if "decoder" in built.extra else None,
            **extras,
        )

    metric = getattr(cfg, "metric", None) or next(iter(task.metrics))  # the config checked it is the task's

    def validate() -> dict | None:
        return task.validate(model, prepared, arm, pre, cfg=cfg, device=device)

    def loss_of(module, batch, epoch: int, index: int):
        return task.loss(
            module, batch, cfg=cfg, prepared=prepared, arm=arm, pre=pre, epoch=epoch, index=index, device=device
        )

    return fit(
        module, train_set, schedule=schedule, optimizer=optimizer, scheduler=scheduler, steps=steps, state=state,
        loss_of=loss_of, save=save, out=arm.out, trainer=trainer, metric=metric,
        judge_train_loss=task.judged_on_train_loss, validate=validate if prepared.val is not None else None,
        higher_is_better=task.metrics[metric], name=arm.name if named else "",
        data=cfg.data,
        on_epoch_end=lambda e: task.on_epoch_end(module, prepared, arm, pre, cfg=cfg, device=device, epoch=e),
    )  # fmt: skip


DIFFERENCE_STD = (0.05, 0.05, 0.05)  # normalization of ``pixels="difference"`` frames (0-1 units; ~13 grey levels)


def preprocessing_for(cfg, tubelet: tuple[int, int, int], base: Preprocessing | None) -> Preprocessing:
    """The checkpoint's preprocessing (`base`, or the defaults for a fresh model) with the run's sampling, resizing
    and pruning; the model's tubelet, which no run can change."""
    if cfg.tubelet is not None and tuple(cfg.tubelet) != tuple(tubelet):
        raise ConfigError(f"tubelet: {cfg.model} was trained with {'x'.join(map(str, tubelet))}; it cannot change")
    try:
        pre = replace(
            base or Preprocessing(),
            tubelet=tuple(tubelet),
            sample_fps=cfg.sample_fps,
            clip_seconds=cfg.clip_seconds,
            size=cfg.size,
            max_long_side=cfg.max_long_side,
            prune_threshold=cfg.prune_threshold,
            prune_reference=cfg.prune_reference,
            crop=cfg.crop,
            crop_size=cfg.crop_size,
            pixels=cfg.pixels,
        )
    except ValueError as exc:  # a value out of range (Preprocessing checks each field); the message names it
        raise ConfigError(str(exc)) from exc
    if pre.pixels == "difference" and base is None:
        # Changes are 0 where nothing moves: centred on 0 and scaled so a moving edge (tens of levels) reads ~1-5,
        # as pixels around the mean grey do in RGB. A fresh model only: a checkpoint keeps the normalization it has.
        pre = replace(pre, mean=(0.0, 0.0, 0.0), std=DIFFERENCE_STD)
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


def trainable_module(
    model: nn.Module, cfg, *, keep: tuple[str, ...] = ENCODER_KEEP, tower: str = "", fresh: bool = False
) -> nn.Module:
    """What a fine-tuning run trains: ``cfg.freeze`` applied to `model` (or its `tower`), and LoRA for ``cfg.peft``.

    LoRA trains adapters in place of the blocks, so with ``--peft lora`` the freeze spec names what trains in full
    beside them, ``none`` read as ``backbone``: `keep` (a head, and what the model adds to a video encoder), and with
    ``top:K`` the last K blocks and the final norm too. Everything outside `tower` trains. A config without
    ``freeze``/``peft`` fields (pretraining) trains the whole model.

    Returns:
        The module to train: `model` itself, or its peft wrapper (save `tubelet.train.lora.deployable` of it).
    """
    freeze, peft = getattr(cfg, "freeze", "none"), getattr(cfg, "peft", "none")
    spec = "backbone" if peft == "lora" and freeze == "none" else freeze
    apply_freeze(model.get_submodule(tower), spec, keep=keep)
    if fresh and spec != "none":
        log.warning("freeze=%s peft=%s on %s: the frozen blocks keep their random weights", spec, peft, cfg.model)
    if peft == "none":
        return model
    return add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, tower=tower)


__all__ = ["Built", "check_fits", "preprocessing_for", "run_task", "train_arm", "trainable_module"]
