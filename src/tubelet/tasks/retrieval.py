"""Video-text retrieval: the symmetric InfoNCE loss for training, recall@k both directions for evaluation, and the
``retrieval`` task (``tubelet finetune --task retrieval``) that trains two towers with them.

Captions repeat. In the AV sample data a caption is a template over (colour, shape, motion, sound), so several
clips share one. Two consequences, handled the same way here:

- training: clips of a batch with the same caption are all positives of each other (the target of a row is
  uniform over them), not false negatives that the loss would push apart;
- evaluation: a retrieved item is correct when its caption EQUALS the query's caption (``relevance="caption"``),
  so any clip showing "a red disc moves left while something beeps" answers that query. The strict
  ``relevance="instance"`` (only the query's own pair counts) is reported too; with duplicate captions it is
  bounded by 1 / (clips sharing the caption) at k = 1 and says little on templated data.

Because of the duplicates, chance is not k / N: `chance_recall` gives the expected recall of a random ranking of the
same set, reported beside the model's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tubelet.data.captions import caption_batch, caption_pairs, read_captions
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import load_dataset
from tubelet.data.text import encode, run_tokenizer
from tubelet.errors import ConfigError, DataError
from tubelet.models.retrieval import RetrievalConfig, RetrievalModel
from tubelet.nn.device import autocast, resolve_device
from tubelet.tasks.base import Arm, Built, Prepared, StepLoss, Task, register
from tubelet.tasks.files import write_report_files
from tubelet.tasks.inference import mean_over_videos, run_model, view_windows
from tubelet.tasks.report import data_text, heading_markdown
from tubelet.typed import opt

log = logging.getLogger("tubelet.retrieval")

KS = (1, 5, 10)


def info_nce(
    video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, *, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): cross-entropy of video->text and text->video softmaxes, averaged.

    Args:
        video: (B, E) unit video embeddings; row b pairs with ``text[b]``.
        text: (B, E) unit text embeddings.
        scale: () logit scale, 1 / temperature.
        groups: (B,) int64 caption ids: pairs with equal ids are all positives (target uniform over them).
            None: only the diagonal is positive.

    Returns:
        () mean loss.
    """
    logits = scale * video @ text.T  # (B, B): rows videos, columns texts
    if groups is None:
        targets = torch.arange(len(video), device=video.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (B, B), symmetric
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def caption_key(caption: str) -> str:
    """The form in which two captions are compared: lower case, runs of whitespace as one space."""
    return " ".join(caption.lower().split())


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Fraction of queries with at least one relevant item among their top k.

    Args:
        similarity: (Q, G) scores of each query against each gallery item (higher is closer).
        relevant: (Q, G) bool, which gallery items answer each query.
        ks: cut-offs; a k larger than the gallery counts the whole gallery.

    Returns:
        ``{"R@1": ..., "R@5": ..., ...}`` in [0, 1].
    """
    order = np.argsort(-similarity, axis=1, kind="stable")  # (Q, G) ranked gallery indices
    hits = np.take_along_axis(relevant, order, axis=1)  # (Q, G) relevance in rank order
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), np.inf)  # (Q,) rank of the first relevant item
    return {f"R@{k}": float(np.mean(first < k)) for k in ks}


def chance_recall(captions: Sequence[str], ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected recall@k of a uniformly random ranking of N pairs, under caption relevance (either direction).

    A query whose caption r of the N items share misses all of them in its top k with probability
    C(N - r, k) / C(N, k); exact for this set, not an estimate.

    Returns:
        ``{"R@1": ..., "R@5": ..., ...}`` in [0, 1].
    """
    keys = [caption_key(c) for c in captions]
    n, shared = len(keys), Counter(keys)
    return {
        f"R@{k}": float(np.mean([1 - comb(n - shared[key], min(k, n)) / comb(n, min(k, n)) for key in keys]))
        for k in ks
    }


def retrieval_metrics(
    video: np.ndarray, text: np.ndarray, captions: Sequence[str], *, ks: Sequence[int] = KS
) -> dict[str, dict[str, float] | int]:
    """Recall@k in both directions for N (clip, caption) pairs, under both relevance rules.

    Args:
        video: (N, E) unit video embeddings.
        text: (N, E) unit text embeddings; row i is the caption of clip i.
        captions: the N caption strings (equal strings are equally correct answers).

    Returns:
        ``video_to_text`` and ``text_to_video`` (caption relevance), ``instance`` (each direction with only the own
        pair relevant), ``mean_recall`` (mean of the six caption-relevance recalls), ``chance`` (`chance_recall`,
        the same in both directions), ``num_pairs``, ``num_captions`` (distinct).
    """
    similarity = video @ text.T  # (N, N): videos x texts
    keys = np.asarray([caption_key(c) for c in captions])
    same = keys[:, None] == keys[None, :]  # (N, N)
    own = np.eye(len(keys), dtype=bool)
    v2t, t2v = recall_at_k(similarity, same, ks), recall_at_k(similarity.T, same, ks)
    return {
        "video_to_text": v2t,
        "text_to_video": t2v,
        "instance": {
            "video_to_text": recall_at_k(similarity, own, ks),
            "text_to_video": recall_at_k(similarity.T, own, ks),
        },
        "mean_recall": float(np.mean([*v2t.values(), *t2v.values()])),
        "chance": chance_recall(captions, ks),
        "num_pairs": len(keys),
        "num_captions": len(set(keys.tolist())),
    }


# --- the task: two towers on (clip, caption) pairs ---------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalFields:
    """The fields of ``finetune --task retrieval``."""

    tokenizer: str | None = opt(None, "tokenizer dir, tokenizer.json or hub id; none trains one on the captions")


@register
class RetrievalTask(Task):
    """Video-text retrieval: a video tower and a caption tower trained contrastively (symmetric InfoNCE).

    The data are video manifests with a ``caption`` column. ``--freeze backbone|top:K`` and ``--peft lora`` apply to
    the video tower; the text tower, both projections and the temperature always train. Checkpoints hold the
    tokenizer (``tokenizer.json``) so ``tubelet search`` encodes queries as training did.
    """

    name = "retrieval"
    summary = "video-text retrieval: two towers on (clip, caption) pairs, InfoNCE; recall@1/5/10 both ways"
    Config = RetrievalFields
    metrics = {"mean_recall": True}
    # A contrastive batch's other clips are its negatives: batches stay as large as the budget allows.
    config_defaults = {"min_steps_per_epoch": 0}

    def prepare(self, cfg, out: Path) -> Prepared:
        from tubelet.models import checkpoint_kind

        train = load_dataset(cfg.data, split=cfg.train_split, require_labels=False)
        captions = read_captions(cfg.data, cfg.train_split, train)
        saved = [out / "last"] if cfg.resume else []  # resuming, or continuing a retrieval model: its vocabulary
        saved += [cfg.model] if checkpoint_kind(cfg.model) == "retrieval" else []
        tokenizer = run_tokenizer(captions, given=cfg.tokenizer, saved=saved)
        val = split_pairs(cfg.data, cfg.val_split, tokenizer) if cfg.val_split not in (None, "none") else None
        ids = [encode(tokenizer, c, source=str(s.path)) for c, s in zip(captions, train.samples)]
        return Prepared(train, val, tokenizer=tokenizer, extra={"ids": ids, "groups": caption_groups(captions)})

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        model, base = build_retrieval(cfg, prepared.tokenizer.get_vocab_size())
        return Built(model, base, tower="video")

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        if len(batch.samples) < 2:  # one pair alone has no negative to learn from
            return None
        text = caption_batch([prepared.extra["ids"][s] for s in batch.samples]).to(device)
        with autocast(device, cfg.precision):
            video_emb, text_emb = module(batch.packed.to(device), text)
        scale = _unwrapped(module).scale()
        group = prepared.extra["groups"][batch.samples].to(device)
        loss = info_nce(video_emb.float(), text_emb.float(), scale, groups=group)
        pairs = len(batch.samples)
        return StepLoss(loss, pairs, pairs, {"temperature": 1.0 / scale.item()})

    def validate(self, model, prepared: Prepared, arm: Arm, pre, *, cfg, device):
        if prepared.val is None:
            return None
        return evaluate_retrieval(
            model, pre, *prepared.val, budget=cfg.batch_particles, device=device, workers=cfg.workers
        )

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        from tubelet.models import load

        out, summary = Path(cfg.out), summaries[arms[0].name]
        result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), "steps": summary["steps"]}
        result.update(best_val_mean_recall=summary["best_val_mean_recall"], skipped=summary["skipped"])
        test = split_pairs(cfg.data, "test", prepared.tokenizer, missing_ok=True)
        if test is not None:
            loaded = load(out / "best")
            device = resolve_device(cfg.device)
            metrics = evaluate_retrieval(
                loaded.model, loaded.preprocessing, *test, budget=cfg.batch_particles, device=device,
                workers=cfg.workers,
            )  # fmt: skip
            report = {**metrics, "checkpoint": str(out / "best"), "data": cfg.data, "split": "test"}
            result["report"] = str(write_retrieval_report(report, out / "report"))
            result["test"] = {"video_to_text": metrics["video_to_text"], "text_to_video": metrics["text_to_video"]}
        return result

    def forward(self, model, packed):
        return model.encode_video(packed)

    def summary_line(self, report: dict) -> str:
        ks = list(report["text_to_video"])
        lines = [
            f"pairs {report['num_pairs']}   distinct captions {report['num_captions']}",
            f"{'direction':<24} " + " ".join(f"{k:>7}" for k in ks),
        ]
        for name, recall in (
            ("text->video", report["text_to_video"]),
            ("video->text", report["video_to_text"]),
            ("chance", report["chance"]),
        ):
            lines.append(f"{name:<24} " + " ".join(f"{recall[k]:>7.3f}" for k in ks))
        return "\n".join(lines)

    def check_predict(self, loaded) -> None:
        raise ConfigError(f"{loaded.source}: a retrieval checkpoint embeds videos for search: tubelet index / search")

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        super().check_evaluation(split=split, whole=whole, baseline=baseline, loaded=loaded)
        if split == "all" and not whole:
            raise ConfigError(
                "--split all: a retrieval checkpoint reads one split's manifest; name a split (e.g. test) or give "
                "--data a manifest file"
            )

    def evaluation_data(self, source: str, split: str | None, loaded):
        return caption_pairs(source, split, loaded.tokenizer)

    def evaluate(self, model, data, pre, *, labels=None, reads=None, views=1, budget=8192, device, precision="auto",
                 workers=0) -> dict:  # fmt: skip
        return evaluate_retrieval(model, pre, *data, views=views, budget=budget, device=device, workers=workers)

    def evaluation_report(self, scores: dict, models: dict, data, *, details: dict, out: Path) -> dict:
        metrics = scores["model"]
        details.update(pairs=metrics["num_pairs"], skipped=len(metrics["skipped"]) + len(data[0].skipped))
        where = {key: details[key] for key in ("checkpoint", "data", "split")}
        report = {**metrics, **where, "details": details}
        path = write_retrieval_report(report, out)
        return {**report, "files": {"json": str(path), "markdown": str(path.with_name("report.md"))}}

    def report_markdown(self, report: dict, *, title: str = "") -> str:
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
        return "\n".join(lines) + "\n"


def _unwrapped(module):
    """The `RetrievalModel` a run trains, inside its LoRA wrapper or not (its `scale` is the temperature)."""
    return module.base_model.model if hasattr(module, "merge_and_unload") else module


def caption_groups(captions: list[str]) -> torch.Tensor:
    """(N,) int64: an id per distinct (normalized) caption; equal captions are positives of each other."""
    keys = [caption_key(c) for c in captions]
    ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return torch.tensor([ids[k] for k in keys], dtype=torch.int64)


def build_retrieval(cfg, vocab_size: int):
    """Fresh towers of a registered size (the video tower may start from an encoder checkpoint), or a checkpoint's.

    The text tower takes the size's width and heads and half its depth (at least one block); the shared space is
    the video tower's width.

    Returns:
        (model, the preprocessing of the checkpoint it came from or None).
    """
    from tubelet.models import checkpoint_kind, load, model_names

    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    if Path(cfg.model).is_dir() and checkpoint_kind(cfg.model) == "retrieval":
        loaded = load(cfg.model, kind="retrieval")
        if loaded.model.config.vocab_size != vocab_size:
            raise ConfigError(f"--tokenizer: its vocabulary differs from that of --model {cfg.model}")
        return loaded.model, loaded.preprocessing
    if Path(cfg.model).is_dir() or cfg.model not in model_names():  # an encoder checkpoint: pretrained video tower
        encoder = load(cfg.model, kind="encoder", **runtime)
        video_config, base = encoder.model.config.replace(num_classes=0), encoder.preprocessing
    else:
        fresh = dict(runtime, num_classes=0, pooling=cfg.pooling, time_mode=cfg.time_mode, embed_init=cfg.embed_init)
        if cfg.tubelet is not None:
            fresh["tubelet"] = tuple(cfg.tubelet)
        video_config, encoder, base = load(cfg.model, **fresh).model.config, None, None
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


def split_pairs(source: str, split: str, tokenizer, *, missing_ok: bool = False):
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
def embed_windows(model, data, pre, windows, *, budget: int, device, precision: str = "auto", workers: int = 0):
    """Unit video embeddings of explicit windows ``(video index, start s, end s)``.

    Returns:
        embeddings: (len(windows), E) float32, NaN rows for windows that could not be decoded.
        failed: (path, reason) of those windows' files.
    """
    dataset = ClipDataset(data, pre, windows=windows)
    out, failed = run_model(
        model, dataset, forward=lambda m, packed: m.encode_video(packed), budget=budget, device=device,
        precision=precision, workers=workers, desc="embed",
    )  # fmt: skip
    if out is None:
        out = np.full((len(windows), model.config.embed_dim), np.nan, dtype=np.float32)
    return out, failed


@torch.no_grad()
def embed_texts(model, token_ids: list[list[int]], *, device: torch.device, batch: int = 256) -> np.ndarray:
    """(N, E) float32 unit text embeddings of tokenized captions."""
    model.eval()
    rows = [
        model.encode_text(caption_batch(token_ids[i : i + batch]).to(device)).float().cpu().numpy()
        for i in range(0, len(token_ids), batch)
    ]
    return np.concatenate(rows)


def evaluate_retrieval(
    model, pre, data, captions: list[str], token_ids: list[list[int]], *, views: int = 1, budget: int = 8192,
    device: torch.device, workers: int = 0,
) -> dict:  # fmt: skip
    """Recall@1/5/10 both directions over the (clip, caption) pairs of `data`; unreadable clips left out.

    A clip is embedded from `views` evenly spaced windows (1: the centred one, as training's report), their unit
    embeddings averaged and normalized again.

    Returns:
        `retrieval_metrics` over the decoded clips, and ``skipped`` (their paths).
    """
    model = model.to(device)
    windows = view_windows(data, pre.clip_seconds, views)
    per_window, failed = embed_windows(model, data, pre, windows, budget=budget, device=device, workers=workers)
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
    """``report.json`` and ``report.md`` (recall@k each way, chance, own-pair recall); returns the JSON path."""
    return write_report_files(report, out_dir, RetrievalTask().report_markdown(report))["json"]
