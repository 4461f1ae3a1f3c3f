"""Masking for masked video modeling: dropping particles before the encoder.

Masking returns the visible particles and the indices of both sets, so reconstruction targets are
gathered from the same particles (``particles.values[masked]``) without re-cutting the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tubelet.particles.pack import pack, unpack
from tubelet.particles.structure import PackedParticles, Particles

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


@dataclass
class MaskedBatch:
    """A packed batch split for masked video modeling.

    Attributes:
        visible: the particles the encoder sees, packed clip by clip (values: their pixels).
        queries: the hidden particles the decoder reconstructs, packed clip by clip in the same clip order. Their
            values are (M, 0): positions only, so a hidden particle's pixels can never reach the model.
        target_index: (M,) int64 row of each query in the batch that was masked: the targets are
            ``batch.values[target_index]``, the pixels `patchify` cut, never a second cut of the video.
        hidden: particles hidden from the encoder in all (reconstructed or not).
    """

    visible: PackedParticles
    queries: PackedParticles
    target_index: torch.Tensor
    hidden: int


def mask_batch(
    batch: PackedParticles,
    ratio: float,
    *,
    mode: str = "tube",
    decoder_ratio: float = 0.0,
    generator: torch.Generator | None = None,
) -> MaskedBatch:
    """Mask every clip of a packed batch with `mask_particles` and repack the visible and hidden particles.

    The encoder then costs what the visible particles cost. A particle removed by static pruning is absent from
    `batch`, so it is neither encoded nor reconstructed.

    Args:
        batch: particles of B clips, values (N, t*p*q*C) pixels.
        ratio, mode: as in `mask_particles`, per clip.
        decoder_ratio: fraction of each clip's hidden particles left out of the reconstruction (VideoMAE V2's
            decoder masking; 0 reconstructs every hidden particle). At least one is kept where any is hidden.
        generator: for reproducible masks.

    Returns:
        A `MaskedBatch` (M queries; M is about ``(1 - decoder_ratio) * hidden``).
    """
    if not 0.0 <= decoder_ratio < 1.0:
        raise ValueError(f"decoder mask ratio must be in [0, 1), got {decoder_ratio}")
    clips = unpack(batch)
    masks = [mask_particles(clip, ratio, mode=mode, generator=generator) for clip in clips]
    queries, index = [], []
    # Decoder subsets are drawn after every clip's mask, so the encoder's masks do not depend on decoder_ratio.
    for clip, (_, _, hidden), offset in zip(clips, masks, batch.cu_seqlens[:-1].tolist()):
        if decoder_ratio and len(hidden):
            count = max(1, round((1.0 - decoder_ratio) * len(hidden)))
            chosen = torch.randperm(len(hidden), generator=generator)[:count].to(hidden.device)
            hidden = hidden[chosen].sort().values
        queries.append(clip.select(hidden).with_values(clip.values.new_zeros(len(hidden), 0)))
        index.append(hidden + offset)
    visible = pack([shown for shown, _, _ in masks])
    return MaskedBatch(visible, pack(queries), torch.cat(index), sum(len(hidden) for _, _, hidden in masks))
