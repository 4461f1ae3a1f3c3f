"""Writing an evaluation's ``report.json`` and ``report.md``: every task's reports go through here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tubelet.distributed import world


def write_report_files(report: dict, out_dir: str | Path, markdown: str) -> dict[str, Path]:
    """``report.json`` (the report dict) and ``report.md`` (`markdown`) in `out_dir`; their paths.

    Under torchrun every rank scores the gathered outputs and only rank 0 writes (the others get the paths).
    """
    out = Path(out_dir)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    if not world().main:
        return paths
    out.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    paths["markdown"].write_text(markdown)
    return paths


def _json_default(value: object) -> object:
    """numpy scalars as numbers, anything else (a Path in `details`) as text: a report never fails on a detail."""
    return value.item() if isinstance(value, np.generic) else str(value)
