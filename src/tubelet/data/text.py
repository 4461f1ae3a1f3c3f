"""Tokenizers for captions, questions and answers: Hugging Face `tokenizers`, loaded or trained on the data.

Three ways to get one, all returning a `tokenizers.Tokenizer`:

- a local directory holding ``tokenizer.json`` (or the file itself): works offline;
- a Hugging Face hub id (``"bert-base-uncased"``) for users who are online: downloaded only when asked for;
- `train_tokenizer` on the dataset's own captions: a small lowercase WordPiece with ``[PAD] [UNK] [CLS]``
  (``tubelet tokenizer`` trains one from a manifest column and saves it: `tubelet.recipes.tokenizer`).

A trained tokenizer prepends ``[CLS]`` to every caption (a slot for pooling), splits words it has not seen
into known word pieces, and maps characters it has never seen to ``[UNK]``, so no input is silently dropped.
`encode` is the one way captions become ids: it refuses empty text with an error naming the field and file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tubelet.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, CLS)  # ids 0, 1, 2 in a trained tokenizer
DEFAULT_VOCAB_SIZE = 1000  # of a trained tokenizer; a small caption set yields fewer tokens


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 1) -> Tokenizer:
    """Train a lowercase WordPiece tokenizer on `texts` (captions, questions, answers).

    Args:
        texts: the training text, one caption per item.
        vocab_size: at most this many tokens (specials, characters and word pieces); a small caption set
            yields fewer.
        min_frequency: pieces seen fewer times are not merged into the vocabulary.

    Raises:
        DataError: `texts` holds no words.
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError("cannot train a tokenizer: no non-empty captions")
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # splits on whitespace and punctuation
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(  # no progress bar: it wrote blank lines into commands' stdout
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A", special_tokens=[(CLS, tokenizer.token_to_id(CLS))]
    )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: str | os.PathLike) -> Path:
    """Write ``directory/tokenizer.json`` (the directory is created); returns the file."""
    path = Path(directory) / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a local directory or ``tokenizer.json``, or else from the Hugging Face hub.

    A string that names an existing path, or that looks like one (starts with ``.``, ``/`` or ``~``, or ends in
    ``.json``), is local and never downloaded. Anything else is a hub id, fetched only then.

    Raises:
        DataError: the local directory has no ``tokenizer.json``, or the file is not a tokenizer.
        ConfigError: the hub id cannot be fetched (offline, or no such repository).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")) or text.endswith(".json"):
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"{file}: no such tokenizer file (train one with train_tokenizer, or give a hub id)")
        try:
            return Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise DataError(f"{file}: not a Hugging Face tokenizer ({' '.join(str(exc).split())})") from exc
    try:
        return Tokenizer.from_pretrained(text)
    except Exception as exc:
        raise ConfigError(
            f"tokenizer {text!r}: cannot fetch it from the Hugging Face hub ({' '.join(str(exc).split())}); "
            "offline users pass a local directory with tokenizer.json"
        ) from exc


def run_tokenizer(
    texts: Iterable[str], *, given: str | None = None, saved: Iterable[str | os.PathLike] = ()
) -> Tokenizer:
    """The tokenizer of a training run: `given` (``--tokenizer``) if any; else that of the first `saved` directory
    holding a ``tokenizer.json`` (a resumed run's ``last/``, a checkpoint being continued: the vocabulary its model
    learned); else a WordPiece trained on `texts`.

    Raises:
        DataError, ConfigError: as `load_tokenizer` and `train_tokenizer`.
    """
    if given:
        return load_tokenizer(given)
    for directory in saved:
        if (Path(directory) / TOKENIZER_FILE).is_file():
            return load_tokenizer(directory)
    return train_tokenizer(texts)


def encode(tokenizer: Tokenizer, text: str | None, *, field: str = "caption", source: str | None = None) -> list[int]:
    """Token ids of one caption, with the tokenizer's own specials (``[CLS]`` first for a trained one).

    Args:
        field: the manifest column or metadata key the text came from, for the error message.
        source: the file (or manifest row) the text belongs to, for the error message.

    Raises:
        DataError: the text is missing or blank.
    """
    if text is None or not str(text).strip():
        where = f"{source}: " if source else ""
        raise DataError(f"{where}field {field!r} is empty; give every clip a non-empty {field}")
    return tokenizer.encode(str(text)).ids
