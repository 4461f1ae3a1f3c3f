"""Data at scale: loading a manifest of a million windows, with and without the probe index, and decode throughput.

Writes ~1000 small H.264 files and a CSV manifest of 1,000,000 rows (``path,label,start,end`` windows over those
files), then measures, each in a fresh interpreter so peak RSS is the phase's own:

- ``load_dataset`` without an index (every distinct file probed), and the code before the probe index (it probed
  every *row*, read from git) on 10k rows, since a million probes would take hours;
- ``tubelet scan --index`` writing the index, and again with nothing changed;
- ``load_dataset`` with the index: time, RSS growth, and what the same rows would cost as lists of objects;
- decode throughput of a `ClipDataset` through `iterate_batches` with 1 and 2 DataLoader workers.

Run: ``python -m benchmarks.bench_manifest [--quick]`` (quick: 200 files, 100k rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BENCH_DIR, machine_markdown, table, work_dir, write_section

HEIGHT, WIDTH, FPS, SECONDS = 48, 64, 24, 3.0
WINDOW = 1.0  # seconds per manifest row
STRIDE = 0.002  # seconds between the starts of a file's windows: up to 1000 distinct windows per file
LABELS = ("left", "right", "still", "grow")
OLD_COMMIT = "d24b362"  # the last commit whose load_dataset probed every row, without an index


def make_videos(count: int) -> list[Path]:
    """`count` small H.264 files (cached in benchmarks/_work/manifest/): a box moving over a gradient."""
    from tubelet.io import write_video

    folder = work_dir() / "manifest" / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames_n = int(SECONDS * FPS)
    paths = []
    for i in range(count):
        path = folder / f"v{i:05d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        frames = np.empty((frames_n, HEIGHT, WIDTH, 3), np.uint8)
        frames[:] = ((xx * 3 + yy * 2 + i * 7) % 256).astype(np.uint8)[None, ..., None]
        for t in range(frames_n):
            x = (t * (1 + i % 4)) % (WIDTH - 12)
            frames[t, 18:30, x : x + 12] = 255
        write_video(path, frames, fps=FPS)
    return paths


def make_manifest(videos: list[Path], rows: int) -> Path:
    """A CSV of `rows` distinct one-second windows, cycling through the files; a file's k-th starts at k * STRIDE."""
    path = work_dir() / "manifest" / f"windows_{len(videos)}files_{rows}.csv"
    if path.exists():
        return path
    n = len(videos)
    names = [f"videos/{v.name}" for v in videos]
    with open(path.with_suffix(".tmp"), "w") as f:
        f.write("path,label,start,end\n")
        for r in range(rows):
            v, k = r % n, r // n
            start = round(k * STRIDE % (SECONDS - WINDOW), 3)
            f.write(f"{names[v]},{LABELS[v % len(LABELS)]},{start:g},{start + WINDOW:g}\n")
    os.replace(path.with_suffix(".tmp"), path)
    return path


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- phases, each run in its own interpreter -----------------------------------------------------------------------


def phase_load(manifest: str, index: str | None) -> dict:
    import tubelet.data.probe_index as probe_index
    from tubelet.data import load_dataset

    calls = []
    real = probe_index.probe
    probe_index.probe = lambda p: calls.append(p) or real(p)
    before = rss_mib()
    t0 = time.perf_counter()
    data = load_dataset(manifest, index=index, workers=os.cpu_count() or 2)
    seconds = time.perf_counter() - t0
    after = rss_mib()
    out = {"seconds": seconds, "rss_before": before, "rss_growth": after - before, "peak": peak_mib()}
    out.update(rows=len(data), probed=len(calls), reused=data.reused, skipped=len(data.skipped))
    out["columns_mib"] = (
        sum(v.nbytes for s in (data.samples, data.infos) for v in vars(s).values() if hasattr(v, "nbytes")) / 2**20
    )
    # what the same rows cost as the lists of objects load_dataset used to return
    t0 = time.perf_counter()
    as_lists = (list(data.samples), list(data.infos))
    out["lists_seconds"] = time.perf_counter() - t0
    out["lists_growth"] = rss_mib() - after
    del as_lists
    return out


def phase_old_load(manifest: str) -> dict:
    """The load_dataset of `OLD_COMMIT` (a probe per row, lists of objects), read from git."""
    import importlib.util

    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:src/tubelet/data/manifest.py"], cwd=BENCH_DIR.parent, capture_output=True
    ).stdout
    spec = importlib.util.spec_from_loader("_old_manifest", loader=None)
    old = importlib.util.module_from_spec(spec)
    sys.modules["_old_manifest"] = old
    exec(compile(source, "_old_manifest", "exec"), old.__dict__)
    before = rss_mib()
    t0 = time.perf_counter()
    data = old.load_dataset(manifest, workers=os.cpu_count() or 2)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_growth": rss_mib() - before, "peak": peak_mib(), "rows": len(data)}


def phase_scan(manifest: str, index: str) -> dict:
    from tubelet.recipes.describe import scan_report

    t0 = time.perf_counter()
    report = scan_report(manifest, index=index, workers=os.cpu_count() or 2)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak": peak_mib(), **{k: report[k] for k in ("clips", "probed", "reused")}}


def phase_decode(manifest: str, index: str, workers: int, clips: int) -> dict:
    from tubelet.data import load_dataset
    from tubelet.data.dataset import ClipDataset
    from tubelet.data.loader import iterate_batches
    from tubelet.data.transforms import Preprocessing

    data = load_dataset(manifest, index=index)
    pre = Preprocessing(size=HEIGHT, max_long_side=WIDTH, sample_fps=8.0, clip_seconds=WINDOW)
    dataset = ClipDataset(data, pre)
    rows = np.random.default_rng(0).choice(len(data), clips, replace=False).tolist()  # spread over the files
    batches = [rows[i : i + 8] for i in range(0, clips, 8)]
    next(iterate_batches(dataset, batches[:1], workers=workers))  # start-up, codec tables
    t0 = time.perf_counter()
    done = failed = 0
    for batch in iterate_batches(dataset, batches, workers=workers):
        done += len(batch.indices)
        failed += len(batch.failed)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "clips": done, "failed": failed, "clips_per_s": done / seconds}


PHASES = {"load": phase_load, "old_load": phase_old_load, "scan": phase_scan, "decode": phase_decode}


def run_phase(name: str, **kwargs) -> dict:
    """Run one phase in a fresh interpreter; its result is the last line it prints (JSON)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_manifest", "--phase", name, json.dumps(kwargs)]
    print(f"  {name} {kwargs}", flush=True)
    out = subprocess.run(cmd, cwd=BENCH_DIR.parent, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"    { ({k: v for k, v in result.items() if not isinstance(v, dict | list)}) }", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 files and 100k rows instead of 1000 and 1M")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("kwargs", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](**json.loads(args.kwargs))))
        return
    files, rows, small, clips = (200, 100_000, 10_000, 96) if args.quick else (1000, 1_000_000, 10_000, 400)

    t0 = time.perf_counter()
    videos = make_videos(files)
    made = time.perf_counter() - t0
    big, few = str(make_manifest(videos, rows)), str(make_manifest(videos, small))
    index = Path(big + ".probe.sqlite")
    index.unlink(missing_ok=True)
    print(f"{files} files ({made:.0f} s), manifests of {rows} and {small} rows", flush=True)

    old = run_phase("old_load", manifest=few)
    small_plain = run_phase("load", manifest=few, index=None)
    plain = run_phase("load", manifest=big, index=None)
    scan = run_phase("scan", manifest=big, index=str(index))
    rescan = run_phase("scan", manifest=big, index=str(index))
    indexed = run_phase("load", manifest=big, index=str(index))
    decode = {w: run_phase("decode", manifest=few, index=str(index), workers=w, clips=clips) for w in (1, 2)}

    mb = index.stat().st_size / 2**20
    old_minutes = old["seconds"] * rows / small / 60
    load_rows = [
        [f"before the index ({OLD_COMMIT}): a probe per row", f"{small:,}", old["rows"], small, "-"]
        + [f"{old['seconds']:.1f}", f"{old['rss_growth']:.0f}", f"{old['peak']:.0f}"],
    ]
    for label, r, n in (("no index", small_plain, small), ("no index", plain, rows), ("with index", indexed, rows)):
        load_rows.append(
            [label, f"{n:,}", r["rows"], r["probed"], r["reused"]]
            + [f"{r['seconds']:.1f}", f"{r['rss_growth']:.0f}", f"{r['peak']:.0f}"]
        )
    body = "\n".join(
        [
            machine_markdown(),
            "",
            f"{files} H.264 files ({WIDTH}x{HEIGHT}, {FPS} fps, {SECONDS:g} s, written by `write_video`); CSV "
            f"manifests of distinct `path,label,start,end` rows, {WINDOW:g} s windows cycling through the files, "
            f"a file's windows {STRIDE * 1e3:g} ms apart (so {rows // files:,} rows per file in the big one). "
            f"Each measurement runs in a fresh interpreter; probing uses {os.cpu_count()} threads. RSS growth is "
            "measured around the call (the interpreter with tubelet imported is the baseline); peak is the "
            "process's maximum RSS.",
            "",
            "**`load_dataset`**",
            "",
            table(
                [
                    "loader",
                    "rows",
                    "usable rows",
                    "files probed",
                    "from index",
                    "seconds",
                    "RSS growth MiB",
                    "peak MiB",
                ],
                load_rows,
            ),
            "",
            f"The code before the index probed every row, so {rows:,} rows would take ~{old_minutes:.0f} min at "
            f"the measured rate; it is run on {small:,} rows only. Without an index every distinct file is "
            "now probed once. Holding the loaded rows as lists of `Sample` and `VideoInfo` objects (as before) "
            f"would add {indexed['lists_growth']:.0f} MiB at {rows:,} rows "
            f"({indexed['lists_seconds']:.1f} s to build them); the compact columns' numpy arrays hold "
            f"{indexed['columns_mib']:.0f} MiB, and the rest of the {indexed['rss_growth']:.0f} MiB RSS growth is "
            "memory the CSV parse freed but the allocator kept. Peak RSS is the parse: one `Sample` per row "
            "exists until the rows are packed into columns.",
            "",
            "**`tubelet scan --index`**",
            "",
            table(
                ["run", "seconds", "files probed", "reused", "peak MiB"],
                [
                    ["new index", f"{scan['seconds']:.1f}", scan["probed"], scan["reused"], f"{scan['peak']:.0f}"],
                    [
                        "nothing changed",
                        f"{rescan['seconds']:.1f}",
                        rescan["probed"],
                        rescan["reused"],
                        f"{rescan['peak']:.0f}",
                    ],
                ],
            ),
            "",
            f"Index file: {mb:.2f} MiB for {files} files.",
            "",
            f"**Decode throughput**: `iterate_batches` over a `ClipDataset` of the {small:,}-row manifest, {clips} "
            f"random windows ({WINDOW:g} s at 8 fps, short side {HEIGHT}) in batches of 8, after one warm-up batch.",
            "",
            table(
                ["DataLoader workers", "clips", "failed", "seconds", "clips/s", "clips/s per worker"],
                [
                    [
                        w,
                        r["clips"],
                        r["failed"],
                        f"{r['seconds']:.1f}",
                        f"{r['clips_per_s']:.1f}",
                        f"{r['clips_per_s'] / w:.1f}",
                    ]
                    for w, r in decode.items()
                ],
            ),
        ]
    )
    title = "bench_manifest: data at scale" + (" (--quick)" if args.quick else "")
    print(write_section("bench_manifest", body, title=title))


if __name__ == "__main__":
    main()
