"""Packing clips into one batch without padding, and back."""

from __future__ import annotations

import torch

from tubelet.particles.structure import PER_PARTICLE, PackedParticles, Particles


def pack(clips: list[Particles]) -> PackedParticles:
    """Concatenate clips' particles; `seq` becomes each clip's batch position and `cu_seqlens` marks boundaries."""
    if not clips:
        raise ValueError("pack needs at least one clip")
    tubelet = clips[0].tubelet
    if any(c.tubelet != tubelet for c in clips):
        raise ValueError("all clips of a batch must share one tubelet size")
    widths = {tuple(c.values.shape[1:]) for c in clips}
    if len(widths) > 1:
        # Video pixels, audio log-mel patches and text token ids have different widths: pack each modality
        # on its own, embed each to (N, D), then the embedded particles of all modalities can share a batch.
        raise ValueError(f"all clips of a batch must share one values width, got {sorted(widths)}")
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.int32)
    cu_seqlens = torch.zeros(len(clips) + 1, dtype=torch.int32)
    cu_seqlens[1:] = lengths.cumsum(0)
    fields = {name: torch.cat([getattr(c, name) for c in clips]) for name in PER_PARTICLE if name != "seq"}
    fields["seq"] = torch.repeat_interleave(torch.arange(len(clips)), lengths.long())
    return PackedParticles(
        **fields,
        cu_seqlens=cu_seqlens,
        max_seqlen=int(lengths.max()),
        grids=[c.grid for c in clips],
        frame_shapes=[c.frame_shape for c in clips],
        tubelet=tubelet,
        channels=clips[0].channels,
    )


def unpack(packed: PackedParticles) -> list[Particles]:
    """Split a packed batch back into one `Particles` per clip (`seq` reset to 0)."""
    bounds = packed.cu_seqlens.tolist()
    out = []
    for b in range(packed.num_clips):
        part = slice(bounds[b], bounds[b + 1])
        fields = {name: getattr(packed, name)[part] for name in PER_PARTICLE}
        fields["seq"] = torch.zeros_like(fields["seq"])
        out.append(
            Particles(
                **fields,
                grid=packed.grids[b],
                tubelet=packed.tubelet,
                frame_shape=packed.frame_shapes[b],
                channels=packed.channels,
            )
        )
    return out
