"""The parity check of an export: the exported graph against the eager model, on real decoded clips.

Batches are cut from video files as ``predict`` cuts them (`tubelet.data.pipeline`): per file a short window, one
window of the checkpoint's ``clip_seconds`` pruned as training did and the same window unpruned, and a long window;
each alone (a batch of one clip) and all together in one packed batch of several clips. So the particle counts checked
run from a few dozen to the sum of all of them, with clip counts from one to many. With no files given,
`generated_clips` writes two: a camera pan over a photograph (little to prune) and a fixed camera watching one small
object move over a still photograph (most particles pruned).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tubelet.data.pipeline import clip_particles, decode_window
from tubelet.data.transforms import Preprocessing
from tubelet.io.probe import probe
from tubelet.io.write import write_video
from tubelet.particles.pack import pack
from tubelet.particles.structure import PackedParticles

TOLERANCE = 1e-3  # largest |logit difference| an export may have against the eager model
GENERATED_FPS = 12.0


@dataclass
class Case:
    """One batch the check runs: its name (file and window) and its packed particles."""

    name: str
    packed: PackedParticles


def generated_clips(directory: Path, pre: Preprocessing, *, seconds: float | None = None) -> list[Path]:
    """Write two real encoded clips of `seconds` (default twice the window) into `directory`: a pan and a fixed camera.

    Both are made of skimage's sample photographs: ``pan.mp4`` slides a crop across one (every particle changes),
    ``fixed.mp4`` holds another still while a small patch of a third moves across it (static pruning drops most).
    """
    from skimage import data as photos

    seconds = seconds or 2 * pre.clip_seconds
    count = max(4, round(seconds * GENERATED_FPS))
    height, width = 120, 160
    astronaut, coffee = photos.astronaut(), photos.coffee()  # (512, 512, 3), (400, 600, 3) uint8
    pan = np.stack([astronaut[100 : 100 + height, 3 * i : 3 * i + width] for i in range(count)])  # (T, H, W, 3)
    fixed = np.repeat(coffee[::2, ::2][None, 40 : 40 + height, 60 : 60 + width], count, axis=0)  # (T, H, W, 3)
    patch = astronaut[180:212, 200:232]  # (32, 32, 3): the astronaut's face
    for i in range(count):
        x = round(i * (width - 32) / max(1, count - 1))
        fixed[i, 40:72, x : x + 32] = patch
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_video(directory / "pan.mp4", pan, fps=GENERATED_FPS, crf=18),
        write_video(directory / "fixed.mp4", fixed, fps=GENERATED_FPS, crf=18),
    ]


def check_cases(paths: list[Path], pre: Preprocessing) -> list[Case]:
    """The batches the check runs on `paths` (see the module docstring); the last packs every clip of the others.

    Raises:
        VideoError: a file that cannot be probed or decoded (named).
    """
    unpruned = replace(pre, prune_threshold=0.0)
    clips, cases = [], []
    for path in paths:
        info = probe(path)
        duration = info.duration_s
        one_tubelet = pre.tubelet[0] / (pre.sample_fps or info.fps)  # the shortest window that makes particles
        windows = {
            "short": (0.0, min(duration, max(pre.clip_seconds / 2, one_tubelet))),
            "window": (0.0, min(duration, pre.clip_seconds)),
            "long": (0.0, min(duration, 2 * pre.clip_seconds)),
        }
        for name, window in windows.items():
            decoded = decode_window(path, window, pre=pre)
            shown = [(name, pre)] + ([("window unpruned", unpruned)] if name == "window" else [])
            for label, how in shown:
                particles = clip_particles(window, pre=how, frames=decoded.frames, timestamps=decoded.timestamps)
                clips.append(particles)
                cases.append(Case(f"{Path(path).name} {label} {window[1] - window[0]:g} s", pack([particles])))
    cases.append(Case(f"{len(clips)} clips packed", pack(clips)))
    return cases


def parity(eager: torch.nn.Module, exported: Callable[[PackedParticles], torch.Tensor], cases: list[Case]) -> dict:
    """Logits of `exported` against `eager` on every case.

    Returns:
        ``max_abs_diff`` (over every logit of every case), ``top1_agreement`` (fraction of clips whose top class
        agrees), ``particles`` (the particle count of each case) and ``checks`` (per case: ``name``, ``clips``,
        ``particles``, ``max_abs_diff``, ``top1_agreement``).
    """
    checks, agree, clips, worst = [], 0, 0, 0.0
    for case in cases:
        with torch.no_grad():
            want = eager(case.packed).float()  # (B, C)
            got = exported(case.packed).float()  # (B, C)
        diff = float((got - want).abs().max())
        same = int((got.argmax(-1) == want.argmax(-1)).sum())
        worst, agree, clips = max(worst, diff), agree + same, clips + len(want)
        checks.append(
            {
                "name": case.name,
                "clips": len(want),
                "particles": len(case.packed),
                "max_abs_diff": diff,
                "top1_agreement": same / len(want),
            }
        )
    return {
        "max_abs_diff": worst,
        "top1_agreement": agree / clips,
        "particles": [c["particles"] for c in checks],
        "checks": checks,
    }
