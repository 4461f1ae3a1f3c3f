"""Re-fine-tuning a classifier as new video arrives: ``finetune --model PREV/best --data NEW --replay OLD``.

The classification task calls these when ``replay`` is set:

- `check_replay`: the fields make sense before anything is read (PREV is a fine-tuned classifier, the fraction is a
  share).
- `prepare_replay`: the label list grows (PREV's labels in their order, then NEW's and OLD's other labels sorted, so
  every old class keeps its head row: `tubelet.tasks.base.carry_head`); training reads NEW's training clips plus
  ``replay_fraction`` of the whole from OLD's training split (`tubelet.data.replay.replay_share`, drawn once per
  seed); validation reads NEW's and OLD's validation clips, so ``best/`` is the epoch best on old and new classes.
- `replay_arms`: the run (``RUN``), and with ``ablate`` (the default) the same run without replay
  (``RUN/ablation/no-replay``): the same head, seed, budget and validation, trained on NEW's clips alone.
- `continual_report`: accuracy on OLD's and NEW's test splits of PREV (before) and of each arm's ``best/`` (after),
  and forgetting (OLD test accuracy lost), in ``RUN/continual/report.json`` and ``report.md`` and the summary.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tubelet import checkpoint
from tubelet.data.columns import take
from tubelet.data.replay import combine, continual_labels, replay_share
from tubelet.data.splits import load_test_split, train_val
from tubelet.errors import ConfigError
from tubelet.tasks.base import Arm, Prepared
from tubelet.tasks.files import write_report_files

log = logging.getLogger("tubelet.train")

NO_REPLAY = "no-replay"  # the ablation arm's name (RUN/ablation/no-replay)


def check_replay(cfg) -> None:
    """One-line errors for replay fields that cannot work, naming the flag or field."""
    if not 0.0 < cfg.replay_fraction < 1.0:
        raise ConfigError(
            f"replay_fraction: must be between 0 and 1 (the share of training clips replayed from --replay), "
            f"got {cfg.replay_fraction}"
        )
    if not cfg.replay:
        return
    model = Path(cfg.model)
    if not model.is_dir() or not checkpoint.load_labels(model):
        raise ConfigError(
            f"--replay: needs --model PREV/best, a fine-tuned classifier checkpoint (a directory with labels.json); "
            f"{cfg.model} is not one"
        )
    if cfg.modalities != "video":
        raise ConfigError(f"--replay: re-fine-tunes a video classifier; --modalities {cfg.modalities} is not video")


def prepare_replay(cfg, new: Prepared) -> Prepared:
    """The run's data with replay: the grown labels, NEW's training clips plus OLD's replayed share, both val splits.

    ``extra["new_train"]`` keeps NEW's training clips alone (the no-replay arm's), ``extra["replay"]`` what was mixed.
    """
    previous = checkpoint.load_labels(cfg.model)
    old_train, old_val = train_val(
        cfg.replay, train_split=cfg.train_split, val_split=cfg.val_split, val_fraction=cfg.val_fraction,
        label_column=cfg.label_column, seed=cfg.seed,
    )  # fmt: skip
    labels = continual_labels(previous, [*new.train.labels, *old_train.labels])
    share = replay_share(old_train, fraction=cfg.replay_fraction, new_count=len(new.train), seed=cfg.seed)
    train = combine([new.train, share], labels)
    info = {
        "previous_labels": previous,
        "added_labels": labels[len(previous) :],
        "new_train_clips": len(new.train),
        "old_train_clips": len(old_train),
        "replayed_clips": len(share),
        "replayed_fraction": round(len(share) / len(train), 4),
    }
    log.info(
        "replay: %d new training clips + %d of %d old ones from %s (%.2f of %d); labels %s then new %s",
        len(new.train), len(share), len(old_train), cfg.replay, info["replayed_fraction"], len(train), previous,
        info["added_labels"],
    )  # fmt: skip
    extra = {**new.extra, "replay": info, "new_train": combine([new.train], labels)}
    return Prepared(train, combine([new.val, old_val], labels), labels=labels, extra=extra)


def replay_arms(cfg) -> list[Arm]:
    """The replay run, and the same run without replay when ``ablate``."""
    out = Path(cfg.out)
    arms = [Arm("replay", out)]
    if cfg.ablate:
        arms.append(Arm(NO_REPLAY, out / "ablation" / NO_REPLAY))
    return arms


def training_data(prepared: Prepared, arm: Arm):
    """What `arm` trains on: NEW's clips alone for the no-replay arm; otherwise the run's training set (with replay,
    NEW's clips and the replayed ones)."""
    return prepared.extra["new_train"] if arm.name == NO_REPLAY else prepared.train


def accuracy_of(task, directory: Path, data, cfg) -> float:
    """Accuracy of the checkpoint in `directory` on `data`; a clip of a class it does not know counts as wrong (PREV
    on NEW's new classes). Clips that cannot be decoded are left out, as `tubelet evaluate` leaves them out."""
    labels = checkpoint.load_labels(directory)
    known = [i for i, s in enumerate(data.samples) if s.label in labels]
    unknown = len(data) - len(known)
    if not known:
        return 0.0
    subset = replace(data, samples=take(data.samples, known), infos=take(data.infos, known), labels=list(labels))
    metrics = task.evaluate_checkpoint(directory, subset, cfg)
    scored = metrics["num_samples"]
    return round(metrics["accuracy"] * scored / (scored + unknown), 4)


def continual_report(task, cfg, prepared: Prepared, arms: list[Arm]) -> dict:
    """Before/after accuracy on OLD's and NEW's test splits and forgetting, per arm; written to ``RUN/continual``.

    Returns:
        ``{"report": path, "before": {...}, "arms": {name: {...}}, ...}`` (what the summary's ``continual`` holds).
    """
    out = Path(cfg.out)
    tests = {
        "old_test": load_test_split(cfg.replay, prepared.labels, label_column=cfg.label_column),
        "new_test": load_test_split(cfg.data, prepared.labels, label_column=cfg.label_column),
    }
    tests = {name: data for name, data in tests.items() if data is not None}
    before = {name: accuracy_of(task, Path(cfg.model), data, cfg) for name, data in tests.items()}
    after = {}
    for arm in arms:
        scores = {name: accuracy_of(task, arm.out / "best", data, cfg) for name, data in tests.items()}
        if "old_test" in scores:
            scores["forgetting"] = round(before["old_test"] - scores["old_test"], 4)
        after[arm.name] = {"checkpoint": str(arm.out / "best"), **scores}
    report = {
        "model": cfg.model,
        "data": cfg.data,
        "replay": cfg.replay,
        "replay_fraction": cfg.replay_fraction,
        "train": prepared.extra["replay"],
        "labels": prepared.labels,
        "chance": round(1.0 / len(prepared.labels), 4),
        "test_clips": {name: len(data) for name, data in tests.items()},
        "before": before,
        "arms": after,
    }
    paths = write_report_files(report, out / "continual", continual_markdown(report))
    if not tests:
        log.warning("replay: neither %s nor %s has a test split; no before/after accuracy", cfg.replay, cfg.data)
    return {"report": str(paths["json"]), **{k: report[k] for k in ("chance", "before", "arms")}}


def continual_markdown(report: dict) -> str:
    """The report as a table: a row for PREV (before) and one per arm (after), and chance beside them."""

    def cell(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    train = report["train"]
    lines = [
        f"# Re-fine-tuning {report['model']} on {report['data']}, replaying {report['replay']}",
        "",
        f"Training: {train['new_train_clips']} new clips + {train['replayed_clips']} replayed of "
        f"{train['old_train_clips']} old ({train['replayed_fraction']:.2f} of the set; replay_fraction "
        f"{report['replay_fraction']}). Labels: {', '.join(train['previous_labels'])}; added "
        f"{', '.join(train['added_labels']) or 'none'}.",
        "",
        "| model | OLD test accuracy | NEW test accuracy | forgetting (OLD accuracy lost) |",
        "|---|---:|---:|---:|",
        f"| before: {report['model']} | {cell(report['before'].get('old_test'))} | "
        f"{cell(report['before'].get('new_test'))} | |",
    ]
    for name, arm in report["arms"].items():
        lines.append(
            f"| after, {name}: {arm['checkpoint']} | {cell(arm.get('old_test'))} | {cell(arm.get('new_test'))} | "
            f"{cell(arm.get('forgetting'))} |"
        )
    chance = report["chance"]
    lines.append(f"| chance (1 / {len(report['labels'])} classes) | {chance:.3f} | {chance:.3f} | |")
    clips = ", ".join(f"{name} {n} clips" for name, n in report["test_clips"].items())
    lines += ["", f"Test splits: {clips}. A clip of a class the model does not know counts as wrong.", ""]
    return "\n".join(lines)
