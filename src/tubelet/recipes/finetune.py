"""Supervised fine-tuning (``tubelet finetune --task NAME``): labeled videos in, a model with ``best/`` and ``last/``.

The task (``--task``, `tubelet tasks` lists them: classification, retrieval, vqa, and any a user registers) says
what the data, model, loss, metrics and report are; `tubelet.train.run.run_task` runs every task through the one
loop. A run's config is the shared fields and the task's own (`tubelet.train.config.run_config`): a field of another
task is an error naming it.
"""

from __future__ import annotations

from tubelet.train.config import make_config
from tubelet.train.run import run_task


def FinetuneConfig(**values):  # noqa: N802 (it stands where a config class stood: FinetuneConfig(data=..., ...))
    """The run config of ``values["task"]`` (default classification) with the given fields.

    Raises:
        ConfigError: a field the task does not have (another task's, or none), or a value of the wrong type.
    """
    return make_config(values.get("task", "classification"), **values)


def finetune(cfg) -> dict:
    """Run fine-tuning; returns the summary (best validation metric, checkpoint paths, test report when the data has a
    test split) also written to ``RUN/summary.json``."""
    return run_task(cfg)
