"""Text-to-video search: ``tubelet index`` embeds a folder's windows, ``tubelet search`` ranks them for a query.

An index is a directory:

    index.json                  the checkpoint (absolute path), window and stride seconds, embedding width, counts,
                                and the files that could not be read (skipped)
    windows.jsonl               one line per window: {"path", "start", "end"} in seconds, in embedding row order
    embeddings.safetensors      "embeddings": (W, E) float32 unit video embeddings, row i = line i of windows.jsonl

Search encodes the query with the checkpoint's own tokenizer and text tower and ranks every window by cosine
similarity (the embeddings are unit vectors: a dot product).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tubelet import models
from tubelet.data.manifest import Sample, VideoDataset, expand_inputs, try_probe
from tubelet.data.pipeline import iter_windows
from tubelet.data.text import encode
from tubelet.errors import ConfigError, DataError
from tubelet.nn.device import resolve_device
from tubelet.tasks.retrieval import embed_texts, embed_windows
from tubelet.tensor_files import read_safetensors

log = logging.getLogger("tubelet.search")

INDEX = "index.json"
WINDOWS = "windows.jsonl"
EMBEDDINGS = "embeddings.safetensors"


def build_index(
    checkpoint: str,
    inputs: list[str],
    out: str,
    *,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    batch_particles: int = 8192,
    workers: int = 0,
    device: str = "auto",
) -> dict:
    """Embed every window of every video under `inputs` with the video tower of a retrieval checkpoint.

    Args:
        checkpoint: a retrieval checkpoint directory (``tubelet finetune --task retrieval``).
        inputs: video files and/or directories (searched recursively).
        out: the index directory (created; its index files are replaced).
        window_seconds: window length; default the checkpoint's ``clip_seconds``.
        stride_seconds: step between window starts; default half a window.

    Returns:
        A summary: index directory, files, windows, skipped files (path and reason).

    Unreadable files are reported, listed under ``skipped`` and left out; the rest are indexed.
    """
    loaded = models.load(checkpoint, kind="retrieval")
    window = window_seconds or loaded.preprocessing.clip_seconds
    stride = stride_seconds or window / 2
    if window <= 0 or stride <= 0:
        raise ConfigError("--window-seconds and --stride-seconds must be positive")
    samples, infos, skipped = [], [], []
    for path in expand_inputs(inputs):
        info, reason = try_probe(path)
        if info is None:
            log.warning("skipping %s", reason)
            skipped.append({"path": str(path), "reason": reason})
        else:
            samples.append(Sample(path=path))
            infos.append(info)
    if not samples:
        raise DataError(f"{', '.join(inputs)}: no readable video to index ({len(skipped)} skipped)")
    windows = [
        (v, start, round(end, 6))
        for v, info in enumerate(infos)
        for start, end in iter_windows(info.duration_s, window, stride)
    ]
    data = VideoDataset(samples=samples, infos=infos, labels=[])
    pre = replace(loaded.preprocessing, clip_seconds=window)
    emb, failed = embed_windows(
        loaded.model, data, pre, windows, budget=batch_particles, device=resolve_device(device), workers=workers
    )
    for path in sorted({p for p, _ in failed}):
        reason = next(r for p, r in failed if p == path)
        log.warning("skipping %s: %s", path, reason)
        skipped.append({"path": path, "reason": reason})
    ok = ~np.isnan(emb).any(axis=1)
    if not ok.any():
        raise DataError(f"{', '.join(inputs)}: no window could be decoded ({len(skipped)} files skipped)")
    rows = [{"path": str(samples[v].path), "start": s, "end": e} for (v, s, e), good in zip(windows, ok) if good]

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": torch.from_numpy(emb[ok]).contiguous()}, out_dir / EMBEDDINGS)
    (out_dir / WINDOWS).write_text("".join(json.dumps(row) + "\n" for row in rows))
    meta = {
        "checkpoint": os.path.abspath(checkpoint),
        "window_seconds": window,
        "stride_seconds": stride,
        "embed_dim": int(emb.shape[1]),
        "files": len({row["path"] for row in rows}),
        "windows": len(rows),
        "skipped": skipped,
    }
    (out_dir / INDEX).write_text(json.dumps(meta, indent=2) + "\n")
    return {"index": str(out_dir), **{k: meta[k] for k in ("files", "windows", "skipped")}}


def search(index: str, query: str, *, topk: int = 10, device: str = "auto") -> list[dict]:
    """The `topk` windows of an index closest to a text query, best first.

    Returns:
        One dict per window: ``rank``, ``path``, ``start``, ``end`` (seconds), ``score`` (cosine similarity).

    Raises:
        DataError: an empty query, or a directory that is not an index.
        ConfigError: ``topk`` below 1.
    """
    if not query or not query.strip():
        raise DataError("query: empty; give a few words, e.g. 'a red ball moves left'")
    if topk < 1:
        raise ConfigError(f"--topk: must be at least 1, got {topk}")
    directory = Path(index)
    if not (directory / INDEX).is_file():
        raise DataError(f"{directory}: not an index (no {INDEX}; build one with tubelet index)")
    meta = json.loads((directory / INDEX).read_text())
    rows = [json.loads(line) for line in (directory / WINDOWS).read_text().splitlines() if line.strip()]
    emb = read_safetensors(directory / EMBEDDINGS)["embeddings"].numpy()  # (W, E)
    loaded = models.load(meta["checkpoint"], kind="retrieval")
    ids = encode(loaded.tokenizer, query, field="query")
    text = embed_texts(loaded.model.to(resolve_device(device)), [ids], device=resolve_device(device))[0]  # (E,)
    scores = emb @ text  # (W,)
    order = np.argsort(-scores, kind="stable")[:topk]
    return [{"rank": r + 1, **rows[i], "score": round(float(scores[i]), 4)} for r, i in enumerate(order)]
