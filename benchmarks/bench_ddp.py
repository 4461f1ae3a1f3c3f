"""Training on 1 process versus 2 under torchrun (DDP, gloo) on the CPU: clips/s, step time and data wait.

The same run twice with the same global batch: one process with ``--accum-steps 2`` and every core's threads, and
``torchrun --nproc_per_node=2`` with one batch per rank per step and one thread each (what torchrun gives each
rank). Both decode with the same number of DataLoader workers in all. The weights after the run are compared too:
two processes with the same global batch train the same model (`tests/recipes/test_distributed.py` checks it at
1e-5), so any speed-up is free of a change in what is learned.

Measured from each run's ``metrics.jsonl`` (rank 0): clips/s of the last epoch (the first pays for start-up), and
per optimizer step the median ``step_s`` (wall time of the step, data included) and ``data_s`` (time waiting for the
loader). Data: the sample data (``tubelet sample-data``, 64-px-high scenes), the ``micro`` encoder at 112 px, 2 s
clips at 8 fps.

Run: ``python -m benchmarks.bench_ddp [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import cached_sample_data, machine_markdown, median, table, work_dir, write_section

ARGS = [
    "--model", "micro", "--sample-fps", "8", "--clip-seconds", "2", "--batch-particles", "2048",
    "min_steps_per_epoch=0", "--warmup-epochs", "0",
]  # fmt: skip


def train(data: Path, out: Path, *, processes: int, epochs: int) -> dict:
    """One fine-tuning run on `processes` processes; its wall time and what its metrics say."""
    per_rank_workers = 2 // processes
    tail = ["--data", str(data), *ARGS, "--epochs", str(epochs), "--workers", str(per_rank_workers), "--out", str(out)]
    env = dict(os.environ)
    if processes == 1:
        command = [sys.executable, "-m", "tubelet", "finetune", *tail, "--accum-steps", "2", "--overwrite"]
    else:
        env["OMP_NUM_THREADS"] = "1"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "tubelet", "finetune", *tail, "--overwrite",
        ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r for r in records if r["kind"] == "train"]
    last_epoch = [r for r in records if r["kind"] == "epoch"][-1]
    return {
        "processes": processes,
        "threads": "default" if processes == 1 else "1",
        "workers": per_rank_workers,
        "clips_per_s": last_epoch["clips_per_s"],
        "step_s": median([r["step_s"] for r in steps[2:]]),
        "data_s": median([r["data_s"] for r in steps[2:]]),
        "steps": len(steps),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and epochs (a smoke run)")
    args = parser.parse_args(argv)
    data = cached_sample_data(work_dir() / "ddp_data", clips_per_class=4 if args.quick else 12, seed=0)
    epochs = 2 if args.quick else 6
    runs = [train(data, work_dir() / f"ddp_{n}", processes=n, epochs=epochs) for n in (1, 2)]

    from tubelet import checkpoint

    one, two = (checkpoint.load_state_dict(work_dir() / f"ddp_{n}" / "last") for n in (1, 2))
    difference = max(float((one[k] - two[k]).abs().max()) for k in one)
    rows = [
        [r["processes"], r["threads"], r["workers"], f"{r['clips_per_s']:.1f}", f"{r['step_s']:.3f}",
         f"{r['data_s']:.3f}", f"{r['data_s'] / r['step_s']:.0%}", r["steps"], f"{r['wall_s']:.1f}"]
        for r in runs
    ]  # fmt: skip
    speedup = runs[1]["clips_per_s"] / runs[0]["clips_per_s"]
    body = (
        machine_markdown()
        + "\n- run: `tubelet finetune {' '.join(ARGS)} --epochs {epochs}` on the sample data "
        + f"({data.name}), the same global batch on both (1 process: --accum-steps 2)\n\n"
        + table(
            [
                "processes",
                "torch threads each",
                "loader workers each",
                "clips/s (last epoch)",
                "median step s",
                "median data wait s",
                "data wait / step",
                "steps",
                "wall s",
            ],
            rows,
        )  # fmt: skip
        + f"\n\n2 processes / 1 process: {speedup:.2f}x clips/s. Largest weight difference after the run between the "
        + f"two: {difference:.2e} (the same training, dealt to two processes).\n"
    )
    write_section("bench_ddp", body, title="Training on 1 vs 2 processes (torchrun, DDP on the CPU)")
    print(body)


if __name__ == "__main__":
    main()
