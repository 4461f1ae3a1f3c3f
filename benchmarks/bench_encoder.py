"""The encoder on the CPU: packed + pruned particles against padded dense batches, and against VideoMAE.

Clips: eight files of the sample dataset (``tubelet.data.sample.generate(clips_per_class=3, seed=0)``, fixed
cameras with one moving object on textured, noisy or flickering backgrounds), two per class in a round robin,
decoded with ``tubelet.io.decode(num_frames=16, size=(h, w))`` and cut into 2x16x16 particles with
``tubelet.particles.tokenize`` (ImageNet-style mean/std 0.45/0.225, as `Preprocessing`).

**A. Packed + pruned vs padded dense** (``small``: 384 wide, 12 blocks, 6 heads, 5 classes), clip i at size
``SIZES[i % 4]`` (112x112, 112x160, 160x112, 96x128), all with the SAME weights:

- ``padded dense``: no pruning; every clip padded with zero particles to the longest clip (B, Nmax) and run through
  the Encoder's own modules (patch embedding, rotary positions, blocks, norm, head) with one batched
  ``scaled_dot_product_attention`` per block and a key-padding mask, then a masked mean: the usual padded batch.
  Its logits are checked against the packed model on the same clips.
- ``packed``: no pruning; ``pack`` (no padding, ``cu_seqlens``) and ``Encoder.forward`` with the ``sdpa`` backend
  (the CPU default: one SDPA call per clip).
- ``packed + pruned``: the same with ``prune_threshold=4``.

**B. Against Hugging Face VideoMAE**: ``VideoMAEForVideoClassification(VideoMAEConfig(hidden_size=384,
num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, image_size=112, num_frames=16,
tubelet_size=2, patch_size=16), attn_implementation="sdpa")`` on the eight clips at 112x112 (B, T, C, H, W), next
to our ``small`` on the same clips unpruned (the same 392 tokens per clip) and pruned.

Forward is timed under ``torch.inference_mode()`` in eval mode; a train step is forward + cross-entropy +
backward + ``AdamW.step()``. Variants are timed in interleaved rounds (`common.time_interleaved`). Peak RSS of
part B is measured in a fresh process per variant (psutil, sampled every 2 ms during one call after a warm-up).

Run: ``python -m benchmarks.bench_encoder [--quick] [--depth N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import BENCH_DIR, machine_markdown, median, table, time_interleaved, work_dir, write_section
from tubelet.data.sample import CLASSES, generate
from tubelet.data.transforms import Preprocessing
from tubelet.io import decode
from tubelet.models import Encoder, create_model
from tubelet.nn.position import RotaryPositions
from tubelet.particles import pack, tokenize
from tubelet.particles.structure import PackedParticles, Particles

SIZES = ((112, 112), (112, 160), (160, 112), (96, 128))  # (H, W) of clip i % 4 in part A
NUM_CLIPS, NUM_FRAMES, PRUNE = 8, 16, 4.0
NUM_CLASSES = len(CLASSES)
PRE = Preprocessing()  # mean/std 0.45/0.225 as training uses


# --- data ------------------------------------------------------------------------------------------------


def sample_files() -> list[Path]:
    """Eight sample-data files, classes in a round robin (generated once into benchmarks/_work)."""
    root = work_dir() / "encoder_sample"
    if not (root / "metadata.jsonl").exists():
        generate(root, clips_per_class=3, seed=0)
    by_class = [sorted((root / label).iterdir()) for label in CLASSES]
    order = [files[k] for k in range(3) for files in by_class]
    return order[:NUM_CLIPS]


def load_clips(sizes: list[tuple[int, int]]):
    """Decoded clips, one per file, clip i at ``sizes[i]``; returns (clips, labels (B,))."""
    files = sample_files()
    clips = [decode(path, num_frames=NUM_FRAMES, size=size) for path, size in zip(files, sizes)]
    labels = torch.tensor([CLASSES.index(path.parent.name) for path in files])
    return clips, labels


def particles_of(clips, prune: float | None) -> list[Particles]:
    return [tokenize(clip, prune_threshold=prune, mean=PRE.mean, std=PRE.std) for clip in clips]


def pad_batch(packed: PackedParticles) -> dict[str, torch.Tensor]:
    """The packed clips as a padded batch: every clip gets zero particles up to the longest one.

    Returns:
        values (B, L, P), span (B, L), t (B, L), ti, y, x (B, L) and mask (B, L) True at real particles.
    """
    B, L = packed.num_clips, packed.max_seqlen
    slot = torch.arange(len(packed)) - packed.cu_seqlens[:-1].long()[packed.seq]  # (N,) position in its clip
    out = {}
    for name in ("values", "span", "t", "ti", "y", "x"):
        src = getattr(packed, name)
        fill = 1 if name == "span" else 0
        dst = torch.full((B, L, *src.shape[1:]), fill, dtype=src.dtype)
        dst[packed.seq, slot] = src
        out[name] = dst
    out["mask"] = torch.zeros(B, L, dtype=torch.bool)
    out["mask"][packed.seq, slot] = True
    return out


def videomae_pixels(clips) -> torch.Tensor:
    """(B, T, C, H, W) normalized float pixels, as VideoMAE takes them."""
    frames = torch.stack([torch.from_numpy(c.frames) for c in clips]).float() / 255.0  # (B, T, H, W, C)
    mean, std = torch.tensor(PRE.mean), torch.tensor(PRE.std)
    return ((frames - mean) / std).permute(0, 1, 4, 2, 3).contiguous()


# --- the padded dense baseline: the Encoder's own modules over (B, L) with a key-padding mask -------------


def padded_forward(model: Encoder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, num_classes) logits of `model` on a padded batch (`pad_batch`); masked keys, masked mean pooling."""
    mask = batch["mask"]  # (B, L)
    B, L = mask.shape
    x = model.patch_embed(batch["values"]) + model.span_embed(batch["span"])  # (B, L, D)
    flat = {k: batch[k].flatten() for k in ("t", "ti", "y", "x")}
    angles = model.rope.angles(flat["t"], flat["ti"], flat["y"], flat["x"])  # (B*L, hd/2)
    keys = mask[:, None, None, :]  # (B, 1, 1, L): every query sees the real particles of its clip
    for block in model.blocks:
        attn = block.attn
        q, k, v = attn.qkv(block.norm1(x)).unflatten(2, (3, attn.heads, attn.head_dim)).unbind(2)  # (B, L, h, d)
        q, k = (RotaryPositions.rotate(z.flatten(0, 1), angles).unflatten(0, (B, L)) for z in (q, k))
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)  # (B, h, L, d)
        x = x + attn.proj(out.transpose(1, 2).flatten(2))
        x = x + block.mlp(block.norm2(x))
    x = model.norm(x)
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, D) mean over real particles
    return model.forward_head(pooled)


# --- timing helpers -----------------------------------------------------------------------------------------


def forward_fn(model, call):
    model = model.eval()

    def run():
        with torch.inference_mode():
            call(model)

    return run


def train_fn(model, call, labels):
    model = model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run():
        loss = F.cross_entropy(call(model), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def rate_rows(times: dict[str, list[float]], reference: str, clips: int) -> dict[str, tuple[str, str]]:
    """name -> ("clips/s median (best)", "speed-up vs `reference` from medians (from bests)")."""
    med = {name: median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    return {
        name: (
            f"{clips / med[name]:.2f} ({clips / best[name]:.2f})",
            f"{med[reference] / med[name]:.2f}x ({best[reference] / best[name]:.2f}x)",
        )
        for name in times
    }


def train_rounds(runs: int) -> int:
    return max(2, runs - 2)


def rss_peak(fn) -> tuple[float, float]:
    """(RSS before, peak RSS during) one call of `fn`, MiB, sampled every 2 ms by a thread."""
    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    peak, done = [before], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return before / 2**20, peak[0] / 2**20


# --- part A -------------------------------------------------------------------------------------------------


def part_a(depth: int, runs: int) -> dict:
    clips, labels = load_clips([SIZES[i % len(SIZES)] for i in range(NUM_CLIPS)])
    full = pack(particles_of(clips, None))
    pruned = pack(particles_of(clips, PRUNE))
    padded = pad_batch(full)
    torch.manual_seed(0)
    model = create_model("small", depth=depth, num_classes=NUM_CLASSES, attention="sdpa")
    with torch.inference_mode():
        check = (padded_forward(model.eval(), padded) - model(full)).abs().max().item()
    calls = {
        "padded dense (no pruning, key-padding mask)": lambda m: padded_forward(m, padded),
        "packed (no pruning)": lambda m: m(full),
        "packed + pruned (threshold 4)": lambda m: m(pruned),
    }
    forward = time_interleaved({n: forward_fn(model, c) for n, c in calls.items()}, runs=runs)
    train = time_interleaved(
        {n: train_fn(copy.deepcopy(model), c, labels) for n, c in calls.items()}, runs=train_rounds(runs)
    )
    tokens = {
        "padded dense (no pruning, key-padding mask)": padded["mask"].numel(),
        "packed (no pruning)": len(full),
        "packed + pruned (threshold 4)": len(pruned),
    }
    per_clip = [(c.frames.shape[1], c.frames.shape[2]) for c in clips]
    return {
        "forward": forward,
        "train": train,
        "tokens": tokens,
        "real": len(full),
        "kept": len(pruned),
        "max_seqlen": full.max_seqlen,
        "per_clip": list(zip(per_clip, full.lengths.tolist(), pruned.lengths.tolist())),
        "check": check,
        "params": sum(p.numel() for p in model.parameters()),
        "depth": depth,
    }


# --- part B -------------------------------------------------------------------------------------------------

VARIANTS_B = ("VideoMAE (transformers, SDPA)", "tubelet packed (no pruning)", "tubelet packed + pruned (threshold 4)")


def build_b(depth: int) -> tuple[dict, torch.Tensor, dict]:
    """Models and inputs of part B: name -> (model, call); labels; facts for the report."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    clips, labels = load_clips([(112, 112)] * NUM_CLIPS)
    full = pack(particles_of(clips, None))
    pruned = pack(particles_of(clips, PRUNE))
    pixels = videomae_pixels(clips)
    config = VideoMAEConfig(
        hidden_size=384,
        num_hidden_layers=depth,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=112,
        num_frames=NUM_FRAMES,
        tubelet_size=2,
        patch_size=16,
        num_labels=NUM_CLASSES,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    hf = VideoMAEForVideoClassification(config)
    ours = create_model("small", depth=depth, num_classes=NUM_CLASSES, attention="sdpa")
    models = {
        VARIANTS_B[0]: (hf, lambda m: m(pixel_values=pixels).logits),
        VARIANTS_B[1]: (ours, lambda m: m(full)),
        VARIANTS_B[2]: (ours, lambda m: m(pruned)),
    }
    facts = {
        "tokens": {
            VARIANTS_B[0]: NUM_CLIPS * (NUM_FRAMES // 2) * 7 * 7,
            VARIANTS_B[1]: len(full),
            VARIANTS_B[2]: len(pruned),
        },
        "params": {
            VARIANTS_B[0]: sum(p.numel() for p in hf.parameters()),
            VARIANTS_B[1]: sum(p.numel() for p in ours.parameters()),
        },
        "attn": hf.config._attn_implementation,
    }
    facts["params"][VARIANTS_B[2]] = facts["params"][VARIANTS_B[1]]
    return models, labels, facts


def part_b(depth: int, runs: int) -> dict:
    models, labels, facts = build_b(depth)
    forward = time_interleaved({n: forward_fn(m, c) for n, (m, c) in models.items()}, runs=runs)
    train = time_interleaved(
        {n: train_fn(copy.deepcopy(m), c, labels) for n, (m, c) in models.items()}, runs=train_rounds(runs)
    )
    memory = {name: measure_memory_subprocess(name, depth) for name in models}
    return {"forward": forward, "train": train, "memory": memory, **facts}


def measure_memory_subprocess(name: str, depth: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_encoder", "--memory", name, "--depth", str(depth)]
    out = subprocess.run(cmd, cwd=BENCH_DIR.parent, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_probe(name: str, depth: int) -> dict:
    """In a fresh process: RSS after set-up, and peak RSS in one forward and one train step (after warm-ups)."""
    models, labels, _ = build_b(depth)
    model, call = models[name]
    fwd = forward_fn(model, call)
    fwd()
    before, fwd_peak = rss_peak(fwd)
    step = train_fn(model, call, labels)
    step()  # allocates the AdamW state
    before_train, train_peak = rss_peak(step)
    return {"setup": before, "forward_peak": fwd_peak, "train_before": before_train, "train_peak": train_peak}


# --- report -------------------------------------------------------------------------------------------------


def report(a: dict, b: dict, runs: int, quick: bool) -> str:
    depth_note = "full depth (12 blocks)" if a["depth"] == 12 else f"**depth reduced to {a['depth']} blocks**"
    ref = "padded dense (no pruning, key-padding mask)"
    fwd, trn = rate_rows(a["forward"], ref, NUM_CLIPS), rate_rows(a["train"], ref, NUM_CLIPS)
    rows_a = [
        [
            name,
            a["tokens"][name],
            f"{a['tokens'][name] / a['real']:.3f}",
            fwd[name][0],
            fwd[name][1],
            trn[name][0],
            trn[name][1],
        ]
        for name in a["tokens"]
    ]
    sizes = ", ".join(f"{h}x{w}: {n} -> {k}" for (h, w), n, k in a["per_clip"])
    ref_b = VARIANTS_B[0]
    fwd_b, trn_b = rate_rows(b["forward"], ref_b, NUM_CLIPS), rate_rows(b["train"], ref_b, NUM_CLIPS)
    rows_b = []
    for name in VARIANTS_B:
        mem = b["memory"][name]
        rows_b.append(
            [
                name,
                f"{b['params'][name] / 1e6:.2f}M",
                b["tokens"][name],
                fwd_b[name][0],
                fwd_b[name][1],
                trn_b[name][0],
                trn_b[name][1],
                f"{mem['setup']:.0f}",
                f"{mem['forward_peak']:.0f} (+{mem['forward_peak'] - mem['setup']:.0f})",
                f"{mem['train_peak']:.0f} (+{mem['train_peak'] - mem['train_before']:.0f})",
            ]
        )
    train_runs = train_rounds(runs)
    header = ["variant", "tokens / batch", "vs unpadded unpruned", "fwd clips/s", "fwd speed-up"]
    header += ["train clips/s", "train speed-up"]  # each cell: median (best)
    return "\n".join(
        [
            machine_markdown(),
            "",
            f"Batch: {NUM_CLIPS} clips of {NUM_FRAMES} frames from the sample data (fixed cameras, one moving object; "
            "`decode(num_frames=16, size=(h, w))`), tubelet 2x16x16, 5 classes. Median of "
            f"{runs} interleaved rounds for forward (`inference_mode`, eval) and {train_runs} for a train step "
            "(forward + cross-entropy + backward + AdamW), after one warm-up round. Each cell gives the median and, in "
            "brackets, the best round: clips/s = 8 / seconds, speed-up = the reference's seconds / the variant's. "
            f"torch on CPU with {torch.get_num_threads()} threads. The machine was shared with other jobs "
            "(load averages below): absolute rates are pessimistic and noisy, and parts A and B ran minutes apart, "
            "so compare rates within a table only; the ratios come from the same rounds.",
            "",
            f"### A. Packed + pruned vs padded dense, `small` ({a['params'] / 1e6:.1f}M parameters), {depth_note}",
            "",
            f"Clip sizes (H x W: particles unpruned -> pruned): {sizes}. Unpruned {a['real']} particles, longest clip "
            f"{a['max_seqlen']}; pruning keeps {a['kept']} ({a['kept'] / a['real']:.3f}). The padded baseline runs "
            "the same weights over (8, Nmax) with a key-padding mask in one batched SDPA per block; its logits match "
            f"the packed model's on the real particles to {a['check']:.1e} (max abs difference).",
            "",
            table(header, rows_a),
            "",
            "Speed-ups are against the padded dense batch (higher is faster).",
            "",
            f"### B. tubelet `small` vs Hugging Face VideoMAE at the same shape, {depth_note}",
            "",
            "VideoMAE: `VideoMAEForVideoClassification`, hidden 384, 6 heads, MLP 1536, 16 frames of 112x112, tubelet "
            f"2x16x16, mean pooling, attention implementation `{b['attn']}`. Both get the same 8 clips at 112x112; "
            "ours unpruned sees the same 392 tokens per clip, the pruned row the same clips with threshold 4. "
            "Peak RSS: one fresh process per variant builds both models and all inputs (the same set-up for every "
            "row) and runs that variant's forward once; then RSS before and the peak during a second forward "
            "(psutil every 2 ms), then a warm-up train step (allocating the AdamW state) and the peak during a second "
            "step. In brackets the rise during the measured call; forward rises little because the warm-up call "
            "already grew the heap, so the train peak is the number to compare.",
            "",
            table(
                [
                    "variant",
                    "params",
                    "tokens / batch",
                    "fwd clips/s",
                    "fwd vs VideoMAE",
                    "train clips/s",
                    "train vs VideoMAE",
                    "RSS before fwd MiB",
                    "fwd peak MiB",
                    "train peak MiB",
                ],
                rows_b,
            ),
        ]
        + (["", "(--quick: fewer rounds; not for quoting.)"] if quick else [])
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 blocks, 2 rounds (a smoke run)")
    parser.add_argument("--depth", type=int, default=None, help="transformer blocks (default 12, --quick 2)")
    parser.add_argument("--memory", default=None, help=argparse.SUPPRESS)  # internal: one part-B memory probe
    args = parser.parse_args(argv)
    depth = args.depth or (2 if args.quick else 12)
    if args.memory:
        print(json.dumps(memory_probe(args.memory, depth)))
        return
    runs = 2 if args.quick else 7
    load = os.getloadavg()
    t0 = time.perf_counter()
    a = part_a(depth, runs)
    b = part_b(depth, runs)
    body = report(a, b, runs, args.quick)
    after = os.getloadavg()
    body += (
        f"\n\nLoad average (1/5/15 min) {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at the start, "
        f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} at the end; run time {(time.perf_counter() - t0) / 60:.1f} min."
    )
    print(body)
    title = "Encoder on CPU: packed + pruned vs padded, and vs VideoMAE" + (" (--quick)" if args.quick else "")
    write_section("bench_encoder", body, title=title)


if __name__ == "__main__":
    main()
