"""Image-quality measures of uint8 frames: PSNR, SSIM (scikit-image's) and temporal flicker."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(output: np.ndarray, clean: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels of (..., H, W, 3) uint8 frames (inf when identical)."""
    if np.array_equal(output, clean):
        return float("inf")
    return float(peak_signal_noise_ratio(clean, output, data_range=255))


def ssim(output: np.ndarray, clean: np.ndarray) -> float:
    """Mean structural similarity of (T, H, W, 3) or (H, W, 3) uint8 frames, each frame on its own, RGB channels."""
    output, clean = np.asarray(output), np.asarray(clean)
    if output.ndim == 3:
        output, clean = output[None], clean[None]
    values = [structural_similarity(c, o, data_range=255, channel_axis=-1) for o, c in zip(output, clean)]
    return float(np.mean(values))


def flicker(output: np.ndarray, clean: np.ndarray) -> float:
    """Temporal flicker: mean absolute difference between the output's and the clean video's frame-to-frame changes.

    ``mean |(out[t+1] - out[t]) - (clean[t+1] - clean[t])|`` in 0-255 levels over (T, H, W, 3) frames. Zero when the
    output changes over time exactly as the clean video does (a constant error does not flicker); independent noise
    per frame adds about ``sigma * 2 / sqrt(pi)`` (the mean of |N(0, 2 sigma^2)|).
    """
    out = np.diff(np.asarray(output, np.float32), axis=0)  # (T-1, H, W, 3)
    ref = np.diff(np.asarray(clean, np.float32), axis=0)
    return float(np.abs(out - ref).mean()) if len(out) else 0.0
