"""Sparse sampling by time: `tubelet.io.decode` against the approaches people write by hand.

The test file is a 60 s 960x540 H.264 video at 30 fps with a keyframe every 250 frames (8.3 s), written once
into ``benchmarks/_work/`` with PyAV straight from a frame generator (a whole-video array would be 2.8 GB).
Content: a panning texture under a moving colour ramp and a moving box, so every frame costs real bits.

Variants, all returning the frame nearest each target time:

- ``tubelet``: ``tubelet.io.decode(path, start=..., end=..., num_frames=K)``. Its frame index (one demux of the
  file, cached per file) is warm after the warm-up call; a separate row clears the cache before every call.
- ``naive seek``: one ``container.seek(..., backward=True)`` per target, then decode forward to it.
- ``linear``: decode every frame from the start of the file and keep the targets (only the kept frames are
  converted to RGB).
- ``one seek + linear``: seek once to the keyframe before the first target and decode straight through to the
  last one: the strongest simple baseline when the targets are dense.

Every variant must produce identical pixels; RESULTS.md says whether they did.

Run: ``python -m benchmarks.bench_decode [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from benchmarks.common import machine_markdown, median, table, time_interleaved, work_dir, write_section
from tubelet.io import decode, probe, sample_times

# The modules themselves (`tubelet.io.decode` the attribute is the function): to clear the frame-index cache
# and to wrap the container `decode` opens when counting its seeks.
tio_container = importlib.import_module("tubelet.io.container")
tio_decode = importlib.import_module("tubelet.io.decode")

HEIGHT, WIDTH, FPS, GOP = 540, 960, 30, 250
PAN = 2  # pixels the texture moves per frame


def make_video(path: Path, seconds: int) -> Path:
    """Encode the synthetic test video frame by frame (cached: an existing complete file is reused)."""
    frames = seconds * FPS
    if path.exists():
        try:
            if probe(path).frames == frames:
                return path
        except Exception:  # a half-written file from an interrupted run: rewrite it
            pass
    rng = np.random.default_rng(0)
    tex_w = WIDTH + PAN * frames
    # Smooth blobs plus finer grain: a texture an encoder has to spend bits on when it moves.
    coarse = Image.fromarray(rng.integers(0, 256, (HEIGHT // 12, tex_w // 12, 3), dtype=np.uint8))
    fine = Image.fromarray(rng.integers(0, 256, (HEIGHT // 2, tex_w // 2, 3), dtype=np.uint8))
    texture = (
        np.asarray(coarse.resize((tex_w, HEIGHT), Image.BICUBIC), np.float32) * 0.8
        + np.asarray(fine.resize((tex_w, HEIGHT), Image.BILINEAR), np.float32) * 0.2
    ).astype(np.int16)  # (H, W + PAN*T, 3)
    ramp = np.linspace(-40, 40, WIDTH).astype(np.int16)  # (W,) colour ramp that slides over the frame
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.options = {
            "crf": "23",
            "preset": "ultrafast",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0",
        }
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(frames):
            rgb = texture[:, i * PAN : i * PAN + WIDTH] + np.roll(ramp, 4 * i)[None, :, None]  # (H, W, 3)
            y, x = int(230 + 150 * np.sin(i / 20)), (7 * i) % (WIDTH - 80)
            rgb[y : y + 80, x : x + 80] = (255, 40, 40)
            frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return path


def target_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """The same target times `decode(start=, end=, num_frames=)` asks for."""
    return sample_times(start, end, num_frames=num_frames)


def _open(path: Path):
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_count = 1  # as tubelet's default threads=1
    stream.thread_type = "SLICE"
    return container, stream


def naive_seek(path: Path, targets: np.ndarray) -> np.ndarray:
    """One seek per target time, then decode forward to the frame nearest it: the classic hand-written loop."""
    container, stream = _open(path)
    tb = float(stream.time_base)
    origin = (stream.start_time or 0) * tb
    period = 1.0 / float(stream.average_rate)
    out = []
    try:
        for target in targets:
            # Seek a frame early so the frame just before the target is seen too (to pick the nearer one).
            container.seek(int((target - period + origin) / tb), stream=stream, backward=True)
            prev = None
            for frame in container.decode(stream):
                t = frame.pts * tb - origin
                if t >= target:
                    if prev is not None and target - prev[0] <= t - target:  # ties take the earlier frame
                        frame = prev[1]
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
                prev = (t, frame)
            else:
                out.append(prev[1].to_ndarray(format="rgb24"))
    finally:
        container.close()
    return np.stack(out)


def linear(path: Path, targets: np.ndarray, *, seek_first: bool = False) -> np.ndarray:
    """Decode frames in order and keep the one nearest each target (only those are converted to RGB).

    Args:
        seek_first: seek once to the keyframe before the first target and stop after the last one, instead
            of decoding the whole file from its start.
    """
    container, stream = _open(path)
    tb = float(stream.time_base)
    origin = (stream.start_time or 0) * tb
    period = 1.0 / float(stream.average_rate)
    out, k, prev = [], 0, None
    try:
        if seek_first:
            container.seek(int((targets[0] - period + origin) / tb), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = frame.pts * tb - origin
            while k < len(targets) and t >= targets[k]:
                pick = prev[1] if prev is not None and targets[k] - prev[0] <= t - targets[k] else frame
                out.append(pick.to_ndarray(format="rgb24"))
                k += 1
            if seek_first and k == len(targets):
                break
            prev = (t, frame)
        while k < len(targets):  # targets past the last frame take the last frame
            out.append(prev[1].to_ndarray(format="rgb24"))
            k += 1
    finally:
        container.close()
    return np.stack(out)


class _CountingContainer:
    """Wraps a PyAV container to count `seek` calls and decoded frames; everything else passes through."""

    def __init__(self, container):
        self._container, self.seeks, self.frames = container, 0, 0

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self._container.seek(*args, **kwargs)

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self.frames += 1
            yield frame

    def __getattr__(self, name):
        return getattr(self._container, name)


def count_tubelet_work(path: Path, **kwargs) -> tuple[int, int]:
    """(seeks, frames decoded) of one `tubelet.io.decode` call, by wrapping the container it opens."""
    real_open = tio_decode.open_container
    seen = []

    @contextmanager
    def counting_open(p):
        with real_open(p) as container:
            wrapped = _CountingContainer(container)
            seen.append(wrapped)
            yield wrapped

    tio_decode.open_container = counting_open
    try:
        decode(path, **kwargs)
    finally:
        tio_decode.open_container = real_open
    return seen[0].seeks, seen[0].frames


def naive_frames_decoded(path: Path, targets: np.ndarray) -> int:
    """Frames the naive seek loop decodes (decoder output frames), for the report."""
    container, stream = _open(path)
    tb = float(stream.time_base)
    origin = (stream.start_time or 0) * tb
    period = 1.0 / float(stream.average_rate)
    count = 0
    try:
        for target in targets:
            container.seek(int((target - period + origin) / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                count += 1
                if frame.pts * tb - origin >= target:
                    break
    finally:
        container.close()
    return count


def index_build_seconds(path: Path, runs: int) -> float:
    """Median seconds `tubelet.io` spends building a file's frame index (one demux pass, no decoding)."""

    def build():
        with tio_container.open_container(path) as container:
            tio_container._build_index(container, container.streams.video[0], path)

    return median(time_interleaved({"index": build}, runs=runs)["index"])


def run_case(path: Path, name: str, start: float, end: float, num_frames: int, runs: int) -> dict:
    targets = target_times(start, end, num_frames)
    ours = decode(path, start=start, end=end, num_frames=num_frames)
    by_seek = naive_seek(path, targets)
    others = {
        "naive seek": by_seek,
        "linear": linear(path, targets),
        "one seek + linear": linear(path, targets, seek_first=True),
    }
    match = {}
    for key, other in others.items():
        match[key] = "yes" if np.array_equal(ours.frames, other) else "NO"
        if match[key] == "NO":
            diff = np.abs(ours.frames.astype(int) - other.astype(int)).reshape(num_frames, -1).max(axis=1)
            match[key] = f"DIFFER (max abs diff per frame: {diff.tolist()})"

    def ours_call():
        decode(path, start=start, end=end, num_frames=num_frames)

    def cold():
        tio_container._INDEX_CACHE.clear()
        ours_call()

    cpu: dict[str, list[float]] = {}
    timings = time_interleaved(
        {
            "tubelet (index cached)": ours_call,
            "tubelet (index rebuilt each call)": cold,
            "naive seek per frame": lambda: naive_seek(path, targets),
            "linear decode of every frame": lambda: linear(path, targets),
            "one seek + linear to last target": lambda: linear(path, targets, seek_first=True),
        },
        runs=runs,
        cpu=cpu,
    )
    seeks, decoded = count_tubelet_work(path, start=start, end=end, num_frames=num_frames)
    return {
        "name": name,
        "window": (start, end),
        "num_frames": num_frames,
        "timings": timings,
        "cpu": cpu,
        "match": match,
        "tubelet_seeks": seeks,
        "tubelet_decoded": decoded,
        "naive_decoded": naive_frames_decoded(path, targets),
        "times": ours.timestamps,
    }


def report(cases: list[dict], path: Path, runs: int) -> str:
    info = probe(path)
    lines = [
        machine_markdown(),
        "",
        f"File: {info.width}x{info.height} {info.codec}, {info.fps:.0f} fps, {info.duration_s:.1f} s, "
        f"{info.frames} frames, keyframe every {GOP} frames ({GOP / FPS:.1f} s), libx264 ultrafast (no B-frames), "
        f"{path.stat().st_size / 1e6:.1f} MB. All decoding single-threaded (tubelet's default `threads=1`; the "
        "hand-written loops set the same). Seconds per call: median of "
        f"{runs} runs after one warm-up round, variants interleaved round by round (so machine drift hits all "
        "alike), warm OS file cache; wall-clock and this process's CPU time (the latter is less inflated when "
        "other work shares the machine). Ratios are each variant's time over tubelet's (cached index).",
        "",
    ]
    lines += [
        f"Building tubelet's frame index of this file (one demux pass over all {info.frames} packets, no decoding; "
        f"done on a file's first `decode`/`probe` and then cached): {index_build_seconds(path, runs) * 1e3:.1f} ms "
        "median.",
        "",
    ]
    for case in cases:
        t = {k: median(v) for k, v in case["timings"].items()}
        c = {k: median(v) for k, v in case["cpu"].items()}
        ours, ours_cpu = t["tubelet (index cached)"], c["tubelet (index cached)"]
        rows = [
            [name, f"{t[name]:.3f}", f"{t[name] / ours:.2f}x", f"{c[name]:.3f}", f"{c[name] / ours_cpu:.2f}x"]
            for name in t
        ]
        start, end = case["window"]
        lines += [
            f"### {case['name']}: {case['num_frames']} frames uniformly over [{start:g}, {end:g}) s",
            "",
            table(["variant", "wall s/call", "wall vs tubelet", "CPU s/call", "CPU vs tubelet"], rows),
            "",
            f"- frames decoded per call: tubelet {case['tubelet_decoded']} with {case['tubelet_seeks']} seeks; "
            f"naive seek {case['naive_decoded']} with {case['num_frames']} seeks; linear all {info.frames}.",
            "- identical pixels to tubelet: " + ", ".join(f"{k}: {v}" for k, v in case["match"].items()) + ".",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter file and fewer runs")
    args = parser.parse_args(argv)
    seconds = 20 if args.quick else 60
    runs = 3 if args.quick else 5
    path = make_video(work_dir() / f"decode_{WIDTH}x{HEIGHT}_{FPS}fps_gop{GOP}_{seconds}s.mp4", seconds)
    dense_start = seconds / 2 - 5
    cases = [
        run_case(path, "sparse", 0.0, float(seconds), 16, runs),
        run_case(path, "dense", dense_start, dense_start + 10.0, 64, runs),
    ]
    body = report(cases, path, runs)
    print(body)
    title = "Decode: sparse sampling by time" + (" (--quick)" if args.quick else "")
    write_section("bench_decode", body, title=title)


if __name__ == "__main__":
    main()
