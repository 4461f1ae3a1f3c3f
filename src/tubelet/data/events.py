"""Timed captions and dialogues about videos: what the ``caption`` and ``dialogue`` tasks read.

Captions, one row per event (``tubelet sample-data --stories`` writes ``captions_{split}.jsonl``)::

    {"path": "videos/story_000.mp4", "start": 3.2, "end": 7.9, "caption": "...",
     "object": "ball", "colour": "red", "direction": "right", "sound": "chime"}

``start``/``end`` (seconds) are optional: without them a caption describes the whole clip, as in the
``{split}.csv`` manifests of ``tubelet sample-data --multimodal`` (``path,label,caption,...,motion,sound,colour,
shape``), which are read too (``shape`` stands for ``object`` and ``motion`` for ``direction``). The attribute
columns are optional; those present are scored in generated captions.

Dialogues, one row per turn (``dialogues_{split}.jsonl``)::

    {"path": ..., "dialogue": "story_000-0", "turn": 2, "history": [["q1", "a1"], ["q2", "a2"]],
     "question": "...", "answer": "...", "candidates": ["...", ...], "needs_history": true}

Paths are relative to the manifest's folder. Each clip is probed once; rows about unreadable clips are logged and
skipped.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tubelet.data.manifest import MANIFEST_SUFFIXES, Sample, VideoDataset, manifest_rows, try_probe
from tubelet.errors import DataError

log = logging.getLogger("tubelet.data")

ATTRIBUTES = ("object", "colour", "direction", "sound")
# Other names of an attribute's column (the --multimodal sample's).
ALIASES = {"object": ("object", "shape"), "colour": ("colour", "color"), "direction": ("direction", "motion")}


@dataclass
class Captions:
    """The captioned events of one split, one sample per event.

    Attributes:
        data: one `Sample` per event (its clip, ``start``/``end`` its seconds or None for the whole clip).
        captions: the caption of each event.
        attributes: each event's known attributes ({name: value} over `ATTRIBUTES`, lower case).
        manifest: the file they came from.
    """

    data: VideoDataset
    captions: list[str]
    attributes: list[dict[str, str]]
    manifest: Path


@dataclass
class Dialogues:
    """The turns of one split's dialogues, one sample per turn.

    Attributes:
        data: one `Sample` per turn (the dialogue's clip; ``start``/``end`` when the row gives them).
        dialogues, turns: each turn's dialogue id and number.
        histories: the (question, answer) pairs before each turn.
        questions, answers: the turn's question and its answer.
        candidates: the answers to rank (the true one among them), or empty lists.
        needs_history: whether the question can only be answered with the history (False when not given).
        manifest: the file they came from.
    """

    data: VideoDataset
    dialogues: list[str]
    turns: list[int]
    histories: list[list[tuple[str, str]]]
    questions: list[str]
    answers: list[str]
    candidates: list[list[str]]
    needs_history: list[bool]
    manifest: Path
    extra: dict = field(default_factory=dict)


def find_manifest(source: str | Path, split: str, names: tuple[str, ...]) -> Path | None:
    """``source/{name}.jsonl|.csv`` for the first of `names` (each formatted with the split) that exists; `source`
    itself when it is a file (whatever the split)."""
    source = Path(source)
    if source.is_file():
        return source
    for name in names:
        for suffix in (".jsonl", *MANIFEST_SUFFIXES):
            path = source / f"{name.format(split=split)}{suffix}"
            if path.is_file():
                return path
    return None


def caption_manifest(source: str | Path, split: str, *, required: bool = False) -> Path | None:
    """A split's captions: ``captions_{split}.jsonl`` (the stories sample), else ``{split}.csv|.jsonl``.

    Raises:
        DataError: with `required`, when there is none.
    """
    found = find_manifest(source, split, ("captions_{split}", "{split}"))
    if found is None and required:
        raise DataError(f"{source}: no captions_{split}.jsonl or {split}.csv with a 'caption' column (no captions)")
    return found


def dialogue_manifest(source: str | Path, split: str, *, required: bool = False) -> Path | None:
    """A split's dialogues: ``dialogues_{split}.jsonl``.

    Raises:
        DataError: with `required`, when there is none.
    """
    found = find_manifest(source, split, ("dialogues_{split}",))
    if found is None and required:
        raise DataError(f"{source}: no dialogues_{split}.jsonl (one row per turn: path, history, question, answer)")
    return found


def _clip(manifest: Path, row: dict) -> Path:
    video = Path(str(row["path"]))
    return video if video.is_absolute() else manifest.parent / video


def _seconds(manifest: Path, line: int, row: dict, name: str) -> float | None:
    value = row.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{manifest}:{line}: field '{name}' is not seconds: {value!r}") from None


def _probed(manifest: Path, rows: list[tuple[Path, float | None, float | None]], workers: int):
    """(kept row indices, samples, infos, skipped) of rows (clip, start, end) whose clip probes cleanly."""
    paths = sorted({clip for clip, _, _ in rows})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probed = dict(zip(paths, pool.map(try_probe, paths)))
    kept, samples, infos, skipped = [], [], [], []
    for i, (clip, start, end) in enumerate(rows):
        info, reason = probed[clip]
        if info is None:
            skipped.append((str(clip), reason))
            continue
        kept.append(i)
        samples.append(Sample(path=clip, start=start, end=end))
        infos.append(info)
    for path, reason in dict(skipped).items():
        log.warning("skipping the rows about unreadable video %s", reason or path)
    if not samples:
        raise DataError(f"{manifest}: no row's video could be read ({len(skipped)} skipped)")
    return kept, VideoDataset(samples=samples, infos=infos, labels=[], skipped=skipped, source=str(manifest))


def load_captions(manifest: Path, *, workers: int = 4) -> Captions:
    """Read a caption manifest (events with seconds, or whole clips) and probe each clip once.

    Raises:
        DataError: one line naming the file: no ``caption`` column, no captions, an empty caption, bad seconds.
    """
    rows = manifest_rows(manifest, required=("path",))
    if rows and "caption" not in rows[0][1]:
        raise DataError(f"{manifest}: no 'caption' column (no captions to learn from)")
    entries, captions, attributes = [], [], []
    for line, row in rows:
        caption = str(row.get("caption") or "").strip()
        if not caption:
            raise DataError(f"{manifest}:{line}: field 'caption' is empty")
        start, end = _seconds(manifest, line, row, "start"), _seconds(manifest, line, row, "end")
        if start is not None and end is not None and end <= start:
            raise DataError(f"{manifest}:{line}: end ({end}) is not after start ({start})")
        entries.append((_clip(manifest, row), start, end))
        captions.append(caption)
        attributes.append(_attributes(row))
    if not entries:
        raise DataError(f"{manifest}: no captions")
    kept, data = _probed(manifest, entries, workers)
    return Captions(data, [captions[i] for i in kept], [attributes[i] for i in kept], manifest)


def _attributes(row: dict) -> dict[str, str]:
    out = {}
    for name in ATTRIBUTES:
        for column in ALIASES.get(name, (name,)):
            value = str(row.get(column) or "").strip().lower()
            if value:
                out[name] = value
                break
    return out


def load_dialogues(manifest: Path, *, workers: int = 4) -> Dialogues:
    """Read a dialogue manifest (one row per turn) and probe each clip once.

    Raises:
        DataError: one line naming the file and line: a missing or empty question or answer, a malformed history,
            candidates that leave out the answer.
    """
    rows = manifest_rows(manifest, required=("path", "question", "answer"))
    entries, fields = [], []
    for line, row in rows:
        question, answer = str(row.get("question") or "").strip(), str(row.get("answer") or "").strip()
        if not question:
            raise DataError(f"{manifest}:{line}: field 'question' is empty")
        if not answer:
            raise DataError(f"{manifest}:{line}: field 'answer' is empty")
        history = row.get("history") or []
        if not isinstance(history, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in history):
            raise DataError(f"{manifest}:{line}: field 'history' must be a list of [question, answer] pairs")
        candidates = [str(c).strip() for c in (row.get("candidates") or [])]
        if candidates and answer not in candidates:
            raise DataError(f"{manifest}:{line}: field 'candidates' does not hold the answer {answer!r}")
        start, end = _seconds(manifest, line, row, "start"), _seconds(manifest, line, row, "end")
        entries.append((_clip(manifest, row), start, end))
        fields.append(
            (
                str(row.get("dialogue") or row["path"]),
                int(row.get("turn") or len(history)),
                [(str(q), str(a)) for q, a in history],
                question,
                answer,
                candidates,
                bool(row.get("needs_history", False)),
            )
        )
    if not entries:
        raise DataError(f"{manifest}: no dialogue turns")
    kept, data = _probed(manifest, entries, workers)
    chosen = [fields[i] for i in kept]
    columns = list(zip(*chosen))
    return Dialogues(data, *[list(c) for c in columns], manifest=manifest)
