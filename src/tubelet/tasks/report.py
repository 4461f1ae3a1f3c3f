"""Classification reports: ``report.json``, ``report.md`` and ``confusion_matrix.png`` from a metrics dict.

The metrics dict is the one `tubelet.tasks.classification.classification_metrics` returns. ``accuracy``,
``macro_f1`` and ``per_class`` stay at the top level of ``report.json``: users script against them. The retrieval
and VQA reports (`tubelet.tasks.retrieval`, `tubelet.tasks.vqa`) open with the same Markdown
(`heading_markdown`, `data_text`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tubelet.distributed import world
from tubelet.tasks.files import write_report_files

# Figure geometry: inches per matrix cell, plus room for tick labels and titles; 2 to 50 classes stay legible.
_CELL_INCHES = 0.36
_MARGIN_INCHES = 2.2
_MIN_SIDE_INCHES = 4.5
_DPI = 110


def write_report(
    metrics: dict,
    out_dir: str | os.PathLike,
    *,
    title: str,
    details: dict | None = None,
    baseline: dict | None = None,
    baseline_name: str = "baseline",
    appendix: str = "",
) -> dict[str, Path]:
    """Write the JSON, Markdown and confusion-matrix image of one evaluation.

    Args:
        metrics: output of `classification_metrics` (``accuracy, top5_accuracy, macro_f1, per_class,
            confusion_matrix, labels, num_samples``).
        out_dir: directory to write into; created if missing.
        title: heading of the Markdown page and the figure.
        details: facts about the run shown as a table (checkpoint, data, clip seconds, ...); JSON-ready values.
        baseline: metrics of the same set before fine-tuning (or any reference); adds a ``comparison`` block,
            a before / after table and a second confusion matrix beside this one.
        baseline_name: what to call the baseline in the tables and the figure.
        appendix: Markdown added at the end of ``report.md`` (e.g. an ablation table).

    Returns:
        ``{"json": ..., "markdown": ..., "confusion_matrix": ...}`` paths of the written files.
    """
    out = Path(out_dir)
    if not world().main:  # under torchrun rank 0 writes the report every rank computed
        names = {"json": "report.json", "markdown": "report.md", "confusion_matrix": "confusion_matrix.png"}
        return {key: out / name for key, name in names.items()}
    out.mkdir(parents=True, exist_ok=True)
    report = {**metrics, "details": dict(details or {})}
    if baseline is not None:
        report["comparison"] = compare_metrics(metrics, baseline, baseline_name=baseline_name)

    paths = write_report_files(
        report, out, report_markdown(report, title=title) + ("\n" + appendix if appendix else "")
    )
    paths["confusion_matrix"] = out / "confusion_matrix.png"
    panels = [(f"this run (accuracy {_fmt(metrics['accuracy'])})", metrics)]
    if baseline is not None:
        panels.insert(0, (f"{baseline_name} (accuracy {_fmt(baseline['accuracy'])})", baseline))
    plot_confusion_matrices(panels, paths["confusion_matrix"], title=title)
    return paths


def compare_metrics(metrics: dict, baseline: dict, *, baseline_name: str = "baseline") -> dict:
    """Before / after deltas of accuracy, macro F1 and each class's F1.

    Each entry is ``{"baseline": b, "value": v, "delta": v - b}``; a class missing from the baseline has
    ``baseline`` and ``delta`` None.

    Returns:
        ``{"baseline_name", "accuracy", "macro_f1", "per_class_f1": {label: entry}}``.
    """
    base_classes = baseline.get("per_class", {})
    return {
        "baseline_name": baseline_name,
        "accuracy": _delta(baseline.get("accuracy"), metrics["accuracy"]),
        "macro_f1": _delta(baseline.get("macro_f1"), metrics["macro_f1"]),
        "per_class_f1": {
            label: _delta(base_classes.get(label, {}).get("f1"), scores["f1"])
            for label, scores in metrics["per_class"].items()
        },
    }


def _delta(before: float | None, after: float) -> dict:
    return {"baseline": before, "value": after, "delta": None if before is None else after - before}


def report_markdown(report: dict, *, title: str) -> str:
    """The Markdown page of a report dict (metrics plus ``details`` and optional ``comparison``)."""
    labels = report["labels"]
    top5 = report.get("top5_accuracy")
    lines = [f"# {title}", "", *details_markdown(report.get("details"))]

    lines += [
        "## Overall",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_fmt(report['accuracy'])} |",
        f"| top-5 accuracy | {_fmt(top5) if top5 is not None else f'n/a ({len(labels)} classes)'} |",
        f"| macro F1 | {_fmt(report['macro_f1'])} |",
        f"| samples | {report['num_samples']} |",
        "",
    ]
    # Right after the headline numbers: with a baseline, the change is what the reader came for.
    if report.get("comparison"):
        lines += _comparison_lines(report["comparison"])

    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label in labels:
        s = report["per_class"][label]
        lines.append(
            f"| {_cell(label)} | {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} | {s['support']} |"
        )

    lines += ["", "## Confusion matrix", "", "Rows are the true class, columns the predicted one.", ""]
    lines.append("| true \\ predicted | " + " | ".join(_cell(label) for label in labels) + " |")
    lines.append("|---|" + "---:|" * len(labels))
    for label, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"| **{_cell(label)}** | " + " | ".join(str(count) for count in row) + " |")
    return "\n".join(lines) + "\n"


def details_markdown(details: dict | None) -> list[str]:
    """The lines of a ``| detail | value |`` table (and a blank line after it); none for no details."""
    if not details:
        return []
    rows = [f"| {_cell(key)} | {_cell(_value_text(value))} |" for key, value in details.items()]
    return ["| detail | value |", "|---|---|", *rows, ""]


def heading_markdown(task: str, report: dict) -> list[str]:
    """The title (task, split, checkpoint) and details table that open a retrieval or VQA ``report.md``."""
    split = f" {report['split']}" if report.get("split") else ""
    return [f"# {task}{split} evaluation of {report['checkpoint']}", "", *details_markdown(report.get("details"))]


def data_text(report: dict) -> str:
    """``Data `D`, split `S``` of a retrieval or VQA report (no split: a manifest read whole)."""
    split = f", split `{report['split']}`" if report.get("split") else ""
    return f"Data `{report['data']}`{split}"


def _comparison_lines(comparison: dict) -> list[str]:
    """The before / after table of a ``comparison`` block, one row per metric, with signed deltas."""
    lines = [
        "## Before / after fine-tuning",
        "",
        f"| metric | {_cell(comparison['baseline_name'])} | this run | Δ |",
        "|---|---:|---:|---:|",
    ]
    rows = [("accuracy", comparison["accuracy"]), ("macro F1", comparison["macro_f1"])]
    rows += [(f"F1 {label}", entry) for label, entry in comparison["per_class_f1"].items()]
    for metric, entry in rows:
        before, after, delta = _fmt(entry["baseline"]), _fmt(entry["value"]), _fmt(entry["delta"], signed=True)
        lines.append(f"| {_cell(metric)} | {before} | {after} | {delta} |")
    return [*lines, ""]


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _value_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell: a class name with ``|`` or a newline would break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def plot_confusion_matrices(panels: list[tuple[str, dict]], path: str | os.PathLike, *, title: str) -> Path:
    """Draw one confusion matrix per panel, side by side, into a PNG.

    Colour is the row-normalized fraction (recall of the true class), so rare and common classes read alike;
    the cells carry the raw counts.

    Args:
        panels: ``(panel title, metrics dict)`` pairs, left to right (e.g. baseline, then this run).
        path: PNG to write.
        title: figure title.
    """
    size = max(len(metrics["labels"]) for _, metrics in panels)
    side = max(_MIN_SIDE_INCHES, _MARGIN_INCHES + _CELL_INCHES * size)
    from matplotlib.figure import Figure  # here: matplotlib costs half a second to import, and few commands plot

    # Figure rather than pyplot: the Agg canvas, no global state, nothing left open in a long-running process.
    fig = Figure(figsize=(side * len(panels) + 1.0, side + 0.6), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (panel_title, metrics) in zip(axes, panels):
        image = _draw_matrix(ax, np.asarray(metrics["confusion_matrix"]), metrics["labels"])
        ax.set_title(panel_title, fontsize=11)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the true class")
    fig.suptitle(title, fontsize=13)
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def _draw_matrix(ax, counts: np.ndarray, labels: list[str]):
    """Heatmap of one (C, C) count matrix with counts in the cells; returns the image for the colour bar."""
    size = len(labels)
    few = size <= 12  # few classes: big type, slanted labels; many: small type, vertical labels that never overlap
    totals = counts.sum(axis=1, keepdims=True)  # (C, 1)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # (C, C)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(size)
    tick_font = 10 if few else 8 if size <= 25 else 7
    if few:
        ax.set_xticks(ticks, labels=labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=tick_font)
    else:
        ax.set_xticks(ticks, labels=labels, rotation=90, fontsize=tick_font)
    ax.set_yticks(ticks, labels=labels, fontsize=tick_font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")

    cell_font = 11 if few else 8 if size <= 25 else 7
    for i in range(size):
        for j in range(size):
            # With many classes a grid of zeros buries the few confusions worth reading; with few they are a fact.
            if counts[i, j] == 0 and not few:
                continue
            color = "white" if fractions[i, j] > 0.5 else ("black" if counts[i, j] else "0.6")
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=cell_font)
    return image
