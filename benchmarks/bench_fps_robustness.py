"""Frame-rate robustness: train at native frame rates, test on the same clips re-encoded at 15 and at 60 fps.

The claim under test (README): particles carry their time in seconds, so "a model trained at 30 fps still works
at 15 or 60". The ablation is the same model whose rotary time position is the tubelet's index along time.

Protocol:

1. ``tubelet.data.sample.generate(DATA, clips_per_class=24, seed=0)``: five motion classes, every class at
   15/24/30/60 fps, seven frame sizes, 1-8 s, written as real H.264 files with train/val/test manifests.
2. Every TEST clip is decoded by time at 15 fps and at 60 fps (``tubelet.io.decode(path, fps=F)``: nearest frame
   to each target time, so 60 fps repeats frames of slower sources) and written as a real file at that rate
   (``tubelet.io.write_video(..., fps=F)``, crf 20) into two new datasets with a ``test.csv`` each.
3. ``finetune`` twice, ``time_mode='seconds'`` and ``'index'``, with ``sample_fps=None``: the model reads the
   NATIVE frames of each file, so a tubelet (2 frames) lasts 1/30 s at 60 fps and 2/15 s at 15 fps, and in index
   mode the same second sits at a different position at each rate. Same seed, data and schedule for both.
4. ``evaluate(RUN/best, ..., views=3)`` on the original test split and on the 15 and 60 fps versions.

Also recorded, to explain the numbers: per test set, the particles each clip keeps after static pruning and the
time positions the model sees (seconds vs tubelet index) for the centred 2 s window.

Run: ``python -m benchmarks.bench_fps_robustness [--quick] [--reuse]`` (the full run trains two models: about 16 minutes
on 2 idle cores). ``--reuse`` keeps finished trainings whose config and ``src/tubelet`` are unchanged.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BENCH_DIR, cached_sample_data, machine_markdown, table, work_dir, write_section
from tubelet import models
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import load_dataset
from tubelet.data.splits import check_labels
from tubelet.io import decode, write_video
from tubelet.recipes.evaluate import evaluate
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.inference import mean_over_videos, run_model, softmax, view_windows
from tubelet.train.config import to_dict

TEST_RATES = (15, 60)
TIME_MODES = ("seconds", "index")


def resample_test_split(data: Path, fps: int, out: Path) -> Path:
    """Re-encode every clip of ``data/test.csv`` at `fps` into `out`, with a ``test.csv`` of the same labels."""
    with open(data / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stamp = out / "bench_params.json"
    params = {"source": str(data.resolve()), "fps": fps, "clips": [r["path"] for r in rows]}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    if out.exists():
        shutil.rmtree(out)
    for row in rows:
        clip = decode(data / row["path"], fps=fps)  # nearest frame to each k / fps, real times
        dst = out / row["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_video(dst, clip.frames, fps=fps, crf=20, preset="veryfast")
    with open(out / "test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["label"]] for r in rows)
    stamp.write_text(json.dumps(params))
    return out


def train(data: Path, mode: str, out: Path, *, epochs: int, seed: int, reuse: bool) -> tuple[dict, float, bool]:
    """Fine-tune one time mode; returns (summary, seconds, reused).

    With `reuse`, a finished run in `out` with exactly this config is kept instead of training again; its
    seconds are then the time between its ``config.json`` (written before the loop) and its ``summary.json``.
    """
    cfg = FinetuneConfig(
        data=str(data),
        model="micro",
        time_mode=mode,
        sample_fps=None,
        clip_seconds=2.0,
        epochs=epochs,
        lr=2e-3,
        batch_particles=6000,
        workers=2,
        seed=seed,
        out=str(out),
    )
    config, summary, source = out / "config.json", out / "summary.json", out / "bench_source.txt"
    if reuse and summary.exists() and _same_config(json.loads(config.read_text()), to_dict(cfg)):
        if source.exists() and source.read_text() == source_hash():
            return json.loads(summary.read_text()), summary.stat().st_mtime - config.stat().st_mtime, True
        print(f"{out}: src/tubelet changed since this run was trained (or unknown); training again", flush=True)
    if out.exists():
        shutil.rmtree(out)
    stamp = source_hash()
    t0 = time.perf_counter()
    result = finetune(cfg)
    source.write_text(stamp)
    return result, time.perf_counter() - t0, False


def source_hash() -> str:
    """A hash of every file under src/tubelet: a checkpoint is only re-evaluated by the code that trained it.

    (A model change that keeps parameter names, such as a different rotary channel pairing, loads old weights
    without error and silently computes something else.)
    """
    digest = hashlib.sha256()
    for path in sorted((BENCH_DIR.parent / "src" / "tubelet").rglob("*.py")):
        digest.update(str(path.relative_to(BENCH_DIR.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _same_config(saved: dict, wanted: dict) -> bool:
    """Every field both configs have agrees (a field added to `FinetuneConfig` since the run took its default)."""
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as config.json stores them
    return all(saved[key] == value for key, value in wanted.items() if key in saved)


def correct_per_clip(checkpoint: Path, data: Path, views: int) -> np.ndarray:
    """(clips,) bool: is each test clip's prediction right, scored as `evaluate` does (views averaged)."""
    loaded = models.load(checkpoint)
    dataset = check_labels(load_dataset(str(data), split="test"), loaded.labels, str(checkpoint))
    windows = view_windows(dataset, loaded.preprocessing.clip_seconds, views)
    clips = ClipDataset(dataset, loaded.preprocessing, windows=windows)
    logits, failed = run_model(loaded.model, clips, budget=8192, device=torch.device("cpu"), workers=2)
    if failed:
        raise RuntimeError(f"{data}: clips failed to decode: {failed}")
    per_video = mean_over_videos(softmax(logits), [w[0] for w in windows], len(dataset))  # (clips, C)
    truth = np.array([loaded.labels.index(s.label) for s in dataset.samples])
    return per_video.argmax(axis=1) == truth


def test_set_stats(data: Path, checkpoint: Path) -> dict:
    """Particles and time positions of each test clip's centred window, under the checkpoint's preprocessing."""
    dataset = load_dataset(str(data), split="test")
    pre = models.load(checkpoint).preprocessing
    windows = view_windows(dataset, pre.clip_seconds, 1)
    clips = ClipDataset(dataset, pre, windows=windows)
    kept, total, t_max, ti_max, tubelet_s = [], [], [], [], []
    for i in range(len(clips)):
        item = clips[i]
        p = item.particles
        kept.append(len(p))
        total.append(p.total)
        t_max.append(float(p.t.max()))
        ti_max.append(int(p.ti.max()))
        tubelet_s.append((float(p.t.max()) - float(p.t.min())) / max(int(p.ti.max()) - int(p.ti.min()), 1))
    rates = [round(info.fps) for info in dataset.infos]
    return {
        "clips": len(clips),
        "rates": {r: rates.count(r) for r in sorted(set(rates))},
        "particles": float(np.mean(kept)),
        "grid": float(np.mean(total)),
        "kept_fraction": float(np.sum(kept) / np.sum(total)),
        "t_max": float(np.mean(t_max)),
        "ti_max": float(np.mean(ti_max)),
        "tubelet_s": float(np.median(tubelet_s)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 clips per class, 2 epochs (a smoke run)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 25, --quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse", action="store_true", help="keep finished training runs with the same config (re-evaluate only)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    clips_per_class = 6 if args.quick else 24
    epochs = args.epochs or (2 if args.quick else 25)
    started = time.perf_counter()
    root = work_dir() / ("fps_quick" if args.quick else "fps")
    data = cached_sample_data(root / "sample", clips_per_class, 0)
    t0 = time.perf_counter()
    test_sets = {"native": data}
    for fps in TEST_RATES:
        test_sets[f"{fps} fps"] = resample_test_split(data, fps, root / f"test_{fps}fps")
    resample_s = time.perf_counter() - t0
    splits = {s: len(load_dataset(str(data), split=s)) for s in ("train", "val", "test")}

    runs, results, correct = {}, {}, {}
    for mode in TIME_MODES:
        run = root / f"run_{mode}"
        summary, seconds, reused = train(data, mode, run, epochs=epochs, seed=args.seed, reuse=args.reuse)
        runs[mode] = {"summary": summary, "seconds": seconds, "reused": reused}
        print(f"trained {mode}: {json.dumps(summary)} in {seconds:.0f} s (reused: {reused})", flush=True)
        for name, path in test_sets.items():
            evaluation = evaluate(
                checkpoint=str(run / "best"),
                data=str(path),
                split="test",
                out=str(root / f"eval_{mode}_{name.replace(' ', '')}"),
                views=3,
                workers=2,
            )
            results[mode, name] = evaluation
            print(f"  {mode} on {name}: accuracy {evaluation['accuracy']:.3f}", flush=True)
            correct[mode, name] = correct_per_clip(run / "best", path, views=3)

    stats = {name: test_set_stats(path, root / "run_seconds" / "best") for name, path in test_sets.items()}
    body = report(
        data,
        clips_per_class,
        splits,
        epochs,
        args.seed,
        runs,
        results,
        correct,
        stats,
        test_sets,
        resample_s,
        time.perf_counter() - started,
    )
    print(body)
    title = "Frame-rate robustness: seconds vs tubelet-index time" + (" (--quick)" if args.quick else "")
    write_section("bench_fps_robustness", body, title=title)


def report(
    data, clips_per_class, splits, epochs, seed, runs, results, correct, stats, test_sets, resample_s, total_s
) -> str:
    names = list(test_sets)
    rows = []
    for mode in TIME_MODES:
        native = results[mode, "native"]["accuracy"]
        cells = [f"`{mode}`"]
        for name in names:
            acc = results[mode, name]["accuracy"]
            n = results[mode, name]["num_samples"]
            cells.append(f"{acc:.3f} ({round(acc * n)}/{n})" + ("" if name == "native" else f", {acc - native:+.3f}"))
        summary = runs[mode]["summary"]
        seconds = f"{runs[mode]['seconds']:.0f}" + (" (earlier run)" if runs[mode]["reused"] else "")
        cells += [f"{summary['best_val_accuracy']:.3f}", summary["epochs_run"], seconds]
        rows.append(cells)
    header = ["time mode", *[f"test {n}" + ("" if n == "native" else " (drop vs native)") for n in names]]
    header += ["best val acc", "epochs", "train s"]
    stat_rows = []
    for name in names:
        s = stats[name]
        rates = ", ".join(f"{r} fps: {c}" for r, c in s["rates"].items())
        stat_rows.append(
            [
                name,
                rates,
                f"{s['particles']:.0f} / {s['grid']:.0f}",
                f"{s['kept_fraction']:.3f}",
                f"{s['tubelet_s'] * 1e3:.0f}",
                f"{s['t_max']:.2f}",
                f"{s['ti_max']:.1f}",
            ]
        )
    source_rates = [round(info.fps) for info in load_dataset(str(data), split="test").infos]
    rates = sorted(set(source_rates))
    rate_rows = []
    for mode in TIME_MODES:
        for name in names:
            hits = correct[mode, name]
            agree = "yes" if abs(hits.mean() - results[mode, name]["accuracy"]) < 1e-9 else "NO"
            cells = [f"`{mode}`", name]
            for rate in rates:
                mask = np.array(source_rates) == rate
                cells.append(f"{int(hits[mask].sum())}/{int(mask.sum())}")
            rate_rows.append([*cells, agree])
    native_rates = ", ".join(f"{r} fps: {c}" for r, c in stats["native"]["rates"].items())
    lines = [
        machine_markdown(),
        "",
        f"Data: `tubelet.data.sample.generate(clips_per_class={clips_per_class}, seed=0)` in "
        f"`{data.relative_to(BENCH_DIR.parent)}`: {splits['train']} train, {splits['val']} val, "
        f"{splits['test']} test clips, 5 classes, every class at 15/24/30/60 fps (test clips at native rates: "
        f"{native_rates}). Test clips re-encoded at 15 and 60 fps by `decode(fps=F)` + `write_video(fps=F, crf=20)` "
        f"({resample_s:.0f} s).",
        "",
        f"Training: `finetune(model='micro', sample_fps=None (native frames), clip_seconds=2.0, epochs={epochs}, "
        f"lr=2e-3, batch_particles=6000, prune_threshold=4 (default), workers=2, seed={seed})`, once per time mode; "
        "`best/` is chosen on the val split (native rates). Evaluation: `evaluate(RUN/best, split='test', views=3)`. "
        "One seed: each test clip is "
        f"{1 / max(splits['test'], 1):.3f} of accuracy, so differences of one or two clips are noise.",
        "",
        "**Accuracy** (correct / clips; drop = accuracy minus the same model's native accuracy)",
        "",
        table(header, rows),
        "",
        "**By the test clip's source frame rate** (correct / clips; the same predictions recomputed per clip from "
        "`run_model` with the same 3 views; the last column checks they give `evaluate`'s accuracy). A native "
        "15 fps clip re-encoded at 15 fps is nearly unchanged; at 60 fps each of its frames is repeated 4 times.",
        "",
        table(["time mode", "test set", *[f"source {r} fps" for r in rates], "matches evaluate"], rate_rows),
        "",
        "**What the model sees** in each test set (centred 2 s window, the checkpoint's preprocessing: native frames, "
        "short side 112, prune threshold 4). Particles are means per clip after pruning / before; the tubelet "
        "duration is the median seconds between consecutive tubelets; the last two columns are the largest time "
        "position per clip, averaged: in seconds (`seconds` mode) and in tubelet index (`index` mode).",
        "",
        table(
            ["test set", "source rates", "particles kept / grid", "kept fraction", "tubelet ms", "max t (s)", "max ti"],
            stat_rows,
        ),
        "",
        *(
            [
                "Training runs were reused from an earlier invocation (`--reuse`): their train s is the time between "
                "the run's `config.json` (written before the loop) and its `summary.json`; everything else above was "
                "measured again by this invocation.",
                "",
            ]
            if any(r["reused"] for r in runs.values())
            else []
        ),
        f"Total run time {total_s / 60:.1f} min (data generation, re-encoding, two trainings unless reused, six "
        "evaluations and the per-clip pass).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
