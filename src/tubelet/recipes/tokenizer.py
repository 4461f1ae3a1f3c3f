"""A tokenizer trained on a dataset's own text (``tubelet tokenizer --data D --out DIR``).

The text is read exactly as the fine-tuning recipe that would otherwise train its own tokenizer reads it, so the
saved tokenizer is the one that recipe would train (same text, same settings, same vocabulary), and
``tubelet finetune --task retrieval|vqa --tokenizer DIR`` uses it as is:

- ``--column caption`` (the default), or any other column of the video manifests: the text of every readable clip
  of the split's ``{split}.csv``/``.jsonl`` (`tubelet.data.captions.read_captions`, as ``--task retrieval``);
- ``--column question``: the questions of ``qa_{split}.csv``/``.jsonl`` about readable clips
  (`tubelet.data.qa.load_qa`, as ``--task vqa``, which trains its tokenizer on the questions alone: the answers
  are classes, never tokenized).

Writes ``DIR/tokenizer.json`` and ``DIR/summary.json`` (the arguments, the vocabulary size, the texts read, and the
unknown-token rate: the fraction of the split's word pieces that come out as ``[UNK]``, i.e. characters the
vocabulary cannot spell; and the same rate on the dataset's other splits, the text a trained model will meet).

The Hugging Face WordPiece trainer is not deterministic (huggingface/tokenizers#1794: on ties between merges the
vocabulary depends on hash-map order), so two trainings on the same text may differ in a few word pieces. Train once
here and pass ``--tokenizer DIR`` to every run that should share one vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tokenizers import Tokenizer

from tubelet.data.captions import CAPTION, read_captions, text_manifest
from tubelet.data.manifest import load_dataset, manifest_rows
from tubelet.data.qa import QUESTION, load_qa, qa_manifest
from tubelet.data.text import DEFAULT_VOCAB_SIZE, UNK, save_tokenizer, train_tokenizer
from tubelet.errors import DataError

log = logging.getLogger("tubelet.tokenizer")

SPLITS = ("train", "val", "test")  # the splits whose unknown-token rate is reported besides the one trained on


def tokenizer_from_data(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    column: str = CAPTION,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    min_frequency: int = 1,
) -> dict:
    """Train a WordPiece tokenizer on one split's text and save it as ``out/tokenizer.json``.

    Args:
        data: a folder with split manifests, or one CSV/JSONL manifest.
        split: the split whose text is read.
        column: ``caption`` (or another video-manifest column), or ``question`` (the question manifests).
        vocab_size, min_frequency: as `tubelet.data.text.train_tokenizer`.

    Returns:
        The summary also written to ``out/summary.json``: ``tokenizer`` (the file), ``vocab_size``, ``texts``,
        ``tokens`` and ``unknown_tokens`` (word pieces of the split's text, specials left out), ``unknown_rate``,
        ``held_out`` ({split: {texts, unknown_rate}} for the dataset's other splits that have the column), and the
        arguments.

    Raises:
        DataError: no manifest, no such column, an empty text, or a manifest without rows (one line naming the
            file and the field).
    """
    texts, manifest = split_texts(data, split, column)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, min_frequency=min_frequency)
    path = save_tokenizer(tokenizer, out)
    tokens, unknown = unknown_tokens(tokenizer, texts)
    summary = {
        "tokenizer": str(path),
        "vocab_size": tokenizer.get_vocab_size(),
        "texts": len(texts),
        "tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_rate": unknown / max(tokens, 1),
        "held_out": held_out_rates(tokenizer, data, column, trained_on=split),
        "manifest": str(manifest),
        "split": split,
        "column": column,
        "max_vocab_size": vocab_size,
        "min_frequency": min_frequency,
    }
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def split_texts(data: str | os.PathLike, split: str, column: str) -> tuple[list[str], Path]:
    """The texts of a split's `column`, read as the recipe that trains on them reads them, and their manifest.

    Raises:
        DataError: as `tokenizer_from_data`.
    """
    if column == QUESTION:
        manifest = qa_manifest(data, split)
        if manifest is None:
            raise DataError(f"{data}: no qa_{split}.csv or .jsonl with a '{QUESTION}' column (path,question,answer)")
        _check_rows(manifest, column)
        return load_qa(manifest).questions, manifest
    manifest = text_manifest(data, split, column)
    _check_rows(manifest, column)
    videos = load_dataset(data, split=split, require_labels=False)
    return read_captions(data, split, videos, column=column), manifest


def held_out_rates(tokenizer: Tokenizer, data: str | os.PathLike, column: str, *, trained_on: str) -> dict:
    """{split: {texts, unknown_rate}} of the other splits of `data` whose text can be read (none for one manifest)."""
    if Path(data).is_file():
        return {}
    rates = {}
    for split in SPLITS:
        if split == trained_on:
            continue
        try:
            texts, _ = split_texts(data, split, column)
        except DataError as exc:
            log.info("no unknown-token rate for split %s: %s", split, exc)
            continue
        tokens, unknown = unknown_tokens(tokenizer, texts)
        rates[split] = {"texts": len(texts), "unknown_rate": unknown / max(tokens, 1)}
    return rates


def _check_rows(manifest: Path, column: str) -> None:
    if not manifest_rows(manifest, required=("path", column)):
        raise DataError(f"{manifest}: no rows, so no '{column}' text to train a tokenizer on")


def unknown_tokens(tokenizer: Tokenizer, texts: list[str]) -> tuple[int, int]:
    """(word pieces, of which ``[UNK]``) of `texts`, special tokens such as ``[CLS]`` left out."""
    unk = tokenizer.token_to_id(UNK)
    pieces = [
        token
        for encoding in tokenizer.encode_batch(texts)
        for token, special in zip(encoding.ids, encoding.special_tokens_mask)
        if not special
    ]
    return len(pieces), sum(token == unk for token in pieces)
