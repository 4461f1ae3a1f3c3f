"""Video question answering as answer classification (``tubelet finetune --task vqa``).

`finetune` hands a run here when ``task`` is ``vqa``. An example is (a window of a clip, a question) and its class
is the answer: the answer vocabulary is the distinct answers of the TRAIN question manifest, saved as the
checkpoint's ``labels.json``. A val or test question whose answer is not in it can never be answered right: it is
scored as wrong (and counted under ``unknown_answers``), never an error.

Data: ``DATA/qa_{split}.csv`` (or ``.jsonl``) with columns ``path,question,answer[,question_type]`` (one row per
question; ``tubelet sample-data --multimodal`` writes them). ``path`` is relative to the manifest's folder. They are
read by `tubelet.data.qa`.

Model: one `FusionModel` (`tubelet.recipes.fusion`) reading the clip's video (and audio, with
``--modalities video,audio``) particles AND the question's text particles in one sequence per example. A question
is asked about the whole window, so its tokens all take the window's centre as their time (seconds from the
window's start, the origin of the clip's own particles); their order is the token position ``ti``. The tokenizer
is a WordPiece trained on the train questions (`tubelet.data.text.train_tokenizer`) unless ``--tokenizer`` names
one; it is saved beside every checkpoint as ``tokenizer.json``. A word it never saw splits into known pieces, an
unseen character becomes ``[UNK]``.

With ``ablate`` (the default) the same budget also trains a question-only arm (text particles alone): the answers of
a balanced set ("left" or "right"?) cannot be guessed from the question, so the gap between the arms is what the
model takes from the clip.

    RUN/best, RUN/last                        the clip + question model (fusion checkpoints with tokenizer.json)
    RUN/ablation/question-only/{best,last}    the question-only arm
    RUN/report/report.json, report.md         test accuracy overall and per question_type, for every arm
    RUN/summary.json                          training summaries

``tubelet evaluate --checkpoint RUN/best`` writes the same report later, for any split's ``qa_{split}.csv`` or a
question manifest (`tubelet.data.qa.load_qa`, `evaluate_vqa`, `write_vqa_report`); ``--baseline`` adds another arm's
row.

Training is `tubelet.recipes.fusion.train_arm`, so ``--model`` may be a pretrained video encoder, and ``--freeze``,
``--peft lora`` and ``--resume`` work as for audio-visual classification (a resumed run keeps the tokenizer of its
``last/``).
A VQA checkpoint answers new questions with ``tubelet predict --checkpoint RUN/best FILE --question TEXT``
(`tubelet.recipes.predict`), and ``tubelet explain ... --question TEXT`` says which particles (the question's tokens
among them) the answer rests on (`tubelet.recipes.explain`); both check the flag with `asked_questions`, and every
clip's particles, the question's among them, come from `tubelet.data.pipeline.clip_particles`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from tubelet.data.av_dataset import AudioPreprocessing, check_audio
from tubelet.data.qa import QAClipDataset, QAData, load_qa, qa_manifest, tokenize_questions
from tubelet.data.text import run_tokenizer
from tubelet.data.transforms import Augment, Preprocessing
from tubelet.errors import ConfigError
from tubelet.recipes.common import windowed_probabilities
from tubelet.recipes.fusion import LoadedFusion, is_fusion_checkpoint, load_fusion, parse_modalities, train_arm
from tubelet.recipes.report import data_text, heading_markdown
from tubelet.tasks.classification import classification_metrics
from tubelet.train.config import to_dict
from tubelet.train.loop import resolve_device, view_windows

log = logging.getLogger("tubelet.vqa")

QUESTION_ONLY = "question-only"


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


def finetune_vqa(cfg) -> dict:
    """Train the clip + question model (and, with ``cfg.ablate``, the question-only arm); report on the test split.

    Args:
        cfg: a `tubelet.recipes.finetune.FinetuneConfig` whose ``task`` is ``vqa``; ``modalities`` are what is
            read from the clip (``video``, ``audio`` or both); the question's text is always read.
    """
    media = parse_modalities(cfg.modalities)
    modalities = (*media, "text")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    audio = AudioPreprocessing(allow_missing_audio=cfg.allow_missing_audio)
    device = resolve_device(cfg.device)

    # --- data: questions, answer vocabulary, tokenizer ---------------------------------------------------
    train = load_qa(qa_manifest(cfg.data, cfg.train_split, required=True))
    answers = train.data.labels
    saved = [out / "last"] if cfg.resume else []  # resuming, or continuing a VQA model: the vocabulary it learned
    saved += [cfg.model] if is_fusion_checkpoint(cfg.model) else []
    tokenizer = run_tokenizer(train.questions, given=cfg.tokenizer, saved=saved)
    tokenize_questions(train, tokenizer)
    val = _split(cfg, cfg.val_split, answers, tokenizer) if cfg.val_split not in (None, "none") else None
    if "audio" in media:
        for qa in (train, val):
            if qa is not None:
                check_audio(qa.data, audio)

    # --- arms: clip + question (RUN/best, RUN/last), then the question alone -------------------------------
    arms = {"+".join(modalities): (modalities, out)}
    if cfg.ablate:
        arms[QUESTION_ONLY] = (("text",), out / "ablation" / QUESTION_ONLY)

    def evaluate(loaded: LoadedFusion, qa: QAData) -> dict:
        return evaluate_vqa(
            loaded,
            qa,
            views=cfg.eval_views,
            budget=cfg.batch_particles,
            device=device,
            precision=cfg.precision,
            workers=cfg.workers,
        )

    summaries = {}
    for arm, (mods, arm_out) in arms.items():
        log.info("training arm %s (%s)", arm, ", ".join(mods))

        def train_set(pre: Preprocessing, augment: Augment, mods=mods) -> QAClipDataset:
            return QAClipDataset(train, pre, audio, modalities=mods, augment=augment, seed=cfg.seed)

        validate = (lambda loaded: evaluate(loaded, val)) if val is not None else None
        summaries[arm] = train_arm(
            cfg, mods, arm_out, train_set, answers, audio, validate=validate, tokenizer=tokenizer
        )

    # --- test report -------------------------------------------------------------------------------------
    result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), "arms": summaries}
    test = _split(cfg, "test", answers, tokenizer)
    if test is not None:
        if "audio" in media:
            check_audio(test.data, audio)
        scores = {arm: evaluate(load_fusion(arm_out / "best"), test) for arm, (_, arm_out) in arms.items()}
        main = next(iter(arms))
        report = {
            **scores[main],
            "checkpoint": str(out / "best"),
            "data": cfg.data,
            "split": "test",
            "modalities": main,
            "arms": {arm: arm_summary(m) for arm, m in scores.items()},
        }
        result["report"] = str(write_vqa_report(report, out / "report"))
        result["test"] = {arm: arm_summary(m) for arm, m in scores.items()}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _split(cfg, split: str, answers: list[str], tokenizer: Tokenizer) -> QAData | None:
    """A val or test split's questions, or None (with a warning) when the data has no manifest for it."""
    manifest = qa_manifest(cfg.data, split)
    if manifest is None:
        log.warning("%s: no qa_%s.csv or .jsonl; no %s metrics", cfg.data, split, split)
        return None
    return tokenize_questions(load_qa(manifest, answers=answers), tokenizer)


def arm_summary(metrics: dict) -> dict:
    """The numbers of one arm in a report's ``arms`` table."""
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "num_questions", "per_question_type")}


@torch.no_grad()
def evaluate_vqa(
    loaded: LoadedFusion,
    qa: QAData,
    *,
    views: int = 1,
    budget: int = 8192,
    device,
    precision: str = "auto",
    workers: int = 0,
) -> dict:
    """Answer accuracy of a VQA model over the questions of `qa`, overall and per ``question_type``.

    Each question is answered from `views` windows of its clip (probabilities averaged). A question whose answer
    is not in the model's vocabulary (``loaded.labels``) counts as wrong. Questions whose clip could not be
    decoded are left out and listed under ``skipped``.

    Returns:
        ``accuracy``, ``num_questions``, ``per_question_type`` ({type: {accuracy, num_questions}}),
        ``unknown_answers`` (questions answered outside the vocabulary), ``macro_f1`` (over the questions with a
        known answer), ``predictions`` (one answer per scored question, in order) and ``skipped``.
    """
    if qa.token_ids is None:
        tokenize_questions(qa, loaded.tokenizer)
    pre = loaded.preprocessing
    windows = view_windows([info.duration_s for info in qa.data.infos], pre.clip_seconds, views)
    dataset = QAClipDataset(qa, pre, loaded.audio, modalities=loaded.model.config.modalities, windows=windows)
    per_question, failed = windowed_probabilities(  # (Q, answers)
        loaded.model.to(device), dataset, windows, len(qa.data), budget=budget, device=device, precision=precision,
        workers=workers,
    )  # fmt: skip
    scored = ~np.isnan(per_question).any(axis=1)
    index = {answer: i for i, answer in enumerate(loaded.labels)}
    truth = np.array([index.get(s.label, -1) for s in qa.data.samples])[scored]  # -1: not in the vocabulary
    predicted = per_question[scored].argmax(axis=1)
    correct = predicted == truth
    types = np.array(qa.types)[scored]
    known = truth >= 0
    f1 = (
        classification_metrics(truth[known], per_question[scored][known], loaded.labels)["macro_f1"]
        if known.any()
        else 0.0
    )
    return {
        "accuracy": float(correct.mean()),
        "num_questions": int(scored.sum()),
        "per_question_type": {
            t: {"accuracy": float(correct[types == t].mean()), "num_questions": int((types == t).sum())}
            for t in sorted(set(types.tolist()))
        },
        "unknown_answers": int((~known).sum()),
        "macro_f1": f1,
        "predictions": [loaded.labels[p] for p in predicted.tolist()],
        "skipped": sorted({path for path, _ in failed}),
    }


def write_vqa_report(report: dict, out_dir: Path) -> Path:
    """``report.json`` and ``report.md`` (accuracy overall and per question type); returns the JSON path.

    Args:
        report: `evaluate_vqa`'s metrics with ``checkpoint``, ``data``, ``split`` and ``modalities``; optionally
            ``arms`` ({arm: {accuracy, per_question_type, ...}}, one table row each; training's report has the
            question-only arm there) and ``details`` (shown as a table). Without ``arms`` the table has one row,
            the model's.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    arms = report.get("arms") or {report["modalities"]: report}
    types = list(report["per_question_type"])
    lines = [
        *heading_markdown("VQA", report),
        f"{data_text(report)}: {report['num_questions']} questions, "
        f"{report['unknown_answers']} of them with an answer never seen in training (scored wrong).",
        "",
        "| arm | accuracy | " + " | ".join(types) + " |",
        "|---|---:|" + "---:|" * len(types),
    ]
    for arm, m in arms.items():
        cells = " | ".join(f"{m['per_question_type'].get(t, {}).get('accuracy', float('nan')):.3f}" for t in types)
        lines.append(f"| {arm} | {m['accuracy']:.4f} | {cells} |")
    note = "Per-type numbers are accuracy"
    if QUESTION_ONLY in arms:
        note += (
            f"; the `{QUESTION_ONLY}` arm reads the question alone, so its gap to the full model is what the model "
            "takes from the clip"
        )
    lines += ["", note + "."]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return path
