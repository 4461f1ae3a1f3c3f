"""Video question answering as answer classification: the ``vqa`` task (``tubelet finetune --task vqa``).

An example is (a window of a clip, a question) and its class is the answer: the answer vocabulary is the distinct
answers of the TRAIN question manifest, saved as the checkpoint's ``labels.json``. A val or test question whose
answer is not in it can never be answered right: it is scored as wrong (and counted under ``unknown_answers``),
never an error. Data: ``DATA/qa_{split}.csv`` (or ``.jsonl``) with columns ``path,question,answer[,question_type]``
(`tubelet.data.qa`).

Model: one `FusionModel` reading the clip's video (and audio, with ``--modalities video,audio``) particles AND the
question's text particles in one sequence per example. The tokenizer is a WordPiece trained on the train questions
unless ``--tokenizer`` names one; it is saved beside every checkpoint as ``tokenizer.json``. With ``ablate`` (the
default) the same budget also trains a question-only arm (text particles alone): the gap between the arms is what
the model takes from the clip.

    RUN/best, RUN/last                        the clip + question model (fusion checkpoints with tokenizer.json)
    RUN/ablation/question-only/{best,last}    the question-only arm
    RUN/report/report.json, report.md         test accuracy overall and per question_type, for every arm
    RUN/summary.json                          training summaries
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tubelet.data.av_dataset import AudioPreprocessing, check_audio
from tubelet.data.qa import QAClipDataset, QAData, load_qa, qa_manifest, tokenize_questions
from tubelet.data.text import run_tokenizer
from tubelet.errors import ConfigError
from tubelet.models.fusion import UNFROZEN
from tubelet.tasks.base import Arm, Built, Prepared, Reads, register
from tubelet.tasks.classification import Classifier, ClipFields, classification_metrics, parse_modalities
from tubelet.tasks.files import write_report_files
from tubelet.tasks.report import data_text, heading_markdown
from tubelet.typed import opt

log = logging.getLogger("tubelet.vqa")

QUESTION_ONLY = "question-only"


@dataclass(frozen=True)
class VQAFields(ClipFields):
    """The fields of ``finetune --task vqa`` (``modalities``: what is read from the clip beside the question)."""

    ablate: bool = opt(True, "also train the question-only arm (same budget) and report both")
    tokenizer: str | None = opt(None, "tokenizer dir, tokenizer.json or hub id; none trains one on the questions")


@register
class VQATask(Classifier):
    """(clip window, question) -> an answer of the train answers, with a question-only arm as the baseline."""

    name = "vqa"
    summary = "answers to questions about a clip (qa_SPLIT.csv), as classification over the train answers"
    Config = VQAFields

    def prepare(self, cfg, out: Path) -> Prepared:
        from tubelet.models import checkpoint_kind

        train = load_qa(qa_manifest(cfg.data, cfg.train_split, required=True))
        answers = train.data.labels
        saved = [out / "last"] if cfg.resume else []  # resuming, or continuing a VQA model: its vocabulary
        saved += [cfg.model] if checkpoint_kind(cfg.model) == "fusion" else []
        tokenizer = run_tokenizer(train.questions, given=cfg.tokenizer, saved=saved)
        tokenize_questions(train, tokenizer)
        val = None
        if cfg.val_split not in (None, "none"):
            val = questions_of(cfg.data, cfg.val_split, answers, tokenizer)
        audio = AudioPreprocessing(allow_missing_audio=cfg.allow_missing_audio)
        if "audio" in parse_modalities(cfg.modalities):
            for qa in (train, val):
                if qa is not None:
                    check_audio(qa.data, audio)
        return Prepared(train, val, labels=answers, tokenizer=tokenizer, extra={"audio": audio})

    def arms(self, cfg, prepared: Prepared) -> list[Arm]:
        modalities = (*parse_modalities(cfg.modalities), "text")
        out = Path(cfg.out)
        arms = [Arm("+".join(modalities), out, modalities)]
        if cfg.ablate:
            arms.append(Arm(QUESTION_ONLY, out / "ablation" / QUESTION_ONLY, ("text",)))
        return arms

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        from tubelet.models.fusion_from_encoder import build_fusion

        vocab = prepared.tokenizer.get_vocab_size()
        model, base, report = build_fusion(cfg, arm.modalities, prepared.labels, vocab_size=vocab)
        return Built(model, base, keep=UNFROZEN, load_report=report)

    def dataset(self, data: QAData, pre, reads: Reads, *, augment=None, seed=0, windows=None):
        if data.token_ids is None:
            tokenize_questions(data, reads.tokenizer)
        return QAClipDataset(
            data, pre, reads.audio, modalities=reads.modalities, augment=augment, seed=seed, windows=windows
        )

    def clips(self, data: QAData):
        return data.data  # question i asks about clip i

    def score(self, predictions: np.ndarray, data: QAData, labels: list[str] | None, *, targets: dict) -> dict:
        """Answer accuracy over the questions of `data`, overall and per ``question_type``.

        Each question's answer is the argmax of its `predictions` row (its windows' probabilities averaged). A
        question whose answer is not in `labels` counts as wrong.

        Returns:
            ``accuracy``, ``num_questions``, ``per_question_type`` ({type: {accuracy, num_questions}}),
            ``unknown_answers``, ``macro_f1`` (over the questions with a known answer) and ``predictions`` (one
            answer per scored question, in order).
        """
        scored = ~np.isnan(predictions).any(axis=1)
        index = {answer: i for i, answer in enumerate(labels)}
        truth = np.array([index.get(s.label, -1) for s in data.data.samples])[scored]  # -1: not in the vocabulary
        predicted = predictions[scored].argmax(axis=1)
        correct = predicted == truth
        types = np.array(data.types)[scored]
        known = truth >= 0
        f1 = 0.0  # no question with a known answer
        if known.any():
            f1 = classification_metrics(truth[known], predictions[scored][known], labels)["macro_f1"]
        return {
            "accuracy": float(correct.mean()),
            "num_questions": int(scored.sum()),
            "per_question_type": {
                t: {"accuracy": float(correct[types == t].mean()), "num_questions": int((types == t).sum())}
                for t in sorted(set(types.tolist()))
            },
            "unknown_answers": int((~known).sum()),
            "macro_f1": f1,
            "predictions": [labels[p] for p in predicted.tolist()],
        }

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        out = Path(cfg.out)
        result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last")}
        result["arms"] = {arm.name: {"out": str(arm.out), **summaries[arm.name]} for arm in arms}
        test = questions_of(cfg.data, "test", prepared.labels, prepared.tokenizer)
        if test is None:
            return result
        if "audio" in arms[0].modalities:
            check_audio(test.data, prepared.extra["audio"])
        scores = {arm.name: self.evaluate_checkpoint(arm.out / "best", test, cfg) for arm in arms}
        main = arms[0].name
        report = {
            **scores[main], "checkpoint": str(out / "best"), "data": cfg.data, "split": "test", "modalities": main,
            "arms": {arm: arm_summary(m) for arm, m in scores.items()},
        }  # fmt: skip
        result["report"] = str(write_vqa_report(report, out / "report"))
        result["test"] = {arm: arm_summary(m) for arm, m in scores.items()}
        return result

    def report_markdown(self, report: dict, *, title: str = "") -> str:
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
                f"; the `{QUESTION_ONLY}` arm reads the question alone, so its gap to the full model is what the "
                "model takes from the clip"
            )
        return "\n".join([*lines, "", note + "."]) + "\n"

    def summary_line(self, report: dict) -> str:
        lines = [
            f"accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   questions "
            f"{report['num_questions']}   unknown answers {report['unknown_answers']}",
            f"{'question type':<24} {'accuracy':>9} {'questions':>9}",
        ]
        for qtype, row in report["per_question_type"].items():
            lines.append(f"{qtype:<24} {row['accuracy']:>9.3f} {row['num_questions']:>9}")
        return "\n".join(lines)

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        if split == "all" and not whole:
            raise ConfigError(
                "--split all: a VQA checkpoint reads one split's manifest; name a split (e.g. test) or give --data "
                "a manifest file"
            )

    def check_baseline(self, loaded, base, name: str) -> None:
        if "text" not in Reads.of(base).modalities:
            raise ConfigError(f"--baseline {name}: not a VQA checkpoint (a fusion model that reads text)")

    def evaluation_data(self, source: str, split: str | None, loaded) -> QAData:
        manifest = Path(source) if split is None else qa_manifest(source, split, required=True)
        qa = load_qa(manifest, answers=loaded.labels)
        if "audio" in Reads.of(loaded).modalities:
            check_audio(qa.data, loaded.audio)
        return tokenize_questions(qa, loaded.tokenizer)  # each model reads the questions with its own tokenizer

    def evaluation_report(self, scores: dict, models: dict, data: QAData, *, details: dict, out: Path) -> dict:
        metrics = scores["model"]
        names = {"model": arm_name(models["model"])}
        if "baseline" in models:
            names["baseline"] = arm_name(models["baseline"])
            if names["baseline"] == names["model"]:
                names["baseline"] = "baseline"
        details.update(questions=metrics["num_questions"], skipped=len(metrics["skipped"]) + len(data.data.skipped))
        details["manifest"] = str(data.manifest)
        where = {key: details[key] for key in ("checkpoint", "data", "split")}
        report = {**metrics, **where, "modalities": names["model"], "details": details}
        if "baseline" in models:
            report["arms"] = {names[k]: arm_summary(m) for k, m in scores.items()}
        path = write_vqa_report(report, out)
        return {**report, "files": {"json": str(path), "markdown": str(path.with_name("report.md"))}}


def arm_name(loaded) -> str:
    """A VQA model's row name, as training names its arms."""
    modalities = Reads.of(loaded).modalities
    return QUESTION_ONLY if modalities == ("text",) else "+".join(modalities)


def evaluate_vqa(
    loaded, qa: QAData, *, views: int = 1, budget: int = 8192, device, precision: str = "auto", workers: int = 0
) -> dict:
    """`VQATask.evaluate` of a loaded VQA checkpoint (`tubelet.models.Loaded`) on the questions of `qa`."""
    if qa.token_ids is None:
        tokenize_questions(qa, loaded.tokenizer)
    return VQATask().evaluate(
        loaded.model.to(device), qa, loaded.preprocessing, labels=loaded.labels, reads=Reads.of(loaded), views=views,
        budget=budget, device=device, precision=precision, workers=workers,
    )  # fmt: skip


def questions_of(source: str, split: str, answers: list[str], tokenizer: Tokenizer) -> QAData | None:
    """A val or test split's questions, or None (with a warning) when the data has no manifest for it."""
    manifest = qa_manifest(source, split)
    if manifest is None:
        log.warning("%s: no qa_%s.csv or .jsonl; no %s metrics", source, split, split)
        return None
    return tokenize_questions(load_qa(manifest, answers=answers), tokenizer)


def arm_summary(metrics: dict) -> dict:
    """The numbers of one arm in a report's ``arms`` table."""
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "num_questions", "per_question_type")}


def write_vqa_report(report: dict, out_dir: Path) -> Path:
    """``report.json`` and ``report.md`` (accuracy overall and per question type, a row per arm); the JSON path."""
    return write_report_files(report, out_dir, VQATask().report_markdown(report))["json"]
