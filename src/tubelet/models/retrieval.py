"""Two towers for video-text retrieval (CLIP-style): a video encoder and a text transformer, one shared space.

- Video tower: the particle `Encoder` (no head), its per-clip pooled features projected to ``embed_dim``.
- Text tower: `TextTower`, a small transformer over text particles (`tubelet.particles.text`): token embedding
  plus a fixed sin-cos position over `ti` (a token's place in its caption), attention within each caption of the
  packed batch (``cu_seqlens``: captions of any length share a batch with no padding), mean over the caption's
  tokens, projected to ``embed_dim``.
- A learnable temperature, stored as ``logit_scale = log(1 / temperature)`` and clamped at ``log(100)`` as in CLIP.

Both towers return L2-normalized (B, embed_dim) embeddings, so a dot product is the cosine similarity. The loss
(symmetric InfoNCE) and recall@k live in `tubelet.tasks.retrieval`.

The model interface of every kind (`tubelet.models.kinds`) reads the video tower: `forward_features(packed) -> (N, D)`,
`pool(features, packed) -> (B, D)` and `forward_head(pooled) -> (B, embed_dim)`, the unit video embedding
(`encode_video` is the three in a row); `reset_head` raises, a retrieval model having no classifier.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.models.encoder import Encoder, EncoderConfig, _init_weights, mean_pool
from tubelet.nn.layers import AttentionContext, Block
from tubelet.nn.position import token_positions
from tubelet.particles.structure import PackedParticles
from tubelet.typed import check_range, from_dict

MODEL_TYPE = "tubelet-retrieval"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: the temperature never drops below 0.01


@dataclass(frozen=True)
class RetrievalConfig:
    """The text tower and the shared space of a `RetrievalModel` (the video tower has its own `EncoderConfig`)."""

    vocab_size: int = 0  # tokens of the tokenizer
    text_dim: int = 128  # width of the text tower
    text_depth: int = 2  # transformer blocks of the text tower
    text_heads: int = 4  # attention heads of the text tower
    mlp_ratio: float = 4.0  # MLP hidden width / text_dim
    embed_dim: int = 128  # the shared space both towers project to
    temperature: float = 0.07  # initial softmax temperature (learned afterwards)
    attention: str = "auto"  # attention backend of the text tower (see tubelet.nn.attention)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RetrievalConfig:
        config = from_dict(cls, data, what="retrieval config")
        config.validate()
        return config

    def validate(self) -> None:
        if self.vocab_size < 1:
            raise ValueError("vocab_size: the text tower needs the tokenizer's vocabulary size")
        check_range(self, "text_dim", "text_depth", "text_heads", "embed_dim", low=1)
        check_range(self, "mlp_ratio", low=0, strict=True)
        if self.text_dim % self.text_heads:
            heads = self.text_heads
            raise ValueError(f"text_dim: expected a value divisible by text_heads ({heads}), got {self.text_dim}")
        if not 0 < self.temperature < 1:
            raise ValueError(f"temperature: expected a number in (0, 1), got {self.temperature}")


class TextTower(nn.Module):
    """A transformer over the tokens of each caption of a packed batch; one (B, text_dim) vector per caption.

    Args:
        vocab_size, dim, depth, heads, mlp_ratio: its shape.
        attention: attention backend.
    """

    def __init__(
        self, vocab_size: int, dim: int, *, depth: int, heads: int, mlp_ratio: float = 4.0, attention: str = "auto"
    ):
        super().__init__()
        self.dim = dim
        self.attention = attention
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)

    def forward(self, packed: PackedParticles) -> torch.Tensor:
        """packed: text particles, values (N, 1) int64 token ids, ti their positions -> (B, dim) caption vectors."""
        ids = packed.values[:, 0].long()  # (N,)
        x = self.token_embed(ids) + token_positions(packed.ti, self.dim).to(self.token_embed.weight.dtype)  # (N, D)
        # No rotary angles: the order of a caption's tokens enters through the sin-cos position above.
        ctx = AttentionContext(
            packed.cu_seqlens, packed.max_seqlen, packed.seq, packed.num_clips, None, backend=self.attention
        )
        for block in self.blocks:
            x = block(x, ctx)
        return mean_pool(self.norm(x), packed.seq, packed.num_clips)  # (B, D)


class RetrievalModel(nn.Module):
    """Video tower + text tower + projections to one space + a learnable temperature.

    Args:
        video: the video encoder's config (its head is dropped: ``num_classes`` 0).
        config: a `RetrievalConfig`.
    """

    def __init__(self, video: EncoderConfig, config: RetrievalConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.video = Encoder(video.replace(num_classes=0))
        self.text = TextTower(
            config.vocab_size,
            config.text_dim,
            depth=config.text_depth,
            heads=config.text_heads,
            mlp_ratio=config.mlp_ratio,
            attention=config.attention,
        )
        self.video_proj = nn.Linear(video.dim, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        for proj in (self.video_proj, self.text_proj):
            nn.init.trunc_normal_(proj.weight, std=proj.in_features**-0.5)

    @property
    def video_config(self) -> EncoderConfig:
        return self.video.config

    def forward_features(self, packed: PackedParticles, **options) -> torch.Tensor:
        """(N, D_video) the video tower's particle features (`Encoder.forward_features`, same options)."""
        return self.video.forward_features(packed, **options)

    def pool(self, features: torch.Tensor, packed: PackedParticles) -> torch.Tensor:
        """(N, D_video) -> (B, D_video) the video tower's per-clip vectors."""
        return self.video.pool(features, packed)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D_video) -> (B, embed_dim) unit vectors in the shared space: the video projection, normalized."""
        return F.normalize(self.video_proj(pooled), dim=-1)

    def reset_head(self, num_classes: int) -> None:
        """A retrieval model has no classifier: its head is the projection into the space it shares with text."""
        raise NotImplementedError(
            "a retrieval model has no classifier head to reset; fine-tune its video tower (model.video) as a "
            "classifier instead"
        )

    def encode_video(self, packed: PackedParticles) -> torch.Tensor:
        """packed: video particles (values (N, t*p*q*C) normalized pixels) -> (B, embed_dim) unit vectors."""
        return self.forward_head(self.pool(self.forward_features(packed), packed))

    def encode_text(self, packed: PackedParticles) -> torch.Tensor:
        """packed: text particles (values (N, 1) token ids) -> (B, embed_dim) unit vectors."""
        return F.normalize(self.text_proj(self.text(packed)), dim=-1)

    def scale(self) -> torch.Tensor:
        """() the logit scale 1 / temperature, clamped at 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, video: PackedParticles, text: PackedParticles) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, E) video and (B, E) text embeddings of B (clip, caption) pairs."""
        return self.encode_video(video), self.encode_text(text)

    def block_index(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay (the video tower's; the rest counts as the top)."""
        if name.startswith("video."):
            return self.video.block_index(name.removeprefix("video."))
        return self.video.config.depth + 1
