"""Memory soak: thousands of random-window `tubelet.io.decode` calls must not grow the process.

A data loader decodes short random windows from many files for hours; a leak of a few kB per call (an
unclosed container, a cached frame, an ever-growing index cache) ends the run. This decodes 8 frames from a
random 1 s window of one of three small files (H.264 in .mp4, H.264 in .mkv, VP9 in .webm) a few thousand
times, records the resident set size (psutil) every 100 calls, and plots it to ``benchmarks/memory_rss.png``.
The same windows are also read by a plain PyAV loop, each loop in a fresh interpreter, as the floor that
FFmpeg and the allocator set: growth that both loops show is not tubelet's.

Run: ``python -m benchmarks.bench_memory [--quick]``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import psutil

from benchmarks.common import BENCH_DIR, machine_markdown, table, work_dir, write_section
from tubelet.io import decode, probe, sample_times, write_video

HEIGHT, WIDTH, FPS, SECONDS, GOP = 240, 320, 30, 10, 60
WINDOW = 1.0  # seconds per sampled window
NUM_FRAMES = 8
EVERY = 100  # calls between RSS samples
WARMUP = 200  # calls before the reference RSS is taken (allocator pools, codec tables, the index cache fill up)
PLOT = BENCH_DIR / "memory_rss.png"


def make_files() -> list[Path]:
    """Three small test files in different containers and codecs (cached in benchmarks/_work/)."""
    rng = np.random.default_rng(3)
    frames_n = FPS * SECONDS
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    paths = []
    for ext in (".mp4", ".mkv", ".webm"):
        path = work_dir() / f"memory_{WIDTH}x{HEIGHT}_{SECONDS}s{ext}"
        paths.append(path)
        if path.exists():
            continue
        phase = rng.uniform(0, 6.28, 3)
        frames = np.empty((frames_n, HEIGHT, WIDTH, 3), np.uint8)
        for i in range(frames_n):  # drifting colour waves and a moving box
            for c in range(3):
                frames[i, ..., c] = 127 + 100 * np.sin(xx / 23 + yy / 31 + i / 9 + phase[c])
            x = (5 * i) % (WIDTH - 30)
            frames[i, 100:130, x : x + 30] = 255
        write_video(path, frames, fps=FPS, gop=GOP)
    return paths


def pyav_window(path: Path, start: float) -> np.ndarray:
    """The reference loop: plain PyAV, one seek, decode forward to `NUM_FRAMES` targets of the window."""
    targets = sample_times(start, start + WINDOW, num_frames=NUM_FRAMES)
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            while len(out) < NUM_FRAMES and frame.time >= targets[len(out)]:
                out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == NUM_FRAMES:
                break
    return np.stack(out)


def _malloc_trim() -> bool:
    """Hand freed heap pages back to the OS (glibc only); False where unavailable."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def soak(paths: list[Path], calls: int, loop: str) -> dict:
    """RSS of `calls` random-window decodes by `loop` ("tubelet" or "pyav"), sampled every `EVERY` calls.

    Returns:
        at: (S,) call counts of the samples; rss: (S,) bytes; per_call, cpu_per_call: wall and CPU seconds;
        trimmed: RSS in bytes after `gc.collect()` and `malloc_trim(0)` at the end (None off glibc).
    """
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    durations = [probe(p).duration_s for p in paths]
    at, rss = [0], [proc.memory_info().rss]
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(1, calls + 1):
        k = int(rng.integers(len(paths)))
        start = float(rng.uniform(0, durations[k] - WINDOW))
        if loop == "tubelet":
            frames = decode(paths[k], start=start, end=start + WINDOW, num_frames=NUM_FRAMES).frames
        else:
            frames = pyav_window(paths[k], start)
        assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
        if i % EVERY == 0:
            at.append(i)
            rss.append(proc.memory_info().rss)
    per_call = (time.perf_counter() - t0) / calls
    cpu_per_call = (time.process_time() - c0) / calls
    gc.collect()
    trimmed = proc.memory_info().rss if _malloc_trim() else None
    return {
        "at": np.array(at),
        "rss": np.array(rss, dtype=np.float64),
        "per_call": per_call,
        "cpu_per_call": cpu_per_call,
        "trimmed": trimmed,
    }


def soak_fresh(paths: list[Path], calls: int, loop: str) -> dict:
    """`soak` in a freshly spawned interpreter, so each loop starts from the same clean heap."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(soak, paths, calls, loop).result()


def plot(results: dict[str, dict], warmup: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    labels = {"tubelet": "tubelet.io.decode", "pyav": "plain PyAV loop (reference)"}
    for loop, res in results.items():
        ax.plot(res["at"], res["rss"] / 2**20, marker="o", markersize=2.5, label=labels[loop])
    ax.axvline(warmup, color="grey", linestyle="--", linewidth=1, label=f"end of warm-up ({warmup} calls)")
    ax.set_xlabel("decode calls")
    ax.set_ylabel("RSS (MiB)")
    calls = int(next(iter(results.values()))["at"][-1])
    ax.set_title(f"RSS during {calls} random-window decodes ({NUM_FRAMES} frames each)")
    values = np.concatenate([res["rss"] for res in results.values()]) / 2**20
    lo, hi = values.min(), values.max()
    ax.set_ylim(lo - max(5, 0.1 * (hi - lo)), hi + max(5, 0.1 * (hi - lo)))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summarize(res: dict, warmup: int) -> list[str]:
    """One table column: the RSS figures of one soak, in MiB."""
    at, mib = res["at"], res["rss"] / 2**20
    ref = int(np.searchsorted(at, warmup))
    after = mib[ref:]
    half = len(at) // 2

    def trend(lo: int) -> str:  # least-squares slope, MiB per 1000 calls
        return f"{np.polyfit(at[lo:], mib[lo:], 1)[0] * 1000:+.2f}" if len(at) - lo > 2 else "n/a"

    trimmed = "n/a" if res["trimmed"] is None else f"{res['trimmed'] / 2**20:.1f}"
    return [
        f"{mib[0]:.1f}",
        f"{after[0]:.1f}",
        f"{after[-1]:.1f}",
        f"{after[-1] - after[0]:+.2f}",
        f"{(after - after[0]).max():+.2f}",
        trend(ref),
        trend(half),
        trimmed,
        f"{res['per_call'] * 1e3:.1f}",
        f"{res['cpu_per_call'] * 1e3:.1f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 calls instead of 3000")
    args = parser.parse_args(argv)
    calls = 300 if args.quick else 3000
    warmup = min(WARMUP, calls // 3 // EVERY * EVERY) or EVERY

    paths = make_files()
    results = {loop: soak_fresh(paths, calls, loop) for loop in ("tubelet", "pyav")}
    plot(results, warmup, PLOT)

    names = [
        "RSS before the first decode call",
        f"RSS after warm-up ({warmup} calls)",
        f"RSS at the end ({calls} calls)",
        "end minus after-warm-up",
        "largest RSS above after-warm-up",
        "trend after warm-up (MiB per 1000 calls, least squares)",
        f"trend over the second half (calls {calls // 2}-{calls})",
        "RSS at the end after gc.collect() + malloc_trim(0)",
        "wall ms per call",
        "CPU ms per call",
    ]
    columns = {loop: summarize(res, warmup) for loop, res in results.items()}
    rows = [[name, columns["tubelet"][i], columns["pyav"][i]] for i, name in enumerate(names)]
    body = "\n".join(
        [
            machine_markdown(),
            "",
            f"{calls} calls of `decode(path, start=s, end=s + {WINDOW:g}, num_frames={NUM_FRAMES})`, s uniform over "
            f"each file, cycling at random over three {SECONDS} s {WIDTH}x{HEIGHT} {FPS} fps files "
            f"({', '.join(p.suffix + ' ' + probe(p).codec for p in paths)}; keyframe every {GOP} frames). RSS from "
            f"psutil every {EVERY} calls; no explicit `gc.collect()` during the loop. For reference, the same windows "
            "are read by a plain PyAV loop (open, one seek, decode forward to the 8 frames, close). Each loop runs "
            "in its own freshly spawned interpreter. Figures in MiB. Growth that both columns show comes from PyAV, "
            "FFmpeg or the allocator, not from tubelet; the RSS after `malloc_trim` separates live memory from "
            "freed heap the allocator kept.",
            "",
            table(["measure", "tubelet", "plain PyAV"], rows),
            "",
            f"![RSS vs calls]({PLOT.name})",
        ]
    )
    print(body)
    title = "Memory soak: repeated random-window decode" + (" (--quick)" if args.quick else "")
    write_section("bench_memory", body, title=title)


if __name__ == "__main__":
    main()
