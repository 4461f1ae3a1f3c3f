"""Masking for masked video modeling: dropping particles before the encoder.

Masking returns the visible particles and the indices of both sets, so reconstruction targets are
gathered from the same particles (``particles.values[masked]``) without re-cutting the video.
"""

from __future__ import annotations

import torch

from tubelet.particles.structure import Particles

MASK_MODES = ("tube", "random", "frame")


def mask_particles(
    particles: Particles, ratio: float, *, mode: str = "tube", generator: torch.Generator | None = None
) -> tuple[Particles, torch.Tensor, torch.Tensor]:
    """Hide a fraction of one clip's particles.

    Args:
        particles: one clip.
        ratio: fraction of units to hide, in [0, 1).
        mode: ``tube`` hides the same grid positions at every time (VideoMAE's tube masking), ``random``
            hides particles independently, ``frame`` hides whole tubelet times.
        generator: for reproducible masks.

    Returns:
        visible: the particles left for the encoder.
        keep: (Nv,) int64 sorted indices of the visible particles.
        masked: (Nm,) int64 sorted indices of the hidden ones.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if mode == "random":
        unit = torch.arange(len(particles))
    elif mode == "tube":
        unit = particles.y * particles.grid[2] + particles.x
    elif mode == "frame":
        unit = particles.ti.clone()
    else:
        raise ValueError(f"unknown mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}")
    units, inverse = torch.unique(unit, return_inverse=True)
    n_hidden = min(int(round(ratio * len(units))), len(units) - 1)  # always leave one unit visible
    order = torch.randperm(len(units), generator=generator)
    hidden_unit = torch.zeros(len(units), dtype=torch.bool)
    hidden_unit[order[:n_hidden]] = True
    hidden = hidden_unit[inverse.cpu()].to(particles.t.device)
    keep = (~hidden).nonzero().squeeze(1)
    masked = hidden.nonzero().squeeze(1)
    return particles.select(keep), keep, masked
