"""Run every benchmark, each in its own process (so the memory soak starts from a clean interpreter).

Run from the repository root: ``python -m benchmarks.run_all [--quick]``. Each benchmark replaces its own
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.common import BENCH_DIR

BENCHMARKS = (
    "bench_decode",
    "bench_tokenize",
    "bench_prune",
    "bench_memory",
    "bench_manifest",  # data at scale: a million-row manifest with and without the probe index, decode per worker
    "bench_encoder",
    "bench_export",  # the ONNX graph in onnxruntime vs eager PyTorch vs VideoMAE on CPU
    "bench_fps_robustness",
    "bench_motion",  # the headline: motion speed on real texture, trained at 30 fps, tested at 15/30/60
    *("bench_pretrain_speed", "bench_pretrain"),  # pretraining: step speed vs VideoMAE; few-label benefit
    "bench_gpu",
    "bench_ddp",  # torchrun: 1 vs 2 processes with the same global batch
    "bench_explain",  # explanations: pointing game, deletion, randomization check
    *("bench_fusion", "bench_retrieval", "bench_vqa"),  # video with audio and text
    "bench_caption",  # video to text: captions vs the nearest train caption; dialogue vs history-blind, question-only
    "bench_serve",  # tubelet serve under load on loopback: p50/p99 and clips/s, with and without micro-batching
    "bench_replay",  # re-fine-tuning on new classes: forgetting with and without replay
    "bench_video2video",  # interpolation and denoising baselines (repeat/blend/flow, median/NLM) the models must beat
    "bench_anomaly",  # a fixed camera: anomaly scores vs classifier vs frame difference (AUC, events), real time
    "bench_summarize",  # summaries of the stories: F1 at 15% and rank correlation, learned vs unsupervised vs random
    "bench_vitals",  # heart rate by GREEN/CHROM/POS and breathing on generated faces: MAE by motion, compression
    "bench_falls",  # walk/sit/bend/fall clips: micro vs motion features vs majority; watch --alert fall events
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run just these")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if args.quick else [])]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, cwd=BENCH_DIR.parent)
        print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
