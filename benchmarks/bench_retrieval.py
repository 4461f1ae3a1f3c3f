"""Video-text retrieval: recall@1/5/10 both directions of a trained two-tower model vs the same model untrained.

Protocol: ``tubelet finetune --task retrieval`` (the task `tubelet.tasks.retrieval`) on the AV sample data's
(clip, caption) pairs, a tokenizer trained on the train captions; then the test split's centred windows and
captions are embedded by the trained model's `best` checkpoint and by a randomly initialised model of the same
shape (same tokenizer), and scored. A hit is a retrieved item whose caption equals the query's (captions are
templates over colour, shape, motion and sound, so several clips share one); the strict own-pair numbers are in
the report JSON. "chance" is the expected recall of a uniformly random ranking, exact for this test set.

Run: ``python -m benchmarks.bench_retrieval [--clips-per-class N] [--epochs E] [--seeds 0 1] [--quick]``. With
several seeds each cell is the mean over seeds, the per-seed values in brackets.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time

import torch

from benchmarks.common import (
    AV_PREPROCESSING,
    cached_sample_data,
    machine_markdown,
    over_seeds,
    table,
    work_dir,
    write_section,
)
from tubelet import models
from tubelet.data.sample_av import generate_av
from tubelet.models.retrieval import RetrievalModel
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.retrieval import KS, evaluate_retrieval, split_pairs

DIRECTIONS = ("video_to_text", "text_to_video")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", default="micro")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="5 clips per class, 2 epochs, test model (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.clips_per_class, args.epochs, args.model = 5, 2, "test"
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    data = cached_sample_data(work_dir() / "fusion_data", args.clips_per_class, 0, generate_av)
    settings = dict(
        task="retrieval",
        model=args.model,
        epochs=args.epochs,
        **AV_PREPROCESSING,
        batch_particles=4096,
        max_clips_per_batch=24,
        lr=1e-3,
        warmup_epochs=1.0,
        workers=1,
        device="cpu",
    )
    runs = {seed: _train_and_score(data, settings, seed) for seed in args.seeds}
    first = runs[args.seeds[0]]["trained"]
    rows = []
    for name in ("trained (best val)", "random init"):
        for direction in DIRECTIONS:
            rows.append(
                [name, direction.replace("_", " "), *(_cell(runs, name, direction, f"R@{k}") for k in KS)]
            )  # fmt: skip
    rows.append(["chance (random ranking)", "either", *(f"{first['chance'][f'R@{k}']:.3f}" for k in KS)])
    strict = "; ".join(
        f"{d.replace('_', ' ')} " + ", ".join(f"R@{k} {_cell(runs, 'strict', d, f'R@{k}')}" for k in KS)
        for d in DIRECTIONS
    )
    body = "\n\n".join(
        [
            __doc__.split("\n\n")[1].replace("\n", " "),
            f"Data: `generate_av(clips_per_class={args.clips_per_class}, seed=0)`; test split {first['num_pairs']} "
            f"(clip, caption) pairs with {first['num_captions']} distinct captions. Model `{args.model}` (text "
            f"tower: half its depth), {args.epochs} epochs, seeds {args.seeds} ("
            + ", ".join(f"seed {s}: {r['steps']} steps, {r['minutes']:.1f} min" for s, r in runs.items())
            + f" training + evaluation); settings `{json.dumps(settings)}`.",
            table(["model", "direction", *(f"R@{k}" for k in KS)], rows),
            f"Strict own-pair recall of the trained model (only the query's own clip or caption counts): {strict}.",
            machine_markdown(),
        ]
    )
    write_section("retrieval", body, title="Video-text retrieval: trained two towers vs random init (issue 7)")
    print(body)


def _train_and_score(data, settings: dict, seed: int) -> dict:
    """Train one seed; its test report, the same shape untrained (same tokenizer), steps and minutes."""
    out = work_dir() / f"retrieval_run_seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = finetune(FinetuneConfig(data=str(data), out=str(out), seed=seed, **settings))
    minutes = (time.perf_counter() - started) / 60
    trained = json.loads((out / "report" / "report.json").read_text())
    best = models.load(out / "best", kind="retrieval")
    torch.manual_seed(seed)
    untrained = RetrievalModel(best.model.video_config, best.model.config)
    test = split_pairs(str(data), "test", best.tokenizer)
    random_init = evaluate_retrieval(untrained, best.preprocessing, *test, budget=4096, device=torch.device("cpu"))
    print(json.dumps({"seed": seed, "trained": trained["text_to_video"], "random": random_init["text_to_video"]}))
    return {
        "trained": trained,
        "trained (best val)": trained,
        "random init": random_init,
        "strict": trained["instance"],
        "steps": summary["steps"],
        "minutes": minutes,
    }


def _cell(runs: dict, name: str, direction: str, key: str) -> str:
    """One recall over seeds: the value, or the mean with the per-seed values in brackets."""
    return over_seeds([run[name][direction][key] for run in runs.values()])


if __name__ == "__main__":
    main()
