"""A masked-video pretraining step on the CPU: tubelet's encoder + decoder against transformers' VideoMAEForPreTraining.

Clips: the eight 16x112x112 sample-data clips of ``bench_encoder`` (fixed cameras, one moving object), normalized
with mean/std 0.45/0.225. Both models have the ``small`` encoder shape (384 wide, 6 heads, MLP 1536; depth
reduced, see the section) and the same scaled-down decoder (192 wide, 6 heads, MLP 768, ``--decoder-depth``
blocks; VideoMAE's default decoder is 384 x 4), tubelet 2x16x16, tube masking at 90%: 44 of the 49 cells of a clip
hidden at every time, 352 of its 392 tubelets.

- ``VideoMAE``: ``VideoMAEForPreTraining(VideoMAEConfig(..., norm_pix_loss=True), attn_implementation="sdpa")``
  with ``bool_masked_pos`` (B, 392): a fresh tube mask per step, the same count per clip. Its loss is the
  norm-pix MSE over hidden tubelets, computed inside ``forward``.
- ``tubelet``: ``pack`` -> ``mask_batch(0.9, mode='tube')`` (per step, as the recipe) -> ``Encoder.forward_features``
  of the visible particles -> ``MaskedDecoder`` -> ``reconstruction_loss(norm_pix=True)``, the pretrain recipe's
  step, ``attention='sdpa'``.
- ``tubelet + pruned``: the same on particles tokenized with ``prune_threshold=4``: a pruned particle is neither
  encoded nor a target.

A step is forward + loss + backward + ``AdamW.step()`` + ``zero_grad``, timed in interleaved rounds
(`common.time_interleaved`). Peak RSS is measured in a fresh process per variant (psutil, sampled every 2 ms during
one step after two warm-up steps). CPU only: GPU numbers are ``bench_gpu``'s.

Run: ``python -m benchmarks.bench_pretrain_speed [--quick] [--depth N] [--decoder-depth N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

import tubelet
from benchmarks.bench_encoder import NUM_CLIPS, NUM_FRAMES, PRE, load_clips, particles_of, rss_peak, videomae_pixels
from benchmarks.common import BENCH_DIR, machine_markdown, median, table, time_interleaved, write_section
from tubelet.models import create_model
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.particles import mask_batch, pack
from tubelet.tasks.reconstruction import reconstruction_loss

MASK_RATIO, PRUNE = 0.9, 4.0
DIM, HEADS, MLP = 384, 6, 1536
DEC_DIM, DEC_HEADS, DEC_MLP = 192, 6, 768
GRID = (NUM_FRAMES // 2, 7, 7)  # tubelets of a 16x112x112 clip
VARIANTS = ("VideoMAEForPreTraining", "tubelet", "tubelet + pruned (threshold 4)")


def tube_mask(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T'*H'*W') bool: VideoMAE's tube mask, the same round(0.9 * 49) cells hidden at every time of a clip."""
    cells = GRID[1] * GRID[2]
    hidden = round(MASK_RATIO * cells)
    order = torch.rand(batch, cells, generator=generator).argsort(dim=1)
    cell_mask = torch.zeros(batch, cells, dtype=torch.bool)
    cell_mask.scatter_(1, order[:, :hidden], True)
    return cell_mask[:, None, :].expand(batch, GRID[0], cells).reshape(batch, -1)  # (B, T'*H'*W') time-major


def build(name: str, depth: int, decoder_depth: int):
    """A step function for variant `name`, and facts for the report (parameters, tokens per step)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    clips, _ = load_clips([(112, 112)] * NUM_CLIPS)
    if name == VARIANTS[0]:
        from transformers import VideoMAEConfig, VideoMAEForPreTraining

        config = VideoMAEConfig(
            hidden_size=DIM, num_hidden_layers=depth, num_attention_heads=HEADS, intermediate_size=MLP,
            image_size=112, num_frames=NUM_FRAMES, tubelet_size=2, patch_size=16, norm_pix_loss=True,
            decoder_hidden_size=DEC_DIM, decoder_num_hidden_layers=decoder_depth,
            decoder_num_attention_heads=DEC_HEADS, decoder_intermediate_size=DEC_MLP, attn_implementation="sdpa",
        )  # fmt: skip
        model = VideoMAEForPreTraining(config).train()
        pixels = videomae_pixels(clips)  # (B, T, C, H, W)
        tokens = NUM_CLIPS * GRID[0] * GRID[1] * GRID[2]
        counts = {"encoded": round(tokens * (1 - round(MASK_RATIO * 49) / 49)), "targets": None}
        counts["targets"] = tokens - counts["encoded"]

        def loss_fn():
            return model(pixel_values=pixels, bool_masked_pos=tube_mask(NUM_CLIPS, generator)).loss

    else:
        packed = pack(particles_of(clips, PRUNE if "pruned" in name else None))
        encoder = create_model("small", depth=depth, num_classes=0, attention="sdpa")
        decoder = MaskedDecoder(
            DecoderConfig(
                encoder_dim=DIM, patch_dim=encoder.config.patch_dim, dim=DEC_DIM, depth=decoder_depth,
                heads=DEC_HEADS, mlp_ratio=DEC_MLP / DEC_DIM, attention="sdpa",
            )
        )  # fmt: skip
        model = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder}).train()
        plan = mask_batch(packed, MASK_RATIO, mode="tube", generator=torch.Generator().manual_seed(1))
        counts = {"encoded": len(plan.visible), "targets": len(plan.target_index)}

        def loss_fn():
            plan = mask_batch(packed, MASK_RATIO, mode="tube", generator=generator)
            features = model["encoder"].forward_features(plan.visible)  # (Nv, D)
            pred = model["decoder"](features, plan.visible, plan.queries)  # (M, t*p*q*C)
            return reconstruction_loss(
                pred, packed.values, plan.target_index, channels=3, mean=PRE.mean, std=PRE.std, norm_pix=True
            )

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    facts = {"params": sum(p.numel() for p in model.parameters()), **counts}
    return step, facts


def memory_probe(name: str, depth: int, decoder_depth: int) -> dict:
    """In a fresh process: RSS after two warm-up steps, and the peak RSS during one more step (MiB)."""
    step, _ = build(name, depth, decoder_depth)
    step()
    step()  # AdamW state allocated, allocator warm
    before, peak = rss_peak(step)
    return {"before": before, "peak": peak}


def measure_memory_subprocess(name: str, depth: int, decoder_depth: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_pretrain_speed", "--memory", name]
    cmd += ["--depth", str(depth), "--decoder-depth", str(decoder_depth)]
    out = subprocess.run(cmd, cwd=BENCH_DIR.parent, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke run)")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks of both models (small has 12)")
    parser.add_argument("--decoder-depth", type=int, default=2, help="decoder blocks of both models")
    parser.add_argument("--runs", type=int, default=None, help="timed rounds (default 6, --quick 2)")
    parser.add_argument("--memory", default=None, help=argparse.SUPPRESS)  # internal: one memory probe
    args = parser.parse_args(argv)
    if args.memory:
        print(json.dumps(memory_probe(args.memory, args.depth, args.decoder_depth)))
        return
    runs = args.runs or (2 if args.quick else 6)
    load, t0 = os.getloadavg(), time.perf_counter()
    built = {name: build(name, args.depth, args.decoder_depth) for name in VARIANTS}
    losses = {name: step() for name, (step, _) in built.items()}  # first loss: the same task for all?
    cpu: dict[str, list[float]] = {}
    times = time_interleaved({name: step for name, (step, _) in built.items()}, runs=runs, cpu=cpu)
    memory = {name: measure_memory_subprocess(name, args.depth, args.decoder_depth) for name in VARIANTS}
    after = os.getloadavg()
    ref = median(times[VARIANTS[0]])
    rows = []
    for name in VARIANTS:
        facts, sec = built[name][1], median(times[name])
        rows.append(
            [
                name,
                f"{facts['params'] / 1e6:.2f}",
                facts["encoded"],
                facts["targets"],
                f"{losses[name]:.3f}",
                f"{sec * 1e3:.0f}",
                f"{NUM_CLIPS / sec:.2f}",
                f"{ref / sec:.2f}x",
                f"{median(cpu[name]) * 1e3:.0f}",
                f"{memory[name]['before']:.0f} / {memory[name]['peak']:.0f}",
            ]
        )
    header = ["variant", "params (M)", "tokens encoded", "targets", "first loss", "median ms / step", "clips/s"]
    header += ["speed vs VideoMAE", "CPU ms / step", "RSS before / peak (MiB)"]
    spread = {n: f"{min(v) * 1e3:.0f}-{max(v) * 1e3:.0f}" for n, v in times.items()}
    body = "\n".join(
        [
            machine_markdown(),
            f"- tubelet imported from: `{os.path.dirname(tubelet.__file__)}`",
            "",
            f"Shape: encoder 384 wide, **{args.depth} blocks** (`small` has 12; reduced for time on a shared 2-core "
            f"machine), 6 heads, MLP 1536; decoder 192 wide, {args.decoder_depth} blocks, 6 heads, MLP 768 for both. "
            f"Batch {NUM_CLIPS} clips of 16x112x112, tubelet 2x16x16 (392 per clip), tube mask 0.9. "
            "Tokens encoded / targets are per step (ours: the first step's mask; a pruned particle is neither).",
            "",
            table(header, rows),
            "",
            f"{runs} interleaved rounds after one warm-up round; wall ms per step min-max: "
            + ", ".join(f"{n}: {s}" for n, s in spread.items())
            + ". CPU ms = this process's CPU seconds per step (both threads). RSS in a fresh process per variant.",
            "",
            f"Load average (1/5/15 min) {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at the start, "
            f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} at the end; run time {(time.perf_counter() - t0) / 60:.1f} "
            "min.",
        ]
    )
    print(body)
    title = "Pretraining step on CPU: tubelet vs VideoMAEForPreTraining" + (" (--quick)" if args.quick else "")
    write_section("bench_pretrain_speed", body, title=title)


if __name__ == "__main__":
    main()
