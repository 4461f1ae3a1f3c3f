"""Audio-visual fine-tuning (``tubelet finetune --modalities video,audio``): one early-fusion model, and its ablation.

`finetune` hands a run here when ``--modalities`` is anything but ``video``. With several modalities and
``ablate`` (the default), the same command trains one arm per modality too, each a `FusionModel` reading that
modality alone, with the same data, seed, schedule and budget; then every arm is evaluated on the test split:

    RUN/best, RUN/last                    the model of all the modalities asked for
    RUN/ablation/<modality>/{best,last}   the single-modality arms
    RUN/report/report.json                test accuracy, macro F1, per class of RUN/best, and ``ablation``:
                                          {arm: {accuracy, macro_f1, per_class}} for every arm
    RUN/summary.json                      training summaries and the ablation table
    RUN/load_report.json                  (--model ENCODER) what each arm took from the pretrained encoder;
                                          RUN/ablation/<modality>/load_report.json likewise

Where an arm starts (``--model``, `build_fusion`): a registered size (fresh), a fusion checkpoint (continued), or a
pretrained video encoder (``tubelet pretrain``'s ``RUN/best``): a fusion model of the encoder's shape whose video
embedding, blocks and final norm are the encoder's, with the checkpoint's preprocessing; the new audio (and text)
embeddings, modality tags and head start fresh.

``--freeze backbone`` keeps what a video encoder provides fixed (video embedding, blocks, final norm) and trains the
rest: the head and every new embedding (`tubelet.models.fusion.UNFROZEN`). From a pretrained encoder that is the
linear-probe-like path: the pretrained blocks read the new modality through embeddings learned for them.
``--freeze top:K`` also trains the last K blocks and the final norm. ``--peft lora`` trains LoRA adapters on the
blocks' attention and MLP projections in their place, beside what ``--freeze backbone`` trains (with ``top:K``, the
last K blocks train in full too: `tubelet.recipes.common.trainable_module`); every checkpoint holds the adapters
merged into the weights (`tubelet.train.lora`), so it loads like any other. ``--resume`` continues each arm from its
own ``last/`` (trainer state as video fine-tuning saves it, LoRA adapters included, `tubelet.train.resume`); an arm
that had finished is not trained again, and the test report is written anew from every arm's ``best/``.

The class is the manifest's ``label`` column, or any other with ``label_column`` (``--label-column sentiment``):
sentiment or affect recognition is this same head over fused features with the label set the data gives. The
AV sample data carries a made-up ``sentiment`` column (colour valence plus pitch valence,
`tubelet.data.sample_av.sentiment`) that neither modality decides alone.

Read top to bottom: data -> per arm (model -> optimizer -> (resume) -> loop (`train_arm`) -> checkpoints) -> test
report. The checkpoints (`load_fusion`) are read by ``tubelet evaluate``, ``predict`` and ``explain`` like video
ones.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from tubelet import __version__
from tubelet.data.av_dataset import AudioPreprocessing, AVClipDataset, check_audio
from tubelet.data.dataset import budget_batches
from tubelet.data.manifest import VideoDataset
from tubelet.data.splits import load_test_split, train_val
from tubelet.data.text import TOKENIZER_FILE, load_tokenizer, save_tokenizer
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.models.fusion import MODEL_TYPE, UNFROZEN, FusionConfig, FusionModel
from tubelet.models.registry import model_config, model_names
from tubelet.recipes.common import LoadedModel, evaluate_classifier, load_model, trainable_module
from tubelet.recipes.fusion_from_encoder import describe_load, fusion_from_encoder
from tubelet.recipes.report import write_report
from tubelet.tasks.classification import classification_loss
from tubelet.train import checkpoint
from tubelet.train.config import to_dict
from tubelet.train.loader import iterate_batches
from tubelet.train.loop import (
    EarlyStopping,
    autocast,
    resolve_device,
    seed_everything,
    steps_in,
    train_epoch,
)
from tubelet.train.lora import deployable
from tubelet.train.metrics_log import MetricsLog
from tubelet.train.optim import build_optimizer, param_groups, warmup_cosine
from tubelet.train.resume import loop_state, resume, trainer_state

log = logging.getLogger("tubelet.fusion")

READABLE = ("video", "audio")  # modalities a video file gives (text: the questions of `tubelet.recipes.vqa`)


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"video,audio"`` -> ``("video", "audio")``; ConfigError naming the field for anything else."""
    names = tuple(name.strip() for name in str(text).split(",") if name.strip())
    bad = [n for n in names if n not in READABLE]
    if not names or bad or len(set(names)) != len(names):
        raise ConfigError(
            f"modalities: expected distinct names from {', '.join(READABLE)} like video,audio, got {text!r}"
        )
    return names


@dataclass
class LoadedFusion:
    """A fusion checkpoint: the model, the preprocessing of each modality, the labels, the tokenizer (text only)."""

    model: FusionModel
    preprocessing: Preprocessing
    audio: AudioPreprocessing
    labels: list[str] | None
    tokenizer: Tokenizer | None = None


def fusion_checkpoint_config(model: FusionModel, pre: Preprocessing, audio: AudioPreprocessing) -> dict:
    """The ``config.json`` of a fusion checkpoint."""
    return {
        "model_type": MODEL_TYPE,
        "tubelet_version": __version__,
        "fusion": model.config.to_dict(),
        "preprocessing": pre.to_dict(),
        "audio": audio.to_dict(),
    }


def is_fusion_checkpoint(directory: str | Path) -> bool:
    path = Path(directory)
    return (path / checkpoint.CONFIG).is_file() and checkpoint.load_config(path).get("model_type") == MODEL_TYPE


def load_fusion(directory: str | Path, **runtime) -> LoadedFusion:
    """A fusion checkpoint directory; `runtime` may change dropout, drop_path and attention only."""
    directory = Path(directory)
    config = checkpoint.load_config(directory)
    if config.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{directory}/config.json: model_type {config.get('model_type')!r} is not a fusion model")
    bad = sorted(set(runtime) - {"dropout", "attn_dropout", "drop_path", "attention"})
    if bad:
        raise ConfigError(f"{directory}: cannot change {', '.join(bad)} of a trained model")
    try:
        fusion = FusionConfig.from_dict(config["fusion"]).replace(**runtime)
        pre = Preprocessing.from_dict(config["preprocessing"])
        audio = AudioPreprocessing.from_dict(config["audio"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{directory}/config.json: {exc}") from exc
    model = FusionModel(fusion)
    checkpoint.load_weights(model, directory)
    tokenizer = load_tokenizer(directory) if (directory / TOKENIZER_FILE).is_file() else None
    if "text" in fusion.modalities and tokenizer is None:
        raise ConfigError(f"{directory}: the model reads text but the checkpoint has no {TOKENIZER_FILE}")
    return LoadedFusion(model, pre, audio, checkpoint.load_labels(directory), tokenizer)


def finetune_fusion(cfg) -> dict:
    """Train the fused model (and, with ``cfg.ablate``, each modality alone) and report on the test split.

    Args:
        cfg: a `tubelet.recipes.finetune.FinetuneConfig` whose ``modalities`` is not just ``video``.
    """
    modalities = parse_modalities(cfg.modalities)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    audio = AudioPreprocessing(allow_missing_audio=cfg.allow_missing_audio)

    # --- data ------------------------------------------------------------------------------------------
    train_data, val_data = train_val(  # the same split handling as video fine-tuning
        cfg.data, train_split=cfg.train_split, val_split=cfg.val_split, val_fraction=cfg.val_fraction,
        label_column=cfg.label_column, seed=cfg.seed,
    )  # fmt: skip
    if "audio" in modalities:
        for data in (train_data, val_data):
            if data is not None:
                check_audio(data, audio)
    labels = train_data.labels

    # --- arms: the fused model first (RUN/best, RUN/last), then each modality alone --------------------------
    arms = {"+".join(modalities): (modalities, out)}
    if cfg.ablate and len(modalities) > 1:
        arms.update({name: ((name,), out / "ablation" / name) for name in modalities})
    summaries = {}
    for arm, (mods, arm_out) in arms.items():
        log.info("training arm %s (%s)", arm, ", ".join(mods))

        def train_set(pre: Preprocessing, augment: Augment, mods=mods) -> AVClipDataset:
            return AVClipDataset(train_data, pre, audio, modalities=mods, augment=augment, seed=cfg.seed)

        def validate(loaded: LoadedFusion) -> dict:
            return evaluate_fusion(
                loaded,
                val_data,
                views=cfg.eval_views,
                budget=cfg.batch_particles,
                device=resolve_device(cfg.device),
                precision=cfg.precision,
                workers=cfg.workers,
            )

        summaries[arm] = train_arm(
            cfg, mods, arm_out, train_set, labels, audio, validate=validate if val_data is not None else None
        )

    result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), "arms": summaries}
    test = _test_split(cfg, labels)
    if test is not None:
        if "audio" in modalities:
            check_audio(test, audio)
        scores = {}
        for arm, (_, arm_out) in arms.items():
            loaded = load_fusion(arm_out / "best")
            scores[arm] = evaluate_fusion(
                loaded,
                test,
                views=cfg.eval_views,
                budget=cfg.batch_particles,
                device=resolve_device(cfg.device),
                precision=cfg.precision,
                workers=cfg.workers,
            )
        main = next(iter(arms))
        metrics = dict(scores[main])
        metrics["ablation"] = {arm: _summary(m) for arm, m in scores.items()}
        details = {"checkpoint": str(out / "best"), "data": cfg.data, "split": "test", "modalities": main}
        paths = write_report(metrics, out / "report", title=f"Test evaluation of {out / 'best'}", details=details)
        with open(paths["markdown"], "a") as f:
            f.write("\n" + ablation_markdown(metrics["ablation"], labels))
        result["report"] = str(paths["json"])
        result["ablation"] = {arm: {k: m[k] for k in ("accuracy", "macro_f1")} for arm, m in scores.items()}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _summary(metrics: dict) -> dict:
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "per_class": metrics["per_class"]}


def ablation_markdown(ablation: dict, labels: list[str]) -> str:
    """The ablation table: one row per arm, accuracy, macro F1 and each class's recall."""
    lines = ["## Ablation (test split)", "", "| arm | accuracy | macro F1 | " + " | ".join(labels) + " |"]
    lines.append("|---|" + "---:|" * (2 + len(labels)))
    for arm, m in ablation.items():
        recalls = " | ".join(f"{m['per_class'][label]['recall']:.3f}" for label in labels)
        lines.append(f"| {arm} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {recalls} |")
    return (
        "\n".join(lines) + "\n\nPer-class numbers are recall (the fraction of that class's clips classified right).\n"
    )


def _test_split(cfg, labels: list[str]) -> VideoDataset | None:
    return load_test_split(cfg.data, labels, label_column=cfg.label_column)


def build_fusion(
    cfg, modalities: tuple[str, ...], labels: list[str], *, vocab_size: int = 0
) -> tuple[FusionModel, Preprocessing | None, dict | None]:
    """The model an arm starts from, the preprocessing of the checkpoint it came from, and its load report.

    ``cfg.model`` is one of:

    - a fusion checkpoint: continued as it is (its head reset when the labels differ);
    - a registered size: fresh weights of that shape;
    - a tubelet encoder checkpoint (``tubelet pretrain``'s ``RUN/best``, a video fine-tune's) or hub id: a fusion
      model of the encoder's shape with its weights (`fusion_from_encoder`); the third value is then the load
      report, None otherwise.

    Args:
        vocab_size: the tokenizer's, for a model that reads text.

    Raises:
        ConfigError: a fusion checkpoint reading other modalities, or an encoder whose weights cannot serve.
    """
    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    fields = dict(
        modalities=modalities,
        num_classes=len(labels),
        audio_bands=AudioPreprocessing().bands,
        vocab_size=vocab_size,
        pooling="modality" if "text" in modalities else "mean",  # a question's few tokens must count (vqa)
        **runtime,
    )
    if is_fusion_checkpoint(cfg.model):
        loaded = load_fusion(cfg.model, **runtime)
        if loaded.model.config.modalities != modalities:
            raise ConfigError(
                f"--model {cfg.model}: reads {','.join(loaded.model.config.modalities)}, not {','.join(modalities)}"
            )
        if loaded.labels != labels:
            loaded.model.reset_head(len(labels))
        return loaded.model, loaded.preprocessing, None
    if cfg.model in model_names() and not Path(cfg.model).is_dir():
        shape = model_config(cfg.model)
        tubelet = tuple(cfg.tubelet) if cfg.tubelet is not None else shape.tubelet
        dims = dict(dim=shape.dim, depth=shape.depth, heads=shape.heads, mlp_ratio=shape.mlp_ratio, tubelet=tubelet)
        return FusionModel(FusionConfig(**dims, **fields)), None, None
    encoder = load_model(cfg.model, **runtime)  # a ConfigError naming --model when it is no checkpoint
    model, report = fusion_from_encoder(encoder, **fields)
    return model, encoder.preprocessing, report


def train_arm(
    cfg,
    modalities: tuple[str, ...],
    out: Path,
    train_set_for: Callable[[Preprocessing, Augment], AVClipDataset],
    labels: list[str],
    audio: AudioPreprocessing,
    *,
    validate: Callable[[LoadedFusion], dict] | None = None,
    tokenizer: Tokenizer | None = None,
) -> dict:
    """Train one `FusionModel` reading `modalities` as a classifier over `labels`; ``out/best``, ``out/last``.

    Shared by the recipes that train a fusion model (audio-visual classification here, question answering in
    `tubelet.recipes.vqa`); they differ only in what an item is, so they pass it in.

    ``out/last`` holds trainer state after every epoch (and every ``cfg.save_every_steps`` steps): with
    ``cfg.resume`` the arm continues from it, at the batch it had reached, with the optimizer, schedule and RNG
    states it had (`tubelet.train.resume`); an arm that had already finished is not trained again. ``cfg.freeze``
    fixes what a pretrained encoder provides (`tubelet.models.fusion.UNFROZEN` always trains); ``cfg.peft`` ``lora``
    trains adapters on the blocks instead, merged into every checkpoint. A model started from an encoder writes
    its load report to ``out/load_report.json``.

    Args:
        cfg: a `FinetuneConfig` (schedule, budget, seed, model spec, freeze, peft, resume).
        train_set_for: the training dataset for the run's preprocessing and augmentation; its items' labels
            index `labels`.
        validate: metrics (``accuracy``, ``macro_f1``) of a model on the validation split, or None for no
            validation (the last weights are then the best).
        tokenizer: saved beside every checkpoint (``tokenizer.json``) when the model reads text.
    """
    from tubelet.recipes.finetune import preprocessing_for

    seed_everything(cfg.seed)  # every arm starts from the same seed: equal budget, same batches
    device = resolve_device(cfg.device)
    arm = "+".join(modalities)
    vocab_size = tokenizer.get_vocab_size() if tokenizer is not None else 0
    model, base, load_report = build_fusion(cfg, modalities, labels, vocab_size=vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    if load_report is not None:
        log.info("arm %s %s", arm, describe_load(load_report))
        (out / "load_report.json").write_text(json.dumps(load_report, indent=2) + "\n")
    model = model.to(device)
    pre = preprocessing_for(cfg, LoadedModel(model, base, labels, cfg.model))
    train_module = trainable_module(model, cfg, keep=UNFROZEN, fresh=base is None)  # model, or its LoRA wrapper
    groups = param_groups(
        train_module, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay, depth_of=model.block_index
    )
    optimizer = build_optimizer(groups, name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum)
    augment = Augment(crop_scale=(cfg.crop_scale_min, 1.0), flip=cfg.flip, fps_jitter=cfg.fps_jitter)
    train_set = train_set_for(pre, augment)
    estimates = train_set.estimates()

    def epoch_batches(epoch: int) -> list[list[int]]:
        return budget_batches(
            estimates, cfg.batch_particles, shuffle=True, seed=cfg.seed, epoch=epoch, max_clips=cfg.max_clips_per_batch
        )

    total_steps = sum(steps_in(epoch_batches(e), cfg.accum_steps) for e in range(cfg.epochs))
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = round(cfg.warmup_epochs * steps_in(epoch_batches(0), cfg.accum_steps))
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total_steps, min_ratio=cfg.min_lr_ratio)

    # --- state, resume ---------------------------------------------------------------------------------
    state = loop_state()
    resumed = cfg.resume and resume(
        out / "last", module=train_module, optimizer=optimizer, scheduler=scheduler, state=state
    )
    stopper = EarlyStopping(cfg.early_stopping, state["best"], state["bad_epochs"])

    def summary() -> dict:
        skipped = [{"path": p, "reason": r} for p, r in state["skipped"]]
        return {"out": str(out), "steps": state["step"], f"best_val_{cfg.metric}": stopper.best, "skipped": skipped}

    if resumed and (state["epoch"] >= cfg.epochs or state["step"] >= total_steps or stopper.should_stop):
        log.info("arm %s had finished (step %d, epoch %d); not training it again", arm, state["step"], state["epoch"])
        return summary()
    metrics_log = MetricsLog(out)

    def save(name: str, with_trainer: bool) -> None:
        wrapper = train_module if train_module is not model else None  # its adapters' state, to resume them
        checkpoint.save_checkpoint(
            out / name,
            model=deployable(train_module),
            config=fusion_checkpoint_config(model, pre, audio),
            labels=labels,
            training_args={**to_dict(cfg), "arm_modalities": list(modalities)},
            trainer=trainer_state(optimizer, scheduler, state, module=wrapper) if with_trainer else None,
        )
        if tokenizer is not None:
            save_tokenizer(tokenizer, out / name)

    def loss_of(batch):
        with autocast(device, cfg.precision):
            logits = train_module(batch.packed.to(device))
        loss = classification_loss(logits.float(), batch.labels.to(device), label_smoothing=cfg.label_smoothing)
        return loss, len(batch.labels)

    def on_failed(item) -> None:
        log.warning("skipping %s: %s", item.path, item.error)
        state["skipped"].append((item.path, item.error))

    # --- loop: from the batch `last/` had reached when resumed ------------------------------------------
    for epoch in range(state["epoch"], cfg.epochs):
        if state["step"] >= total_steps or stopper.should_stop:
            break
        train_set.set_epoch(epoch)
        batches = epoch_batches(epoch)
        skip = state["batch_in_epoch"]  # batches of this epoch trained on before a resume
        train_module.train()
        started = time.perf_counter()

        def on_step(step: int, grad_norm: float, seen: int, loss_sum: float, epoch: int = epoch) -> None:
            lr = scheduler.get_last_lr()[0]
            metrics_log.write("train", step, loss=loss_sum / max(seen, 1), lr=lr, grad_norm=grad_norm, epoch=epoch)
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                save("last", with_trainer=True)

        seen, loss_sum = train_epoch(
            train_module,
            batches,
            lambda todo: iterate_batches(train_set, todo, workers=cfg.workers),
            state=state,
            loss_of=loss_of,
            optimizer=optimizer,
            scheduler=scheduler,
            grad_clip=cfg.grad_clip,
            accum_steps=cfg.accum_steps,
            total_steps=total_steps,
            on_failed=on_failed,
            on_step=on_step,
        )
        if seen == 0 and skip < len(batches):
            raise DataError(f"{cfg.data}: no training clip could be decoded in epoch {epoch + 1} (see warnings)")
        line = {
            "arm": arm,
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "clips_per_s": round(seen / max(time.perf_counter() - started, 1e-9), 2),
        }
        if validate is not None:
            metrics = validate(LoadedFusion(model, pre, audio, labels, tokenizer))
            improved = stopper.update(metrics[cfg.metric])
            state["best"], state["bad_epochs"] = stopper.best, stopper.bad_epochs
            line.update(val_accuracy=round(metrics["accuracy"], 4), val_macro_f1=round(metrics["macro_f1"], 4))
            metrics_log.write(
                "val", state["step"], accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], epoch=epoch + 1
            )
            if improved:
                save("best", with_trainer=False)
                (out / "best" / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save("last", with_trainer=True)
        print(json.dumps(line), flush=True)
    if validate is None:
        save("best", with_trainer=False)
    metrics_log.close()
    return summary()


def evaluate_fusion(
    loaded: LoadedFusion,
    data: VideoDataset,
    *,
    views: int = 1,
    budget: int = 8192,
    device,
    precision: str = "auto",
    workers: int = 0,
) -> dict:
    """Accuracy, macro F1 and per-class scores of a fusion model on labeled `data`, `views` windows per video.

    As `tubelet.recipes.common.evaluate_classifier`, with each window's audio decoded beside its frames.
    """
    pre, modalities = loaded.preprocessing, loaded.model.config.modalities
    return evaluate_classifier(
        loaded.model.to(device),
        data,
        pre,
        loaded.labels,
        views=views,
        budget=budget,
        device=device,
        precision=precision,
        workers=workers,
        dataset_for=lambda windows: AVClipDataset(data, pre, loaded.audio, modalities=modalities, windows=windows),
    )
