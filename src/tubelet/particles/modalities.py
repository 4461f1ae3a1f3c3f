"""Several modalities of the same clips: packed one modality at a time, merged into one sequence per clip.

Particles of different modalities have different `values` widths (pixels, log-mel patches, token ids), so
`pack` batches each modality on its own (`pack_modalities`). Once a model has embedded every modality to
(N_m, D), `merge` concatenates them into ONE packed batch whose clip b holds all of clip b's particles, video
then audio then text, contiguous: ``cu_seqlens`` then keeps attention inside each clip across modalities.

`ModalClip` is one clip's particles of several modalities seen as ONE flat sequence in that merged order, so
per-particle results of a fusion model (scores of an explanation) line up with the clip's particles as they do
with a single-modality `Particles`.
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


@dataclass
class ModalClip:
    """The particles of several modalities of ONE clip, as one flat sequence in merge order.

    Flat particle i runs over ``parts``' first modality, then its second, ...: the order `merge` gives a one-clip
    batch (so give `parts` in the order the model merges them: its ``modalities``). The per-particle fields
    (`t`, `ti`, `y`, `x`, `span`, `modality`) are the parts' fields concatenated in that order, (N,) each.

    Attributes:
        parts: modality name -> that modality's `Particles` of the clip.
    """

    parts: dict[str, Particles]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts.values())

    def _cat(self, name: str) -> torch.Tensor:
        return torch.cat([getattr(part, name) for part in self.parts.values()])

    t = property(lambda self: self._cat("t"))
    ti = property(lambda self: self._cat("ti"))
    y = property(lambda self: self._cat("y"))
    x = property(lambda self: self._cat("x"))
    span = property(lambda self: self._cat("span"))
    modality = property(lambda self: self._cat("modality"))

    def slices(self) -> dict[str, slice]:
        """Modality name -> the flat positions of its particles."""
        out, start = {}, 0
        for name, part in self.parts.items():
            out[name] = slice(start, start + len(part))
            start += len(part)
        return out

    def select(self, index: torch.Tensor) -> ModalClip:
        """The particles at `index` ((K,) int64 or (N,) bool flat positions), kept in merge order.

        A modality may be left with no particles (its part is then empty, not dropped).
        """
        keep = torch.zeros(len(self), dtype=torch.bool)
        keep[index.cpu()] = True
        return ModalClip({name: self.parts[name].select(keep[where]) for name, where in self.slices().items()})

    def to(self, device: torch.device | str) -> ModalClip:
        return ModalClip({name: part.to(device) for name, part in self.parts.items()})


def pack_clips(clips: list[Particles] | list[ModalClip]) -> PackedParticles | ModalBatch:
    """Pack clips of one modality with `pack`, clips of several (`ModalClip`) with `pack_modalities`."""
    if clips and isinstance(clips[0], ModalClip):
        return pack_modalities([clip.parts for clip in clips])
    return pack(clips)


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
