"""Does masked video pretraining help? Few labels, equal fine-tuning budget, pretrained vs random encoder.

The claim under test (issue 5): ``tubelet pretrain`` on unlabeled clips gives an encoder that classifies better from
few labels than a randomly initialised one, trained the same way.

Protocol:

1. ``tubelet.data.sample.generate(DATA, clips_per_class=24, seed=0)``: 120 clips, five motion classes, with
   train/val/test manifests (70/25/25). A few-label manifest ``few_train.csv`` holds 5 clips per class drawn from
   ``train.csv`` (seeded); ``val.csv`` and ``test.csv`` are used as they are.
2. ``pretrain(model='micro', split='train')``: every clip of the TRAIN split, labels ignored (never val or test), the
   recipe's defaults (tube masking 0.9, decoder 128x4, lr 1e-3), once with ``norm_pix=True`` (default) and once
   with ``norm_pix=False``.
3. Per seed, four fine-tuning arms on ``few_train`` with the same preprocessing (8 fps, 2 s, short side 112, prune
   4) and schedule per kind: a linear probe (``freeze='backbone'``) and a full fine-tune (``freeze='none'``), each
   from the pretrained encoder and from a random ``micro``. ``best/`` is chosen on val.
4. ``evaluate(RUN/best, split='test', views=3)``: accuracy and macro F1.

Run: ``python -m benchmarks.bench_pretrain [--quick] [--pretrain-epochs N] [--only-pretrain]``; finished runs
with the same config are reused (``--fresh`` retrains).
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
import torch

import tubelet
from benchmarks.common import BENCH_DIR, cached_sample_data, machine_markdown, table, work_dir, write_section
from tubelet import models
from tubelet.data.dataset import ClipDataset
from tubelet.data.manifest import load_dataset
from tubelet.particles import pack
from tubelet.recipes.evaluate import evaluate
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.pretrain import PretrainConfig, pretrain
from tubelet.tasks.inference import view_windows
from tubelet.train.config import to_dict

FEW_PER_CLASS = 5
FEATURE_PROBE_NOTE = (
    "\n\n**Feature probe** (cheap linear probe): each encoder frozen, mean-pooled features of one centred 2 s window "
    "per clip (the checkpoint's preprocessing, no augmentation), `StandardScaler` + `LogisticRegression` (sklearn "
    "defaults, max_iter 5000) fit on `few_train`, scored on all test clips (one view).\n\n"
)
# Pretraining schedule: about 12 optimizer steps per epoch on the 70 train clips (the recipe's default budget of
# 16384 particles makes only ~3, and 12 steps in all left every arm at chance in the first attempt).
PRETRAIN = {"batch_particles": 4096, "lr": 1.5e-3, "warmup_epochs": 5.0}
NORM_PIX = {"norm-pix": True, "raw-pix": False}  # pretraining variants: name -> PretrainConfig.norm_pix
ARMS = {  # name -> (freeze, start from pretrained?)
    "probe random": ("backbone", False),
    "probe pretrained": ("backbone", True),
    "fine-tune scratch": ("none", False),
    "fine-tune pretrained": ("none", True),
}


def write_few_labels(data: Path, per_class: int, seed: int) -> dict[str, int]:
    """``data/few_train.csv``: `per_class` clips of each class drawn from ``train.csv``; returns counts per class."""
    with open(data / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({r["label"] for r in rows}):
        of_class = [r for r in rows if r["label"] == label]
        chosen += [of_class[i] for i in sorted(rng.choice(len(of_class), per_class, replace=False))]
    with open(data / "few_train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["label"]] for r in chosen)
    return {label: sum(r["label"] == label for r in chosen) for label in sorted({r["label"] for r in chosen})}


def _same(out: Path, cfg, *, finished: bool = True) -> bool:
    """A run in `out` (a finished one, unless `finished` is False) whose saved config matches `cfg` field for field."""
    config, summary = out / "config.json", out / "summary.json"
    if not (config.exists() and (summary.exists() or not finished)):
        return False
    saved, wanted = json.loads(config.read_text()), json.loads(json.dumps(to_dict(cfg)))
    # A field added to the config after the run was saved matches when it holds its default (the run used it).
    defaults = json.loads(json.dumps(to_dict(type(cfg)())))
    return all(saved.get(key, defaults.get(key)) == value for key, value in wanted.items())


def run_cached(fn, cfg, *, fresh: bool) -> tuple[dict, float, bool]:
    """(summary, seconds, reused) of `fn(cfg)`, reusing a finished run with the same config unless `fresh`."""
    out = Path(cfg.out)
    if not fresh and _same(out, cfg):
        seconds = (out / "summary.json").stat().st_mtime - (out / "config.json").stat().st_mtime
        return json.loads((out / "summary.json").read_text()), seconds, True
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = fn(cfg)
    return result, time.perf_counter() - t0, False


def epoch_losses(run: Path) -> list[float]:
    """Epoch-mean training losses of a pretraining run, from its metrics.jsonl."""
    losses = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "epoch":
            losses.append(float(record["loss"]))
    return losses


def clip_particles(data: Path, split: str, pre) -> tuple[list, list[str]]:
    """Particles of the centred `clip_seconds` window of every clip of `split` (decoded once), and the labels."""
    dataset = load_dataset(str(data), split=split)
    windows = view_windows(dataset, pre.clip_seconds, 1)
    clips = ClipDataset(dataset, pre, windows=windows)
    return [clips[i].particles for i in range(len(clips))], [s.label for s in dataset.samples]


@torch.no_grad()
def features(encoder, particles: list, batch: int = 8) -> np.ndarray:
    """(clips, D) pooled encoder features (the model has no head), `batch` clips per forward."""
    encoder.eval()
    return torch.cat([encoder(pack(particles[i : i + batch])) for i in range(0, len(particles), batch)]).numpy()


def feature_probe(root: Path, data: Path, variants: list[str], seeds: list[int]) -> list[list[str]]:
    """Logistic regression on frozen pooled features (few_train -> test, one centred window): a cheap linear probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    encoders = {f"pretrained ({name})": models.load(root / f"pre_{name}" / "best").model for name in variants}
    pre = models.load(root / f"pre_{variants[0]}" / "best").preprocessing
    for seed in seeds:
        torch.manual_seed(seed)
        encoders[f"random init (seed {seed})"] = models.load("micro", num_classes=0).model
    train_p, train_y = clip_particles(data, "few_train", pre)
    test_p, test_y = clip_particles(data, "test", pre)
    rows = []
    for name, encoder in encoders.items():
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        probe.fit(features(encoder, train_p), train_y)
        predicted = probe.predict(features(encoder, test_p))
        acc, f1 = accuracy_score(test_y, predicted), f1_score(test_y, predicted, average="macro")
        rows.append([name, f"{acc:.3f}", f"{f1:.3f}"])
        print(f"feature probe {name}: test acc {acc:.3f} macro F1 {f1:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 pretraining epochs, 3 fine-tuning epochs, one seed")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default 150 (--quick 2)")
    parser.add_argument("--probe-epochs", type=int, default=None, help="default 30 (--quick 3)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default 25 (--quick 3)")
    parser.add_argument("--probe-lr", type=float, default=3e-2)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds (default 0 1)")
    parser.add_argument("--variants", nargs="+", choices=list(NORM_PIX), default=list(NORM_PIX))
    parser.add_argument("--arms", nargs="*", choices=list(ARMS), default=list(ARMS), help="fine-tuning arms to run")
    parser.add_argument("--only-pretrain", action="store_true", help="pretrain (the given variants) and stop")
    parser.add_argument(
        "--partial-pretrain", action="store_true", help="use an unfinished pretraining run's best/ (stopped for time)"
    )
    parser.add_argument(
        "--feature-probe", action="store_true", help="also: logistic regression on frozen features (cheap probe)"
    )
    parser.add_argument("--fresh", action="store_true", help="retrain even where a finished run matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    pre_epochs = args.pretrain_epochs or (2 if args.quick else 150)
    probe_epochs = args.probe_epochs or (3 if args.quick else 30)
    ft_epochs = args.finetune_epochs or (3 if args.quick else 25)
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    started = time.perf_counter()
    root = work_dir() / ("pretrain_quick" if args.quick else "pretrain")
    data = cached_sample_data(root / "sample", 6 if args.quick else 24, 0)
    few = write_few_labels(data, 2 if args.quick else FEW_PER_CLASS, seed=0)

    pretrained = {}
    wanted = args.only_pretrain or any(ARMS[arm][1] for arm in args.arms)  # random-init arms need no pretraining
    for name in args.variants if wanted else []:
        cfg = PretrainConfig(
            data=str(data), split="train", model="micro", out=str(root / f"pre_{name}"), epochs=pre_epochs,
            norm_pix=NORM_PIX[name], workers=2, seed=0, **PRETRAIN,
        )  # fmt: skip
        out = Path(cfg.out)
        if args.partial_pretrain and (out / "best").exists() and not (out / "summary.json").exists():
            # A run stopped before its last epoch (for time): its best/ so far, the epochs it finished.
            assert _same(out, cfg, finished=False), f"{out}: a partial run with another config"
            last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["time"]
            summary, seconds, reused = {"partial": True}, last - (out / "config.json").stat().st_mtime, True
        else:
            summary, seconds, reused = run_cached(pretrain, cfg, fresh=args.fresh)
        losses = epoch_losses(out)
        pretrained[name] = {"summary": summary, "seconds": seconds, "reused": reused, "losses": losses}
        print(f"pretrained {name}: {seconds:.0f} s, losses {[round(x, 4) for x in losses]}", flush=True)
    if args.only_pretrain:
        return
    probe_rows = feature_probe(root, data, args.variants, seeds) if args.feature_probe else []

    results = {}  # (arm, init, seed) -> (evaluation, summary, seconds)
    for seed in seeds:
        for arm in args.arms:
            freeze, from_pretrained = ARMS[arm]
            for name in args.variants if from_pretrained else ["random"]:
                model = str(root / f"pre_{name}" / "best") if from_pretrained else "micro"
                probe = freeze == "backbone"
                cfg = FinetuneConfig(
                    data=str(data), model=model, train_split="few_train", val_split="val", freeze=freeze,
                    epochs=probe_epochs if probe else ft_epochs, lr=args.probe_lr if probe else 2e-3, workers=2,
                    seed=seed, out=str(root / f"ft_{arm.replace(' ', '_')}_{name}_s{seed}"),
                )  # fmt: skip
                summary, seconds, reused = run_cached(finetune, cfg, fresh=args.fresh)
                saved = Path(cfg.out) / "eval_test" / "report.json"
                if reused and saved.exists():  # the same checkpoint was evaluated the same way before
                    evaluation = json.loads(saved.read_text())
                else:
                    evaluation = evaluate(
                        checkpoint=str(Path(cfg.out) / "best"),
                        data=str(data),
                        split="test",
                        out=str(Path(cfg.out) / "eval_test"),
                        views=3,
                        workers=2,
                    )
                results[arm, name, seed] = (evaluation, summary, seconds, reused)
                print(
                    f"{arm} ({name}) seed {seed}: test acc {evaluation['accuracy']:.3f} "
                    f"macro F1 {evaluation['macro_f1']:.3f}, best val {summary.get('best_val_accuracy')}, "
                    f"{seconds:.0f} s",
                    flush=True,
                )
    body = report(data, few, pretrained, results, seeds, args, pre_epochs, probe_epochs, ft_epochs, started)
    if probe_rows:
        body += FEATURE_PROBE_NOTE + table(["encoder", "test accuracy", "test macro F1"], probe_rows)
    print(body)
    write_section("bench_pretrain", body, title="Pretraining on few labels" + (" (--quick)" if args.quick else ""))


def report(data, few, pretrained, results, seeds, args, pre_epochs, probe_epochs, ft_epochs, started) -> str:
    rows = []
    for arm in args.arms:
        from_pretrained = ARMS[arm][1]
        for name in args.variants if from_pretrained else ["random"]:
            accs = [results[arm, name, s][0]["accuracy"] for s in seeds]
            f1s = [results[arm, name, s][0]["macro_f1"] for s in seeds]
            vals = [results[arm, name, s][1].get("best_val_accuracy") for s in seeds]
            secs = [results[arm, name, s][2] for s in seeds]
            init = f"pretrained ({name})" if from_pretrained else "random init"
            cells = [arm.split()[0] if arm.startswith("probe") else "fine-tune", init]
            cells += [f"{a:.3f} / {f:.3f}" for a, f in zip(accs, f1s)]
            cells += [f"**{np.mean(accs):.3f}** / {np.mean(f1s):.3f}"]
            cells += [" ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals), f"{np.mean(secs):.0f}"]
            rows.append(cells)
    header = ["arm", "encoder", *[f"seed {s}: test acc / macro F1" for s in seeds], "mean acc / F1"]
    header += ["best val acc per seed", "train s (mean)"]
    pre_rows = []
    for name, p in pretrained.items():
        losses = p["losses"]
        pre_rows.append(
            [
                name,
                str(NORM_PIX[name]),
                f"{len(losses)} of {pre_epochs}" + (" (stopped for time)" if p["summary"].get("partial") else ""),
                " -> ".join(f"{x:.4f}" for x in losses) or "-",
                f"{min(losses):.4f}" if losses else "-",
                f"{p['seconds']:.0f}" + (" (reused)" if p["reused"] else ""),
            ]
        )
    n_test = next(iter(results.values()))[0]["num_samples"] if results else 0
    finetune_lines = [
        "Fine-tuning on `few_train` (val split for `best/`): linear probe = `freeze='backbone'`, "
        f"lr {args.probe_lr:g}, {probe_epochs} epochs; full fine-tune = `freeze='none'`, lr 2e-3, {ft_epochs} epochs; "
        "everything else the `FinetuneConfig` defaults (8 fps, 2 s, short side 112, batch_particles 4096, workers 2); "
        "random init = `model='micro'` with the same seed. Test: `evaluate(RUN/best, split='test', views=3)`. Each "
        f"test clip is {1 / max(n_test, 1):.3f} of accuracy.",
        "",
        table(header, rows),
    ]
    lines = [
        machine_markdown(),
        f"- tubelet imported from: `{Path(tubelet.__file__).parent}`",
        "",
        f"Data: `generate(clips_per_class=24, seed=0)` in `{data.relative_to(BENCH_DIR.parent)}` (70 train, 25 val, "
        f"{n_test} test clips). Few labels: `few_train.csv`, {sum(few.values())} clips "
        f"({', '.join(f'{k}: {v}' for k, v in few.items())}) drawn from `train.csv` (seed 0).",
        "",
        f"Pretraining: `pretrain(model='micro', split='train', epochs={pre_epochs}, workers=2, seed=0, "
        f"{', '.join(f'{k}={v}' for k, v in PRETRAIN.items())})`, all other fields the recipe's defaults (tube "
        "mask 0.9, decoder 128 wide x 4, prune 4, crop scale 0.6-1): the 70 TRAIN clips, labels ignored (val and "
        "test never seen).",
        "",
        table(["variant", "norm_pix", "epochs", "loss per epoch", "min loss", "seconds"], pre_rows),
        "",
        *(finetune_lines if rows else ["No fine-tuning arm was run (`--arms` empty)."]),
        "",
        f"Total run time {(time.perf_counter() - started) / 60:.1f} min (reused runs count only their evaluation).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
