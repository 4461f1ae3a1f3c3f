"""``tubelet serve`` under load on loopback: latency (p50/p99) and clips/s at concurrency 1 and 8, with and without
micro-batching.

Protocol:

1. A ``micro`` classifier checkpoint (fresh weights: speed does not depend on what it learned) with the default
   preprocessing (112 px short side, 2 s windows at 8 fps), and one real encoded 2 s 160x120 H.264 file of a moving
   square: one window, ~300 particles before pruning, per request.
2. The real server: ``python -m tubelet serve --checkpoint C --port P --max-batch-ms B`` in its own process, B = 10
   (micro-batching) or 0 (each request its own forward).
3. For each concurrency C in (1, 8): C client threads (httpx, one connection each) send ``POST /v1/predict`` back to
   back, `requests` in all after 2 warm-up requests per thread; latency is each request's wall time, clips/s is
   windows answered / wall time of the whole run.

Run: ``python -m benchmarks.bench_serve [--quick]`` (``--quick``: fewer requests).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import BENCH_DIR, machine_markdown, table, work_dir, write_section
from tubelet import models
from tubelet.data.transforms import Preprocessing
from tubelet.io import write_video

CONCURRENCY = (1, 8)
MODES = {"micro-batching (--max-batch-ms 10)": 10.0, "off (--max-batch-ms 0)": 0.0}


def setup(root: Path) -> tuple[Path, Path]:
    """The checkpoint and the request's video."""
    import torch

    torch.manual_seed(0)
    checkpoint = root / "micro"
    loaded = models.load("micro", num_classes=5)
    models.save(checkpoint, loaded.model, preprocessing=Preprocessing(), labels=[f"class{i}" for i in range(5)])
    frames = np.full((48, 120, 160, 3), 80, dtype=np.uint8)  # 2 s at 24 fps
    for i in range(len(frames)):
        x = 10 + i * 2
        frames[i, 40:80, x : x + 40] = (230, 60, 60)
    video = write_video(root / "square.mp4", frames, fps=24)
    return checkpoint, video


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, max_batch_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tubelet", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    cmd += ["--max-batch-ms", str(max_batch_ms), "--no-watch", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent / "src")}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()}")
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not come up in 120 s")


def load_test(url: str, video: Path, *, concurrency: int, requests: int) -> dict:
    """`requests` predictions over `concurrency` threads: latencies and clips/s."""
    body = video.read_bytes()
    per_thread = max(1, requests // concurrency)
    latencies: list[float] = []
    windows = [0]
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for _ in range(2):  # warm-up: connection, first decode
                http.post("/v1/predict", files={"file": (video.name, body)})
            start.wait()
            for _ in range(per_thread):
                t0 = time.perf_counter()
                response = http.post("/v1/predict", files={"file": (video.name, body)})
                took = time.perf_counter() - t0
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    latencies.append(took)
                    windows[0] += len(response.json().get("windows", [None]))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "clips_per_s": windows[0] / wall,
        "requests": len(latencies),
    }


def batch_stats(url: str) -> float:
    """Mean requests per forward so far, from the server's /metrics."""
    text = httpx.get(url + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(("tubelet_batch_requests_sum", "tubelet_batch_requests_count")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("tubelet_batch_requests_count", 0.0)
    return values.get("tubelet_batch_requests_sum", 0.0) / count if count else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="timed requests per cell (default 64)")
    parser.add_argument("--quick", action="store_true", help="24 requests per cell")
    args = parser.parse_args(argv)
    requests = 24 if args.quick else args.requests
    root = work_dir() / "serve"
    root.mkdir(parents=True, exist_ok=True)
    checkpoint, video = setup(root)
    rows = []
    began = time.perf_counter()
    for mode, max_batch_ms in MODES.items():
        server, url = start_server(checkpoint, max_batch_ms)
        try:
            for concurrency in CONCURRENCY:
                result = load_test(url, video, concurrency=concurrency, requests=requests)
                shared = batch_stats(url)
                print(f"{mode} c={concurrency}: {result} (requests per forward so far {shared:.2f})", flush=True)
                rows.append(
                    [
                        mode, concurrency, result["requests"], f"{result['p50'] * 1000:.0f}",
                        f"{result['p99'] * 1000:.0f}", f"{result['clips_per_s']:.1f}", f"{shared:.2f}",
                    ]
                )  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
    header = ["batching", "concurrency", "requests", "p50 ms", "p99 ms", "clips/s", "requests per forward (cumulative)"]
    body = "\n\n".join(
        [
            "The real server (`python -m tubelet serve`, its own process) on loopback, `POST /v1/predict` of a 2 s "
            "160x120 H.264 file (one 2 s window at 8 fps, 112 px: the default preprocessing) to a `micro` "
            "classifier on the CPU. Latency is per request, as the client sees it; clips/s is windows answered per "
            "second of the whole run. Requests per forward comes from the server's `/metrics` "
            "(`tubelet_batch_requests`), cumulative over the server's life (warm-ups included).",
            table(header, rows),
            f"Whole benchmark: {time.perf_counter() - began:.0f} s.",
            machine_markdown(),
        ]
    )
    write_section("bench_serve", body, title="Serving: latency and throughput under load (tubelet serve)")


if __name__ == "__main__":
    main()
