"""Claiming a run directory (``--out``) before a run writes to it: lose no earlier run, resume only what it was.

A directory that holds a run (``last/``, ``best/`` or ``metrics.jsonl``) is never silently replaced: a new run there
is refused unless it says ``overwrite`` (which deletes the old run's outputs first) or ``resume``.

A resume continues the saved run, so it must be the same run: every field that shapes what is learned (model,
optimizer, learning rate and schedule, batches, seed, preprocessing, augmentation, splits, the task's own fields) has
to equal the one in ``out/config.json``; a change is refused with the old and new values. Only the fields in
`MAY_CHANGE` may differ, and the run says which did and that the new values apply:

- ``epochs``, ``max_steps``: extend (or cut) the run. The warmup + cosine schedule is a function of the run's total
  steps that is not saved in ``last/`` (only its position is): it is laid anew over the new total, so after
  ``--epochs`` grows the LR at the resumed step is the new curve's, higher than where the old run ended.
- ``workers``, ``device``, ``precision``, ``attention``: where and how it computes, not what.
- ``save_every_steps``, ``early_stopping``: when it saves and when it gives up.
- ``out``, ``resume``, ``overwrite``: how the run was started.

Fields in `FROM_LAST` may be left out (none) on resume: the run takes the saved one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tubelet.errors import ConfigError
from tubelet.train.config import to_dict

log = logging.getLogger("tubelet.train")

# What a run writes into its out directory (``--overwrite`` deletes these; config.json is rewritten anyway).
RUN_OUTPUTS = (
    "best", "last", "ablation", "metrics.jsonl", "tensorboard", "summary.json", "report", "continual",
    "reconstructions",
)  # fmt: skip
# The files whose presence means the directory holds a run.
RUN_MARKERS = ("last", "best", "metrics.jsonl")
MAY_CHANGE = frozenset(
    {
        "epochs", "max_steps", "workers", "device", "precision", "attention", "save_every_steps", "early_stopping",
        "out", "resume", "overwrite",
    }
)  # fmt: skip
FROM_LAST = frozenset({"tokenizer"})  # none on resume: the tokenizer saved in last/
# Fields added after runs were saved, with the value those runs trained with: a resume of such a run keeps it
# rather than taking today's default (which would change its batches or its particles halfway).
LEGACY_VALUES = {"prune_reference": "previous", "min_steps_per_epoch": 0, "embed_init": "random"}


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in RUN_MARKERS)


def claim(cfg) -> dict:
    """Check that `cfg` may run in ``cfg.out`` (and clear it for ``overwrite``); the config to save there.

    Raises:
        ConfigError: the directory holds a run and `cfg` neither resumes nor overwrites it, or a resume changes a
            field outside `MAY_CHANGE`.
    """
    out = Path(cfg.out)
    values = to_dict(cfg)
    if not holds_run(out):
        return values
    if cfg.resume:
        return compare(out, values)
    if not getattr(cfg, "overwrite", False):
        raise ConfigError(
            f"out: {out} already holds a run; pass --resume to continue it or --overwrite to delete it and start over"
        )
    log.warning("--overwrite: deleting the run in %s", out)
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return values


def compare(out: Path, values: dict) -> dict:
    """`values` checked against the resumed run's ``out/config.json``; `FROM_LAST` fields left out come from it."""
    path = out / "config.json"
    if not path.is_file():  # a run from before config.json: nothing to compare with
        return values
    saved = json.loads(path.read_text())
    values = {**values, **{k: saved[k] for k in FROM_LAST if values.get(k) is None and k in saved}}
    values.update({k: old for k, old in LEGACY_VALUES.items() if k in values and k not in saved})
    changed = {k: (saved[k], v) for k, v in values.items() if k in saved and saved[k] != v}
    refused = {k: change for k, change in changed.items() if k not in MAY_CHANGE}
    if refused:
        text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(refused.items()))
        raise ConfigError(
            f"resume: {path} was trained with other values ({text}); a resume keeps them (or use --overwrite)"
        )
    applied = {k: change for k, change in changed.items() if k not in ("resume", "overwrite")}
    if applied:
        text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(applied.items()))
        log.info("resume: the new values apply: %s", text)
    return values
