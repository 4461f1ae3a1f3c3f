"""Real encoded videos of a fixed camera with a square that appears for a few seconds, a tiny classifier
checkpoint, and loopback HTTP servers (a webhook receiver, a video server that can drop the connection)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tubelet import models
from tubelet.data.transforms import Preprocessing
from tubelet.io import write_video

LABELS = ["idle", "person", "car"]
# The `test` encoder on 32-px frames, 1 s windows at 4 fps: a few particles a window, milliseconds a forward.
PRE = Preprocessing(size=32, max_long_side=48, sample_fps=4.0, clip_seconds=1.0)
FPS = 8
SQUARE = (4.0, 6.0)  # seconds the square is in the scene


def scene(seconds: float = 10.0, square: tuple[float, float] | None = SQUARE) -> np.ndarray:
    """(T, 48, 64, 3) uint8 at `FPS`: a grey wall, and a white square walking across it while `square` (start, end)
    seconds."""
    frames = np.full((int(seconds * FPS), 48, 64, 3), 90, dtype=np.uint8)
    if square is not None:
        first, last = int(square[0] * FPS), min(int(square[1] * FPS), len(frames))
        for i in range(first, last):
            x = 2 + (i - first) * 44 // max(1, last - first)
            frames[i, 16:32, x : x + 16] = 240
    return frames


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    loaded = models.load("test", num_classes=len(LABELS))
    return models.save(tmp_path_factory.mktemp("watch") / "ckpt", loaded.model, preprocessing=PRE, labels=LABELS)


@pytest.fixture(scope="session")
def square_video(tmp_path_factory) -> Path:
    """10 s, the square from 4 to 6 s (H.264 mp4)."""
    return write_video(tmp_path_factory.mktemp("videos") / "square.mp4", scene(), fps=FPS)


@pytest.fixture(scope="session")
def square_mkv(tmp_path_factory) -> Path:
    """The same scene in Matroska, which a reader can follow as it arrives (a stream served over HTTP)."""
    return write_video(tmp_path_factory.mktemp("videos") / "square.mkv", scene(), fps=FPS, gop=8)


class Loopback:
    """An HTTP server on 127.0.0.1:<free port> in a thread, answering with `handler` (a BaseHTTPRequestHandler)."""

    def start(self, handler, path: str) -> None:
        handler.log_message = lambda *args: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Receiver(Loopback):
    """A webhook receiver on 127.0.0.1:<port> in a thread: `payloads` is what it got; `up` False answers 503."""

    def __init__(self):
        self.payloads: list[dict] = []
        self.up = True
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not receiver.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.payloads.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.start(Handler, "hook")


class VideoServer(Loopback):
    """Serves one file over HTTP on loopback; the first `drops` requests are cut after `cut_bytes` bytes (a camera
    whose connection drops), the next `serves` get the whole file, and later ones 404 (the camera is gone).
    `requests` counts them."""

    def __init__(self, path: Path, *, drops: int = 1, cut_bytes: int = 0, serves: int = 1):
        data = Path(path).read_bytes()
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if server.requests > drops + serves:
                    self.send_error(404)
                    return
                cut = server.requests <= drops
                body = data[:cut_bytes] if cut else data
                self.send_response(200)
                self.send_header("Content-Type", "video/x-matroska")
                self.send_header("Content-Length", str(len(data)))  # a cut answer promises more than it sends
                self.end_headers()
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

        self.start(Handler, Path(path).name)


class Scene:
    """The constants and helpers above, for test modules (imported by path, they cannot import this file)."""

    PRE, FPS, SQUARE, LABELS = PRE, FPS, SQUARE, LABELS
    frames = staticmethod(scene)
    Receiver, VideoServer = Receiver, VideoServer


@pytest.fixture(scope="session")
def S() -> type[Scene]:
    return Scene
