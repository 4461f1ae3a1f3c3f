"""Video-text retrieval training (``tubelet finetune --task retrieval``): two towers on (clip, caption) pairs.

`finetune` hands a run here when ``task`` is ``retrieval``. The data are the video manifests of fine-tuning with a
``caption`` column (the AV sample data writes one: ``tubelet sample-data --multimodal``). A WordPiece tokenizer is
trained on the TRAIN captions unless ``--tokenizer`` names one (a local directory, ``tokenizer.json``, or a hub id).

    RUN/best, RUN/last       retrieval checkpoints: config.json (model_type tubelet-retrieval), model.safetensors,
                             tokenizer.json (so `tubelet search` encodes queries as training did)
    RUN/report/report.json   recall@1/5/10 both directions on the test split (see `tubelet.tasks.retrieval` for
                             what counts as a hit: a caption equal to the query's) and chance; report.md
    RUN/summary.json         training summary

``tubelet evaluate --checkpoint RUN/best`` writes the same report later, for any split or manifest with captions
(`tubelet.data.captions.caption_pairs`, `evaluate_retrieval`, `write_retrieval_report`).

Read top to bottom: data and captions -> tokenizer -> model -> optimizer -> (resume) -> loop (symmetric InfoNCE) ->
report. The video tower starts from a registered size, a tubelet encoder checkpoint (pretrained weights), or a
retrieval checkpoint.

``--freeze backbone|top:K`` applies to the video tower as in video fine-tuning (its attention pooling, if any, and
with ``top:K`` its last K blocks and final norm train); the text tower, both projections and the temperature always
train. ``--peft lora`` puts LoRA adapters on the video tower's blocks in their place (`tubelet.train.lora`; the text
tower, usually fresh, trains in full) and every checkpoint holds them merged into the weights. ``--resume``
continues from ``RUN/last`` (optimizer, schedule, RNG, the batch reached, the best validation recall and the
tokenizer: `tubelet.train.resume`); a run that had finished is not trained again. Not supported here (a
`ConfigError` says so): modalities other than video.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from tubelet import __version__
from tubelet.data.captions import caption_batch, caption_pairs, read_captions
from tubelet.data.dataset import ClipDataset, budget_batches
from tubelet.data.manifest import VideoDataset, load_dataset
from tubelet.data.text import encode, load_tokenizer, run_tokenizer, save_tokenizer
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError, DataError
from tubelet.models.encoder import EncoderConfig
from tubelet.models.registry import model_names
from tubelet.models.retrieval import MODEL_TYPE, RetrievalConfig, RetrievalModel
from tubelet.recipes.common import LoadedModel, load_model, trainable_module
from tubelet.recipes.report import data_text, heading_markdown
from tubelet.tasks.retrieval import caption_key, info_nce, retrieval_metrics
from tubelet.train import checkpoint
from tubelet.train.config import to_dict
from tubelet.train.loader import iterate_batches
from tubelet.train.loop import (
    autocast,
    mean_over_videos,
    resolve_device,
    seed_everything,
    steps_in,
    train_epoch,
    view_windows,
)
from tubelet.train.lora import deployable
from tubelet.train.metrics_log import MetricsLog
from tubelet.train.optim import build_optimizer, param_groups, warmup_cosine
from tubelet.train.resume import loop_state, resume, trainer_state

log = logging.getLogger("tubelet.retrieval")


@dataclass
class LoadedRetrieval:
    """A retrieval checkpoint: the two towers, the video preprocessing, the tokenizer."""

    model: RetrievalModel
    preprocessing: Preprocessing
    tokenizer: Tokenizer


def retrieval_checkpoint_config(model: RetrievalModel, pre: Preprocessing) -> dict:
    return {
        "model_type": MODEL_TYPE,
        "tubelet_version": __version__,
        "encoder": model.video_config.to_dict(),
        "retrieval": model.config.to_dict(),
        "preprocessing": pre.to_dict(),
    }


def is_retrieval_checkpoint(directory: str | Path) -> bool:
    path = Path(directory)
    return (path / checkpoint.CONFIG).is_file() and checkpoint.load_config(path).get("model_type") == MODEL_TYPE


def save_retrieval(
    directory: Path, loaded: LoadedRetrieval, training_args: dict | None = None, *, trainer: dict | None = None
) -> Path:
    """A retrieval checkpoint directory, with the tokenizer beside the weights.

    Args:
        trainer: resume state (`tubelet.train.resume.trainer_state`) for a run's ``last/``.
    """
    checkpoint.save_checkpoint(
        directory,
        model=loaded.model,
        config=retrieval_checkpoint_config(loaded.model, loaded.preprocessing),
        training_args=training_args,
        trainer=trainer,
    )
    save_tokenizer(loaded.tokenizer, directory)
    return directory


def load_retrieval(directory: str | Path) -> LoadedRetrieval:
    """A retrieval checkpoint directory (its ``tokenizer.json`` included)."""
    directory = Path(directory)
    config = checkpoint.load_config(directory)
    if config.get("model_type") != MODEL_TYPE:
        raise ConfigError(
            f"{directory}/config.json: model_type {config.get('model_type')!r} is not a retrieval model "
            "(train one with tubelet finetune --task retrieval)"
        )
    try:
        video = EncoderConfig.from_dict(config["encoder"])
        retrieval = RetrievalConfig.from_dict(config["retrieval"])
        pre = Preprocessing.from_dict(config["preprocessing"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{directory}/config.json: {exc}") from exc
    model = RetrievalModel(video, retrieval)
    checkpoint.load_weights(model, directory)
    return LoadedRetrieval(model, pre, load_tokenizer(directory))


def finetune_retrieval(cfg) -> dict:
    """Train the two towers contrastively and report recall@k on the test split.

    Args:
        cfg: a `tubelet.recipes.finetune.FinetuneConfig` whose ``task`` is ``retrieval``.
    """
    if cfg.modalities != "video":
        raise ConfigError(f"modalities: only video is read with --task retrieval, got {cfg.modalities}")
    from tubelet.recipes.finetune import preprocessing_for  # the same sampling flags as fine-tuning

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)

    # --- data and captions -----------------------------------------------------------------------------
    train_data = load_dataset(cfg.data, split=cfg.train_split, require_labels=False)
    train_captions = read_captions(cfg.data, cfg.train_split, train_data)
    saved = [out / "last"] if cfg.resume else []  # resuming, or continuing a retrieval model: its vocabulary
    saved += [cfg.model] if is_retrieval_checkpoint(cfg.model) else []
    tokenizer = run_tokenizer(train_captions, given=cfg.tokenizer, saved=saved)
    val = _split_pairs(cfg.data, cfg.val_split, tokenizer) if cfg.val_split not in (None, "none") else None

    # --- model -----------------------------------------------------------------------------------------
    model, base = build_retrieval(cfg, tokenizer.get_vocab_size())
    model = model.to(device)
    pre = preprocessing_for(cfg, LoadedModel(model.video, base, None, cfg.model))
    train_module = trainable_module(model, cfg, tower="video", fresh=base is None)  # model, or its LoRA wrapper
    train_ids = [encode(tokenizer, c, source=str(s.path)) for c, s in zip(train_captions, train_data.samples)]
    caption_group = _groups(train_captions)  # (N,) equal captions share an id: positives of each other
    groups = param_groups(
        train_module, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay, depth_of=model.block_index
    )
    optimizer = build_optimizer(groups, name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum)
    augment = Augment(crop_scale=(cfg.crop_scale_min, 1.0), flip=cfg.flip, fps_jitter=cfg.fps_jitter)
    train_set = ClipDataset(train_data, pre, augment=augment, seed=cfg.seed)
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
    finished = resumed and (state["epoch"] >= cfg.epochs or state["step"] >= total_steps)
    if finished:
        log.info("the run had finished (step %d, epoch %d); not training it again", state["step"], state["epoch"])
    metrics_log = MetricsLog(out)
    loaded = LoadedRetrieval(model, pre, tokenizer)  # `model` computes with its LoRA adapters: validation reads it

    def save(name: str, with_trainer: bool) -> None:
        wrapper = train_module if train_module is not model else None  # its adapters' state, to resume them
        trainer = trainer_state(optimizer, scheduler, state, module=wrapper) if with_trainer else None
        save_retrieval(
            out / name, LoadedRetrieval(deployable(train_module), pre, tokenizer), to_dict(cfg), trainer=trainer
        )

    def loss_of(batch):
        if len(batch.samples) < 2:  # one pair alone has no negative to learn from
            return None
        text = caption_batch([train_ids[s] for s in batch.samples]).to(device)
        with autocast(device, cfg.precision):
            video_emb, text_emb = train_module(batch.packed.to(device), text)
        group = caption_group[batch.samples].to(device)
        return info_nce(video_emb.float(), text_emb.float(), model.scale(), groups=group), len(batch.samples)

    def on_failed(item) -> None:
        log.warning("skipping %s: %s", item.path, item.error)
        state["skipped"].append((item.path, item.error))

    # --- loop: from the batch `last/` had reached when resumed ------------------------------------------
    for epoch in range(state["epoch"], cfg.epochs):
        if state["step"] >= total_steps:
            break
        train_set.set_epoch(epoch)
        batches = epoch_batches(epoch)
        skip = state["batch_in_epoch"]  # batches of this epoch trained on before a resume
        train_module.train()
        started = time.perf_counter()

        def on_step(step: int, grad_norm: float, seen: int, loss_sum: float, epoch: int = epoch) -> None:
            metrics_log.write(
                "train",
                step,
                loss=loss_sum / max(seen, 1),
                lr=scheduler.get_last_lr()[0],
                grad_norm=grad_norm,
                temperature=1.0 / model.scale().item(),
                epoch=epoch,
            )
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
            raise DataError(f"{cfg.data}: no training batch held two decodable clips in epoch {epoch + 1}")
        summary = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "temperature": round(1.0 / model.scale().item(), 5),
            "clips_per_s": round(seen / max(time.perf_counter() - started, 1e-9), 2),
        }
        if val is not None:
            metrics = evaluate_retrieval(loaded, *val, budget=cfg.batch_particles, device=device, workers=cfg.workers)
            summary["val_mean_recall"] = round(metrics["mean_recall"], 4)
            metrics_log.write("val", state["step"], mean_recall=metrics["mean_recall"], epoch=epoch + 1)
            if state["best"] is None or metrics["mean_recall"] > state["best"]:
                state["best"] = metrics["mean_recall"]
                save("best", with_trainer=False)
                (out / "best" / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        save("last", with_trainer=True)
        print(json.dumps(summary), flush=True)
    if val is None and not finished:  # nothing to choose by: the last weights are the best we know
        save("best", with_trainer=False)
    metrics_log.close()

    result = {
        "out": str(out),
        "best": str(out / "best"),
        "last": str(out / "last"),
        "steps": state["step"],
        "best_val_mean_recall": state["best"],
        "skipped": [{"path": p, "reason": r} for p, r in state["skipped"]],
    }
    test = _split_pairs(cfg.data, "test", tokenizer, missing_ok=True)
    if test is not None:
        metrics = evaluate_retrieval(
            load_retrieval(out / "best"), *test, budget=cfg.batch_particles, device=device, workers=cfg.workers
        )
        report = {**metrics, "checkpoint": str(out / "best"), "data": cfg.data, "split": "test"}
        result["report"] = str(write_retrieval_report(report, out / "report"))
        result["test"] = {"video_to_text": metrics["video_to_text"], "text_to_video": metrics["text_to_video"]}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_retrieval(cfg, vocab_size: int) -> tuple[RetrievalModel, Preprocessing | None]:
    """Fresh towers of a registered size (the video tower may start from an encoder checkpoint), or a checkpoint's.

    The text tower takes the size's width and heads and half its depth (at least one block); the shared space is
    the video tower's width.
    """
    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    if Path(cfg.model).is_dir() and is_retrieval_checkpoint(cfg.model):
        loaded = load_retrieval(cfg.model)
        if loaded.model.config.vocab_size != vocab_size:
            raise ConfigError(f"--tokenizer: its vocabulary differs from that of --model {cfg.model}")
        return loaded.model, loaded.preprocessing
    if Path(cfg.model).is_dir() or cfg.model not in model_names():  # an encoder checkpoint: pretrained video tower
        encoder = load_model(cfg.model, **runtime)
        video_config, base = encoder.model.config.replace(num_classes=0), encoder.preprocessing
    else:
        fresh = dict(runtime, num_classes=0, pooling=cfg.pooling, time_mode=cfg.time_mode)
        if cfg.tubelet is not None:
            fresh["tubelet"] = tuple(cfg.tubelet)
        video_config, encoder, base = load_model(cfg.model, **fresh).model.config, None, None
    text = RetrievalConfig(
        vocab_size=vocab_size,
        text_dim=video_config.dim,
        text_depth=max(1, video_config.depth // 2),
        text_heads=video_config.heads,
        mlp_ratio=video_config.mlp_ratio,
        embed_dim=video_config.dim,
        attention=cfg.attention,
    )
    model = RetrievalModel(video_config, text)
    if encoder is not None:
        state = {k: v for k, v in encoder.model.state_dict().items() if not k.startswith("head.")}
        model.video.load_state_dict(state, strict=False)
    return model, base


def _groups(captions: list[str]) -> torch.Tensor:
    """(N,) int64: an id per distinct (normalized) caption."""
    keys = [caption_key(c) for c in captions]
    ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return torch.tensor([ids[k] for k in keys], dtype=torch.int64)


def _split_pairs(source: str, split: str, tokenizer: Tokenizer, *, missing_ok: bool = False):
    """(data, captions, token ids) of a split, or None when it is absent (and `missing_ok`, or it is validation)."""
    if Path(source).is_file():
        return None
    try:
        return caption_pairs(source, split, tokenizer)
    except DataError as exc:
        if f"no '{split}' split" not in str(exc):
            raise
        log.warning("%s; no %s metrics", exc, split)
        return None


@torch.no_grad()
def embed_windows(
    model: RetrievalModel,
    data: VideoDataset,
    pre: Preprocessing,
    windows: list[tuple[int, float, float]],
    *,
    budget: int,
    device: torch.device,
    precision: str = "auto",
    workers: int = 0,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Unit video embeddings of explicit windows ``(video index, start s, end s)``.

    Returns:
        embeddings: (len(windows), E) float32, NaN rows for windows that could not be decoded.
        failed: (path, reason) of those windows' files.
    """
    model.eval()
    dataset = ClipDataset(data, pre, windows=windows)
    out = np.full((len(windows), model.config.embed_dim), np.nan, dtype=np.float32)
    failed: list[tuple[str, str]] = []
    batches = budget_batches(dataset.estimates(), budget, shuffle=False)
    for batch in iterate_batches(dataset, batches, workers=workers, on_crash=lambda p, r: failed.append((p, r))):
        failed.extend((it.path, it.error) for it in batch.failed)
        if batch.packed is not None:
            with autocast(device, precision):
                emb = model.encode_video(batch.packed.to(device))
            out[batch.indices] = emb.float().cpu().numpy()
    return out, failed


@torch.no_grad()
def embed_texts(model: RetrievalModel, token_ids: list[list[int]], *, device: torch.device, batch: int = 256):
    """(N, E) float32 unit text embeddings of tokenized captions."""
    model.eval()
    rows = [
        model.encode_text(caption_batch(token_ids[i : i + batch]).to(device)).float().cpu().numpy()
        for i in range(0, len(token_ids), batch)
    ]
    return np.concatenate(rows)


def evaluate_retrieval(
    loaded: LoadedRetrieval,
    data: VideoDataset,
    captions: list[str],
    token_ids: list[list[int]],
    *,
    views: int = 1,
    budget: int = 8192,
    device: torch.device,
    workers: int = 0,
) -> dict:
    """Recall@1/5/10 both directions over the (clip, caption) pairs of `data`; unreadable clips left out.

    A clip is embedded from `views` evenly spaced windows (1: the centred one, as training's report), their unit
    embeddings averaged and normalized again.

    Returns:
        `tubelet.tasks.retrieval.retrieval_metrics` over the decoded clips, and ``skipped`` (their paths).
    """
    model = loaded.model.to(device)
    windows = view_windows([info.duration_s for info in data.infos], loaded.preprocessing.clip_seconds, views)
    per_window, failed = embed_windows(
        model, data, loaded.preprocessing, windows, budget=budget, device=device, workers=workers
    )
    for path, reason in failed:
        log.warning("skipping %s: %s", path, reason)
    video = mean_over_videos(per_window, [w[0] for w in windows], len(data))  # (N, E), NaN rows: nothing decoded
    video /= np.linalg.norm(video, axis=1, keepdims=True)  # a mean of unit vectors is shorter: unit again
    ok = ~np.isnan(video).any(axis=1)
    if not ok.any():
        raise DataError(f"{data.source}: no clip could be decoded")
    text = embed_texts(model, [ids for ids, good in zip(token_ids, ok) if good], device=device)
    metrics = retrieval_metrics(video[ok], text, [c for c, good in zip(captions, ok) if good])
    metrics["skipped"] = sorted({path for path, _ in failed})
    return metrics


def write_retrieval_report(report: dict, out_dir: Path) -> Path:
    """``report.json`` and ``report.md`` (recall@k each way, chance, own-pair recall); returns the JSON path.

    Args:
        report: `evaluate_retrieval`'s metrics with ``checkpoint``, ``data`` and ``split``, and optionally
            ``details`` (shown as a table).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    ks = list(report["text_to_video"])
    rows = [
        ("text -> video", report["text_to_video"]),
        ("video -> text", report["video_to_text"]),
        ("chance (random ranking)", report["chance"]),
        ("text -> video, own pair only", report["instance"]["text_to_video"]),
        ("video -> text, own pair only", report["instance"]["video_to_text"]),
    ]
    lines = [
        *heading_markdown("Retrieval", report),
        f"{data_text(report)}: {report['num_pairs']} (clip, caption) pairs, "
        f"{report['num_captions']} distinct captions. A hit is a retrieved item whose caption equals the query's; "
        "the last two rows count only the query's own pair.",
        "",
        "| direction | " + " | ".join(ks) + " |",
        "|---|" + "---:|" * len(ks),
        *(f"| {name} | " + " | ".join(f"{recall[k]:.3f}" for k in ks) + " |" for name, recall in rows),
    ]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return path
