"""A tiny checkpoint, real encoded videos and a real server on a free loopback port, for the serve tests."""

import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tubelet import models
from tubelet.data.transforms import Preprocessing
from tubelet.io import write_video
from tubelet.serve import ServeConfig, create_app

LABELS = ["left", "right", "still"]
# The `test` encoder on 32-px frames, 1 s windows at 4 fps: a few hundred particles a video, milliseconds a forward.
PRE = Preprocessing(size=32, max_long_side=48, sample_fps=4.0, clip_seconds=1.0)


def save_checkpoint(directory: Path, labels: list[str], seed: int = 0) -> Path:
    """A fresh `test` encoder with a head of len(labels) classes, saved (atomically) as a checkpoint directory."""
    import torch

    torch.manual_seed(seed)
    loaded = models.load("test", num_classes=len(labels))
    return models.save(directory, loaded.model, preprocessing=PRE, labels=labels)


def moving_square(path: Path, *, seconds: float = 3.0, fps: int = 8) -> Path:
    """A white square crossing a grey 48x64 frame: a real H.264 file of a few KB."""
    frames = np.full((int(seconds * fps), 48, 64, 3), 90, dtype=np.uint8)
    for i in range(len(frames)):
        x = 4 + i * 40 // len(frames)
        frames[i, 16:32, x : x + 16] = 240
    return write_video(path, frames, fps=fps)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("serve") / "ckpt", LABELS)


@pytest.fixture(scope="session")
def write_checkpoint():
    """`save_checkpoint` as a fixture (test modules are imported by path, so they take helpers from here)."""
    return save_checkpoint


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return LABELS


@pytest.fixture(scope="session")
def write_square():
    """`moving_square` as a fixture: ``write_square(path, seconds=...)`` writes another real video."""
    return moving_square


@pytest.fixture(scope="session")
def video(tmp_path_factory) -> Path:
    return moving_square(tmp_path_factory.mktemp("videos") / "square.mp4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server of `create_app(config)` in a thread on 127.0.0.1:<free port>; `url`, `app`, `client`.

    Waits until the server answers, and with `ready` until its model is loaded (``/healthz`` 200).
    """

    def __init__(self, config: ServeConfig, *, ready: bool = True):
        import uvicorn

        self.app = create_app(config)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/healthz").status_code == (200 if ready else 503) or not ready:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not come up in 30 s")

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def start_server():
    """``start(config) -> Running``; every server started is stopped at the end of the session."""
    running = []

    def start(config: ServeConfig, *, ready: bool = True) -> Running:
        """Started and answering; with `ready` (default) its model loaded too."""
        running.append(Running(config, ready=ready))
        return running[-1]

    yield start
    for server in running:
        server.stop()


@pytest.fixture(scope="session")
def retrieval_index(tmp_path_factory, video):
    """(index directory, retrieval checkpoint): a fresh `test`-size two-tower model and `tubelet index` of `video`."""
    import torch

    from tubelet.data.text import train_tokenizer
    from tubelet.models import RetrievalConfig, RetrievalModel, model_config
    from tubelet.recipes.search import build_index

    root = tmp_path_factory.mktemp("retrieval")
    tokenizer = train_tokenizer(["a white square moves right", "a grey screen stays still", "nothing happens"])
    torch.manual_seed(0)
    text = RetrievalConfig(vocab_size=tokenizer.get_vocab_size(), text_dim=32, text_depth=1, text_heads=2, embed_dim=16)
    model = RetrievalModel(model_config("test", tubelet=PRE.tubelet), text)
    checkpoint = models.save(root / "ckpt", model, preprocessing=PRE, tokenizer=tokenizer)
    build_index(str(checkpoint), [str(video)], str(root / "index"), workers=0)
    return root / "index", checkpoint
