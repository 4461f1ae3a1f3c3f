"""Exported graph on the CPU: onnxruntime vs eager PyTorch vs transformers' VideoMAE at the same tokens.

Model: the ``small`` encoder (384 wide, 12 blocks, 6 heads, 5 classes; random weights: speed does not depend on
them), on clips of 16 frames at 112x112 (8 x 7 x 7 = 392 tubelets of 2x16x16 per clip). Four clips per call: the two
clips `tubelet.export.parity.generated_clips` writes (a camera pan over a photograph, and a fixed camera watching a
small patch move over a still photograph), each twice, decoded with ``tubelet.io.decode(num_frames=16,
size=(112, 112))`` and tokenized as `Preprocessing` says (mean/std 0.45/0.225), unpruned or pruned at threshold 4.

Variants (forward only, ``torch.inference_mode()``, eval mode), all with the same weights:

- ``VideoMAE``: ``VideoMAEForVideoClassification(VideoMAEConfig(hidden_size=384, num_hidden_layers=12,
  num_attention_heads=6, intermediate_size=1536, image_size=112, num_frames=16, tubelet_size=2, patch_size=16),
  attn_implementation="sdpa")`` on (B, T, C, H, W) pixels: 392 tokens per clip, nothing to prune.
- ``eager sdpa``: ``Encoder.forward`` on the packed batch with the CPU default backend (one SDPA call per clip).
- ``eager dense``: the same with the "dense" backend the graph is traced with (one SDPA call, block-diagonal mask).
- ``onnxruntime``: the graph ``tubelet export`` writes (`tubelet.export.graph`), run by `OnnxModel` (CPU provider,
  all optimizations), fed the same packed batch.

PyTorch and onnxruntime get the same number of threads (the cores this process may use). Variants are timed in
interleaved rounds (`common.time_interleaved`); clips/s from the median wall time (best in brackets), and clips per
CPU-second of this process (all its threads) from the median CPU time. The graph's logits are checked against eager
before timing.

Run: ``python -m benchmarks.bench_export [--quick] [--depth N]``.
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import machine_markdown, median, table, time_interleaved, work_dir, write_section
from tubelet.data.transforms import Preprocessing
from tubelet.export.graph import PackedGraph, export_onnx, exportable_encoder
from tubelet.export.parity import generated_clips
from tubelet.io import decode
from tubelet.models import create_model
from tubelet.models.onnx_model import OnnxModel
from tubelet.particles import pack, tokenize

NUM_FRAMES, SIZE, PRUNE, NUM_CLASSES, COPIES = 16, 112, 4.0, 5, 2
PRE = Preprocessing(clip_seconds=2.0)


def load_clips():
    """The generated pan and fixed-camera clips, decoded at 16 x 112 x 112, each `COPIES` times."""
    files = generated_clips(work_dir() / "export_clips", PRE, seconds=2.0)
    clips = [decode(path, num_frames=NUM_FRAMES, size=(SIZE, SIZE)) for path in files]
    return clips * COPIES


def videomae_pixels(clips) -> torch.Tensor:
    """(B, T, C, H, W) normalized float pixels, as VideoMAE takes them."""
    frames = torch.stack([torch.from_numpy(c.frames) for c in clips]).float() / 255.0  # (B, T, H, W, C)
    mean, std = torch.tensor(PRE.mean), torch.tensor(PRE.std)
    return ((frames - mean) / std).permute(0, 1, 4, 2, 3).contiguous()


def build(depth: int, threads: int):
    """name -> callable timed; facts for the report (tokens per variant, parity)."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    clips = load_clips()
    full = pack([tokenize(c, prune_threshold=None, mean=PRE.mean, std=PRE.std) for c in clips])
    pruned = pack([tokenize(c, prune_threshold=PRUNE, mean=PRE.mean, std=PRE.std) for c in clips])
    pixels = videomae_pixels(clips)
    torch.manual_seed(0)
    hf = VideoMAEForVideoClassification(
        VideoMAEConfig(
            hidden_size=384, num_hidden_layers=depth, num_attention_heads=6, intermediate_size=1536,
            image_size=SIZE, num_frames=NUM_FRAMES, tubelet_size=2, patch_size=16, num_labels=NUM_CLASSES,
            attn_implementation="sdpa",
        )
    ).eval()  # fmt: skip
    eager = create_model("small", depth=depth, num_classes=NUM_CLASSES, attention="sdpa").eval()
    dense = exportable_encoder(eager, source="small")  # the same weights on the dense backend
    path = work_dir() / "export_small.onnx"
    export_onnx(PackedGraph(dense), pruned, path)
    runtime = OnnxModel(path, eager.config, threads=threads)
    with torch.inference_mode():
        diff = max(float((runtime(p) - eager(p)).abs().max()) for p in (full, pruned))

    def call(fn):
        def run():
            with torch.inference_mode():
                fn()

        return run

    fns = {
        "VideoMAE (transformers, SDPA)": call(lambda: hf(pixel_values=pixels)),
        "eager sdpa": call(lambda: eager(full)),
        "eager dense": call(lambda: dense(full)),
        "onnxruntime": call(lambda: runtime(full)),
        "eager sdpa, pruned": call(lambda: eager(pruned)),
        "eager dense, pruned": call(lambda: dense(pruned)),
        "onnxruntime, pruned": call(lambda: runtime(pruned)),
    }
    tokens = {name: len(pruned) if "pruned" in name else len(full) for name in fns}
    return fns, {"tokens": tokens, "max_abs_diff": diff, "clips": len(clips)}


def report(times: dict, cpu: dict, facts: dict, depth: int, runs: int, threads: int, quick: bool) -> str:
    clips = facts["clips"]
    med = {name: median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    cpu_med = {name: median(v) for name, v in cpu.items()}

    def vs(name: str, reference: str) -> str:
        return f"{med[reference] / med[name]:.2f}x ({best[reference] / best[name]:.2f}x)"

    rows = []
    for name in times:
        eager_ref = "eager sdpa, pruned" if "pruned" in name else "eager sdpa"
        rows.append(
            [
                name,
                facts["tokens"][name],
                f"{clips / med[name]:.2f} ({clips / best[name]:.2f})",
                vs(name, eager_ref),
                vs(name, "VideoMAE (transformers, SDPA)"),
                f"{clips / cpu_med[name]:.2f}",
                f"{cpu_med[eager_ref] / cpu_med[name]:.2f}x",
            ]
        )
    depth_note = "12 blocks" if depth == 12 else f"**depth reduced to {depth} blocks**"
    ort_full = med["eager sdpa"] / med["onnxruntime"]
    ort_pruned = med["eager sdpa, pruned"] / med["onnxruntime, pruned"]
    cpu_ort_full = cpu_med["eager sdpa"] / cpu_med["onnxruntime"]
    cpu_ort_pruned = cpu_med["eager sdpa, pruned"] / cpu_med["onnxruntime, pruned"]
    lines = [
        machine_markdown(),
        "",
        f"`small` (384 wide, {depth_note}, 6 heads), {clips} clips of 16x112x112 per call (the generated pan and "
        f"fixed-camera clips, each twice); {threads} threads for PyTorch and onnxruntime; {runs} interleaved rounds. "
        f"Graph vs eager logits: max |diff| {facts['max_abs_diff']:.1e}.",
        "",
        table(
            [
                "variant",
                "tokens",
                "clips/s median (best)",
                "vs eager sdpa at equal tokens",
                "vs VideoMAE",
                "clips per CPU-second",
                "vs eager sdpa (CPU time)",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"onnxruntime vs eager PyTorch (sdpa backend) at equal tokens, wall-clock medians: {ort_full:.2f}x unpruned, "
        f"{ort_pruned:.2f}x pruned; in CPU time: {cpu_ort_full:.2f}x and {cpu_ort_pruned:.2f}x (target: 1.5x). CPU "
        "time (all threads of this process) is less sensitive than wall time to other work on a shared machine.",
    ]
    if quick:
        lines += ["", "(--quick: fewer blocks and rounds; not for quoting.)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 blocks, 2 rounds (a smoke run)")
    parser.add_argument("--depth", type=int, default=None, help="transformer blocks (default 12, --quick 2)")
    args = parser.parse_args(argv)
    depth = args.depth or (2 if args.quick else 12)
    runs = 2 if args.quick else 7
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads)
    fns, facts = build(depth, threads)
    cpu: dict[str, list[float]] = {}
    times = time_interleaved(fns, runs=runs, cpu=cpu)
    body = report(times, cpu, facts, depth, runs, threads, args.quick)
    print(body)
    title = "Export: onnxruntime vs eager PyTorch vs VideoMAE on CPU" + (" (--quick)" if args.quick else "")
    write_section("bench_export", body, title=title)


if __name__ == "__main__":
    main()
