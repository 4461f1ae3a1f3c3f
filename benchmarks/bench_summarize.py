"""Video summarization on the stories sample: F1 at 15% of the length AND rank correlation with annotators.

Protocol (TVSum/SumMe, with the caveat of Otani et al., "Rethinking the Evaluation of Video Summaries", CVPR 2019:
under the F1 of knapsack summaries over short segments, random scores come close to published methods, so rank
correlations of the importance scores themselves are reported beside it):

1. ``generate_stories`` (``tubelet sample-data --stories``): 24 train, 6 val and 8 test stories of 30-50 s (test
   stories over photographs no training story shows), each second scored by 3-5 simulated annotators.
2. Learned importance: ``finetune --task importance --loss rank`` from a fresh ``micro`` on the train stories (4 s
   windows every 4 s, read at 4 fps, short side 64, features max-pooled per second; 4 epochs of at least 60 steps;
   best epoch by val Kendall tau). Unsupervised importance: what ``tubelet summarize`` does
   with an encoder that was never told about importance (here a fresh, randomly initialised ``micro``, as no
   pretraining is run): novelty of its features pooled per second, combined with camera-compensated motion energy.
3. On every test story: shots from detected hard cuts (`video2video.baselines.cuts`, the recipe's), cut into
   segments of at most 2 s. A summary is the knapsack selection of segments within 15% of the length
   (`tubelet.summary.select`). A user's summary is the same selection made from that annotator's scores.
   F1 (per 0.1 s) against each annotator, averaged over annotators (TVSum) and the best one (SumMe), then over
   videos. Kendall tau and Spearman rho of the per-second scores against each annotator, averaged likewise.
4. Baselines: random scores (uniform per second; mean over `RANDOM_SEEDS` seeds), uniform sampling (segments evenly
   spread over the video up to the budget; it has no scores to rank), and each annotator against the others (the
   agreement a method can hope for).

Run: ``python -m benchmarks.bench_summarize [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine_markdown, table, work_dir, write_section
from tubelet.data.sample_stories import generate_stories
from tubelet.io import probe
from tubelet.models import load
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.summarize import MOTION_FPS, cuts_and_motion, video_importance
from tubelet.summary import rank_correlations, segments_of, select, selection_f1, shot_bounds, summary_mask

RATIO = 0.15
RANDOM_SEEDS = 20
LEARNED = "learned importance (finetune --task importance)"
RANDOM = f"random scores (mean of {RANDOM_SEEDS} seeds)"
HUMAN = "each annotator vs the others"
# 4 s windows read at 4 fps, short side 64, nothing pruned (a slow pan over texture leaves little to prune, and the
# pruning pass costs more than it saves here): a micro trains on the CPU in minutes.
PRE = dict(sample_fps=4.0, clip_seconds=4.0, size=64, max_long_side=96, prune_threshold=0.0)


def uniform_selection(shots, duration: float, ratio: float) -> list[tuple[float, float]]:
    """Segments evenly spread over the video: the most of them, at evenly spaced ranks, whose lengths fit the budget."""
    pieces = segments_of(shots)
    budget = ratio * duration + 1e-9
    for count in range(len(pieces), 0, -1):
        chosen = [pieces[i] for i in np.unique(np.round(np.linspace(0, len(pieces) - 1, count)).astype(int))]
        if sum(b - a for a, b in chosen) <= budget:
            return chosen
    return []


def scored(scores: np.ndarray, users: np.ndarray, shots, duration: float) -> dict[str, float]:
    """F1 (mean and best over annotators) of the knapsack summary of `scores`, and its rank correlations."""
    mine = summary_mask(select(scores, shots, ratio=RATIO, duration=duration), duration)
    f1s = [selection_f1(mine, user_mask(u, shots, duration)) for u in users]
    return {"f1_mean": float(np.mean(f1s)), "f1_max": float(np.max(f1s)), **rank_correlations(scores, users)}


def user_mask(scores: np.ndarray, shots, duration: float) -> np.ndarray:
    return summary_mask(select(scores, shots, ratio=RATIO, duration=duration), duration)


def cut_accuracy(found: list[float], truth: list[float], tolerance: float = 0.1) -> tuple[int, int, int]:
    """(hits, detected, true) cuts, a hit within `tolerance` s of a true one."""
    hits = sum(any(abs(f - t) <= tolerance for t in truth) for f in found)
    return hits, len(found), len(truth)


def evaluate(data: Path, learned_dir: Path, seed: int) -> tuple[dict[str, list[dict]], dict]:
    """Per method, one dict of scores per test video; and facts about the test set."""
    rows = [json.loads(line) for line in (data / "importance_test.jsonl").read_text().splitlines()]
    truth = {s["path"]: s for s in map(json.loads, (data / "stories.jsonl").read_text().splitlines())}
    learned = load(learned_dir)
    torch.manual_seed(seed)
    fresh = load("micro")  # never trained: what the unsupervised path has without a pretrained encoder
    fresh.preprocessing = learned.preprocessing
    results: dict[str, list[dict]] = {}
    facts = {"videos": len(rows), "seconds": 0, "annotators": 0, "cuts": [0, 0, 0]}
    for row in rows:
        path = data / row["path"]
        info = probe(path)
        users = np.asarray(row["annotators"], dtype=np.float64)
        seconds = users.shape[1]
        duration = float(seconds)
        cuts, motion = cuts_and_motion(str(path), info.duration_s, seconds, fps=MOTION_FPS)
        shots = shot_bounds(cuts, duration)
        true_cuts = [float(s["start"]) for s in truth[row["path"]]["shots"][1:]]
        facts["cuts"] = [a + b for a, b in zip(facts["cuts"], cut_accuracy(cuts, true_cuts))]
        facts["seconds"] += seconds
        facts["annotators"] += len(users)
        add = lambda name, value: results.setdefault(name, []).append(value)  # noqa: E731
        scores, _ = video_importance(learned, str(path), info, seconds=seconds, shots=shots, motion=motion)
        add(LEARNED, scored(scores, users, shots, duration))
        scores, parts = video_importance(fresh, str(path), info, seconds=seconds, shots=shots, motion=motion)
        add("unsupervised: novelty + motion", scored(scores, users, shots, duration))
        add("unsupervised, motion energy alone", scored(parts["motion"], users, shots, duration))
        add("unsupervised, feature novelty alone", scored(parts["novelty"], users, shots, duration))
        rng = np.random.default_rng([seed, int(row["path"][-7:-4])])
        runs = [scored(rng.random(seconds), users, shots, duration) for _ in range(RANDOM_SEEDS)]
        add(RANDOM, {k: float(np.mean([r[k] for r in runs])) for k in runs[0]})
        mask = summary_mask(uniform_selection(shots, duration, RATIO), duration)
        f1s = [selection_f1(mask, user_mask(u, shots, duration)) for u in users]
        add("uniform sampling", {"f1_mean": float(np.mean(f1s)), "f1_max": float(np.max(f1s)),
                                 "kendall_tau": math.nan, "spearman_rho": math.nan})  # fmt: skip
        human = [scored(users[a], np.delete(users, a, axis=0), shots, duration) for a in range(len(users))]
        add(HUMAN, {k: float(np.mean([h[k] for h in human])) for k in human[0]})
    return results, facts


def average(values: list[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def cell(values: list[float]) -> str:
    if all(math.isnan(v) for v in values):
        return "n/a"
    values = [v for v in values if not math.isnan(v)]
    return f"{np.mean(values):.3f} ± {np.std(values) / math.sqrt(len(values)):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer stories and epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    root = work_dir() / ("summarize_quick" if args.quick else "summarize")
    data = root / "data"
    stories = 20 if args.quick else 38
    if not (data / "importance_test.jsonl").exists():
        generate_stories(data, seed=args.seed, stories=stories, story_seconds=40.0, workers=2)
    generated = time.perf_counter() - started
    run = root / "importance"
    epochs = 3 if args.quick else 4
    reused = (run / "best" / "config.json").exists()
    if not reused:
        finetune(FinetuneConfig(
            task="importance", data=str(data), model="micro", out=str(run), epochs=epochs, batch_particles=4096,
            lr=2e-3, workers=1, seed=args.seed, overwrite=True, crop_scale_min=1.0, window_stride=4, loss="rank",
            min_steps_per_epoch=60, **PRE,
        ))  # fmt: skip
    trained = time.perf_counter() - started
    training = json.loads((run / "summary.json").read_text())
    train_count = len((data / "importance_train.jsonl").read_text().splitlines())
    results, facts = evaluate(data, run / "best", args.seed)
    header = ["importance", f"F1 at {RATIO:.0%}, mean over annotators", "F1, best annotator", "Kendall tau",
              "Spearman rho"]  # fmt: skip
    keys = ("f1_mean", "f1_max", "kendall_tau", "spearman_rho")
    lines = [[name, *(cell([v[k] for v in per_video]) for k in keys)] for name, per_video in results.items()]
    hits, found, true = facts["cuts"]
    mean = {
        name: {k: float(np.nanmean([v[k] for v in per_video])) for k in keys} for name, per_video in results.items()
    }
    learned, random_ = mean[LEARNED], mean[RANDOM]
    motion, human = mean["unsupervised, motion energy alone"], mean[HUMAN]
    logged = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    val_taus = [round(line["kendall_tau"], 3) for line in logged if line.get("kind") == "val"]
    verdict = (
        f"Learned importance against random scores, Kendall tau {learned['kendall_tau']:.3f} vs "
        f"{random_['kendall_tau']:.3f} (Spearman rho {learned['spearman_rho']:.3f} vs {random_['spearman_rho']:.3f}). "
        f"Against motion energy alone it {'wins' if learned['kendall_tau'] > motion['kendall_tau'] else 'loses'} "
        f"({learned['kendall_tau']:.3f} vs {motion['kendall_tau']:.3f}): a `micro` trained from scratch for "
        f"{training.get('epochs_run')} epochs on a CPU, its val Kendall tau by epoch {val_taus}. "
        f"Under F1 (mean over annotators) random scores reach {random_['f1_mean']:.3f} and uniform sampling "
        f"{mean['uniform sampling']['f1_mean']:.3f}, against {human['f1_mean']:.3f} for one annotator's summary "
        f"against the others'; under the best-annotator F1 (SumMe's) random scores reach {random_['f1_max']:.3f}, "
        f"{random_['f1_max'] / human['f1_max']:.0%} of the annotators' {human['f1_max']:.3f}: the weakness Otani et "
        "al. describe. Rank correlations put random at zero. Uniform sampling has no scores to rank (n/a). The "
        "unsupervised encoder here is a randomly initialised `micro` (no pretraining in this benchmark), so its "
        "novelty term is novelty of random features; a pretrained encoder goes in its place with "
        "`--checkpoint PRE/best`."
    )
    body = (
        "How good are `tubelet summarize`'s importance scores, learned and unsupervised, on held-out stories? F1 of "
        f"knapsack summaries at {RATIO:.0%} of the length (the TVSum/SumMe protocol) and, because Otani et al. "
        "(CVPR 2019) showed that random scores come close to published methods under that F1, Kendall tau and "
        "Spearman rho of the per-second scores against each annotator. Protocol in "
        "`benchmarks/bench_summarize.py`'s docstring.\n\n"
        f"{machine_markdown()}\n\n"
        f"{facts['videos']} test stories ({facts['seconds']} s, {facts['annotators']} annotators in all), over "
        f"photographs never seen in training; cuts detected: {hits} of {true} true cuts found, {found - hits} false. "
        f"Learned model: `micro` from scratch, {training.get('epochs_run')} epochs "
        f"({training.get('steps')} steps) on {train_count} train stories, best "
        f"val Kendall tau {training.get('best_val_kendall_tau', float('nan')):.3f}. Mean ± standard error over test "
        "videos:\n\n"
        f"{table(header, lines)}\n\n{verdict}\n\n"
        f"Generating {generated:.0f} s, training {trained - generated:.0f} s"
        f"{' (data and the trained model reused from an earlier run of the same settings)' if reused else ''}, "
        f"total {time.perf_counter() - started:.0f} s{' (--quick)' if args.quick else ''}."
    )
    path = write_section("bench_summarize", body, title="Video summarization: F1 and rank correlation (issue 19)")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
