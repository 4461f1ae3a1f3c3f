"""GPU training and inference throughput and MFU: tubelet ``base`` (varlen attention, bf16) against VideoMAE-B.

Needs a CUDA GPU. Without one it prints why and exits with status 0 (so ``run_all`` on a CPU machine does not
fail); it then writes a placeholder section to RESULTS.md only if there is no ``bench_gpu`` section yet, so real
GPU numbers are never overwritten by a CPU run.

Inputs, generated in memory (no files; 16 frames of 224x224, tubelet 2x16x16, so 1568 tubelets per clip):

- ``dense``: a panning texture with sensor noise (the camera moves): every tubelet changes, pruning keeps ~all.
- ``static regions``: sample-data scenes (``tubelet.data.sample.render``, fixed camera, one moving object on a
  textured, noisy or flickering background), 2 s at 8 fps, resized to 224x224: pruning (threshold 4) drops
  most of the background.

Variants, each a full training step (forward, cross-entropy, backward, fused AdamW) under bf16 autocast:

- tubelet ``base`` (768 wide, 12 blocks, 12 heads), attention backend ``varlen`` (FlashAttention varlen
  kernel over ``cu_seqlens``), on dense footage unpruned, and on static-region footage pruned at threshold 4
  (and unpruned, to separate the effect of pruning from the kernel).
- transformers ``VideoMAEForVideoClassification(VideoMAEConfig())`` (VideoMAE-B: the same 768/12/12, 16x224x224,
  tubelet 2x16x16) with ``attn_implementation="sdpa"`` on the dense batch (B, T, C, H, W).

FLOPs per step (the usual 6ND rule plus attention), summed over the clips c of the batch with n_c tokens:

    FLOPs = sum_c [ 6 * P * n_c  +  12 * L * n_c^2 * D ]

P = parameters applied to every token (patch embedding + blocks; heads, pooling and the span embedding are left
out), L = blocks, D = width. The attention term is QK^T and AV (2 * 2 n^2 D per block forward) times 3 for
forward + backward. MFU = FLOPs / step seconds / peak dense bf16 FLOP/s of the card (from its name, or
``--peak-tflops``). Pruned batches count only the tokens they run, so their MFU measures how well the kernels use
the card, and the clips/s column shows what pruning saves.

Each variant is also timed as inference (a no-grad forward pass of the same batch; its FLOPs a third of a training
step's), and, with ``--compile`` (the default), again with ``torch.compile(dynamic=True)`` of the model: ours on
dense and on pruned footage, and VideoMAE-B. Training on several GPUs is measured by ``benchmarks/bench_ddp.py``
(torchrun) where the machine has them; this script times one device.

Run: ``python -m benchmarks.bench_gpu [--batch 32] [--steps 10] [--peak-tflops T] [--no-compile]``; ``--dry-run``
runs every code path on the CPU at toy size (fp32, sdpa) without writing RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, machine_markdown, median, table, time_interleaved, write_section
from tubelet.data.sample import CLASSES, make_scene, render
from tubelet.data.transforms import Preprocessing
from tubelet.models import create_model
from tubelet.particles import pack, tokenize

SECTION = "bench_gpu"
TITLE = "GPU: training throughput and MFU, tubelet base vs VideoMAE-B"
NUM_FRAMES, SIZE, PRUNE = 16, 224, 4.0
PRE = Preprocessing()
# Peak dense bf16 tensor-core FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0))


def placeholder() -> str:
    return (
        "Not run on a GPU yet: no CUDA machine was available when this benchmark was written, so there are no "
        "numbers here. `python -m benchmarks.bench_gpu` on a CUDA machine measures training clips/s and MFU of "
        "tubelet `base` (bf16 autocast, varlen attention) on 16x224x224 clips, dense footage vs footage with "
        "static regions (pruned at threshold 4), next to transformers' VideoMAE-B with SDPA in bf16 in the same "
        "run, and replaces this section. Without CUDA it exits with a message and leaves this section alone."
    )


# --- inputs ---------------------------------------------------------------------------------------------


def dense_clip(index: int, size: int, frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a texture panning 6 px per frame with noise, i.e. a moving camera."""
    rng = np.random.default_rng([1, index])
    coarse = torch.from_numpy(rng.uniform(20, 235, (1, 3, size // 8, (size + 6 * frames) // 8)).astype(np.float32))
    wide = F.interpolate(coarse, size=(size, size + 6 * frames), mode="bicubic", align_corners=False)[0]  # (3, H, W')
    clip = torch.stack([wide[:, :, 6 * i : 6 * i + size] for i in range(frames)])  # (T, 3, H, W)
    clip = clip + torch.from_numpy(rng.normal(0, 3.0, clip.shape).astype(np.float32))
    return clip.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def static_clip(index: int, size: int, frames: int) -> tuple[np.ndarray, int]:
    """(T, H, W, 3) uint8 of a sample-data scene (fixed camera) resized to size x size, and its class index."""
    label = CLASSES[index % len(CLASSES)]
    scene = dataclasses.replace(make_scene(label, index, 0), fps=8, duration=frames / 8)
    rgb, _ = render(scene)  # (T, h, w, 3) at the scene's own size
    video = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()  # (T, 3, h, w)
    video = F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), CLASSES.index(label)


def particles(clips: list[np.ndarray], prune: float | None):
    times = (np.arange(NUM_FRAMES) + 0.5) / 8.0  # 16 frames over 2 s
    return pack([tokenize(c, timestamps=times, prune_threshold=prune, mean=PRE.mean, std=PRE.std) for c in clips])


def pixels(clips: list[np.ndarray]) -> torch.Tensor:
    """(B, T, C, H, W) normalized float pixels for VideoMAE."""
    frames = torch.from_numpy(np.stack(clips)).float() / 255.0  # (B, T, H, W, C)
    return ((frames - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)).permute(0, 1, 4, 2, 3).contiguous()


# --- FLOPs ------------------------------------------------------------------------------------------------


def step_flops(token_params: int, depth: int, dim: int, lengths: list[int]) -> float:
    """Training FLOPs of one step: sum over clips of 6 * P * n + 12 * L * n^2 * D."""
    return float(sum(6 * token_params * n + 12 * depth * n * n * dim for n in lengths))


def token_params_ours(model) -> int:
    blocks = sum(p.numel() for p in model.blocks.parameters())
    return blocks + sum(p.numel() for p in model.patch_embed.parameters())


def token_params_videomae(model) -> int:
    core = model.videomae
    return sum(p.numel() for p in core.encoder.parameters()) + sum(
        p.numel() for p in core.embeddings.patch_embeddings.parameters()
    )


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


# --- steps ------------------------------------------------------------------------------------------------


def make_step(model, call, labels, device, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    model.train()

    def step():
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            logits = call(model)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def make_inference(model, call, device, bf16: bool):
    """One forward pass without gradients (what ``predict`` and ``evaluate`` run)."""
    model.eval()

    @torch.no_grad()
    def infer():
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            call(model)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return infer


def compiled(model):
    """A copy of `model` whose forward runs through ``torch.compile`` (dynamic shapes: packed batches vary)."""
    model = copy.deepcopy(model)
    model.compile(dynamic=True)
    return model


def peak_memory(step, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated() / 2**30


def run(args) -> str:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    size, frames_n = (32, NUM_FRAMES) if dry else (SIZE, NUM_FRAMES)
    batch, steps = (2, 2) if dry else (args.batch, args.steps)
    backend = "sdpa" if dry else "varlen"
    dense = [dense_clip(i, size, frames_n) for i in range(batch)]
    static, static_labels = zip(*(static_clip(i, size, frames_n) for i in range(batch)))
    labels = torch.tensor(static_labels, device=device)
    batches = {
        "dense": particles(dense, None).to(device),
        "static": particles(list(static), None).to(device),
        "static pruned": particles(list(static), PRUNE).to(device),
    }
    torch.manual_seed(0)
    name = "test" if dry else "base"
    ours = create_model(name, num_classes=len(CLASSES), attention=backend).to(device)
    cfg = ours.config
    if dry:
        hf_config = VideoMAEConfig(
            hidden_size=cfg.dim,
            num_hidden_layers=cfg.depth,
            num_attention_heads=cfg.heads,
            intermediate_size=int(cfg.dim * cfg.mlp_ratio),
            image_size=size,
            num_frames=frames_n,
        )
    else:
        hf_config = VideoMAEConfig()  # VideoMAE-B: 768 / 12 / 12, 3072, 224, 16 frames, tubelet 2, patch 16
    hf_config.num_labels = len(CLASSES)
    hf_config._attn_implementation = "sdpa"
    hf = VideoMAEForVideoClassification(hf_config).to(device)
    dense_pixels = pixels(dense).to(device)
    variants = {
        f"tubelet {name}, {backend}, dense footage": (ours, lambda m: m(batches["dense"]), batches["dense"]),
        f"tubelet {name}, {backend}, static regions, unpruned": (
            ours,
            lambda m: m(batches["static"]),
            batches["static"],
        ),
        f"tubelet {name}, {backend}, static regions, pruned": (
            ours,
            lambda m: m(batches["static pruned"]),
            batches["static pruned"],
        ),
        "VideoMAE-B (transformers, SDPA), dense footage": (hf, lambda m: m(pixel_values=dense_pixels).logits, None),
    }
    if args.compile:  # the same models with torch.compile: ours on dense and on pruned footage, and VideoMAE-B
        variants[f"tubelet {name}, {backend}, dense footage, compiled"] = (
            compiled(ours), lambda m: m(batches["dense"]), batches["dense"]
        )  # fmt: skip
        variants[f"tubelet {name}, {backend}, static regions, pruned, compiled"] = (
            compiled(ours), lambda m: m(batches["static pruned"]), batches["static pruned"]
        )  # fmt: skip
        variants["VideoMAE-B (transformers, SDPA), dense footage, compiled"] = (
            compiled(hf), lambda m: m(pixel_values=dense_pixels).logits, None
        )  # fmt: skip
    steps_fns, infer_fns, facts = {}, {}, {}
    for label, (model, call, packed) in variants.items():
        model_copy = copy.deepcopy(model)
        steps_fns[label] = make_step(model_copy, call, labels, device, bf16=not dry)
        infer_fns[label] = make_inference(copy.deepcopy(model), call, device, bf16=not dry)
        if packed is not None:
            lengths = packed.lengths.tolist()
            flops = step_flops(token_params_ours(model), cfg.depth, cfg.dim, lengths)
        else:
            tokens = (frames_n // 2) * (size // 16) ** 2
            lengths = [tokens] * batch
            flops = step_flops(
                token_params_videomae(model), hf_config.num_hidden_layers, hf_config.hidden_size, lengths
            )
        facts[label] = {"tokens": sum(lengths), "flops": flops}
    for label, step in steps_fns.items():
        facts[label]["memory"] = peak_memory(step, device)  # also the first warm-up step
    times = time_interleaved(steps_fns, runs=steps, warmup=2)
    infer_times = time_interleaved(infer_fns, runs=steps, warmup=2)
    device_name = "cpu (dry run)" if dry else torch.cuda.get_device_name()
    peak = None if dry else peak_tflops(device_name, args.peak_tflops)
    rows = []
    reference = median(times["VideoMAE-B (transformers, SDPA), dense footage"])
    for label, fact in facts.items():
        sec, infer_sec = median(times[label]), median(infer_times[label])
        forward_flops = fact["flops"] / 3  # forward is a third of forward + backward (the 6ND rule's 2 of 6)
        mfu = f"{fact['flops'] / sec / (peak * 1e12):.1%}" if peak else "n/a"
        infer_mfu = f"{forward_flops / infer_sec / (peak * 1e12):.1%}" if peak else "n/a"
        rows.append(
            [
                label,
                fact["tokens"],
                f"{sec * 1e3:.1f}",
                f"{batch / sec:.1f}",
                f"{reference / sec:.2f}x",
                f"{fact['flops'] / sec / 1e12:.1f}",
                mfu,
                f"{batch / infer_sec:.1f}",
                infer_mfu,
                "n/a" if fact["memory"] is None else f"{fact['memory']:.1f}",
            ]
        )
    kept = len(batches["static pruned"]) / len(batches["static"])
    dense_kept = len(particles(dense, PRUNE)) / len(batches["dense"])
    lines = [
        machine_markdown(),
        f"- gpu: {device_name}" + (f", peak dense bf16 taken as {peak:.0f} TFLOP/s" if peak else ", peak unknown"),
        "",
        f"Batch of {batch} clips, {frames_n} frames of {size}x{size}, tubelet 2x16x16; "
        f"{'fp32 (dry run)' if dry else 'bf16 autocast'}, AdamW (fused on CUDA), torch.compile only where the "
        "variant says so (dynamic shapes); inference is a no-grad forward pass of the same batch; VideoMAE "
        f"attention implementation `{hf.config._attn_implementation}`. Median of {steps} "
        "interleaved steps after 2 warm-up rounds; peak memory from one extra step per variant. Static regions: "
        f"pruning keeps {kept:.3f} of the tubelets (dense footage would keep {dense_kept:.3f}). FLOPs = sum over "
        "clips of 6 * P * n + 12 * L * n^2 * D (P: per-token parameters, patch embedding + blocks; L blocks; D width).",
        "",
        table(
            [
                "variant",
                "tokens / step",
                "ms / step",
                "train clips/s",
                "vs VideoMAE-B",
                "achieved TFLOP/s",
                "train MFU",
                "inference clips/s",
                "inference MFU",
                "peak train GiB",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per step")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile variants")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU; writes nothing")
    parser.add_argument("--quick", action="store_true", help="(run_all) batch 8, 5 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps = 8, 5
    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"bench_gpu: no CUDA device is available (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); nothing measured. Run it on a machine with a CUDA GPU.",
            file=sys.stderr,
        )
        text = RESULTS.read_text() if RESULTS.exists() else ""
        if f"<!-- section: {SECTION} -->" not in text:
            write_section(SECTION, placeholder(), title=TITLE + " (not run yet)")
        return 0
    body = run(args)
    print(body)
    if not args.dry_run:
        write_section(SECTION, body, title=TITLE + (" (--quick)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
