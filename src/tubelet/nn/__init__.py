"""Layers over packed particles: the attention dispatcher, time-aware positions, transformer blocks."""

from tubelet.nn.attention import BACKENDS, available_backends, packed_attention, resolve_backend
from tubelet.nn.layers import Attention, AttentionContext, Block, DropPath, Mlp
from tubelet.nn.position import TIME_MODES, RotaryPositions, SpanEmbedding

__all__ = [
    "BACKENDS",
    "TIME_MODES",
    "Attention",
    "AttentionContext",
    "Block",
    "DropPath",
    "Mlp",
    "RotaryPositions",
    "SpanEmbedding",
    "available_backends",
    "packed_attention",
    "resolve_backend",
]
