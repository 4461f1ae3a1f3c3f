"""Captions of clips: the ``caption`` column (or another text column) of a split's video manifest.

``tubelet finetune --task retrieval`` (`tubelet.tasks.retrieval`), ``evaluate`` of a retrieval checkpoint and
``tubelet tokenizer`` read (clip, caption) pairs here. Class folders carry no text: captions need a manifest
(``path,caption[,label,...]``; ``tubelet sample-data --multimodal`` writes them).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from tubelet.data.manifest import MANIFEST_SUFFIXES, VideoDataset, load_dataset, manifest_rows
from tubelet.data.text import encode
from tubelet.errors import DataError
from tubelet.particles.pack import pack
from tubelet.particles.structure import PackedParticles
from tubelet.particles.text import tokenize_text

CAPTION = "caption"


def text_manifest(source: str | Path, split: str | None, column: str = CAPTION) -> Path:
    """The video manifest whose `column` holds a split's text: `source` itself, or ``source/{split}.csv|.jsonl``.

    Raises:
        DataError: no such manifest (class folders carry no text).
    """
    source = Path(source)
    if source.is_file():
        return source
    for suffix in MANIFEST_SUFFIXES:
        if (source / f"{split}{suffix}").is_file():
            return source / f"{split}{suffix}"
    raise DataError(f"{source}: no {split}.csv or {split}.jsonl manifest with a '{column}' column to read text from")


def read_captions(source: str | Path, split: str | None, data: VideoDataset, *, column: str = CAPTION) -> list[str]:
    """The caption of each sample of `data`, from the `column` column of the manifest it was read from.

    Args:
        column: the manifest column holding the text (``caption``; ``tubelet tokenizer --column`` reads others).

    Raises:
        DataError: no manifest (class folders carry no captions), no such column, or a sample without text.
    """
    manifest = text_manifest(source, split, column)
    rows = manifest_rows(manifest)
    if rows and column not in rows[0][1]:
        raise DataError(f"{manifest}: no '{column}' column (the text of each clip)")
    by_path = {}
    for line, row in rows:
        path = Path(str(row.get("path", "")))
        path = path if path.is_absolute() else manifest.parent / path
        by_path[str(path)] = (row.get(column), f"{manifest}:{line}")
    out = []
    for sample in data.samples:
        text, where = by_path.get(str(sample.path), (None, str(manifest)))
        if text is None or not str(text).strip():
            raise DataError(f"{where}: field '{column}' is empty for {sample.path}; give every clip a {column}")
        out.append(str(text))
    return out


def caption_batch(token_ids: list[list[int]]) -> PackedParticles:
    """Text particles of captions packed one caption per sequence (no padding: attention stays in each caption)."""
    return pack([tokenize_text(ids, time=0.0) for ids in token_ids])


def caption_pairs(
    source: str | Path, split: str | None, tokenizer: Tokenizer
) -> tuple[VideoDataset, list[str], list[list[int]]]:
    """(clips, captions, caption token ids) of a split's manifest, or of `source` itself when it is a manifest file.

    Raises:
        DataError: no such split, no ``caption`` column, an empty caption (one line naming the file and field).
    """
    split = None if Path(source).is_file() else split
    data = load_dataset(source, split=split, require_labels=False)
    captions = read_captions(source, split, data)
    ids = [encode(tokenizer, c, source=str(s.path)) for c, s in zip(captions, data.samples)]
    return data, captions, ids
