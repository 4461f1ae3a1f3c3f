"""``tubelet chat``: talk about a video with a dialogue checkpoint, one question per turn.

    tubelet chat --checkpoint RUN/best FILE                    interactive: a question per line, 'quit' or EOF ends
    tubelet chat --checkpoint RUN/best FILE --say Q1 --say Q2  scripted: one JSON object per turn
    ... --candidates FILE                                      also rank these answers (one per line) each turn

The clip is read once (the whole file, or its centre for a file longer than the checkpoint's window); each turn's
prompt holds the previous questions and the model's own answers (as many as the checkpoint was trained with), so
"and what colour was it?" follows from the turn before. An answer's ``score`` is its mean token log-probability.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from tubelet.errors import ConfigError, DataError
from tubelet.nn.device import autocast, resolve_device
from tubelet.tasks.caption import DecoderClipDataset, clip_batch, file_data, load_captioner
from tubelet.tasks.generate import Decoding, dialogue_prompt, generate, score_candidates, special_ids, text_ids
from tubelet.tasks.inference import view_windows

QUIT = ("quit", "exit")


def read_candidates(path: str | None) -> list[str]:
    """Candidate answers, one per line (blank lines skipped), or a JSON list of strings.

    Raises:
        DataError: the file cannot be read or holds no candidate.
    """
    if path is None:
        return []
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(f"--candidates {path}: {exc.strerror}") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            found = [str(c).strip() for c in json.loads(stripped)]
        except json.JSONDecodeError as exc:
            raise DataError(f"--candidates {path}: not a JSON list ({exc.msg})") from None
    else:
        found = [line.strip() for line in text.splitlines()]
    found = [c for c in found if c]
    if not found:
        raise DataError(f"--candidates {path}: no candidate answer in it")
    return found


class Conversation:
    """A dialogue checkpoint, one clip read once, and the turns so far."""

    def __init__(self, checkpoint: str, file: str, *, decoding: Decoding | None = None, device: str = "auto"):
        self.loaded = load_captioner(checkpoint)
        if self.loaded.task == "caption":
            raise ConfigError(f"--checkpoint {checkpoint}: a caption model, not a dialogue one: tubelet caption")
        self.model = self.loaded.model
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.tokenizer = self.loaded.tokenizer
        self.ids = special_ids(self.tokenizer)
        self.decoding = decoding or Decoding()
        self.history: list[tuple[str, str]] = []
        self.memory = self._read(file)

    @torch.no_grad()
    def _read(self, file: str):
        if not self.model.modalities:
            file_data(file)  # still a readable file: the same errors for every model
            return None
        data = file_data(file)
        pre = self.loaded.preprocessing
        windows = view_windows(data, pre.clip_seconds, 1)
        dataset = DecoderClipDataset(
            data, pre, self.loaded.audio, modalities=self.model.modalities, lengths=[0], windows=windows
        )
        item = dataset[0]
        if item.particles is None:
            raise DataError(item.error or f"{file}: cannot be decoded")
        batch = dataset.collate([item])
        with autocast(self.device, "auto"):
            memory = self.model.memory(clip_batch(self.model, batch.packed.to(self.device)))
        memory.features = memory.features.float()
        return memory

    @torch.no_grad()
    def ask(self, question: str, candidates: list[str] | None = None) -> dict:
        """The answer to `question` after the turns so far (then part of the history).

        Raises:
            ConfigError: an empty question.
        """
        question = question.strip()
        if not question:
            raise ConfigError("question: empty; type a question about the video")
        max_history = self.model.config.max_history
        prompt = dialogue_prompt(self.tokenizer, self.history, question, self.ids, max_history=max_history)
        out = generate(self.model, self.memory, [prompt], self.decoding)[0]
        answer = self.tokenizer.decode(out.ids, skip_special_tokens=True).strip()
        row = {"turn": len(self.history) + 1, "question": question, "answer": answer, "score": round(out.score, 4)}
        if candidates:
            scores = score_candidates(
                self.model, self.memory, prompt, [text_ids(self.tokenizer, c) for c in candidates]
            )
            order = sorted(range(len(candidates)), key=lambda i: -scores[i])
            row["ranking"] = [{"answer": candidates[i], "score": round(float(scores[i]), 4)} for i in order]
        self.history.append((question, answer))
        return row


def chat(
    checkpoint: str,
    file: str,
    questions: Iterable[str],
    *,
    candidates: list[str] | None = None,
    decoding: Decoding | None = None,
    device: str = "auto",
) -> Iterator[dict]:
    """One result per question (`Conversation.ask`), the history carried from turn to turn; stops at 'quit'."""
    conversation = Conversation(checkpoint, file, decoding=decoding, device=device)
    for question in questions:
        if question.strip().lower() in QUIT:
            return
        yield conversation.ask(question, candidates)


def terminal_questions(prompt: str = "you> ") -> Iterator[str]:
    """Lines typed on the terminal (a prompt when it is one), blank lines skipped, until EOF."""
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(prompt, end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")
