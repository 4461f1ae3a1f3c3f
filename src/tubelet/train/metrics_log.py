"""Run metrics: one JSON line per record in ``metrics.jsonl`` and the same scalars in TensorBoard."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("tubelet.train")


class MetricsLog:
    """Appends metric records to ``RUN/metrics.jsonl`` and TensorBoard event files in ``RUN/tensorboard``."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
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
