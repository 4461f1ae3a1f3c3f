"""Run metrics: one JSON line per record in ``metrics.jsonl`` and the same scalars in TensorBoard."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("tubelet.train")


class MetricsLog:
    """Appends metric records to ``RUN/metrics.jsonl`` and TensorBoard event files in ``RUN/tensorboard``.

    Args:
        from_step: the step the run continues from (0: a fresh run). Records beyond it were written after the
            checkpoint the run resumed from (a kill before the next save) and are dropped, in both logs, so no
            step appears twice. None keeps every record.
    """

    def __init__(self, run_dir: str | Path, *, from_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if from_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= from_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if from_step is None else from_step + 1  # TensorBoard drops its events from this step on
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge)
        except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
            log.warning("tensorboard is not importable; metrics go to %s only", self.path)
            self.tb = None

    def write(self, kind: str, step: int, **values) -> None:
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _step(line: str) -> float:
    """A record's step; a torn last line (a kill mid-write) counts as beyond every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
