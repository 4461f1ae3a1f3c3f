"""A causal text decoder over particles: the model of the ``caption`` and ``dialogue`` tasks.

`CaptionModel` is a clip encoder (an `Encoder` over video particles, or a `FusionModel` over video and audio) and a
`TextDecoder`: token embeddings plus a fixed sin-cos position over each token's place, then blocks of causal
self-attention over the text, cross-attention from the text to the clip's encoder features ("memory"), and an MLP;
the output projection is tied to the token embedding. Everything is packed, as the encoder is: the tokens of B
sequences are concatenated with ``cu_seqlens``, the memory of the same B clips with its own ``cu_seqlens``, and the
one attention dispatcher (`tubelet.nn.attention.packed_attention`, ``causal`` / ``kv_cu_seqlens``) keeps every
sequence to its own clip and to the tokens before it. A decoder without memory (``memory_dim`` 0) is a text-only
language model: the question-only arm of the dialogue task.

Each token also carries a turn (a learned embedding, `TextDecoderConfig.max_turns` of them): 0 for a caption, and in
a dialogue the turn a question or answer of the history belongs to, so "what colour was it?" can be read against
the turn it follows.

The model returns features and logits; the loss, decoding and metrics live in `tubelet.tasks.caption`,
`tubelet.tasks.dialogue` and `tubelet.tasks.generate`. A checkpoint is the ``tubelet-captioner`` kind
(`tubelet.models.kinds`): ``encoder`` (or ``fusion``) and ``text_decoder`` blocks in config.json, the weights in
model.safetensors and ``tokenizer.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from tubelet.models.encoder import Encoder, EncoderConfig, _init_weights, mean_pool
from tubelet.models.fusion import FusionModel
from tubelet.nn.attention import packed_attention
from tubelet.nn.layers import DropPath, Mlp
from tubelet.nn.position import token_positions
from tubelet.particles.modalities import ModalBatch
from tubelet.particles.structure import PackedParticles
from tubelet.typed import check_range, from_dict

MODEL_TYPE = "tubelet-captioner"
# Trained under any freeze: everything but the clip encoder.
DECODER_KEEP = ("decoder.",)


@dataclass(frozen=True)
class TextDecoderConfig:
    """Shape of a `TextDecoder`. Stored in a captioner checkpoint's ``config.json`` under ``text_decoder``."""

    vocab_size: int = 0  # tokens of the tokenizer, its specials included
    dim: int = 128  # width of the decoder
    depth: int = 2  # decoder blocks
    heads: int = 4  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    memory_dim: int = 128  # width of the encoder features it attends to; 0: no clip (a text-only model)
    max_turns: int = 16  # turn embeddings (dialogue history); later turns share the last
    bos_id: int = 0  # the token that starts a caption or an answer
    eos_id: int = 0  # the token that ends one
    sep_id: int = 0  # separates the questions and answers of a dialogue's history
    max_history: int = 8  # dialogue: previous (question, answer) pairs in an answer's prompt (0: history-blind)
    dropout: float = 0.0  # dropout inside blocks
    drop_path: float = 0.0  # stochastic depth, reached linearly by the last block
    attention: str = "auto"  # attention backend (see tubelet.nn.attention)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TextDecoderConfig:
        config = from_dict(cls, data, what="text decoder config")
        config.validate()
        return config

    def validate(self) -> None:
        if self.vocab_size < 1:
            raise ValueError("vocab_size: the decoder needs the tokenizer's vocabulary size")
        check_range(self, "dim", "depth", "heads", "max_turns", low=1)
        check_range(self, "memory_dim", "bos_id", "eos_id", "sep_id", "max_history", "dropout", "drop_path", low=0)
        check_range(self, "mlp_ratio", low=0, strict=True)
        if self.dim % self.heads:
            raise ValueError(f"dim: expected a value divisible by heads ({self.heads}), got {self.dim}")
        for name in ("bos_id", "eos_id", "sep_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"{name}: {getattr(self, name)} is outside the vocabulary ({self.vocab_size})")

    def replace(self, **changes) -> TextDecoderConfig:
        config = replace(self, **changes)
        config.validate()
        return config


@dataclass
class Memory:
    """The encoder features a batch of sequences attends to: sequence b reads ``features[cu[b]:cu[b+1]]``.

    Attributes:
        features: (M, D_enc) particle features of the clips, clip after clip.
        cu_seqlens: (B+1,) int32 clip boundaries.
        max_seqlen: particles of the longest clip.
    """

    features: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    def select(self, index: list[int]) -> Memory:
        """The memory of sequences `index` (in that order, repeats allowed: one copy per beam or candidate)."""
        bounds = self.cu_seqlens.tolist()
        rows = [torch.arange(bounds[i], bounds[i + 1], device=self.features.device) for i in index]
        lengths = torch.tensor([0] + [len(r) for r in rows], device=self.cu_seqlens.device)
        cu = torch.cumsum(lengths, 0).to(torch.int32)
        return Memory(self.features[torch.cat(rows)], cu, int(lengths.max()))  # (M', D_enc)


class CrossAttention(nn.Module):
    """Text tokens (queries) attend to the particles of their own clip (keys and values); no positions added."""

    def __init__(self, dim: int, memory_dim: int, heads: int, *, proj_dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(memory_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: torch.Tensor, cu_seqlens, max_seqlen: int, memory: Memory, backend: str) -> torch.Tensor:
        """x: (N, D) tokens, memory.features (M, D_enc) -> (N, D)."""
        q = self.q(x).unflatten(1, (self.heads, self.head_dim))  # (N, h, d)
        k, v = self.kv(memory.features).unflatten(1, (2, self.heads, self.head_dim)).unbind(1)  # each (M, h, d)
        out = packed_attention(
            q, k, v, cu_seqlens, max_seqlen, backend=backend, kv_cu_seqlens=memory.cu_seqlens,
            kv_max_seqlen=memory.max_seqlen,
        )  # fmt: skip
        return self.proj_drop(self.proj(out.flatten(1)))  # (N, D)


class CausalSelfAttention(nn.Module):
    """Each token attends to itself and the tokens before it in its own sequence."""

    def __init__(self, dim: int, heads: int, *, proj_dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: torch.Tensor, cu_seqlens, max_seqlen: int, backend: str) -> torch.Tensor:
        """x: (N, D) -> (N, D)."""
        q, k, v = self.qkv(x).unflatten(1, (3, self.heads, self.head_dim)).unbind(1)  # each (N, h, d)
        out = packed_attention(q, k, v, cu_seqlens, max_seqlen, backend=backend, causal=True)
        return self.proj_drop(self.proj(out.flatten(1)))


class DecoderBlock(nn.Module):
    """Pre-norm: x + self_attn(norm(x)), x + cross_attn(norm(x), memory) when it reads a clip, x + mlp(norm(x))."""

    def __init__(self, config: TextDecoderConfig, drop_path: float):
        super().__init__()
        dim = config.dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CausalSelfAttention(dim, config.heads, proj_dropout=config.dropout)
        if config.memory_dim:
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, config.memory_dim, config.heads, proj_dropout=config.dropout)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, text: PackedParticles, memory: Memory | None, backend: str) -> torch.Tensor:
        seq, clips = text.seq, text.num_clips
        x = x + self.drop_path(self.attn(self.norm1(x), text.cu_seqlens, text.max_seqlen, backend), seq, clips)
        if memory is not None and hasattr(self, "cross"):
            cross = self.cross(self.norm2(x), text.cu_seqlens, text.max_seqlen, memory, backend)
            x = x + self.drop_path(cross, seq, clips)
        return x + self.drop_path(self.mlp(self.norm3(x)), seq, clips)


class TextDecoder(nn.Module):
    """A causal transformer over packed text particles, reading each sequence's clip through cross-attention.

    Args:
        config: a `TextDecoderConfig`.
    """

    def __init__(self, config: TextDecoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.token_embed = nn.Embedding(config.vocab_size, config.dim)
        self.turn_embed = nn.Embedding(config.max_turns, config.dim)
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(DecoderBlock(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.zeros_(self.turn_embed.weight)

    def forward(self, text: PackedParticles, memory: Memory | None, turns: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits at every position.

        Args:
            text: text particles, values (N, 1) int64 token ids, ti the place in its sequence, cu_seqlens (B+1,).
            memory: the B clips' features (None, or a decoder with ``memory_dim`` 0: text alone).
            turns: (N,) int64 turn of each token (None: all 0).

        Returns:
            (N, vocab_size) logits; row i predicts the token after token i of its sequence.
        """
        ids = text.values[:, 0].long()  # (N,)
        x = self.token_embed(ids) + token_positions(text.ti, self.config.dim).to(self.token_embed.weight.dtype)
        if turns is not None:
            x = x + self.turn_embed(turns.clamp(max=self.config.max_turns - 1))
        for block in self.blocks:
            x = block(x, text, memory, self.config.attention)
        return self.norm(x) @ self.token_embed.weight.T  # (N, V): tied output projection


class CaptionModel(nn.Module):
    """A clip encoder (video, or video and audio) and a causal text decoder reading its particle features.

    Args:
        encoder: an `Encoder` (video particles) or a `FusionModel` (video and audio), without a head; None for a
            text-only model (the decoder's ``memory_dim`` is then 0).
        decoder: a `TextDecoderConfig` (its ``memory_dim`` is the encoder's width).
    """

    def __init__(self, encoder: Encoder | FusionModel | None, decoder: TextDecoderConfig):
        super().__init__()
        width = 0 if encoder is None else encoder.config.dim
        if decoder.memory_dim != width:
            raise ValueError(f"memory_dim: the encoder's features are {width} wide, got {decoder.memory_dim}")
        self.encoder = encoder
        self.decoder = TextDecoder(decoder)
        self.config = decoder

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model reads from a clip: ``("video",)``, ``("video", "audio")``, or ``()`` (text only)."""
        if self.encoder is None:
            return ()
        return tuple(getattr(self.encoder.config, "modalities", ("video",)))

    @property
    def video_config(self) -> EncoderConfig | None:
        """The clip encoder's config (its tubelet is the run's), None for a text-only model."""
        return self.encoder.config if self.encoder is not None else None

    def forward_features(self, batch: PackedParticles | ModalBatch) -> torch.Tensor:
        """(M, D_enc) the encoder's particle features of a batch of clips."""
        return self.encoder.forward_features(batch)

    def pool(self, features: torch.Tensor, batch: PackedParticles | ModalBatch) -> torch.Tensor:
        """(M, D_enc) -> (B, D_enc) per-clip means (the nearest-neighbour baseline compares these)."""
        if isinstance(self.encoder, FusionModel):
            return self.encoder.pool(features, batch)
        return mean_pool(features, batch.seq, batch.num_clips)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """A captioner's pooled features are its output (its head is the decoder)."""
        return pooled

    def reset_head(self, num_classes: int) -> None:
        raise NotImplementedError("a captioner has no classifier head: its output is text (tubelet caption / chat)")

    def memory(self, batch: PackedParticles | ModalBatch | None) -> Memory | None:
        """The clips' features as the decoder reads them (None for a text-only model)."""
        if self.encoder is None or batch is None:
            return None
        features = self.encoder.forward_features(batch)  # (M, D_enc)
        layout = self.encoder.layout(batch) if isinstance(self.encoder, FusionModel) else batch
        return Memory(features, layout.cu_seqlens, int(layout.max_seqlen))

    def forward(
        self, batch: PackedParticles | ModalBatch | None, text: PackedParticles, turns: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, vocab) next-token logits of B text sequences, sequence b reading clip b of `batch`."""
        return self.decoder(text, self.memory(batch), turns)

    def block_index(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: the encoder's blocks, the decoder on top."""
        if name.startswith("encoder.") and self.encoder is not None:
            return self.encoder.block_index(name.removeprefix("encoder."))
        depth = self.encoder.config.depth if self.encoder is not None else 0
        return depth + 1
