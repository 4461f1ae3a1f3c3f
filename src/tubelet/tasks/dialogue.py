"""Video dialogue: the ``dialogue`` task (``tubelet finetune --task dialogue``): answer the next question about a clip.

An example is one turn of a dialogue: the clip, the previous (question, answer) pairs, the question, and its answer.
Data: ``DATA/dialogues_{split}.jsonl``, one row per turn with ``history``, ``question``, ``answer``, optional
``candidates`` (10+ answers holding the true one) and ``needs_history`` (`tubelet.data.events`). The clip is read whole
(or between a row's ``start`` and ``end``) in one window: the task's defaults read 1 frame per second at 64 px for up
to 120 s, so a question about any moment of a story can be answered.

Model: the captioner of `tubelet.tasks.caption` (a clip encoder and a causal text decoder). The prompt is the history
then the question, ``q1 [SEP] a1 [SEP] ... question [BOS]``, each token tagged with its turn
(`tubelet.tasks.generate.dialogue_prompt`); the decoder generates the answer after ``[BOS]``, and the loss is the NLL of
the answer's tokens only.

Metrics: ``loss`` (answer-token NLL, picks ``best/``), answer matching over the candidates as AVSD/VisDial score it:
candidates ranked by length-normalised log-likelihood (mean log-prob per token), ``mrr``, ``r@1``, ``r@5``; and
``answer_match``: the generated answer equals the true one (case and punctuation aside). Each is also reported
apart for the questions that need the history (``needs_history``) and those that do not, and for each question that
needs it (``by_question``).

``history=false`` trains a history-blind model (the question alone). With ``ablate`` the same budget also trains two
arms: ``history-blind`` (the clip and the question, no history) and ``question-only`` (the question and the history as
text, no clip: a text-only decoder), so the report shows what the history and the clip each add.

    RUN/best, RUN/last                              the dialogue model (a captioner checkpoint)
    RUN/ablation/{history-blind,question-only}/     the ablation arms
    RUN/report/report.json, report.md               test numbers of every arm, split by needs_history
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tubelet.data.dataset import budget_batches
from tubelet.data.events import Dialogues, dialogue_manifest, load_dialogues
from tubelet.data.loader import iterate_batches
from tubelet.errors import ConfigError, DataError
from tubelet.nn.device import autocast, resolve_device
from tubelet.tasks.base import Arm, Built, Prepared, Reads, register
from tubelet.tasks.caption import (
    DecoderClipDataset,
    DecoderFields,
    TextDecoderTask,
    build_captioner,
    clip_batch,
    decoder_tokenizer,
    decoding_of,
)
from tubelet.tasks.classification import parse_modalities
from tubelet.tasks.files import write_report_files
from tubelet.tasks.generate import (
    GREEDY,
    Decoding,
    Sequence,
    detokenize,
    dialogue_prompt,
    generate,
    score_candidates,
    sequence_loss,
    special_ids,
    text_ids,
)
from tubelet.tasks.inference import view_windows
from tubelet.tasks.report import data_text, heading_markdown
from tubelet.typed import opt

log = logging.getLogger("tubelet.dialogue")

HISTORY_BLIND, QUESTION_ONLY = "history-blind", "question-only"


def answer_key(text: str) -> str:
    """The form in which two answers are compared: lower case, words only."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def ranking_metrics(scores: list[np.ndarray], truth: list[int]) -> dict[str, float]:
    """MRR and recall@1/5 of the true candidate (index `truth[i]` of `scores[i]`; ties count against it)."""
    ranks = np.array([1 + int((s > s[t]).sum() + (np.delete(s, t) == s[t]).sum()) for s, t in zip(scores, truth)])
    return {"mrr": float(np.mean(1.0 / ranks)), "r@1": float(np.mean(ranks <= 1)), "r@5": float(np.mean(ranks <= 5))}


@dataclass(frozen=True)
class DialogueFields(DecoderFields):
    """The fields of ``finetune --task dialogue``."""

    history: bool = opt(True, "read the previous questions and answers (false: a history-blind model)")
    max_history: int = opt(8, "previous (question, answer) pairs read")
    ablate: bool = opt(False, "also train the history-blind and question-only (no clip) arms and report all")

    def validate(self) -> None:
        DecoderFields.validate(self)  # a run's config composes the field blocks: no super() to call
        if self.max_history < 1:
            raise ConfigError("max_history: must be 1 or more (history=false makes a history-blind model)")


def prompts_of(data: Dialogues, tokenizer, ids: dict[str, int], max_history: int) -> list[tuple[list, list]]:
    """Each turn's prompt (ids, turns) with up to `max_history` previous pairs (0: the question alone)."""
    return [
        dialogue_prompt(tokenizer, h if max_history else [], q, ids, max_history=max_history)
        for h, q in zip(data.histories, data.questions)
    ]


@torch.no_grad()
def evaluate_dialogue(
    model, data: Dialogues, pre, tokenizer, *, audio=None, decoding: Decoding = GREEDY, budget: int = 8192, device,
    precision: str = "auto", workers: int = 0,
) -> dict:  # fmt: skip
    """Answer NLL, candidate ranking (MRR, R@1, R@5) and generated-answer match of `model` on the turns of `data`,
    overall and split by ``needs_history``."""
    model = model.to(device).eval()
    ids = special_ids(tokenizer)
    prompts = prompts_of(data, tokenizer, ids, model.config.max_history)
    targets = [text_ids(tokenizer, a) for a in data.answers]
    windows = view_windows(data.data, pre.clip_seconds, 1)
    lengths = [len(p[0]) + len(t) + 1 for p, t in zip(prompts, targets)]
    dataset = DecoderClipDataset(data.data, pre, audio, modalities=model.modalities, lengths=lengths, windows=windows)
    batches = budget_batches(dataset.estimates(), budget, shuffle=False)
    n = len(windows)
    answers, ranked, truth = [None] * n, [None] * n, [-1] * n
    loss_sum, tokens, failed = 0.0, 0, []
    for batch in iterate_batches(dataset, batches, workers=workers, on_crash=lambda p, r: failed.append((p, r))):
        failed.extend((it.path, it.error) for it in batch.failed)
        if not batch.indices:
            continue
        with autocast(device, precision):
            memory = model.memory(clip_batch(model, batch.packed.to(device) if batch.packed is not None else None))
        if memory is not None:
            memory.features = memory.features.float()
        rows = batch.indices
        sequences = [Sequence(*prompts[i], targets[i] + [model.config.eos_id]) for i in rows]
        loss, count = sequence_loss(model, memory, sequences)
        loss_sum, tokens = loss_sum + float(loss) * count, tokens + count
        for row, out in zip(rows, generate(model, memory, [prompts[i] for i in rows], decoding)):
            answers[row] = detokenize(tokenizer, out.ids)
        for b, i in enumerate(rows):
            if data.candidates[i]:
                mine = memory.select([b]) if memory is not None else None
                cands = [text_ids(tokenizer, c) for c in data.candidates[i]]
                ranked[i] = score_candidates(model, mine, prompts[i], cands)
                truth[i] = data.candidates[i].index(data.answers[i])
    for path, reason in dict(failed).items():
        log.warning("skipping %s: %s", path, reason)
    done = [i for i in range(n) if answers[i] is not None]
    if not done:
        raise DataError(f"{data.manifest}: no dialogue's clip could be decoded")

    def numbers(chosen: list[int]) -> dict:
        out = {"turns": len(chosen)}
        if not chosen:
            return out
        out["answer_match"] = float(np.mean([answer_key(answers[i]) == answer_key(data.answers[i]) for i in chosen]))
        scored = [i for i in chosen if ranked[i] is not None]
        if scored:
            out.update(ranking_metrics([ranked[i] for i in scored], [truth[i] for i in scored]))
            out["candidates"] = float(np.mean([len(ranked[i]) for i in scored]))
        return out

    loss = loss_sum / max(1, tokens)
    overall = numbers(done)
    metrics = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "mrr": overall.get("mrr", float("nan")),
        "r@1": overall.get("r@1", float("nan")),
        "r@5": overall.get("r@5", float("nan")),
        "answer_match": overall["answer_match"],
        "num_turns": len(done),
        "by_needs_history": {
            "needs_history": numbers([i for i in done if data.needs_history[i]]),
            "no_history_needed": numbers([i for i in done if not data.needs_history[i]]),
        },
        # Each question that needs the history, apart: "what colour was it?" is answered by copying from the history.
        "by_question": {
            q: numbers([i for i in done if data.needs_history[i] and data.questions[i] == q])
            for q in sorted({data.questions[i] for i in done if data.needs_history[i]})
        },
        "examples": [
            {"question": data.questions[i], "answer": data.answers[i], "generated": answers[i]} for i in done[:8]
        ],
        "skipped": sorted({p for p, _ in failed}),
    }
    return metrics


@register
class DialogueTask(TextDecoderTask):
    """(clip, dialogue history, question) -> the answer from a text decoder; candidates ranked by likelihood."""

    name = "dialogue"
    summary = "multi-turn dialogue about a video (dialogues_SPLIT.jsonl): answers generated and candidates ranked"
    Config = DialogueFields
    metrics = {"loss": False, "mrr": True, "r@1": True, "r@5": True, "answer_match": True}
    evaluator = staticmethod(evaluate_dialogue)
    counted = ("turns", "num_turns")
    # A whole story in one window: 1 frame per second at 64 px for up to 2 minutes.
    config_defaults = {"sample_fps": 1.0, "clip_seconds": 120.0, "size": 64}

    def prepare(self, cfg, out: Path) -> Prepared:
        train = load_dialogues(dialogue_manifest(cfg.data, cfg.train_split, required=True))
        texts = train.questions + train.answers + [c for cands in train.candidates for c in cands]
        texts += [t for history in train.histories for pair in history for t in pair]
        tokenizer = decoder_tokenizer(cfg, texts, out)
        val, audio = self.held_out_and_audio(cfg, train, dialogue_manifest, load_dialogues)
        ids = special_ids(tokenizer)
        extra = {
            "audio": audio,
            "targets": [text_ids(tokenizer, a) for a in train.answers],
            "prompts": {h: prompts_of(train, tokenizer, ids, h) for h in {0, cfg.max_history}},
        }
        return Prepared(train, val, tokenizer=tokenizer, extra=extra)

    def arms(self, cfg, prepared: Prepared) -> list[Arm]:
        modalities = parse_modalities(cfg.modalities)
        out = Path(cfg.out)
        name = "+".join(modalities) + ("+history" if cfg.history else "")
        arms = [Arm(name, out, modalities)]
        if cfg.ablate:
            if cfg.history:
                arms.append(Arm(HISTORY_BLIND, out / "ablation" / HISTORY_BLIND, modalities))
            arms.append(Arm(QUESTION_ONLY, out / "ablation" / QUESTION_ONLY, ()))
        return arms

    def _history(self, cfg, arm: Arm) -> int:
        """Previous turns the arm's prompts hold."""
        return 0 if arm.name == HISTORY_BLIND or not cfg.history else cfg.max_history

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        return build_captioner(cfg, prepared.tokenizer, arm, max_history=self._history(cfg, arm))

    def dataset(self, data: Dialogues, pre, reads: Reads, *, augment=None, seed=0, windows=None):
        lengths = [len(q.split()) * 2 + sum(len(a.split()) + len(b.split()) for a, b in h) * 2 + 8
                   for q, h in zip(data.questions, data.histories)]  # fmt: skip
        if windows is None:  # the whole clip (or the row's span), one window, as evaluation reads it
            windows = view_windows(data.data, pre.clip_seconds, 1)
        return DecoderClipDataset(
            data.data, pre, reads.audio, modalities=reads.modalities, lengths=lengths, augment=augment, seed=seed,
            windows=windows,
        )  # fmt: skip

    def sequences(self, model, prepared: Prepared, batch) -> list[Sequence]:
        prompts = prepared.extra["prompts"][model.config.max_history]
        targets, eos = prepared.extra["targets"], model.config.eos_id
        return [Sequence(*prompts[i], targets[i] + [eos]) for i in batch.indices]

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        from tubelet.models import load

        out = Path(cfg.out)
        result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last")}
        result["arms"] = {arm.name: {"out": str(arm.out), **summaries[arm.name]} for arm in arms}
        manifest = None if Path(cfg.data).is_file() else dialogue_manifest(cfg.data, "test")
        if manifest is None:
            log.warning("%s: no dialogues_test.jsonl; no test report", cfg.data)
            return result
        test = load_dialogues(manifest)
        scores = {}
        for arm in arms:
            loaded = load(arm.out / "best", kind="captioner")
            scores[arm.name] = evaluate_dialogue(
                loaded.model, test, loaded.preprocessing, loaded.tokenizer, audio=loaded.audio,
                decoding=decoding_of(cfg), budget=cfg.batch_particles, device=resolve_device(cfg.device),
                precision=cfg.precision, workers=cfg.workers,
            )  # fmt: skip
        main = arms[0].name
        report = {**scores[main], "checkpoint": str(out / "best"), "data": cfg.data, "split": "test", "arm": main}
        report["arms"] = {name: arm_summary(m) for name, m in scores.items()}
        result["report"] = str(write_report_files(report, out / "report", self.report_markdown(report))["json"])
        result["test"] = report["arms"]
        return result

    def check_predict(self, loaded) -> None:
        raise ConfigError(f"{loaded.source}: a dialogue model answers in text: tubelet chat --checkpoint C FILE")

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def evaluation_data(self, source: str, split: str | None, loaded) -> Dialogues:
        manifest = Path(source) if split is None else dialogue_manifest(source, split, required=True)
        return load_dialogues(manifest)

    def report_markdown(self, report: dict, *, title: str = "") -> str:
        arms = report.get("arms") or {report.get("arm", "model"): arm_summary(report)}
        lines = [
            *heading_markdown("Dialogue", report),
            f"{data_text(report)}: {report['num_turns']} turns. Candidates ranked by mean log-prob per token; "
            "`needs history` are the questions that cannot be answered without the previous turns.",
            "",
            "| arm | questions | turns | MRR | R@1 | R@5 | answer match |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in arms.items():
            for part, row in (("all", m), *m["by_needs_history"].items()):
                if not row.get("turns", m.get("num_turns")):
                    continue
                turns = row.get("turns", m.get("num_turns"))
                cells = " | ".join(f"{row.get(k, float('nan')):.3f}" for k in ("mrr", "r@1", "r@5", "answer_match"))
                lines.append(f"| {name} | {part.replace('_', ' ')} | {turns} | {cells} |")
        questions = sorted({q for m in arms.values() for q in m.get("by_question", {})})
        if questions:
            lines += [
                "",
                "| arm | question (needs history) | turns | MRR | R@1 | answer match |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for name, m in arms.items():
                for q, row in m.get("by_question", {}).items():
                    cells = " | ".join(f"{row.get(k, float('nan')):.3f}" for k in ("mrr", "r@1", "answer_match"))
                    lines.append(f"| {name} | {q} | {row['turns']} | {cells} |")
        return "\n".join(lines) + "\n"

    def summary_line(self, report: dict) -> str:
        return (
            f"loss {report['loss']:.4f}   MRR {report['mrr']:.3f}   R@1 {report['r@1']:.3f}   R@5 {report['r@5']:.3f}"
            f"   answer match {report['answer_match']:.3f}   turns {report['num_turns']}"
        )


def arm_summary(metrics: dict) -> dict:
    """The numbers of one arm in a dialogue report's ``arms`` table."""
    keys = ("loss", "mrr", "r@1", "r@5", "answer_match", "num_turns", "by_needs_history", "by_question")
    return {k: metrics[k] for k in keys if k in metrics}
