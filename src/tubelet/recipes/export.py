"""``tubelet export``: a classifier checkpoint as an ONNX graph over packed particles, checked against itself.

setup → trace → parity → write:

1. load the checkpoint; only a video classifier (an `Encoder` with a head, task classification) exports for now.
2. trace its forward pass over packed particles (`tubelet.export.graph`) with a dynamic particle and clip count.
3. run the written graph in onnxruntime beside the eager model on real decoded clips (`tubelet.export.parity`):
   the ``--check`` files, or two generated ones. A logit further than the tolerance, or one clip whose top class
   differs, fails the export.
4. only then move the directory into place: ``model.onnx``, ``config.json`` (model type ``tubelet-onnx``, the
   encoder config, preprocessing, labels and task, so the directory describes itself) and ``export_report.json``.
   A failed export leaves nothing at ``--out``.

``tubelet predict --checkpoint OUT`` and ``tubelet evaluate --checkpoint OUT`` then run onnxruntime
(`tubelet.models.onnx_model`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from tubelet import __version__
from tubelet.errors import ConfigError, ExportError
from tubelet.export.graph import PackedGraph, export_onnx, exportable_encoder
from tubelet.export.parity import TOLERANCE, check_cases, generated_clips, parity
from tubelet.models import load
from tubelet.models.onnx_model import GRAPH_FILE, GRAPH_INPUTS, GRAPH_OUTPUT, MODEL_TYPE, REPORT_FILE, OnnxModel
from tubelet.outputs import writable_dir
from tubelet.tasks.base import task_of

log = logging.getLogger("tubelet.export")

FORMATS = ("onnx", "torch")
EXPORTABLE_KINDS = ("encoder", "videomae")  # video encoders; fusion and retrieval models are not supported yet


def export(
    checkpoint: str,
    out: str,
    *,
    format: str = "onnx",
    check: list[str] | None = None,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export `checkpoint` to `out` and check it; returns the report (``export_report.json``'s content).

    Args:
        checkpoint: a video classifier checkpoint (``tubelet finetune``'s RUN/best).
        out: the export directory (replaced if it holds an earlier export; anything else there is refused).
        format: ``onnx``. ``torch`` is refused for now: torch.export specializes the graph to at least 2 clips and
            2 particles (the ONNX graph has no such guard and runs one clip of one particle).
        check: video files the parity check decodes; None writes two generated clips.
        tolerance: largest |logit difference| against the eager model that passes.

    Returns:
        ``format``, ``opset``, ``max_abs_diff``, ``top1_agreement``, ``files`` (the videos checked), ``particles``
        (the particle count of each batch checked), ``checks`` (per batch), ``tolerance``, ``written`` (paths).

    Raises:
        ConfigError: an unknown format, an output that cannot be written, a checkpoint that is not a classifier.
        ExportError: a model kind or task export does not support yet, or a failed parity check.
        VideoError: a ``--check`` file that cannot be decoded.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if format == "torch":
        raise ExportError(
            "--format torch: not supported yet (torch.export of this graph still guards on 2+ clips and 2+ particles, "
            "which ONNX does not); use --format onnx"
        )
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance: must be at least 0, got {tolerance}")
    target = _check_out(out)
    for path in check or []:
        if not Path(path).is_file():
            raise ConfigError(f"--check {path}: no such file")
    loaded = load(checkpoint)
    if loaded.kind not in EXPORTABLE_KINDS:
        raise ExportError(
            f"{checkpoint}: a {loaded.kind} checkpoint cannot be exported yet; export supports video classifiers "
            "(tubelet finetune --task classification on a video encoder)"
        )
    task = task_of(loaded)
    if task.name != "classification" or not loaded.labels:
        what = f"task {task.name!r}" if task.name != "classification" else "no labels.json"
        raise ExportError(f"{checkpoint}: {what}; export supports video classifiers only for now")
    encoder = exportable_encoder(loaded.model, source=checkpoint)
    eager = loaded.model.eval()  # as predict runs it: the checkpoint's own attention backend
    pre = loaded.preprocessing

    started = time.perf_counter()
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an export that was killed
    with tempfile.TemporaryDirectory(prefix="tubelet-export-") as tmp:
        paths = [Path(p) for p in check] if check else generated_clips(Path(tmp), pre)
        cases = check_cases(paths, pre)
        try:
            partial.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot create {partial}: {exc.strerror}") from None
        try:
            opset = export_onnx(PackedGraph(encoder), cases[-1].packed, partial / GRAPH_FILE)
            result = parity(eager, OnnxModel(partial / GRAPH_FILE, loaded.model.config), cases)
            _check_parity(result, tolerance, checkpoint, out)
            files = [str(p) for p in check] if check else [f"generated:{p.name}" for p in paths]
            report = {"format": format, "opset": opset, **result, "files": files, "tolerance": tolerance}
            report["seconds"] = round(time.perf_counter() - started, 2)
            report["written"] = [str(target / name) for name in (GRAPH_FILE, "config.json", REPORT_FILE)]
            config = _config(loaded, task.name, checkpoint)
            (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            (partial / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if target.exists():
        shutil.rmtree(target)  # an earlier export (checked by _check_out)
    partial.rename(target)
    return report


def _check_out(out: str) -> Path:
    """`out` as a path that can be written and holds nothing but, perhaps, an earlier export."""
    target = writable_dir(out, "--out")
    if target.name in ("", ".", ".."):
        raise ConfigError(f"--out {out}: name the export directory (e.g. exports/model)")
    if target.exists() and any(target.iterdir()) and not (target / REPORT_FILE).is_file():
        raise ConfigError(f"--out {out}: exists and is not an export directory; refusing to replace it")
    return target


def _check_parity(result: dict, tolerance: float, checkpoint: str, out: str) -> None:
    """An ExportError naming the worst batch when a logit is further than `tolerance` or a top class differs."""
    worst = max(result["checks"], key=lambda c: (c["max_abs_diff"] != c["max_abs_diff"], c["max_abs_diff"]))
    if not result["max_abs_diff"] <= tolerance:  # NaN fails too
        raise ExportError(
            f"{checkpoint}: parity check failed: max |logit difference| {result['max_abs_diff']:.3g} > {tolerance:g} "
            f"(worst batch: {worst['name']}, {worst['particles']} particles); nothing written to {out}"
        )
    if result["top1_agreement"] < 1:
        bad = next(c for c in result["checks"] if c["top1_agreement"] < 1)
        raise ExportError(
            f"{checkpoint}: parity check failed: top-1 agreement {result['top1_agreement']:.3f} < 1 "
            f"(first batch that differs: {bad['name']}); nothing written to {out}"
        )


def _config(loaded, task: str, checkpoint: str) -> dict:
    """The export directory's config.json: its kind, the graph's interface, and what predict needs to cut clips."""
    return {
        "model_type": MODEL_TYPE,
        "tubelet_version": __version__,
        "format": "onnx",
        "graph": GRAPH_FILE,
        "inputs": {name: dtype.__name__ for name, dtype in GRAPH_INPUTS.items()},
        "output": GRAPH_OUTPUT,
        "source": str(checkpoint),
        "task": task,
        "labels": list(loaded.labels),
        "encoder": loaded.model.config.to_dict(),
        "preprocessing": loaded.preprocessing.to_dict(),
    }
