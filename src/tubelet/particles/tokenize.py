"""From decoded frames to particles: patchify, time each tubelet from real timestamps, prune static runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, DEFAULT_TUBELET
from tubelet.errors import ConfigError
from tubelet.particles.patchify import grid_shape, patchify
from tubelet.particles.prune import check_reference, static_runs
from tubelet.particles.structure import Particles


def tubelet_times(timestamps: torch.Tensor, frames_per_tubelet: int) -> torch.Tensor:
    """(T',) float32 centre time of each tubelet: the mean of its frames' times (a padded tail uses its real frames).

    Args:
        timestamps: (T,) seconds per frame.
    """
    T = timestamps.shape[0]
    Tp = -(-T // frames_per_tubelet)
    owner = torch.arange(T) // frames_per_tubelet  # (T,) tubelet of each frame
    sums = torch.zeros(Tp, dtype=torch.float64).index_add_(0, owner, timestamps.double())
    counts = torch.bincount(owner, minlength=Tp).double()
    return (sums / counts).float()


def tokenize(
    clip,
    *,
    tubelet: Sequence[int] = DEFAULT_TUBELET,
    timestamps: np.ndarray | torch.Tensor | None = None,
    prune_threshold: float | None = None,
    prune_reference: str = DEFAULT_PRUNE_REFERENCE,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Particles:
    """Cut a clip into particles.

    Args:
        clip: a `tubelet.io.Clip`, or (T, H, W, C) uint8 frames (numpy or torch) with `timestamps`.
        tubelet: (t, p, q) frames, rows and columns per tubelet.
        timestamps: (T,) seconds per frame when `clip` is bare frames.
        prune_threshold: drop tubelets whose mean absolute difference from their reference at the same place
            is below this many 0-255 pixel levels (None or 0 keeps all).
        prune_reference: the reference: ``"previous"`` (the tubelet just before) or ``"anchor"`` (the kept
            particle that opened the run, so slow drift adds up); see `tubelet.particles.prune`.
        mean, std: per-channel normalization of `values`, in 0-1 units (e.g. ImageNet's); None leaves
            values in 0-255 levels.

    Returns:
        `Particles` ordered by (ti, y, x), with `t` from the timestamps (tubelet centres, seconds).

    Raises:
        ConfigError: the tubelet is larger than the clip in some dimension.
        ValueError: `prune_reference` is neither ``"previous"`` nor ``"anchor"``.
    """
    check_reference(prune_reference)  # even when nothing is pruned: a typo should not wait for a threshold
    frames = clip.frames if hasattr(clip, "frames") else clip
    if timestamps is None:
        if not hasattr(clip, "timestamps"):
            raise ValueError("bare frames need timestamps")
        timestamps = clip.timestamps
    frames = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
    timestamps = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
    tubelet = tuple(int(v) for v in tubelet)
    T, H, W, C = frames.shape
    if len(timestamps) != T:
        raise ValueError(f"{len(timestamps)} timestamps for {T} frames")
    if T < tubelet[0] or H < tubelet[1] or W < tubelet[2]:
        where = f" of {clip.path}" if hasattr(clip, "path") else ""
        raise ConfigError(
            f"tubelet {'x'.join(map(str, tubelet))} is larger than the clip{where} ({T} frames of {H}x{W} px); "
            "use a smaller --tubelet or a longer clip"
        )
    patches = patchify(frames, tubelet).float()  # (T', H', W', t*p*q*C) in 0-255 levels
    Tp, Hp, Wp, _ = patches.shape
    if prune_threshold:
        keep, span = static_runs(patches, float(prune_threshold), reference=prune_reference)
    else:
        keep = torch.ones((Tp, Hp, Wp), dtype=torch.bool)
        span = torch.ones((Tp, Hp, Wp), dtype=torch.long)
    ti, y, x = keep.nonzero(as_tuple=True)  # row-major: ordered by (ti, y, x)
    values = patches[ti, y, x]  # (N, t*p*q*C)
    if mean is not None or std is not None:
        values = normalize(values, C, mean=mean, std=std)
    return Particles(
        values=values,
        t=tubelet_times(timestamps, tubelet[0])[ti],
        ti=ti,
        y=y,
        x=x,
        span=span[ti, y, x],
        seq=torch.zeros_like(ti),
        grid=grid_shape((T, H, W), tubelet),
        tubelet=tubelet,
        frame_shape=(T, H, W),
        channels=C,
    )


def normalize(values: torch.Tensor, channels: int, *, mean=None, std=None) -> torch.Tensor:
    """Per-channel ``(v / 255 - mean) / std`` of (N, t*p*q*C) particle pixels laid out channels last."""
    mean_t = torch.tensor(mean if mean is not None else [0.0] * channels, dtype=values.dtype)
    std_t = torch.tensor(std if std is not None else [1.0] * channels, dtype=values.dtype)
    shaped = values.reshape(values.shape[0], -1, channels)  # (N, t*p*q, C)
    return ((shaped / 255.0 - mean_t) / std_t).reshape(values.shape)
