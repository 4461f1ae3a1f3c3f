"""Re-fine-tuning as new video arrives: how much of the old classes is forgotten, with and without replay.

Protocol (issue 16):

1. ``tubelet.data.sample.generate(DATA, clips_per_class=N, seed=0)``: five motion classes with train/val/test
   manifests. OLD = ``grow``, ``rotate``, ``static`` (all their clips); NEW = ``move_left``, ``move_right`` (all
   their clips) plus 2 clips per split of ``rotate`` (a few new clips of an old class, same name, same class;
   they are left out of OLD), written by `tubelet.data.sample.write_subset`.
2. PREV: ``finetune --data OLD`` from a fresh model, ``best/`` on OLD's val.
3. ``finetune --model PREV/best --data NEW --replay OLD --replay-fraction F`` per seed: the head grows from 3 to 5
   classes (old rows kept), the run trains with replay (RUN) and, as its ablation arm, the same run without replay
   (RUN/ablation/no-replay): same head, seed, budget and validation (NEW's and OLD's val).
4. The run's ``RUN/continual/report.json``: accuracy of PREV (before) and of each arm's ``best/`` (after) on OLD's
   and NEW's test splits; forgetting = OLD test accuracy lost. Chance is 1 / 5 (one of the grown head's classes).

Run: ``python -m benchmarks.bench_replay [--quick] [--seeds 0 1]``; a few minutes on 2 cores (``--quick``: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time

from benchmarks.common import cached_sample_data, machine_markdown, table, work_dir, write_section
from tubelet.data.sample import write_subset
from tubelet.recipes.finetune import FinetuneConfig, finetune

OLD = ("grow", "rotate", "static")
NEW = ("move_left", "move_right")
CARRIED = {"rotate": 2}  # clips per split of an old class that arrive again with the new data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=15)
    parser.add_argument("--prev-epochs", type=int, default=20)
    parser.add_argument("--prev-lr", type=float, default=2e-3)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the re-fine-tuning (each arm)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak LR of the re-fine-tuning (lower than PREV's)")
    parser.add_argument("--replay-fraction", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", default="micro")
    parser.add_argument("--quick", action="store_true", help="5 clips per class, test model, 2 + 2 epochs, one seed")
    args = parser.parse_args()
    if args.quick:
        args.clips_per_class, args.prev_epochs, args.epochs, args.seeds, args.model = 5, 2, 2, [0], "test"
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    data = cached_sample_data(work_dir() / f"replay_data_{args.clips_per_class}", args.clips_per_class, 0)
    new = write_subset(data, work_dir() / "replay_new", {**dict.fromkeys(NEW), **CARRIED})
    old = write_subset(data, work_dir() / "replay_old", dict.fromkeys(OLD), exclude=new)  # no clip in both
    settings = dict(
        model=args.model, size=64, max_long_side=96, sample_fps=8.0, clip_seconds=1.0, batch_particles=1200,
        warmup_epochs=1.0, workers=2, min_steps_per_epoch=10, crop_scale_min=0.8,
    )  # fmt: skip
    prev = work_dir() / "replay_prev"
    shutil.rmtree(prev, ignore_errors=True)
    t = time.perf_counter()
    finetune(FinetuneConfig(data=str(old), out=str(prev), epochs=args.prev_epochs, lr=args.prev_lr, **settings))
    prev_s = time.perf_counter() - t
    reports, seconds = {}, {}
    for seed in args.seeds:
        out = work_dir() / f"replay_run_seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        cfg = FinetuneConfig(
            data=str(new), out=str(out), replay=str(old), replay_fraction=args.replay_fraction, seed=seed,
            epochs=args.epochs, lr=args.lr, **{**settings, "model": str(prev / "best")},
        )  # fmt: skip
        finetune(cfg)
        seconds[seed] = time.perf_counter() - t
        reports[seed] = json.loads((out / "continual" / "report.json").read_text())
        arms = reports[seed]["arms"]
        print(json.dumps({"seed": seed, **{k: [v["old_test"], v["new_test"]] for k, v in arms.items()}}), flush=True)
    write_section(
        "bench_replay" + ("_quick" if args.quick else ""),
        body(args, reports, seconds, prev_s, time.perf_counter() - started),
        title="Re-fine-tuning as new video arrives: forgetting with and without replay (issue 16)"
        + (" --quick" if args.quick else ""),
    )


def _mean(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{sum(values) / len(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})"


def body(args, reports: dict, seconds: dict, prev_s: float, total_s: float) -> str:
    first = reports[args.seeds[0]]
    train = first["train"]
    chance = first["chance"]
    rows = [["before: PREV/best", _mean([first["before"]["old_test"]]), _mean([first["before"]["new_test"]]), ""]]
    names = {"replay": f"after, replay {args.replay_fraction:g} (RUN/best)", "no-replay": "after, no replay (ablation)"}
    for arm, name in names.items():
        old = [reports[s]["arms"][arm]["old_test"] for s in args.seeds]
        new = [reports[s]["arms"][arm]["new_test"] for s in args.seeds]
        forgetting = [reports[s]["arms"][arm]["forgetting"] for s in args.seeds]
        rows.append([name, _mean(old), _mean(new), _mean(forgetting)])
    rows.append(["chance (1 / 5 classes)", f"{chance:.3f}", f"{chance:.3f}", ""])
    clips = first["test_clips"]
    carried = " and ".join(f"{n} clips per split of {c}" for c, n in CARRIED.items())
    return "\n\n".join(
        [
            machine_markdown(),
            " ".join(
                [
                    f"Data: `generate(clips_per_class={args.clips_per_class}, seed=0)`. OLD = {', '.join(OLD)};",
                    f"NEW = {', '.join(NEW)} plus {carried}, left out of OLD (`write_subset`).",
                    f"Test splits: OLD {clips['old_test']} clips, NEW {clips['new_test']} clips.",
                    f"PREV: `finetune --data OLD --model {args.model} --lr {args.prev_lr:g} --epochs",
                    f"{args.prev_epochs}` ({prev_s:.0f} s). Then, per seed {args.seeds}, `finetune --model PREV/best",
                    f"--data NEW --replay OLD --replay-fraction {args.replay_fraction:g} --epochs {args.epochs}",
                    f"--lr {args.lr:g}`: the head grows from 3 to 5 classes (old rows kept by name); training reads",
                    f"{train['new_train_clips']} new clips + {train['replayed_clips']} replayed of",
                    f"{train['old_train_clips']} old ({train['replayed_fraction']:.2f} of the set, drawn once per",
                    f"seed); the no-replay arm is the same run on the {train['new_train_clips']} new clips alone.",
                    "Both pick `best/` on NEW's + OLD's val. Frames 64 px, 8 fps, 1 s windows, one centred window",
                    "per test clip.",
                ]
            ),
            "**Accuracy on each test split** (mean over seeds, per seed in brackets; forgetting = PREV's OLD test "
            "accuracy minus the arm's; a NEW test clip of a class PREV does not know counts as wrong before)",
            table(["model", "OLD test accuracy", "NEW test accuracy", "forgetting (OLD lost)"], rows),
            f"Re-fine-tuning seconds per seed (both arms and the report): "
            f"{', '.join(f'{s}: {v:.0f}' for s, v in seconds.items())}. Total {total_s / 60:.1f} min.",
        ]
    )


if __name__ == "__main__":
    main()
