"""Video-text retrieval: the symmetric InfoNCE loss for training, recall@k both directions for evaluation.

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

from collections import Counter
from collections.abc import Sequence
from math import comb

import numpy as np
import torch
import torch.nn.functional as F

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
