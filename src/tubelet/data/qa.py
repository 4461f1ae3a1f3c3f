"""Question answering data: ``qa_{split}.csv`` (or ``.jsonl``) manifests of (clip, question, answer) rows.

Columns ``path,question,answer[,question_type]``, one row per question (``tubelet sample-data --multimodal`` writes
them); ``path`` is relative to the manifest's folder. An example is (a window of a clip, a question) and its class is
the answer. `load_qa` reads a manifest and probes each clip once; `tokenize_questions` turns the questions into
token ids; `QAClipDataset` gives each question's window particles with the question's text particles (at the
window's centre: `tubelet.data.pipeline.question_particles`). ``tubelet finetune --task vqa``
(`tubelet.tasks.vqa`), ``evaluate``, ``predict --question`` and ``explain --question`` read questions here.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from tubelet.data.av_dataset import AVClipDataset
from tubelet.data.manifest import MANIFEST_SUFFIXES, Sample, VideoDataset, manifest_rows, try_probe
from tubelet.data.text import encode
from tubelet.data.transforms import AudioPreprocessing, Augment, Preprocessing
from tubelet.errors import ConfigError, DataError

log = logging.getLogger("tubelet.data")

QUESTION, ANSWER, QUESTION_TYPE = "question", "answer", "question_type"
UNTYPED = "all"  # the question_type of rows of a manifest without that column


@dataclass
class QAData:
    """The questions of one split, one sample per question.

    Attributes:
        data: one `Sample` per question (its clip, label = its answer) whose clip probed cleanly; ``labels`` is
            the answer vocabulary (the train split's, for every split).
        questions, types: the question text and ``question_type`` of each sample.
        token_ids: each question's token ids (set by `tokenize_questions`).
        manifest: the file they came from.
    """

    data: VideoDataset
    questions: list[str]
    types: list[str]
    manifest: Path
    token_ids: list[list[int]] | None = None


def qa_manifest(source: str | Path, split: str, *, required: bool = False) -> Path | None:
    """``source/qa_{split}.csv`` (or ``.jsonl``), or `source` itself when it is a file and the split is train.

    Raises:
        DataError: with `required`, when there is no such manifest (instead of returning None).
    """
    source = Path(source)
    if source.is_file():
        found = source if split == "train" else None
    else:
        candidates = [source / f"qa_{split}{suffix}" for suffix in MANIFEST_SUFFIXES]
        found = next((path for path in candidates if path.is_file()), None)
    if found is None and required:
        raise DataError(f"{source}: no qa_{split}.csv or .jsonl (columns path,question,answer)")
    return found


def load_qa(manifest: Path, *, answers: list[str] | None = None, workers: int = 4) -> QAData:
    """Read a question manifest and probe each clip once; questions about unreadable clips are logged and skipped.

    Args:
        answers: the answer vocabulary (the train split's); None makes it this manifest's distinct answers.

    Raises:
        DataError: one line naming the file (and line) and field: no ``path``/``question``/``answer`` column, an
            empty question or answer, or no readable clip.
    """
    rows = manifest_rows(manifest, required=("path", QUESTION, ANSWER))
    entries = []
    for line, row in rows:
        for field in ("path", QUESTION, ANSWER):
            if not str(row.get(field) or "").strip():
                raise DataError(f"{manifest}:{line}: field '{field}' is empty")
        video = Path(str(row["path"]))
        video = video if video.is_absolute() else manifest.parent / video
        qtype = str(row.get(QUESTION_TYPE) or UNTYPED).strip()
        entries.append((video, str(row[QUESTION]).strip(), str(row[ANSWER]).strip(), qtype))
    if not entries:
        raise DataError(f"{manifest}: no questions")
    paths = sorted({e[0] for e in entries})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probed = dict(zip(paths, pool.map(try_probe, paths)))
    samples, infos, questions, types, skipped = [], [], [], [], []
    for video, question, answer, qtype in entries:
        info, reason = probed[video]
        if info is None:
            skipped.append((str(video), reason))
            continue
        samples.append(Sample(path=video, label=answer))
        infos.append(info)
        questions.append(question)
        types.append(qtype)
    for path, reason in dict(skipped).items():
        log.warning("skipping the questions about unreadable video %s", reason or path)
    if not samples:
        raise DataError(f"{manifest}: no question's video could be read ({len(skipped)} skipped)")
    vocabulary = list(answers) if answers is not None else sorted({s.label for s in samples})
    data = VideoDataset(samples=samples, infos=infos, labels=vocabulary, skipped=skipped, source=str(manifest))
    return QAData(data, questions, types, manifest)


def tokenize_questions(qa: QAData, tokenizer: Tokenizer) -> QAData:
    """Set ``qa.token_ids``: each question's ids (``[CLS]`` first for a trained tokenizer)."""
    qa.token_ids = [encode(tokenizer, q, field=QUESTION, source=str(qa.manifest)) for q in qa.questions]
    return qa


class QAClipDataset(AVClipDataset):
    """`AVClipDataset` over questions: item i is question i's clip window, with the question's text particles.

    Args:
        qa: the questions (tokenized).
        modalities: what the model reads, ``text`` included or not: ``video``/``audio`` are decoded from the
            clip, ``text`` is the question; ``("text",)`` decodes nothing (the question-only arm).
        pre, audio, augment, seed, windows: as `AVClipDataset` (windows index questions, not files).
    """

    def __init__(
        self,
        qa: QAData,
        pre: Preprocessing,
        audio: AudioPreprocessing,
        *,
        modalities: tuple[str, ...],
        augment: Augment | None = None,
        seed: int = 0,
        windows: list[tuple[int, float, float]] | None = None,
    ):
        media = tuple(m for m in modalities if m != "text")
        super().__init__(qa.data, pre, audio, modalities=media, augment=augment, seed=seed, windows=windows)
        if qa.token_ids is None:
            raise ValueError("tokenize the questions first (tokenize_questions)")
        self.token_ids = qa.token_ids
        self.read_text = "text" in modalities
        self.modalities = (*media, "text") if self.read_text else media  # the question's tokens come last

    def _question(self, item: int) -> int:
        return item if self.windows is None else self.windows[item][0]

    def estimates(self) -> list[int]:
        base = super().estimates()
        if not self.read_text:
            return base
        return [n + len(self.token_ids[self._question(i)]) for i, n in enumerate(base)]

    def question(self, video: int) -> list[int] | None:
        """The token ids of question `video` (each sample is one question), when the model reads text."""
        return self.token_ids[video] if self.read_text else None


def asked_questions(checkpoint: str, modalities: tuple[str, ...], questions: list[str] | None) -> list[str | None]:
    """The ``--question`` values to ask, stripped (``[None]``: none, for a model that reads no text).

    Args:
        checkpoint: the checkpoint's name, for the error message.
        modalities: what its model reads; a VQA checkpoint reads ``text``.

    Raises:
        ConfigError: one line naming ``--question``: questions for a model that reads no text, none for one that
            does, or an empty question.
    """
    if "text" not in modalities:
        if questions:
            raise ConfigError(f"--question: {checkpoint} does not read text (not a VQA checkpoint); drop --question")
        return [None]
    if not questions:
        raise ConfigError(
            f"--question: {checkpoint} answers questions about a clip (a VQA checkpoint); pass one, e.g. "
            '--question "which way does it move?"'
        )
    if any(not q.strip() for q in questions):
        raise ConfigError("--question: a question is empty")
    return [q.strip() for q in questions]
