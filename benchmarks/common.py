"""Helpers shared by the benchmarks: where scratch files go, what machine ran, timing, and RESULTS.md sections.

Every benchmark owns one named section of ``benchmarks/RESULTS.md`` and replaces only that section, so the
benchmarks can run in any order (or alone) without clobbering each other's numbers.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "_work"  # git-ignored scratch: generated videos, temporary files
RESULTS = BENCH_DIR / "RESULTS.md"

# How the audio-visual benchmarks (bench_fusion, bench_vqa, bench_retrieval) read the AV sample data: small frames
# and short windows, so three arms train in minutes on a CPU.
AV_PREPROCESSING = {"size": 48, "max_long_side": 64, "sample_fps": 8.0, "clip_seconds": 1.5, "crop_scale_min": 0.8}

_HEADER = (
    "# Benchmark results\n\n"
    "Written by the scripts in `benchmarks/` (see `benchmarks/README.md`); each section is replaced only by its own\n"
    "benchmark and names the date and the machine it ran on. Do not edit the numbers by hand.\n"
)


def work_dir() -> Path:
    """The scratch directory, created on first use."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    return WORK_DIR


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else whatever `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def total_memory_gib() -> float | None:
    """Physical memory in GiB, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def source_version() -> str:
    """The git commit of the checkout the benchmark imported tubelet from, noting uncommitted changes in src/."""
    import subprocess

    root = BENCH_DIR.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"git {sha}" + (" with uncommitted changes in src/" if dirty else "")


def machine() -> dict[str, str]:
    """What the numbers were measured on: OS, CPU, memory and the versions of the libraries that matter."""
    import av
    import numpy as np
    import torch

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    mem = total_memory_gib()
    libs = getattr(av, "library_versions", {}) or {}
    avcodec = libs.get("libavcodec")
    return {
        "tubelet": source_version(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu": f"{cpu_model()}, {usable} usable of {cores} logical cores",
        "memory": f"{mem:.1f} GiB" if mem else "unknown",
        "python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads)",
        "av": f"{av.__version__}" + (f" (libavcodec {'.'.join(map(str, avcodec))})" if avcodec else ""),
        "numpy": np.__version__,
        "load average": load_note(),
    }


def load_note() -> str:
    """The 1/5/15-minute load averages now, against the cores: other work on the machine skews timings."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = " (machine busy with other work: timings are pessimistic)" if five > 0.75 * cores + 1 else ""
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {cores} cores, when the section was written{busy}"


def machine_markdown() -> str:
    """`machine()` as a one-line-per-field markdown list, with today's date first."""
    lines = [f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    lines.append(f"- command: `python -m {' '.join([_module_name(), *sys.argv[1:]])}`")
    return "\n".join(lines)


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def time_calls(fn: Callable[[], object], *, runs: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `runs` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    runs: int,
    warmup: int = 1,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of `runs` calls of each of `fns`, taken in rounds (one call of each per round).

    On a shared or frequency-scaling machine, speed drifts over a run; timing the variants back to back in
    every round (in a rotating order) exposes them all to the same drift, unlike timing one after another.
    The first `warmup` rounds are not recorded.

    Args:
        cpu: if given, filled with this process's CPU seconds (all its threads) per call, by name: less
            sensitive than wall time to other work on the machine.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu is not None:
        cpu.update({name: [] for name in names})
    for r in range(warmup + runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                times[name].append(t1 - t0)
                if cpu is not None:
                    cpu[name].append(c1 - c0)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; cells are formatted with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, *, title: str | None = None, path: Path = RESULTS) -> Path:
    """Write or replace the section `name` of RESULTS.md, leaving every other section as it was.

    A section lies between ``<!-- section: NAME -->`` and ``<!-- end: NAME -->`` markers; a new one is
    appended. The file is locked while it is rewritten and replaced atomically, so two benchmarks that
    finish together do not lose each other's sections.

    Args:
        name: the section's key (the benchmark's name).
        body: markdown inside the section, below its heading.
        title: the section heading; default `name`.
    """
    begin, end = f"<!-- section: {name} -->", f"<!-- end: {name} -->"
    block = f"{begin}\n## {title or name}\n\n{body.strip()}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(work_dir() / f"{path.name}.lock", "w") as lock:  # lock lives in the git-ignored scratch dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else _HEADER
        if begin in text and end in text.split(begin, 1)[1]:
            before, rest = text.split(begin, 1)
            after = rest.split(end, 1)[1]
            text = before + block + after
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same filesystem, so os.replace is atomic
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def over_seeds(values: list[float]) -> str:
    """A measure over seeds: the value for one seed, else the mean with the per-seed values in brackets."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{sum(values) / len(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})"


def cached_sample_data(root: Path, clips_per_class: int, seed: int, generator: Callable | None = None) -> Path:
    """A generated sample dataset in `root`, reused when a finished one with the same parameters is there.

    Args:
        generator: ``tubelet.data.sample.generate`` (default) or another generator with the same signature
            (e.g. ``tubelet.data.sample_av.generate_av``).
    """
    import json
    import shutil

    if generator is None:
        from tubelet.data.sample import generate as generator
    stamp = root / "bench_params.json"
    params = {"clips_per_class": clips_per_class, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    if root.exists():
        shutil.rmtree(root)
    generator(root, clips_per_class=clips_per_class, seed=seed, workers=2)
    stamp.write_text(json.dumps(params))
    return root
