"""Masked video modeling: reconstruction targets, the norm-pix loss, and predictions back in pixel space.

Targets are the particles' own values (the pixels `patchify` cut and the preprocessing normalized), gathered at
the hidden particles; the video is never cut twice. As VideoMAE does, targets are first un-normalized to 0-1
pixels with the preprocessing mean/std and then normalized per patch ("norm-pix"):

* per patch and per colour channel (VideoMAE's grouping: the t*p*q values of one channel of one tubelet),
* ``(v - mean) / sqrt(var + eps)`` with the unbiased variance and eps = 1e-6 in 0-1 pixel units (MAE's placement
  of eps; VideoMAE adds 1e-6 to the standard deviation instead, which differs only on near-flat patches).

Un-normalizing first makes eps mean the same thing whatever the preprocessing std is. (With per-channel groups
the dataset normalization is an affine map per channel, so it would otherwise cancel except for that eps.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tubelet.particles.patchify import to_grid, unpatchify
from tubelet.particles.structure import Particles

EPS = 1e-6


def unnormalize(
    values: torch.Tensor, channels: int, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """Particle pixels back to 0-1 units: the inverse of `tubelet.particles.normalize`.

    Args:
        values: (N, t*p*q*C) channels last, normalized with `mean`/`std` (both None: 0-255 levels).
        channels: C.

    Returns:
        (N, t*p*q*C) in 0-1 units.
    """
    if mean is None and std is None:
        return values / 255.0
    mean_t = values.new_tensor(mean if mean is not None else [0.0] * channels)
    std_t = values.new_tensor(std if std is not None else [1.0] * channels)
    shaped = values.reshape(values.shape[0], -1, channels)  # (N, t*p*q, C)
    return (shaped * std_t + mean_t).reshape(values.shape)


def patch_stats(pixels: torch.Tensor, channels: int, *, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch, per channel mean and scale ``sqrt(var + eps)`` of (N, t*p*q*C) pixels -> two (N, 1, C)."""
    shaped = pixels.reshape(pixels.shape[0], -1, channels)  # (N, t*p*q, C)
    mean = shaped.mean(dim=1, keepdim=True)  # (N, 1, C)
    correction = 1 if shaped.shape[1] > 1 else 0  # unbiased, as MAE and VideoMAE (a 1-pixel patch has var 0)
    scale = (shaped.var(dim=1, keepdim=True, correction=correction) + eps).sqrt()
    return mean, scale


def reconstruction_targets(
    values: torch.Tensor,
    channels: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
    eps: float = EPS,
) -> torch.Tensor:
    """What the decoder learns to predict for particles with these values.

    Args:
        values: (M, t*p*q*C) the hidden particles' values, as the preprocessing normalized them.
        channels: C.
        mean, std: the preprocessing's per-channel normalization (0-1 units).
        norm_pix: per-patch normalized 0-1 pixels (see the module docstring); False predicts `values` as they are.

    Returns:
        (M, t*p*q*C) float32.
    """
    values = values.float()
    if not norm_pix:
        return values
    pixels = unnormalize(values, channels, mean=mean, std=std)
    loc, scale = patch_stats(pixels, channels, eps=eps)
    shaped = pixels.reshape(pixels.shape[0], -1, channels)  # (M, t*p*q, C)
    return ((shaped - loc) / scale).reshape(values.shape)


def reconstruction_loss(
    pred: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    *,
    channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
) -> torch.Tensor:
    """Mean squared error over the hidden particles only.

    Args:
        pred: (M, t*p*q*C) decoder predictions, one row per hidden particle in `index` order.
        values: (N, t*p*q*C) values of all particles of the batch (visible ones are never read).
        index: (M,) int64 rows of `values` that were hidden (`MaskedBatch.target_index`).
        channels, mean, std, norm_pix: as in `reconstruction_targets`.

    Returns:
        () float32: the mean over every hidden particle of the batch and every value of it (each particle weighs
        the same, whichever clip it belongs to).
    """
    if pred.shape[0] != index.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions for {index.shape[0]} hidden particles")
    target = reconstruction_targets(values[index], channels, mean=mean, std=std, norm_pix=norm_pix)
    return F.mse_loss(pred.float(), target)


def predicted_pixels(
    pred: torch.Tensor,
    values: torch.Tensor,
    channels: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
) -> torch.Tensor:
    """Predictions in 0-1 pixels, for showing a reconstruction.

    A norm-pix prediction has no brightness or contrast of its own: it is put back with the mean and scale of
    the TRUE patch (as MAE's and VideoMAE's visualizations do), so a picture shows the predicted structure, not
    the predicted colour.

    Args:
        pred: (M, t*p*q*C) predictions.
        values: (M, t*p*q*C) the same particles' true values (normalized as the preprocessing did).

    Returns:
        (M, t*p*q*C) float32 in 0-1 units, clamped.
    """
    pred = pred.float()
    if norm_pix:
        loc, scale = patch_stats(unnormalize(values.float(), channels, mean=mean, std=std), channels)
        shaped = pred.reshape(pred.shape[0], -1, channels)  # (M, t*p*q, C)
        pixels = (shaped * scale + loc).reshape(pred.shape)
    else:
        pixels = unnormalize(pred, channels, mean=mean, std=std)
    return pixels.clamp(0.0, 1.0)


def reconstruction_frames(
    particles: Particles,
    hidden: torch.Tensor,
    pred: torch.Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
    fill: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as the encoder saw it and as the decoder filled it in, scattered back to frames.

    Args:
        particles: one clip, values normalized as the preprocessing did.
        hidden: (M,) int64 indices of its hidden particles.
        pred: (M, t*p*q*C) predictions for them.
        fill: grey level (0-1) of hidden places.

    Returns:
        masked: (T, H, W, C) uint8 frames of the visible particles, hidden places grey.
        reconstructed: (T, H, W, C) uint8 frames of the visible particles with the predictions pasted in the hidden
        places (`predicted_pixels`). A pruned particle fills its whole static run in both.
    """
    channels = particles.channels
    pixels = unnormalize(particles.values.float(), channels, mean=mean, std=std).clamp(0.0, 1.0)  # (N, D)
    shown = torch.ones(len(particles), dtype=torch.bool, device=pixels.device)
    shown[hidden] = False
    filled = pixels.clone()
    filled[hidden] = predicted_pixels(pred, particles.values[hidden], channels, mean=mean, std=std, norm_pix=norm_pix)

    def frames(parts: Particles, values: torch.Tensor) -> torch.Tensor:
        grid = to_grid(parts, values, fill=fill)  # (T', H', W', t*p*q*C)
        video = unpatchify(grid, particles.tubelet, particles.frame_shape)  # (T, H, W, C) in 0-1
        return (video * 255).round().to(torch.uint8)

    return frames(particles.select(shown), pixels[shown]), frames(particles, filled)
