"""Cost of static pruning's two references: `static_runs` with ``reference="previous"`` versus ``"anchor"``.

"anchor" walks time in order (one step per tubelet, vectorised over positions) because which tubelet is a run's
anchor depends on the decisions before it; "previous" is one vectorised difference over the whole grid. Both run
for every clip while decoding, so both must stay cheap next to decode (tens of ms per clip).

Input: a slow pan (1 px per frame) of a 224x224 window across the top of scikit-image's astronaut photograph
(needs ``scikit-image``; the synthetic texture of ``bench_tokenize`` is too busy to prune at all when it pans),
patchified at 2x16x16: an 8 x 14 x 14 grid (16 frames, a training clip) and a 64 x 14 x 14 grid (128 frames, a long
clip), 1536 values per tubelet, float32, threshold 4 levels. Timed with one torch thread, as in DataLoader workers
(`tubelet.data.loader` sets one), and with the process's default threads.

Run: ``python -m benchmarks.bench_prune [--quick]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import machine_markdown, median, table, time_interleaved, write_section
from tubelet.defaults import PRUNE_REFERENCES
from tubelet.particles import patchify, static_runs

SIZE = 224
TUBELET = (2, 16, 16)
THRESHOLD = 4.0
GRIDS = (8, 64)  # tubelets along time


def slow_pan(frames: int) -> torch.Tensor:
    """(T, SIZE, SIZE, 3) uint8: a window over the top of the astronaut photograph moving right 1 px per frame."""
    from skimage.data import astronaut

    photo = astronaut()  # (512, 512, 3) uint8
    return torch.from_numpy(np.stack([photo[:SIZE, i : i + SIZE] for i in range(frames)]))


def measure(runs: int) -> list[list[object]]:
    """One row per (grid, threads, reference): ms per call (wall and CPU) and the tubelets kept."""
    default_threads = torch.get_num_threads()
    rows = []
    for tubelets in GRIDS:
        patches = patchify(slow_pan(tubelets * TUBELET[0]), TUBELET).float()  # (T', 14, 14, 1536) in 0-255 levels
        grid = "x".join(map(str, patches.shape[:3]))
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            fns = {ref: (lambda r=ref, p=patches: static_runs(p, THRESHOLD, reference=r)) for ref in PRUNE_REFERENCES}
            cpu: dict[str, list[float]] = {}
            wall = time_interleaved(fns, runs=runs, cpu=cpu)
            for ref in PRUNE_REFERENCES:
                keep, span = static_runs(patches, THRESHOLD, reference=ref)
                assert int(span.sum()) == keep.numel(), "spans must cover the whole grid"
                kept = f"{int(keep.sum())} / {keep.numel()}"
                ms = [f"{median(wall[ref]) * 1e3:.2f}", f"{median(cpu[ref]) * 1e3:.2f}"]
                rows.append([grid, threads, ref, *ms, kept])
    torch.set_num_threads(default_threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else 30
    rows = measure(runs)
    body = "\n".join(
        [
            machine_markdown(),
            "",
            f"`static_runs(patches, {THRESHOLD:g}, reference=...)` on a slow pan (1 px per frame) over a photograph, "
            f"tubelet {'x'.join(map(str, TUBELET))}; median of {runs} interleaved runs after one warm-up round. "
            "CPU ms is this process's CPU time over torch's threads; kept counts the tubelets each reference keeps.",
            "",
            table(["grid (T' x H' x W')", "threads", "reference", "wall ms / call", "CPU ms / call", "kept"], rows),
        ]
    )
    print(body)
    title = "Static pruning: previous vs anchor" + (" (--quick)" if args.quick else "")
    write_section("bench_prune", body, title=title)


if __name__ == "__main__":
    main()
