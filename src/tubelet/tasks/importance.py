"""Importance of every second of a video, learned from annotators: the ``importance`` task.

Data: ``DATA/importance_{split}.jsonl`` (what ``tubelet sample-data OUT --stories`` writes), one line per video:
``{"path": ..., "seconds": N, "annotators": [[N scores in [0, 1]], ...]}``. The target of a second is the mean over
its annotators.

Model: the encoder reads a window of ``clip_seconds`` (a whole number, K; 4 by default) and its particles are
max-pooled per second of the window by their time ``t`` (`second_pool`: a small moving object is not averaged away
by the background around it); the head has K rows, row k scoring the pooled features
of second k (so a checkpoint knows its window: ``num_classes`` = K). Training windows start at whole seconds every
``window_stride`` seconds; evaluation tiles each video with windows of K seconds (the last one ending at the video's
end) and averages the scores of seconds covered twice. Loss: mean squared error against the mean annotator, plus a
pairwise ranking hinge inside each window with ``loss=rank``. Metrics: Kendall tau and Spearman rho of each video's
scores against each of its annotators (averaged over annotators, then videos), and the MSE.

``tubelet summarize --checkpoint RUN/best`` uses such a checkpoint's scores as the video's importance.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import Sample, VideoDataset, try_probe
from tubelet.errors import ConfigError, DataError
from tubelet.models.encoder import mean_pool
from tubelet.summary.importance import rank_correlations
from tubelet.tasks.base import Prepared, Task, register
from tubelet.tasks.inference import run_model
from tubelet.typed import opt

log = logging.getLogger("tubelet.importance")

LOSSES = ("mse", "rank")
RANK_MARGIN = 0.05  # hinge margin of the ranking loss, and the smallest target gap a pair needs to count


@dataclass
class Seconds:
    """Videos with per-second importance from annotators, and the windows a model reads of them.

    Attributes:
        videos: the readable videos (probed).
        annotators: per video, (A, N) scores of its A annotators over its N seconds.
        windows: (video, start s, end s) of K-second windows starting at whole seconds.
        source: the manifest they came from.
    """

    videos: VideoDataset
    annotators: list[np.ndarray]
    windows: list[tuple[int, float, float]]
    source: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.windows)

    def target(self, video: int) -> np.ndarray:
        """(N,) the mean annotator of `video`."""
        return self.annotators[video].mean(axis=0)


def tiles(seconds: int, width: int, stride: int) -> list[int]:
    """Start seconds of `width`-second windows every `stride` s over `seconds` s, the last one ending at the end."""
    if seconds <= width:
        return [0]
    starts = list(range(0, seconds - width + 1, stride))
    return starts if starts[-1] == seconds - width else [*starts, seconds - width]


def importance_manifest(data: str | Path, split: str) -> Path:
    """``DATA/importance_{split}.jsonl`` (or `data` itself when it is a ``.jsonl`` file)."""
    path = Path(data)
    if path.suffix == ".jsonl":
        return path
    return path / f"importance_{split}.jsonl"


def load_importance(manifest: Path, *, width: int, stride: int) -> Seconds:
    """Read an importance manifest and probe its videos; windows of `width` s every `stride` s.

    Raises:
        DataError: a missing manifest, a line that is not JSON or lacks a field, scores of the wrong length or
            outside [0, 1], or no usable video. Unreadable videos and videos shorter than a window are skipped.
    """
    if not manifest.is_file():
        raise DataError(
            f"{manifest}: no such file; the importance task reads importance_SPLIT.jsonl with path, seconds and "
            f"annotators per video (tubelet sample-data OUT --stories writes them)"
        )
    samples, infos, annotators, skipped = [], [], [], []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            row = json.loads(line)
            path, seconds, scores = row["path"], int(row["seconds"]), np.asarray(row["annotators"], dtype=np.float64)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: expected JSON with path, seconds and annotators ({exc})") from None
        if scores.ndim != 2 or scores.shape[1] != seconds or len(scores) == 0:
            raise DataError(f"{where}: annotators must be lists of {seconds} scores each, got shape {scores.shape}")
        if scores.min() < 0 or scores.max() > 1:
            raise DataError(f"{where}: annotators' scores must lie in [0, 1]")
        file = Path(path) if Path(path).is_absolute() else manifest.parent / path
        info, reason = try_probe(file)
        if info is None or seconds < width:
            reason = reason if info is None else f"{file}: {seconds} s is shorter than one {width} s window"
            log.warning("skipping %s", reason)
            skipped.append((str(file), reason))
            continue
        usable = min(seconds, max(width, math.floor(info.duration_s + 0.5)))  # the file may be a frame short
        samples.append(Sample(path=file))
        infos.append(info)
        annotators.append(scores[:, :usable])
    if not samples:
        raise DataError(f"{manifest}: no usable video")
    windows = [
        (v, float(s), float(s + width)) for v, a in enumerate(annotators) for s in tiles(a.shape[1], width, stride)
    ]
    videos = VideoDataset(samples=samples, infos=infos, labels=[], skipped=skipped, source=str(manifest))
    return Seconds(videos, annotators, windows, manifest, skipped)


def second_pool(features: torch.Tensor, packed, seconds: int, *, how: str = "mean") -> torch.Tensor:
    """(N, D) particle features -> (B, K, D) pooled per clip and whole second of the window (by ``packed.t``).

    ``how``: ``mean`` (what a second looks like, on the whole) or ``max`` (per channel, the strongest particle: a small
    object moving in one corner of the frame is not averaged away by the still background). A second with no
    particle (all of it pruned, say) gets its clip's mean.
    """
    B, D = packed.num_clips, features.shape[1]
    bins = packed.t.floor().long().clamp(0, seconds - 1)  # (N,)
    index = packed.seq * seconds + bins  # (N,) cell of (clip, second)
    counts = features.new_zeros(B * seconds).index_add_(0, index, torch.ones_like(bins, dtype=features.dtype))
    if how == "max":
        pooled = features.new_full((B * seconds, D), float("-inf"))
        pooled = pooled.scatter_reduce(0, index[:, None].expand(-1, D), features, reduce="amax")  # (B*K, D)
    elif how == "mean":
        sums = features.new_zeros(B * seconds, D).index_add_(0, index, features)  # (B*K, D)
        pooled = sums / counts.clamp(min=1)[:, None]
    else:
        raise ValueError(f"how: expected mean or max, got {how!r}")
    clip_mean = mean_pool(features, packed.seq, B).repeat_interleave(seconds, dim=0)  # (B*K, D)
    pooled = torch.where(counts[:, None] > 0, pooled, clip_mean)
    return pooled.view(B, seconds, D)


def per_second(
    model, videos: VideoDataset, windows: list[tuple[int, float, float]], lengths: list[int], pre, *,
    forward: Callable, width: int, budget: int, device, precision: str = "auto", workers: int = 0,
) -> list[np.ndarray]:  # fmt: skip
    """Run `forward` (packed -> (B, width * C)) over `windows` (video, start s, end s) of `videos`, each starting at a
    whole second; per video (lengths[v], C), the mean over the windows that cover each second (NaN rows: never
    decoded)."""
    dataset = ClipDataset(videos, pre, windows=windows)
    outputs, failed = run_model(
        model, dataset, forward=forward, budget=budget, device=device, precision=precision, workers=workers,
        desc="importance",
    )  # fmt: skip
    for path, reason in dict(failed).items():
        log.warning("skipping %s: %s", path, reason)
    channels = outputs.shape[1] // width if outputs is not None else 1
    sums = [np.zeros((n, channels)) for n in lengths]
    counts = [np.zeros(n) for n in lengths]
    for j, (v, start, _) in enumerate(windows):
        if outputs is None or np.isnan(outputs[j]).any():
            continue
        k, n = int(round(start)), lengths[v]
        values = outputs[j].reshape(width, channels)[: n - k]  # (width, C)
        sums[v][k : k + len(values)] += values
        counts[v][k : k + len(values)] += 1
    return [np.where(c[:, None] > 0, s / np.maximum(c, 1)[:, None], np.nan) for s, c in zip(sums, counts)]


@dataclass(frozen=True)
class ImportanceFields:
    """The fields of ``finetune --task importance``."""

    loss: str = opt("mse", "mse against the mean annotator, or rank: mse plus a pairwise ranking hinge per window")
    window_stride: int = opt(2, "seconds between the starts of training windows (whole seconds)")

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.window_stride < 1:
            raise ConfigError(f"window_stride: must be at least 1 second, got {self.window_stride}")


def window_seconds(clip_seconds: float) -> int:
    """K, the whole seconds of a window; a ConfigError for a fraction."""
    width = round(clip_seconds)
    if width < 1 or abs(clip_seconds - width) > 1e-6:
        raise ConfigError(f"clip_seconds: the importance task scores whole seconds; use 1, 2, 3..., got {clip_seconds}")
    return width


@register
class ImportanceTask(Task):
    """Per-second importance from annotators: a row per second of the window over features pooled per second."""

    name = "importance"
    summary = "importance of every second (importance_SPLIT.jsonl from annotators); Kendall tau, Spearman rho, MSE"
    Config = ImportanceFields
    metrics = {"kendall_tau": True, "spearman_rho": True, "mse": False}
    config_defaults = {"clip_seconds": 4.0}

    def prepare(self, cfg, out: Path) -> Prepared:
        width = window_seconds(cfg.clip_seconds)
        train = load_importance(importance_manifest(cfg.data, cfg.train_split), width=width, stride=cfg.window_stride)
        val = None
        if cfg.val_split not in (None, "none") and importance_manifest(cfg.data, cfg.val_split).is_file():
            val = load_importance(importance_manifest(cfg.data, cfg.val_split), width=width, stride=width)
        return Prepared(train, val, extra={"seconds": width})

    def num_outputs(self, prepared: Prepared) -> int:
        return prepared.extra["seconds"]

    def dataset(self, data, pre, reads, *, augment=None, seed: int = 0, windows: list | None = None) -> ClipDataset:
        if isinstance(data, Seconds):
            return ClipDataset(data.videos, pre, windows=windows or data.windows, seed=seed)
        return super().dataset(data, pre, reads, augment=augment, seed=seed, windows=windows)

    def forward(self, model, packed) -> torch.Tensor:
        """(B, K): row k of the head on the features of second k of each window."""
        width = model.num_classes
        pooled = second_pool(model.forward_features(packed), packed, width, how="max")  # (B, K, D)
        if model.config.final_norm == "pooled":
            pooled = model.norm(pooled)
        scores = model.forward_head(pooled)  # (B, K, K): every row on every second
        return torch.diagonal(scores, dim1=1, dim2=2)  # (B, K)

    def targets(self, batch, prepared: Prepared | None = None) -> dict[str, torch.Tensor]:
        data, width = prepared.train, prepared.extra["seconds"]
        rows = []
        for video, (start, _) in zip(batch.samples, batch.windows):
            k = int(round(start))
            rows.append(data.target(video)[k : k + width])
        return {"importance": torch.tensor(np.stack(rows), dtype=torch.float32)}  # (B, K)

    def objective(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor], cfg) -> torch.Tensor:
        want = targets["importance"]  # (B, K)
        loss = torch.mean((outputs - want) ** 2)
        if cfg.loss == "rank":  # every pair of seconds of a window whose targets differ: the higher scores higher
            gap = want[:, :, None] - want[:, None, :]  # (B, K, K)
            sign = torch.sign(gap) * (gap.abs() > RANK_MARGIN)
            hinge = torch.relu(RANK_MARGIN - sign * (outputs[:, :, None] - outputs[:, None, :]))
            loss = loss + (hinge * sign.abs()).sum() / sign.abs().sum().clamp(min=1)
        return loss

    def evaluate(
        self, model, data, pre, *, labels, reads, views: int = 1, budget: int = 8192, device, precision: str = "auto",
        workers: int = 0,
    ) -> dict:  # fmt: skip
        width = model.num_classes
        lengths = [a.shape[1] for a in data.annotators]
        scores = per_second(
            model, data.videos, data.windows, lengths, pre, forward=self.forward, width=width, budget=budget,
            device=device, precision=precision, workers=workers,
        )  # fmt: skip
        return {**score_seconds([s[:, 0] for s in scores], data.annotators), "skipped": [p for p, _ in data.skipped]}

    def evaluation_data(self, source: str, split: str | None, loaded):
        width = loaded.model.num_classes
        return load_importance(importance_manifest(source, split or "test"), width=width, stride=width)

    def finish(self, cfg, prepared: Prepared, arms, summaries: dict[str, dict]) -> dict:
        result = super().finish(cfg, prepared, arms, summaries)
        test = importance_manifest(cfg.data, "test")
        if test.is_file() and Path(cfg.data).is_dir():
            width = prepared.extra["seconds"]
            data = load_importance(test, width=width, stride=width)
            metrics = self.evaluate_checkpoint(Path(cfg.out) / "best", data, cfg)
            result["test"] = {k: metrics[k] for k in (*self.metrics, "videos")}
        return result

    def describe(self, prediction: np.ndarray, labels, *, topk: int) -> dict:
        return {"importance": [round(float(v), 4) for v in prediction]}


def score_seconds(scores: list[np.ndarray], annotators: list[np.ndarray]) -> dict:
    """Kendall tau and Spearman rho (per video against each annotator, averaged, then over videos) and the MSE
    against the mean annotator, of per-second `scores` (N,) per video; seconds never scored (NaN) are left out."""
    taus, rhos, errors = [], [], []
    for pred, users in zip(scores, annotators):
        known = ~np.isnan(pred)
        if known.sum() < 2:
            continue
        corr = rank_correlations(pred[known], users[:, known])
        taus.append(corr["kendall_tau"])
        rhos.append(corr["spearman_rho"])
        errors.append(float(np.mean((pred[known] - users[:, known].mean(axis=0)) ** 2)))
    mean = lambda xs: float(np.nanmean(xs)) if xs else float("nan")  # noqa: E731
    return {"kendall_tau": mean(taus), "spearman_rho": mean(rhos), "mse": mean(errors), "videos": len(taus)}
