"""Layers over packed particles: the attention dispatcher, time-aware positions, transformer blocks."""

from tubelet.nn.attention import BACKENDS, available_backends, packed_attention, resolve_backend
from tubelet.nn.layers import Attention, AttentionContext, Block, DropPath, Mlp
from tubelet.nn.position import POSITIONS, TIME_MODES, RotaryPositions, SpanEmbedding, grid_index, grid_sinusoids

__all__ = [
    "BACKENDS",
    "POSITIONS",
    "TIME_MODES",
    "Attention",
    "AttentionContext",
    "Block",
    "DropPath",
    "Mlp",
    "RotaryPositions",
    "SpanEmbedding",
    "available_backends",
    "grid_index",
    "grid_sinusoids",
    "packed_attention",
    "resolve_backend",
]
