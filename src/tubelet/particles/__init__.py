"""The basic particle: spacetime patches with real times and grid positions; pruning, masking, packing.

Audio (log-mel patches) and text (token ids) are particles too, tagged by `modality`.
"""

from tubelet.particles.audio import DEFAULT_AUDIO_PATCH, log_mel, mel_filterbank, tokenize_audio
from tubelet.particles.mask import MASK_MODES, MaskedBatch, mask_batch, mask_particles
from tubelet.particles.pack import pack, unpack
from tubelet.particles.patchify import grid_shape, patchify, to_grid, unpatchify
from tubelet.particles.prune import static_runs
from tubelet.particles.structure import AUDIO, MODALITIES, TEXT, VIDEO, PackedParticles, Particles
from tubelet.particles.text import tokenize_text
from tubelet.particles.tokenize import DEFAULT_TUBELET, normalize, tokenize, tubelet_times

__all__ = [
    "AUDIO",
    "DEFAULT_AUDIO_PATCH",
    "MODALITIES",
    "TEXT",
    "VIDEO",
    "log_mel",
    "mel_filterbank",
    "tokenize_audio",
    "tokenize_text",
    "DEFAULT_TUBELET",
    "MASK_MODES",
    "MaskedBatch",
    "PackedParticles",
    "Particles",
    "grid_shape",
    "mask_batch",
    "mask_particles",
    "normalize",
    "pack",
    "patchify",
    "static_runs",
    "to_grid",
    "tokenize",
    "tubelet_times",
    "unpack",
    "unpatchify",
]
