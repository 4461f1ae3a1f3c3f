"""The headline, measured: learn motion speed from real texture at 30 fps, keep it at 15 and 60 fps.

Data (`tubelet.data.sample_pan`): camera pans over photographs shipped with scikit-image, five classes (static,
slow left/right at 12-24 px/s, fast left/right at 48-96 px/s), clips of 96-144 px, 2 s, lighting ramps, sensor
noise, H.264. Training and validation clips pan over 10 photographs and are rendered at 30 fps only; test clips pan
over 5 OTHER photographs and are rendered at 15, 30 and 60 fps with the same motion per second (the same scenes).

Arms (each trained from scratch unless said; `--seeds` seeds each, the same seeds for every arm):

- ``tubelet``: the defaults of `tubelet finetune` (time in seconds, frames sampled by time) and ``--epochs``.
- ``time_mode=index``: the same, with rotary time from the tubelet's index instead of seconds.
- ``frames counted``: the ``tubelet`` models, tested on clips whose frames are sampled by index the way VideoMAE
  samples (every k-th frame, k fixed for 30 fps): each test clip re-stamped as if it were 30 fps, so a 60 fps clip
  shows half its motion per sampled frame.
- ``pretrained``: `tubelet pretrain` on the unlabeled training clips (once), then fine-tuned like ``tubelet``.
- ablations at one seed: the previous defaults (random patch embedding, pruning against the previous tubelet,
  10 epochs), and each of this recipe's two changes undone alone.
- ``phase correlation``: a classical baseline without learning: the global shift between consecutive frames
  (scikit-image's `phase_cross_correlation`) in pixels per second, classified by a depth-3 decision tree fitted on
  the training clips' velocities; and the same shift per frame counted at 30 fps.

Also: kept particles against speed, threshold and pruning reference (no training), and the ``tubelet`` model of the
first seed on 8 s and 30 s test pans (2 s windows averaged over the clip): accuracy and cost against clip length.

Run: ``python -m benchmarks.bench_motion [--quick] [--seeds 3]``. The full run trains 3 x 3 + 1 + 3 models: about
an hour on 2 cores; ``--quick`` is a smoke run of every arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_markdown, table, work_dir, write_section
from tubelet.data.sample_pan import CLASSES, generate_pans
from tubelet.io import decode, write_video
from tubelet.recipes.evaluate import evaluate
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.pretrain import PretrainConfig, pretrain
from tubelet.train.config import run_config

RATES = (15, 30, 60)
TRAIN_RATE = 30


def make_data(root: Path, quick: bool) -> tuple[Path, dict]:
    """The pans (cached in `root` while the parameters are the same); returns (folder, manifest sizes)."""
    counts = {"train": 4, "val": 1, "test": 2} if quick else {"train": 20, "val": 4, "test": 12}
    params = json.loads(json.dumps({"counts": counts, "fps": {"test": RATES}, "seed": 0, "version": 2}))  # as saved
    stamp = root / "bench_params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root, json.loads((root / "sizes.json").read_text())
    shutil.rmtree(root, ignore_errors=True)
    sizes = generate_pans(root, counts=counts, fps={"test": tuple(float(r) for r in RATES)}, seed=0)
    for rate in RATES:  # the same clips with their frames counted at the training rate
        sizes[f"test_{rate}_counted"] = count_frames(root, f"test_{rate}", f"test_{rate}_counted")
    (root / "sizes.json").write_text(json.dumps(sizes))
    stamp.write_text(json.dumps(params))
    return root, sizes


def count_frames(root: Path, split: str, name: str) -> int:
    """Re-stamp every clip of ``split`` at `TRAIN_RATE` fps (same frames): time = frame index / 30, as a model that
    samples every k-th frame sees it. Writes ``name/`` and ``name.csv``."""
    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        frames = decode(root / row["path"]).frames  # every frame, in order
        target = root / row["path"].replace(split, name, 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_video(target, frames, fps=TRAIN_RATE, crf=18)
    with open(root / f"{name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((row["path"].replace(split, name, 1), row["label"]) for row in rows)
    return len(rows)


def long_data(root: Path, seconds: float, quick: bool) -> Path:
    """Test pans of `seconds` at 30 fps over the test photographs (cached)."""
    out = root / f"long_{seconds:g}s"
    per_class = 1 if quick else 4
    if not (out / "test.csv").exists():
        generate_pans(out, counts={"test": per_class}, seed=7, duration=seconds)
    return out


def train(arm: str, data: Path, out: Path, *, seed: int, epochs: int, quick: bool, **changes) -> tuple[dict, float]:
    """Fine-tune one arm from scratch (or from ``model=``); returns (summary, seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = FinetuneConfig(
        data=str(data), out=str(out), seed=seed, epochs=1 if quick else epochs, val_split="val", **changes
    )
    t0 = time.perf_counter()
    summary = finetune(cfg)
    seconds = time.perf_counter() - t0
    print(f"  {arm} seed {seed}: {seconds:.0f} s, {summary.get('steps')} steps", flush=True)
    return summary, seconds


def accuracy(checkpoint: Path, data: Path, split: str, out: Path, views: int = 1) -> dict:
    """`tubelet evaluate`'s accuracy, per class and its confusion matrix on one split."""
    report = evaluate(str(checkpoint), str(data), out=str(out), split=split, views=views, workers=2)
    return {"accuracy": report["accuracy"], "per_class": report.get("per_class"), "n": report["num_samples"]}


def velocities(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip of ``split``: (median shift in px/s by the frames' real times, median px/frame, label index).

    The shift between consecutive frames (sampled at 8 fps by time, as the model reads them) from scikit-image's
    phase correlation of their grey levels, to a tenth of a pixel.
    """
    from skimage.registration import phase_cross_correlation

    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_second, per_frame, labels = [], [], []
    for row in rows:
        clip = decode(root / row["path"], fps=8.0)
        grey = clip.frames.astype(np.float32).mean(-1)
        shifts = [
            phase_cross_correlation(a, b, upsample_factor=10, normalization=None)[0][1]
            for a, b in zip(grey[:-1], grey[1:])
        ]
        gaps = np.diff(clip.timestamps)
        per_second.append(float(np.median(np.array(shifts) / np.maximum(gaps, 1e-6))))
        per_frame.append(float(np.median(shifts)))
        labels.append(CLASSES.index(row["label"]))
    return np.array(per_second), np.array(per_frame), np.array(labels)


def classical(root: Path) -> dict:
    """Phase correlation + a decision tree on the velocity: accuracy per test rate, by seconds and by frames."""
    from sklearn.tree import DecisionTreeClassifier

    speed, _, labels = velocities(root, "train")
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(speed[:, None], labels)
    out = {}
    for rate in RATES:
        per_second, per_frame, truth = velocities(root, f"test_{rate}")
        seconds_per_frame = 1.0 / 8.0  # the sampled frames' spacing at the training rate
        out[rate] = {
            "seconds": float((tree.predict(per_second[:, None]) == truth).mean()),
            # a frame counter assumes every frame it samples is 1/8 s apart, as at 30 fps
            "frames": float(
                (tree.predict(per_frame[:, None] / seconds_per_frame * (TRAIN_RATE / rate)) == truth).mean()
            ),
        }
    return out


def kept_fractions(root: Path) -> list[list]:
    """Kept particles per class on the 30 fps test clips, by threshold and pruning reference (no model)."""
    import torch

    from tubelet.data.pipeline import clip_particles, decode_window
    from tubelet.data.transforms import Preprocessing

    with open(root / "test_30.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows_out = []
    for reference in ("previous", "anchor"):
        for threshold in (2.0, 4.0, 8.0):
            pre = Preprocessing(prune_threshold=threshold, prune_reference=reference)
            kept = {label: [] for label in CLASSES}
            for row in rows:
                window = decode_window(root / row["path"], (0.0, 2.0), pre=pre)
                particles = clip_particles((0.0, 2.0), pre=pre, frames=window.frames, timestamps=window.timestamps)
                kept[row["label"]].append(len(particles) / float(torch.sum(particles.span)))
            rows_out.append([reference, f"{threshold:g}", *(f"{np.mean(kept[c]):.2f}" for c in CLASSES)])
    return rows_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few clips per class, 1 epoch: a smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: finetune's)")
    parser.add_argument(
        "--no-ablations", dest="ablations", action="store_false",
        help="skip the one-seed ablations of each change (keeps the previous defaults)",
    )  # fmt: skip
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="ARM",
        default=None,
        help="train just these arms (by name) into results_extra.json, which --report-only adds to the report",
    )
    parser.add_argument(
        "--report-only", action="store_true",
        help="train nothing: report the runs a stopped benchmark finished (its results.json), with the baselines",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    root = work_dir() / ("motion_quick" if args.quick else "motion")
    data, sizes = make_data(root / "data", args.quick)
    epochs = args.epochs or run_config("classification").__dataclass_fields__["epochs"].default
    seeds = list(range(1 if args.quick else args.seeds))
    runs = root / "runs"

    # The pretrained path: masked pretraining on the unlabeled training clips, once.
    pre_out = runs / "pretrain"
    finished = (pre_out / "summary.json").exists() and not args.quick  # a finished pretraining is reused
    if not args.report_only and not finished and (not args.only or "pretrained" in args.only):
        shutil.rmtree(pre_out, ignore_errors=True)
        pretrain(PretrainConfig(data=str(data), out=str(pre_out), epochs=1 if args.quick else 8, seed=0))
    logged = [json.loads(line)["time"] for line in open(pre_out / "metrics.jsonl")]
    pretrain_s = logged[-1] - logged[0]  # first to last record: the training, without the data's probing
    print(f"pretrained in {pretrain_s:.0f} s", flush=True)

    arms = {
        "tubelet": {},
        "time_mode=index": {"time_mode": "index"},
        "pretrained": {"model": str(pre_out / "best")},
    }
    ablations = {  # one seed each
        "previous defaults": {"embed_init": "random", "prune_reference": "previous", "epochs": 10,
                              "min_steps_per_epoch": 0},
        "random patch embedding": {"embed_init": "random"},
        "pruning against the previous tubelet": {"prune_reference": "previous"},
        "budget-sized batches (8 steps an epoch)": {"min_steps_per_epoch": 0},
    }  # fmt: skip
    if not args.ablations:
        ablations = {k: v for k, v in ablations.items() if k == "previous defaults"}
    results: dict[str, list[dict]] = {}
    if args.report_only:  # JSON keys are strings: the rates back to ints
        saved = json.loads((root / "results.json").read_text())
        extra = root / "results_extra.json"
        saved.update(json.loads(extra.read_text()) if extra.exists() else {})
        results = {arm: [{(int(k) if k.isdigit() else k): v for k, v in row.items()} for row in rows]
                   for arm, rows in saved.items()}  # fmt: skip
        arms, ablations = {}, {}
    elif args.only:
        everything = {**arms, **ablations}
        ablations = {k: v for k, v in everything.items() if k in args.only and k not in arms}
        arms = {k: v for k, v in arms.items() if k in args.only}
    store = root / ("results_extra.json" if args.only else "results.json")
    # The pretrained arm last: the one-seed ablations are cheaper and a stopped run reports what it finished.
    order = [*((k, v) for k, v in arms.items() if k != "pretrained"), *ablations.items()]
    order += [(k, v) for k, v in arms.items() if k == "pretrained"]
    for arm, changes in order:
        for seed in seeds if arm in arms else seeds[:1]:
            out = runs / f"{arm.replace(' ', '_').replace('=', '-')}_{seed}"
            changes = {"epochs": epochs, **changes}
            summary, seconds = train(arm, data, out, seed=seed, quick=args.quick, **changes)
            row = {"seed": seed, "train_s": seconds, "steps": summary.get("steps")}
            for rate in RATES:
                row[rate] = accuracy(out / "best", data, f"test_{rate}", out / f"eval_{rate}")
                if arm == "tubelet":
                    counted = accuracy(out / "best", data, f"test_{rate}_counted", out / f"eval_{rate}_counted")
                    results.setdefault("frames counted", []).append({"seed": seed, rate: counted})
            print(f"  {arm} seed {seed}: " + ", ".join(f"{r} fps {row[r]['accuracy']:.3f}" for r in RATES), flush=True)
            results.setdefault(arm, []).append(row)
            store.write_text(json.dumps(results, default=str))  # what a crash later keeps
    if args.only:
        return
    counted = {}
    for row in results.pop("frames counted", []):
        counted.setdefault(row["seed"], {"seed": row["seed"]}).update({k: v for k, v in row.items() if k != "seed"})
    results["frames counted"] = list(counted.values())

    def cached(name: str, compute):
        """A baseline's numbers, kept in `root` for --report-only (they depend on the data and tubelet_0 only)."""
        path = root / f"{name}.json"
        if args.report_only and path.exists():
            return json.loads(path.read_text())
        value = compute()
        path.write_text(json.dumps(value))
        return value

    def timed_classical() -> dict:
        t0 = time.perf_counter()
        return {"rates": classical(data), "seconds": time.perf_counter() - t0}

    def lengths_of() -> list:
        rows, first = [], runs / "tubelet_0" / "best"
        for seconds in (8.0, 30.0):
            long = long_data(root, seconds, args.quick)
            views = round(seconds / 2.0)
            t0 = time.perf_counter()
            result = accuracy(first, long, "test", root / f"eval_long_{seconds:g}", views=views)
            rows.append([f"{seconds:g} s", views, f"{result['accuracy']:.3f} ({result['n']} clips)",
                         f"{(time.perf_counter() - t0) / max(result['n'], 1):.2f}"])  # fmt: skip
        return rows

    found = cached("classical", timed_classical)
    classic = {int(rate): value for rate, value in found["rates"].items()}
    classic_s = found["seconds"]
    kept = cached("kept", lambda: kept_fractions(data))
    lengths = cached("lengths", lengths_of)
    body = report(results, arms, sizes, seeds, epochs, pretrain_s, classic, classic_s, kept, lengths, args.quick)
    if args.report_only:
        body += "\n\nReported with --report-only from the runs a benchmark finished (their times are in the table)."
    else:
        body += f"\n\nWhole benchmark: {(time.perf_counter() - started) / 60:.0f} minutes."
    print(body)
    write_section("bench_motion", body, title="Motion on real texture at any frame rate" + (" (--quick)" * args.quick))


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def report(results, arms, sizes, seeds, epochs, pretrain_s, classic, classic_s, kept, lengths, quick) -> str:
    rows = []
    for arm, runs in results.items():
        cells = [arm, ", ".join(str(r["seed"]) for r in runs)]
        accs = {rate: [r[rate]["accuracy"] for r in runs] for rate in RATES}
        cells += [_mean_sd(accs[rate]) for rate in RATES]
        worst = min(np.mean(accs[15]), np.mean(accs[60]))
        cells.append(f"{worst - np.mean(accs[30]):+.3f}")
        trained = [r["train_s"] for r in runs if "train_s" in r]
        cells.append(f"{np.mean(trained):.0f}" if trained else "(the tubelet models)")
        rows.append(cells)
    rows.append(["phase correlation, px/s (no learning)", "-", *(f"{classic[r]['seconds']:.3f}" for r in RATES),
                 f"{min(classic[15]['seconds'], classic[60]['seconds']) - classic[30]['seconds']:+.3f}",
                 f"{classic_s:.0f} (all rates)"])  # fmt: skip
    rows.append(["phase correlation, px/frame (frames counted)", "-", *(f"{classic[r]['frames']:.3f}" for r in RATES),
                 f"{min(classic[15]['frames'], classic[60]['frames']) - classic[30]['frames']:+.3f}", "-"])  # fmt: skip
    rows.append(["chance", "-", "0.200", "0.200", "0.200", "+0.000", "-"])
    per_class = []
    for arm in ("tubelet", "frames counted"):
        for rate in RATES:
            runs = results[arm]
            classes = [r[rate]["per_class"] for r in runs if r[rate].get("per_class")]
            if classes:
                recall = {c: np.mean([pc[c]["recall"] for pc in classes if c in pc]) for c in CLASSES}
                per_class.append([arm, f"{rate} fps", *(f"{recall[c]:.2f}" for c in CLASSES)])
    lines = [
        machine_markdown(),
        "",
        f"Data (`tubelet.data.sample_pan.generate_pans`, seed 0): {sizes['train']} training and {sizes['val']} "
        f"validation clips at {TRAIN_RATE} fps over 10 photographs; {sizes['test_30']} test clips over 5 other "
        "photographs, each rendered at 15, 30 and 60 fps (same scenes). 5 classes, chance 0.200.",
        f"Training: `tubelet finetune` defaults (model micro, 8 fps by time, 2 s clips, motion patch embedding, "
        f"pruning against the run's anchor, crops and the rest as `finetune --help` says) for {epochs} epochs"
        + (" (--quick: 1)" if quick else "")
        + f"; seeds {seeds}; best/ by validation accuracy; test with `tubelet evaluate --views 1`. Pretrained: "
        f"`tubelet pretrain` defaults for 8 epochs on the training clips without labels ({pretrain_s:.0f} s), "
        "then the same fine-tuning from its best/.",
        "",
        "**Test accuracy on unseen photographs** (mean ± sd over seeds; drop: the worse of 15 and 60 fps minus 30 fps)",
        "",
        table(["arm", "seeds", "15 fps", "30 fps", "60 fps", "drop", "train s"], rows),
        "",
        "**Recall per class** (mean over seeds)",
        "",
        table(["arm", "test rate", *CLASSES], per_class),
        "",
        "**Kept particles** (kept / all tubelets, 30 fps test clips, by class; no model involved)",
        "",
        table(["reference", "threshold", *CLASSES], kept),
        "",
        "**Long clips** (the first seed's `tubelet` model; 2 s windows averaged over the clip; 30 fps test pans)",
        "",
        table(["clip", "windows", "accuracy", "s per clip"], lengths),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
