"""Tokenize + static pruning throughput, and how much pruning keeps on a static camera versus a busy scene.

Two 4 s 320x240 30 fps clips are written as real H.264 files (``tubelet.io.write_video``) into
``benchmarks/_work/``, decoded once with ``tubelet.io.decode``, and then ``tubelet.particles.tokenize`` is timed
on the decoded `Clip` (decode time is reported separately, not included):

- ``static``: a fixed textured background with mild sensor noise (Gaussian, sigma 3 levels, fresh every frame)
  and one small box moving across it: a fixed camera on a quiet scene.
- ``busy``: the whole frame pans (a texture moving 3 px per frame) with the same noise: a moving camera.

Run: ``python -m benchmarks.bench_tokenize [--quick]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import machine_markdown, median, table, time_interleaved, work_dir, write_section
from tubelet.io import decode, write_video
from tubelet.particles import tokenize

HEIGHT, WIDTH, FPS, SECONDS = 240, 320, 30, 4
TUBELET = (2, 16, 16)
THRESHOLDS = (0, 2, 4, 8)
NOISE_SIGMA = 3.0
PAN = 3  # pixels per frame the busy clip's texture moves


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 texture in 0-255: smooth blobs plus finer grain."""
    coarse = Image.fromarray(rng.integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8))
    fine = Image.fromarray(rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8))
    return (
        np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32) * 0.75
        + np.asarray(fine.resize((width, height), Image.BILINEAR), np.float32) * 0.25
    )


def make_frames(kind: str) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of the `static` or `busy` scene."""
    rng = np.random.default_rng(1 if kind == "static" else 2)
    frames_n = FPS * SECONDS
    if kind == "static":
        background = texture(rng, HEIGHT, WIDTH)
        frames = np.repeat(background[None], frames_n, axis=0)  # (T, H, W, 3)
        for i in range(frames_n):  # a 24 px box crossing the frame left to right
            x = int(i * (WIDTH - 24) / (frames_n - 1))
            frames[i, 100:124, x : x + 24] = (230, 40, 40)
    elif kind == "busy":
        wide = texture(rng, HEIGHT, WIDTH + PAN * frames_n)
        frames = np.stack([wide[:, i * PAN : i * PAN + WIDTH] for i in range(frames_n)])  # (T, H, W, 3)
    else:
        raise ValueError(kind)
    frames = frames + rng.normal(0.0, NOISE_SIGMA, frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).round().astype(np.uint8)


def make_clip_file(kind: str) -> tuple[Path, np.ndarray]:
    frames = make_frames(kind)
    path = work_dir() / f"tokenize_{kind}_{WIDTH}x{HEIGHT}_{FPS}fps_{SECONDS}s.mp4"
    if not path.exists():
        write_video(path, frames, fps=FPS)
    return path, frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 15

    rows_kept, rows_speed, decode_rows = [], [], []
    for kind in ("static", "busy"):
        path, raw = make_clip_file(kind)
        clip = decode(path)
        dec_cpu: dict[str, list[float]] = {}
        t_decode = median(time_interleaved({"decode": lambda p=path: decode(p)}, runs=runs, cpu=dec_cpu)["decode"])
        decode_rows.append(
            [
                kind,
                f"{len(clip)} frames {clip.frames.shape[2]}x{clip.frames.shape[1]}",
                f"{t_decode * 1e3:.1f}",
                f"{len(clip) / t_decode:.0f}",
                f"{median(dec_cpu['decode']) * 1e3:.1f}",
                f"{path.stat().st_size / 1e3:.0f} kB",
            ]
        )
        fns = {thr: (lambda thr=thr, c=clip: tokenize(c, tubelet=TUBELET, prune_threshold=thr)) for thr in THRESHOLDS}
        cpu: dict[int, list[float]] = {}
        timings = time_interleaved(fns, runs=runs, cpu=cpu)
        for thr in THRESHOLDS:
            particles = tokenize(clip, tubelet=TUBELET, prune_threshold=thr)
            raw_kept = len(tokenize(raw, timestamps=clip.timestamps, tubelet=TUBELET, prune_threshold=thr))
            total = particles.total
            assert int(particles.span.sum()) == total, "spans must cover the whole grid"
            sec = median(timings[thr])
            rows_kept.append(
                [kind, thr, f"{len(particles)} / {total}", f"{len(particles) / total:.3f}", f"{raw_kept / total:.3f}"]
            )
            rows_speed.append(
                [
                    kind,
                    thr,
                    f"{sec * 1e3:.1f}",
                    f"{1 / sec:.1f}",
                    f"{total / sec / 1e3:.0f}k",
                    f"{len(particles) / sec / 1e3:.0f}k",
                    f"{median(cpu[thr]) * 1e3:.1f}",
                ]
            )

    grid = tokenize(clip, tubelet=TUBELET).grid
    body = "\n".join(
        [
            machine_markdown(),
            "",
            f"Clips: {SECONDS} s, {WIDTH}x{HEIGHT}, {FPS} fps, H.264 (`write_video` defaults: crf 23, veryfast), "
            f"sensor noise sigma {NOISE_SIGMA:g} levels; tubelet {'x'.join(map(str, TUBELET))} gives a "
            f"{'x'.join(map(str, grid))} grid. Median of {runs} runs after one warm-up round, thresholds interleaved; "
            f"torch on CPU with {torch.get_num_threads()} threads.",
            "",
            "**Kept fraction** (particles after pruning / tubelets in the grid). The last column prunes the frames as "
            "generated, before encoding: H.264 smooths sensor noise in static areas, so the decoded file prunes more "
            "easily than the raw frames.",
            "",
            table(
                [
                    "clip",
                    "threshold (levels)",
                    "kept / grid",
                    "kept fraction (decoded file)",
                    "kept fraction (raw frames)",
                ],
                rows_kept,
            ),
            "",
            "**Tokenize + prune speed** on the decoded clip (decode excluded). tubelets/s counts the full grid the "
            "call processes; particles/s counts those it keeps. Rates are from the wall-clock median; CPU ms is this "
            "process's CPU time summed over torch's threads (less inflated than wall time when the machine is busy).",
            "",
            table(
                [
                    "clip",
                    "threshold",
                    "wall ms / clip",
                    "clips / s",
                    "tubelets / s",
                    "kept particles / s",
                    "CPU ms / clip",
                ],
                rows_speed,
            ),
            "",
            "**Decode** (`tubelet.io.decode(path)`, every frame, single thread), for scale:",
            "",
            table(["clip", "frames", "wall ms / clip", "frames / s", "CPU ms / clip", "file size"], decode_rows),
        ]
    )
    print(body)
    title = "Tokenize and static pruning" + (" (--quick)" if args.quick else "")
    write_section("bench_tokenize", body, title=title)


if __name__ == "__main__":
    main()
