"""Classification: cross-entropy for training, a JSON-ready metrics dict for evaluation, and the ``classification``
task (a class per clip from video, audio or both fused, with single-modality ablation arms)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tubelet.data.av_dataset import AudioPreprocessing, check_audio
from tubelet.data.splits import check_labels, eval_split, load_test_split
from tubelet.errors import ConfigError
from tubelet.models.fusion import UNFROZEN
from tubelet.tasks.base import Arm, Built, Prepared, Reads, Task, register
from tubelet.tasks.continual import check_replay, continual_report, prepare_replay, replay_arms, training_data
from tubelet.tasks.inference import softmax
from tubelet.tasks.report import write_report
from tubelet.typed import opt

# Top-k accuracy is reported only when it says more than plain accuracy can: with k or fewer classes it is 1.
TOP_K = 5


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over a batch of clips.

    Args:
        logits: (B, C) unnormalized class scores.
        targets: (B,) int64 class indices in ``[0, C)``.
        label_smoothing: mass in ``[0, 1)`` spread uniformly over all C classes, as in `torch.nn.CrossEntropyLoss`.

    Returns:
        () float32 scalar.
    """
    # float32 on purpose: log-softmax over bf16 logits loses the small differences the gradient lives on.
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, top-5, macro F1, per-class scores and the confusion matrix of one evaluation set.

    Predictions are the argmax of `probs`, so logits work as well as probabilities. Every label appears in
    ``per_class`` and in the confusion matrix, even with zero support (its scores are then 0). ``macro_f1`` follows
    scikit-learn's default and averages over the classes that occur in the targets or the predictions, so a class
    absent from the evaluation set and never predicted does not pull it down.

    Args:
        y_true: n class indices in ``[0, C)``.
        probs: (n, C) class probabilities (or any scores whose argmax is the prediction).
        labels: C class names, index i naming class i.

    Returns:
        A JSON-ready dict of plain floats and ints: ``accuracy``, ``top5_accuracy`` (None when C <= 5),
        ``macro_f1``, ``per_class`` ({label: {precision, recall, f1, support}}), ``confusion_matrix``
        (C lists of C counts; row = true class, column = predicted), ``labels`` and ``num_samples``.

    Raises:
        ValueError: empty input, shapes that disagree, duplicate labels or a target outside ``[0, C)``.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)  # (n,)
    scores = np.asarray(probs, dtype=np.float64)  # (n, C)
    num_classes = len(labels)
    if len(y) == 0:
        raise ValueError("classification_metrics: no samples to score")
    if len(set(labels)) != num_classes:
        raise ValueError(f"classification_metrics: duplicate class names in labels {labels}")
    if scores.shape != (len(y), num_classes):
        raise ValueError(
            f"classification_metrics: probs has shape {scores.shape}, expected ({len(y)}, {num_classes}) "
            f"for {len(y)} targets and {num_classes} labels"
        )
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"classification_metrics: targets must lie in [0, {num_classes}), got {y.min()}..{y.max()}")

    # Imported here, not at the top: scikit-learn takes over a second to import, and commands that never score
    # (predict, watch, sample-data, every one-line error) should not pay it on each start.
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    y_pred = scores.argmax(axis=1)  # (n,)
    class_ids = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=class_ids, zero_division=0)
    top_k = None
    if num_classes > TOP_K:
        top_k = float(top_k_accuracy_score(y, scores, k=TOP_K, labels=class_ids))
    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "top5_accuracy": top_k,
        "macro_f1": float(f1_score(y, y_pred, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y, y_pred, labels=class_ids).tolist(),
        "labels": list(labels),
        "num_samples": int(len(y)),
    }


# --- the task ---------------------------------------------------------------------------------------------------

READABLE = ("video", "audio")  # modalities a video file gives (text: the questions of the vqa task)
# A top probability under this many times chance (1 / classes) is reported as near chance by `predict`.
log = logging.getLogger("tubelet.train")
NEAR_CHANCE = 1.5


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"video,audio"`` -> ``("video", "audio")``; ConfigError naming the field for anything else."""
    names = tuple(name.strip() for name in str(text).split(",") if name.strip())
    bad = [n for n in names if n not in READABLE]
    if not names or bad or len(set(names)) != len(names):
        raise ConfigError(
            f"modalities: expected distinct names from {', '.join(READABLE)} like video,audio, got {text!r}"
        )
    return names


@dataclass(frozen=True)
class ClipFields:
    """What a classifier reads from a clip, and how it is trained (shared by classification and vqa)."""

    modalities: str = opt("video", "comma-separated: video, audio; video,audio trains one early-fusion model")
    allow_missing_audio: bool = opt(False, "a file without an audio stream gets silence instead of an error")
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")

    def validate(self) -> None:
        parse_modalities(self.modalities)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class ClassificationFields(ClipFields):
    """The fields of ``finetune --task classification``."""

    ablate: bool = opt(
        True,
        "also train the ablation arms (same budget) and report all: each modality alone with several modalities, "
        "the same run without replay with --replay",
    )
    label_column: str = opt("label", "the manifest column holding the class (e.g. sentiment)")
    replay: str | None = opt(
        None,
        "old data (class folders or splits) to replay while --model PREV/best, a fine-tuned classifier, learns --data: "
        "old classes keep their head rows, new ones are added; reports old and new test accuracy before and after",
    )
    replay_fraction: float = opt(
        0.3, "share of the training clips drawn from --replay's train split (once per seed, spread over its classes)"
    )

    def validate(self) -> None:
        ClipFields.validate(self)
        check_replay(self)


def _hint_near_chance(summary: dict, prepared: Prepared, cfg) -> None:
    """Log what to do when the best validation accuracy ended near chance: on little data a model from scratch
    needs more steps or a pretrained start (what `tubelet pretrain` on the unlabeled clips gives)."""
    best, classes = summary.get("best_val_accuracy"), len(prepared.labels or ())
    if best is None or classes < 2 or best >= NEAR_CHANCE / classes:
        return
    clips = len(prepared.train) if prepared.train is not None else 0
    log.warning(
        "validation accuracy %.2f is near chance (%.2f) after %s steps on %d training clips: a model trained from "
        "scratch on this little data learns slowly. Train longer (--epochs), or pretrain on unlabeled video first "
        "(tubelet pretrain --data VIDEOS --out PRE, then finetune --model PRE/best)",
        best, 1.0 / classes, summary.get("steps"), clips,
    )  # fmt: skip


class Classifier(Task):
    """What every classifier shares: a head over classes, cross-entropy, softmax, accuracy and macro F1."""

    metrics = {"accuracy": True, "macro_f1": True}
    uses_labels = True

    def objective(self, outputs, targets, cfg):
        return classification_loss(outputs, targets["label"], label_smoothing=cfg.label_smoothing)

    def postprocess(self, outputs: np.ndarray) -> np.ndarray:
        return softmax(outputs)

    def describe(self, prediction: np.ndarray, labels: list[str] | None, *, topk: int) -> dict:
        """The top class and its probability (``topk`` more with their scores); ``near_chance`` when the top score
        is under `NEAR_CHANCE` times chance (1 / classes): "move_right 0.23" of five classes is no answer."""
        order = np.argsort(-prediction)[: max(1, topk)]
        out = {"label": labels[order[0]], "score": round(float(prediction[order[0]]), 4)}
        if prediction[order[0]] < NEAR_CHANCE / len(labels):
            out["near_chance"] = round(1.0 / len(labels), 4)
        if topk > 0:
            out["topk"] = [{"label": labels[i], "score": round(float(prediction[i]), 4)} for i in order]
        return out


@register
class ClassificationTask(Classifier):
    """A class per clip from its video, its audio, or both fused (``--modalities``), with ablation arms."""

    name = "classification"
    summary = "one class per clip from video, audio or both fused; cross-entropy; accuracy, macro F1, confusion"
    Config = ClassificationFields

    def prepare(self, cfg, out: Path) -> Prepared:
        prepared = super().prepare(cfg, out)
        audio = AudioPreprocessing(allow_missing_audio=cfg.allow_missing_audio)
        if "audio" in parse_modalities(cfg.modalities):
            for data in (prepared.train, prepared.val):
                if data is not None:
                    check_audio(data, audio)
        prepared.extra["audio"] = audio
        return prepare_replay(cfg, prepared) if cfg.replay else prepared

    def arms(self, cfg, prepared: Prepared) -> list[Arm]:
        if cfg.replay:
            return replay_arms(cfg)
        modalities = parse_modalities(cfg.modalities)
        out = Path(cfg.out)
        arms = [Arm("+".join(modalities), out, modalities)]
        if cfg.ablate and len(modalities) > 1:
            arms += [Arm(name, out / "ablation" / name, (name,)) for name in modalities]
        return arms

    def training_data(self, prepared: Prepared, arm: Arm):
        return training_data(prepared, arm)

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        if arm.modalities == ("video",):  # the encoder itself: a head on its pooled features
            return super().build(cfg, prepared, arm)
        from tubelet.models.fusion_from_encoder import build_fusion

        model, base, report = build_fusion(cfg, arm.modalities, prepared.labels)
        return Built(model, base, keep=UNFROZEN, load_report=report)

    def reads(self, prepared: Prepared, arm: Arm) -> Reads:
        audio = prepared.extra["audio"] if arm.modalities != ("video",) else None
        return Reads(arm.modalities, audio, prepared.tokenizer)

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        out = Path(cfg.out)
        _hint_near_chance(summaries[arms[0].name], prepared, cfg)
        if cfg.replay:
            result = super().finish(cfg, prepared, arms, summaries)
            result["arms"] = {arm.name: {"out": str(arm.out), **summaries[arm.name]} for arm in arms}
            return {**result, "continual": continual_report(self, cfg, prepared, arms)}
        if arms[0].modalities == ("video",):
            return super().finish(cfg, prepared, arms, summaries)
        result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last")}
        result["arms"] = {arm.name: {"out": str(arm.out), **summaries[arm.name]} for arm in arms}
        test = load_test_split(cfg.data, prepared.labels, label_column=cfg.label_column)
        if test is None:
            return result
        if "audio" in arms[0].modalities:
            check_audio(test, prepared.extra["audio"])
        scores = {arm.name: self.evaluate_checkpoint(arm.out / "best", test, cfg) for arm in arms}
        main = arms[0].name
        metrics = {**scores[main], "ablation": {arm: _arm_summary(m) for arm, m in scores.items()}}
        details = {"checkpoint": str(out / "best"), "data": cfg.data, "split": "test", "modalities": main}
        paths = write_report(
            metrics, out / "report", title=f"Test evaluation of {out / 'best'}", details=details,
            appendix=ablation_markdown(metrics["ablation"], prepared.labels),
        )  # fmt: skip
        result["report"] = str(paths["json"])
        result["ablation"] = {arm: {k: m[k] for k in ("accuracy", "macro_f1")} for arm, m in scores.items()}
        return result

    def score(self, predictions: np.ndarray, data, labels: list[str] | None, *, targets: dict) -> dict:
        scored = ~np.isnan(predictions).any(axis=1)
        index = {label: i for i, label in enumerate(labels)}
        y_true = [index[s.label] for s, ok in zip(data.samples, scored) if ok]
        return classification_metrics(y_true, predictions[scored], labels)

    def report_markdown(self, report: dict, *, title: str) -> str:
        from tubelet.tasks.report import report_markdown

        return report_markdown(report, title=title)

    def summary_line(self, report: dict) -> str:
        lines = [
            f"accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   clips {report['num_samples']}",
            f"{'class':<24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
        ]
        for label, row in report["per_class"].items():
            lines.append(
                f"{label:<24} {row['precision']:>9.3f} {row['recall']:>9.3f} {row['f1']:>9.3f} {row['support']:>8}"
            )
        return "\n".join(lines)

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        if not loaded.labels or loaded.preprocessing is None:
            raise ConfigError(f"{loaded.source}: the checkpoint has no labels.json (not a classifier)")
        if baseline is not None and Reads.of(loaded).modalities != ("video",):
            raise ConfigError("--baseline: not supported for a fusion checkpoint")

    def check_baseline(self, loaded, base, name: str) -> None:
        if base.labels != loaded.labels:
            raise ConfigError(f"--baseline {name}: its labels {base.labels} differ from {loaded.labels}")

    def evaluation_data(self, source: str, split: str | None, loaded):
        data = check_labels(eval_split(source, None if split == "all" else split), loaded.labels, loaded.source)
        if "audio" in Reads.of(loaded).modalities:
            check_audio(data, loaded.audio)
        return data

    def evaluation_report(self, scores: dict, models: dict, data, *, details: dict, out: Path) -> dict:
        metrics = scores["model"]
        if details["split"] == "all":
            details["split"] = None
        details.update(clips=metrics["num_samples"], skipped=len(metrics["skipped"]) + len(data.skipped))
        if data.note is not None:  # class folders without the split: every clip was scored
            details.update(split=None, note=data.note)
        modalities = Reads.of(models["model"]).modalities
        if modalities != ("video",):
            details["modalities"] = ",".join(modalities)
        baseline = details.get("baseline")
        paths = write_report(
            metrics, out, title=f"Evaluation of {details['checkpoint']}", details=details,
            baseline=scores.get("baseline"), baseline_name=baseline or "baseline",
        )  # fmt: skip
        return {**metrics, "details": details, "files": {k: str(v) for k, v in paths.items()}}


def _arm_summary(metrics: dict) -> dict:
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "per_class": metrics["per_class"]}


def ablation_markdown(ablation: dict, labels: list[str]) -> str:
    """The ablation table: one row per arm, accuracy, macro F1 and each class's recall."""
    lines = ["## Ablation (test split)", "", "| arm | accuracy | macro F1 | " + " | ".join(labels) + " |"]
    lines.append("|---|" + "---:|" * (2 + len(labels)))
    for arm, m in ablation.items():
        recalls = " | ".join(f"{m['per_class'][label]['recall']:.3f}" for label in labels)
        lines.append(f"| {arm} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {recalls} |")
    return (
        "\n".join(lines) + "\n\nPer-class numbers are recall (the fraction of that class's clips classified right).\n"
    )
