"""Shared fixtures: real encoded video files written once per session, and frames that carry their own index.

A "numbered" frame encodes its index i (0 <= i < 256) in flat grey: the left half is ``16 * (i % 16) + 8``
levels, the right half ``16 * (i // 16) + 8``. Grey survives the RGB -> YUV -> RGB trip and libx264 at a low
crf keeps flat areas within a level or two, so `frame_numbers` recovers which source frame a decoder returned.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tubelet.io import write_video

sys.path.insert(0, os.path.dirname(__file__))  # forked_cli must import by name in the forkserver (see its docstring)
import forked_cli  # noqa: E402

# One compute thread per test process, and per subprocess it starts (the variable is inherited). The tests' tensors
# are tiny, so a second thread saves little; on a loaded two-core machine its OpenMP spin-waits burned several times
# the CPU the work needs (test_methods.py: 5 s of CPU on one thread, 7 to 36 s on two).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

HEIGHT, WIDTH = 48, 64


def _numbered_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(count, H, W, 3) uint8 frames whose grey levels encode their index."""
    if count > 256:
        raise ValueError("numbered frames encode at most 256 indices")
    index = np.arange(count)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    frames[:, :, : width // 2] = (16 * (index % 16) + 8)[:, None, None, None]
    frames[:, :, width // 2 :] = (16 * (index // 16) + 8)[:, None, None, None]
    return frames


def _frame_numbers(frames: np.ndarray) -> np.ndarray:
    """(T,) int index of each of (T, H, W, 3) numbered frames, read back from the mean of each half."""
    width = frames.shape[2]
    low = frames[:, :, : width // 2].reshape(len(frames), -1).mean(axis=1)
    high = frames[:, :, width // 2 :].reshape(len(frames), -1).mean(axis=1)
    return np.rint((low - 8) / 16).astype(int) + 16 * np.rint((high - 8) / 16).astype(int)


@pytest.fixture(scope="session")
def numbered_frames():
    """Factory ``(count, height=48, width=64) -> (T, H, W, 3) uint8`` of frames that encode their index."""
    return _numbered_frames


@pytest.fixture(scope="session")
def frame_numbers():
    """``(T, H, W, 3) uint8 -> (T,) int``: which numbered frame each decoded frame is."""
    return _frame_numbers


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cfr_mp4(media_dir):
    """2 s of 30 fps numbered frames, 64x48, H.264 in mp4: frame i is shown at i / 30 s."""
    return write_video(media_dir / "cfr30.mp4", _numbered_frames(60), fps=30, crf=10)


@pytest.fixture(scope="session")
def long_gop_mp4(media_dir):
    """200 numbered frames at 25 fps with a keyframe every 50 frames (4 GOPs, keyframes at 0, 2, 4, 6 s)."""
    return write_video(media_dir / "gop50.mp4", _numbered_frames(200), fps=25, gop=50, crf=10)


# Irregular gaps (30 ms to 240 ms) that no single frame rate explains, and no two targets of a 10 fps grid tie.
VFR_TIMES = np.array([0.00, 0.03, 0.11, 0.16, 0.35, 0.42, 0.47, 0.61, 0.66, 0.90])


@pytest.fixture(scope="session")
def vfr_mp4(media_dir):
    """Variable frame rate: numbered frame i shown at ``VFR_TIMES[i]`` seconds. Returns (path, times)."""
    path = write_video(media_dir / "vfr.mp4", _numbered_frames(len(VFR_TIMES)), timestamps=VFR_TIMES, crf=10)
    return path, VFR_TIMES.copy()


@pytest.fixture(scope="session")
def offset_mp4(media_dir):
    """30 numbered frames at 15 fps whose first PTS is 1.5 s (as in a trimmed or streamed recording)."""
    times = 1.5 + np.arange(30) / 15
    return write_video(media_dir / "offset.mp4", _numbered_frames(30), timestamps=times, crf=10)


def _sine(freq: float, seconds: float, rate: int, *, amplitude: float = 0.5) -> np.ndarray:
    """(N,) float32 mono sine wave starting at phase 0."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def sine():
    """Factory ``(freq, seconds, rate, *, amplitude=0.5) -> (N,) float32`` mono sine wave."""
    return _sine


@pytest.fixture(scope="session")
def tone_mp4(media_dir):
    """2 s, 15 fps, with a 440 Hz mono AAC track at 16 kHz."""
    frames = np.full((30, HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    return write_video(media_dir / "tone.mp4", frames, fps=15, audio=_sine(440, 2.0, 16000), audio_rate=16000)


def run_tubelet(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `tubelet` command line in a process of its own (`forked_cli`: forked from a server that imported
    torch once, so each run starts in a moment); with `check`, fail the test on a non-zero exit."""
    result = forked_cli.run(list(map(str, args)))
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def tubelet_cli():
    """`run_tubelet` as a fixture (test modules are imported by path, so they take helpers from here)."""
    return run_tubelet


# Chromium's switches for a headless run on a machine with no network and no display (each one's absence was seen
# to fail or stall here: refused background connections, a sandbox that needs user namespaces, GPU probing).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--virtual-time-budget=10000",
]  # fmt: skip


@pytest.fixture(scope="session")
def chromium_flags() -> list[str]:
    """`CHROMIUM_FLAGS`, for tests that start Chromium their own way (Selenium)."""
    return list(CHROMIUM_FLAGS)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """``(page, *flags) -> stdout``: runs the machine's headless Chromium on a local file.

    Skipped where no Chromium is installed, except under CI (`TUBELET_REQUIRE_BROWSER=1`, set by ``.ci/run``, which
    installs it), where its absence fails the test instead of hiding it.
    """
    import shutil

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if binary is None:
        if os.environ.get("TUBELET_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium on this machine, and TUBELET_REQUIRE_BROWSER=1 asks for one")
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")

    def run(page, *flags: str) -> str:
        profile = tmp_path_factory.mktemp("chromium-profile")
        args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.resolve().as_uri()]
        return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout

    return run


# --- tiny restorers (tubelet finetune --task interpolation | denoise), for tests/tasks and tests/recipes --------------

# A test-sized restorer: the `test` encoder and a one-block pixel decoder, 32-px tiles of 64x48 frames.
TINY_RESTORER = dict(
    model="test", decoder_dim=64, decoder_depth=1, decoder_heads=2, tile=32, tiles_per_clip=6, workers=0,
    clip_seconds=0.4, lr=2e-3, warmup_epochs=0.2,
)  # fmt: skip


@pytest.fixture(scope="session")
def v2v_data(tmp_path_factory):
    """Camera pans over photographs, 1 s at 24 fps, 64x48: 2 train clips (and a cut clip)."""
    from tubelet.data.sample_v2v import generate_v2v

    out = tmp_path_factory.mktemp("restoration") / "data"
    generate_v2v(out, seed=4, duration=1.0, per_setting={"train": 2}, rates=(24.0,), sizes=((64, 48),), workers=1)
    return out


@pytest.fixture(scope="session")
def interpolation_run(v2v_data, tmp_path_factory):
    """``best/`` of 30 steps of interpolation training on `v2v_data`. Read-only."""
    from tubelet.recipes.finetune import FinetuneConfig, finetune

    out = tmp_path_factory.mktemp("interp") / "run"
    finetune(FinetuneConfig(task="interpolation", data=str(v2v_data), out=str(out), epochs=30, max_steps=30,
                            **TINY_RESTORER))  # fmt: skip
    return out / "best"


@pytest.fixture(scope="session")
def denoise_run(v2v_data, tmp_path_factory):
    """``best/`` of 60 steps of denoise training (3-frame runs) on `v2v_data`. Read-only."""
    from tubelet.recipes.finetune import FinetuneConfig, finetune

    out = tmp_path_factory.mktemp("denoise") / "run"
    finetune(FinetuneConfig(task="denoise", data=str(v2v_data), out=str(out), epochs=60, max_steps=60,
                            sigma_max=40.0, frames=3, **TINY_RESTORER))  # fmt: skip
    return out / "best"
