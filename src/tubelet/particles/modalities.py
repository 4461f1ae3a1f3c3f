"""Several modalities of the same clips: packed one modality at a time, merged into one sequence per clip.

Particles of different modalities have different `values` widths (pixels, log-mel patches, token ids), so
`pack` batches each modality on its own (`pack_modalities`). Once a model has embedded every modality to
(N_m, D), `merge` concatenates them into ONE packed batch whose clip b holds all of clip b's particles, video
then audio then text, contiguous: ``cu_seqlens`` then keeps attention inside each clip across modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tubelet.particles.pack import pack
from tubelet.particles.structure import MODALITIES, PER_PARTICLE, PackedParticles, Particles


@dataclass
class ModalBatch:
    """The packed particles of each modality of the same B clips, in the same clip order.

    Attributes:
        parts: modality name (``video``, ``audio``, ``text``) -> its `PackedParticles`; each has B clips and clip
            b of every part is the same video window.
    """

    parts: dict[str, PackedParticles]

    @property
    def num_clips(self) -> int:
        return next(iter(self.parts.values())).num_clips

    def to(self, device: torch.device | str) -> ModalBatch:
        return ModalBatch({name: part.to(device) for name, part in self.parts.items()})


def pack_modalities(clips: list[dict[str, Particles]]) -> ModalBatch:
    """Pack each modality of `clips` (one dict of modality name -> `Particles` per clip, all with the same keys).

    Raises:
        ValueError: no clips, clips with different modalities, or an unknown modality name.
    """
    if not clips:
        raise ValueError("pack_modalities needs at least one clip")
    names = list(clips[0])
    if any(list(c) != names for c in clips):
        raise ValueError("every clip of a batch must carry the same modalities, in the same order")
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality {', '.join(unknown)}; expected some of {', '.join(MODALITIES)}")
    return ModalBatch({name: pack([c[name] for c in clips]) for name in names})


def merge(parts: list[PackedParticles]) -> tuple[PackedParticles, torch.Tensor]:
    """One packed batch of all the particles of `parts`, each clip's particles contiguous.

    Args:
        parts: packed batches of the same B clips whose values share one width (embedded to (N_m, D)).

    Returns:
        merged: values (N, D) with N = sum of N_m; clip b is its particles of ``parts[0]``, then of ``parts[1]``,
            ... (every per-particle field, `modality` included, moves with them); grids, frame_shapes and tubelet
            are those of ``parts[0]``.
        order: (N,) int64: row i of `merged` is row ``order[i]`` of the concatenation of `parts`.
    """
    if not parts:
        raise ValueError("merge needs at least one packed batch")
    num_clips = parts[0].num_clips
    if any(p.num_clips != num_clips for p in parts):
        raise ValueError(f"every modality must hold the same clips, got {[p.num_clips for p in parts]}")
    seq = torch.cat([p.seq for p in parts])  # (N,)
    order = torch.argsort(seq, stable=True)  # clip by clip; within a clip, the order of `parts` (stable sort)
    fields = {name: torch.cat([getattr(p, name) for p in parts])[order] for name in PER_PARTICLE}
    lengths = torch.bincount(fields["seq"], minlength=num_clips)  # (B,)
    cu_seqlens = torch.zeros(num_clips + 1, dtype=torch.int32, device=seq.device)
    cu_seqlens[1:] = lengths.cumsum(0)
    merged = PackedParticles(
        **fields,
        cu_seqlens=cu_seqlens,
        max_seqlen=int(lengths.max()),
        grids=parts[0].grids,
        frame_shapes=parts[0].frame_shapes,
        tubelet=parts[0].tubelet,
        channels=parts[0].channels,
    )
    return merged, order
