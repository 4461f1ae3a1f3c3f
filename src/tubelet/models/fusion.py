"""Early fusion: one transformer over the video, audio and text particles of each clip.

Every modality is embedded to D on its own (its values have their own width), tagged with a learned modality
embedding, and merged with `tubelet.particles.modalities.merge` into ONE packed sequence per clip: clip b's
video particles, then its audio, then its text, with ``cu_seqlens`` over the merged clips, so attention mixes
modalities within a clip and never crosses clips.

Positions. All modalities share the seconds axis: every particle is rotated by its `t` in seconds with the same
rotary frequencies as the encoder, so attention between a sound and a frame depends on how far apart in time
they are, whatever the frame rate or audio hop. The row/column rotation is for video only: an audio particle's
`y` is a mel band and a text particle's `ti` a token position, neither a place on the picture, so both are
rotated by time alone (y = x = 0 in the rotation). Their own second axis enters as an added embedding
instead: a learned embedding per mel band for audio, VideoMAE-style sin-cos of the token position for text.

`FusionConfig.modalities` chooses the modalities the model reads; only their embeddings exist, and particles of
any other modality in the batch are ignored. The same class therefore gives the ablations: ``("video",)``,
``("audio",)``, ``("video", "audio")``.

Interface as `tubelet.models.encoder.Encoder`: `forward_features(batch) -> (N, D)` in merged order,
`pool(features, batch) -> (B, D)`, `forward_head(pooled) -> (B, classes)`, `reset_head(num_classes)`; `layout(batch)`
gives the merged order's fields (seq, modality, t, ...) for per-particle results. And what the attribution methods
of `tubelet.explain` need: `embed(batch) -> (N, D)` in merged order, `forward(batch, embedded=...)` and
`forward_features(batch, keep_attention=True)` leaving the attention maps in `last_attention`.
The blocks, final `norm`, `patch_embed` and `span_embed` carry the encoder's parameter names, so a pretrained
encoder's weights load into them: `config_from_encoder` gives a fusion model of an encoder's shape, and
`tubelet.models.fusion_from_encoder.fusion_from_encoder` loads the weights. On video the two compute the same
thing (the same rotary angles from seconds, rows and columns; the same blocks and final norm) except for the
modality embedding, which the recipe starts at zero for video, so a video-only fusion model from an encoder gives
its features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from tubelet.models.encoder import EncoderConfig, _init_weights, mean_pool
from tubelet.nn.layers import AttentionContext, Block
from tubelet.nn.position import RotaryPositions, SpanEmbedding, token_positions
from tubelet.particles.modalities import ModalBatch, merge
from tubelet.particles.structure import MODALITIES, VIDEO, PackedParticles
from tubelet.typed import check_range, from_dict

MODEL_TYPE = "tubelet-fusion"
FUSION_POOLING = ("mean", "modality")
# Parameters trained under any freeze: the head, and what no video encoder provides (the audio and text embeddings
# and the modality tags). ``freeze=backbone`` therefore fixes exactly a pretrained encoder's part: the video
# embedding (patch_embed, span_embed), the blocks and the final norm.
UNFROZEN = ("head.", "audio_embed.", "band_embed.", "token_embed.", "modality_embed.")
# The fields of an `EncoderConfig` a fusion model of its shape copies (`config_from_encoder`).
ENCODER_SHAPE = ("dim", "depth", "heads", "mlp_ratio", "tubelet", "channels", "norm_eps")


@dataclass(frozen=True)
class FusionConfig:
    """Shape of a `FusionModel`. Stored in a fusion checkpoint's ``config.json`` under ``fusion``."""

    modalities: tuple[str, ...] = ("video", "audio")  # which particles the model reads, in merge order
    dim: int = 128  # width of every particle's feature
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    tubelet: tuple[int, int, int] = (2, 16, 16)  # video: frames, rows, columns per particle
    channels: int = 3  # video: colour channels of the pixels
    audio_patch: tuple[int, int] = (16, 16)  # audio: STFT frames x mel bins per particle
    audio_bands: int = 4  # audio: mel bands of particles (n_mels / mel bins per patch), one embedding each
    vocab_size: int = 0  # text: tokens of the tokenizer (needed when "text" is read)
    num_classes: int = 0  # classifier outputs; 0 means no head (features only)
    dropout: float = 0.0  # dropout inside blocks and before the head
    attn_dropout: float = 0.0  # dropout on attention weights
    drop_path: float = 0.0  # stochastic depth, reached linearly by the last block
    attention: str = "auto"  # attention backend (see tubelet.nn.attention)
    norm_eps: float = 1e-6  # LayerNorm epsilon
    pooling: str = "mean"  # mean over all particles, or "modality": the mean of each modality's mean

    @property
    def patch_dim(self) -> int:
        t, p, q = self.tubelet
        return t * p * q * self.channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FusionConfig:
        config = from_dict(cls, data, what="fusion config")
        config.validate()
        return config

    def validate(self) -> None:
        if not self.modalities:
            raise ValueError("modalities: choose at least one of video, audio, text")
        if self.pooling not in FUSION_POOLING:
            raise ValueError(f"pooling: expected {' | '.join(FUSION_POOLING)}, got {self.pooling!r}")
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities: expected distinct names from {', '.join(MODALITIES)}, got {self.modalities}")
        check_range(self, "dim", "depth", "heads", "tubelet", "channels", "audio_patch", "audio_bands", low=1)
        check_range(self, "vocab_size", "num_classes", "dropout", "attn_dropout", "drop_path", low=0)
        check_range(self, "mlp_ratio", "norm_eps", low=0, strict=True)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim: expected {self.heads} heads of an even width (rotary), got {self.dim}")
        if "text" in self.modalities and self.vocab_size < 1:
            raise ValueError("vocab_size: a model that reads text needs the tokenizer's vocabulary size")

    def replace(self, **changes) -> FusionConfig:
        config = replace(self, **changes)
        config.validate()
        return config


def config_from_encoder(encoder: EncoderConfig, **fields) -> FusionConfig:
    """A `FusionConfig` of an encoder's shape (`ENCODER_SHAPE`), so that the encoder's weights fit it.

    Args:
        encoder: the pretrained encoder's config.
        fields: the other `FusionConfig` fields (modalities, num_classes, audio_bands, vocab_size, pooling,
            dropout, drop_path, attention...).

    Raises:
        ValueError: the encoder places or normalizes particles unlike a fusion model (which rotates by seconds,
            rows and columns and normalizes every particle), so its weights would compute something else here.
    """
    if encoder.positions != "rope":
        raise ValueError(
            f"positions={encoder.positions!r}: its blocks learned a fixed sin-cos of the grid index, while a fusion "
            "model rotates every particle by its seconds; start from an encoder with rotary positions (tubelet "
            "pretrain)"
        )
    if encoder.time_mode != "seconds":
        raise ValueError(f"time_mode={encoder.time_mode!r}: a fusion model rotates by seconds on the shared time axis")
    if encoder.final_norm != "tokens":
        raise ValueError(f"final_norm={encoder.final_norm!r}: a fusion model normalizes every particle's features")
    if encoder.final_norm_eps not in (None, encoder.norm_eps):
        raise ValueError(f"final_norm_eps={encoder.final_norm_eps}: a fusion model's final norm uses norm_eps")
    if encoder.rope_layout != "half":
        raise ValueError(f"rope_layout={encoder.rope_layout!r}: load it with tubelet.models.load, which converts it")
    return FusionConfig(**{name: getattr(encoder, name) for name in ENCODER_SHAPE}, **fields)


class FusionModel(nn.Module):
    """A transformer over the particles of several modalities of each clip (early fusion).

    Args:
        config: a `FusionConfig`.
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim = config.dim
        if "video" in config.modalities:
            self.patch_embed = nn.Linear(config.patch_dim, dim)
            self.span_embed = SpanEmbedding(dim)
        if "audio" in config.modalities:
            f, m = config.audio_patch
            self.audio_embed = nn.Linear(f * m, dim)
            self.band_embed = nn.Embedding(config.audio_bands, dim)
        if "text" in config.modalities:
            self.token_embed = nn.Embedding(config.vocab_size, dim)
        self.modality_embed = nn.Embedding(len(MODALITIES), dim)
        self.rope = RotaryPositions(dim // config.heads)
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.heads,
                mlp_ratio=config.mlp_ratio,
                dropout=config.dropout,
                attn_dropout=config.attn_dropout,
                drop_path=rate,
                norm_eps=config.norm_eps,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.head_drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(dim, config.num_classes) if config.num_classes else nn.Identity()
        self.apply(_init_weights)
        for table in (self.modality_embed, getattr(self, "band_embed", None), getattr(self, "token_embed", None)):
            if table is not None:
                nn.init.trunc_normal_(table.weight, std=0.02)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def embed_modality(self, name: str, part: PackedParticles) -> torch.Tensor:
        """(N_m, D) embeddings of one modality's packed particles, with their modality embedding."""
        if name == "video":  # values (N, t*p*q*C) normalized pixels, as the encoder embeds them
            x = self.patch_embed(part.values) + self.span_embed(part.span)
        elif name == "audio":  # values (N, f*m) normalized log-mel; y is the mel band
            x = self.audio_embed(part.values) + self.band_embed(part.y.clamp(max=self.config.audio_bands - 1))
        else:  # text: values (N, 1) token ids; ti is the token's position in its caption
            x = self.token_embed(part.values[:, 0].long()) + token_positions(part.ti, self.config.dim).to(self.dtype)
        return x + self.modality_embed(part.modality)

    @property
    def dtype(self) -> torch.dtype:
        return self.modality_embed.weight.dtype

    def _parts(self, batch: ModalBatch) -> list[tuple[str, PackedParticles]]:
        """The packed particles of the model's modalities, in merge order.

        Raises:
            ValueError: a modality the model reads is missing from `batch`.
        """
        missing = [name for name in self.config.modalities if name not in batch.parts]
        if missing:
            raise ValueError(f"the batch has no {', '.join(missing)} particles, which this model reads")
        return [(name, batch.parts[name]) for name in self.config.modalities]

    def merged(self, batch: ModalBatch) -> PackedParticles:
        """The embedded particles of the model's modalities, merged into one sequence per clip: values (N, D).

        Raises:
            ValueError: a modality the model reads is missing from `batch`.
        """
        return merge([part.with_values(self.embed_modality(name, part)) for name, part in self._parts(batch)])[0]

    def layout(self, batch: ModalBatch) -> PackedParticles:
        """The fields of the merged sequence (t, modality, seq, cu_seqlens, ...) without embedding: values (N, 0).

        Row i belongs to row i of `forward_features(batch)`.
        """
        return merge([part.with_values(part.values.new_zeros(len(part), 0)) for _, part in self._parts(batch)])[0]

    def embed(self, batch: ModalBatch) -> torch.Tensor:
        """(N, D) embeddings of the model's particles in merged order (what gradient explanations perturb)."""
        return self.merged(batch).values

    def angles(self, merged: PackedParticles) -> torch.Tensor:
        """(N, head_dim/2) rotary angles: every particle by its seconds; video also by its row and column."""
        video = merged.modality == VIDEO
        zero = torch.zeros_like(merged.y)
        return self.rope.angles(
            merged.t, merged.ti, torch.where(video, merged.y, zero), torch.where(video, merged.x, zero)
        )

    def forward_features(
        self, batch: ModalBatch, *, embedded: torch.Tensor | None = None, keep_attention: bool = False
    ) -> torch.Tensor:
        """Per-particle features of the merged sequence.

        Args:
            batch: packed particles per modality (``video`` values (N_v, t*p*q*C) pixels, ``audio`` (N_a, f*m)
                log-mel, ``text`` (N_t, 1) token ids) of the same B clips.
            embedded: (N, D) to use instead of ``self.embed(batch)`` (e.g. interpolated embeddings).
            keep_attention: also collect per-layer attention maps (left in `self.last_attention`).

        Returns:
            (N, D) after the final norm, N the particles of the model's modalities in merged order (`layout`).
        """
        return self._features(batch, embedded, keep_attention)[0]

    def _features(
        self, batch: ModalBatch, embedded: torch.Tensor | None, keep_attention: bool
    ) -> tuple[torch.Tensor, PackedParticles]:
        """`forward_features` and the merged sequence it ran over (its fields, values (N, D) embeddings)."""
        merged = self.merged(batch)
        if embedded is not None:
            merged = merged.with_values(embedded)
        x = merged.values  # (N, D)
        ctx = AttentionContext(
            merged.cu_seqlens,
            merged.max_seqlen,
            merged.seq,
            merged.num_clips,
            self.angles(merged),
            backend=self.config.attention,
            keep_attention=keep_attention,
        )
        for block in self.blocks:
            x = block(x, ctx)
        self.last_attention = ctx.attention_maps if keep_attention else None
        return self.norm(x), merged

    def pool(self, features: torch.Tensor, batch: ModalBatch | PackedParticles) -> torch.Tensor:
        """(N, D) -> (B, D): per clip, the mean over its particles ("mean") or the mean of each modality's mean.

        "modality" weighs each modality the same whatever its particle count: a question of 7 tokens next to hundreds
        of video and audio particles would otherwise barely move the pooled vector.

        Args:
            features: (N, D) from `forward_features`.
            batch: the batch they came from, or its merged `layout` (anything with seq, modality and num_clips).
        """
        merged = self.layout(batch) if isinstance(batch, ModalBatch) else batch
        if self.config.pooling == "mean":
            return mean_pool(features, merged.seq, merged.num_clips)
        clips, total = merged.num_clips, features.new_zeros(merged.num_clips, features.shape[1])
        present = features.new_zeros(clips, 1)
        for tag in merged.modality.unique().tolist():
            mine = merged.modality == tag
            sums = features.new_zeros(total.shape).index_add_(0, merged.seq[mine], features[mine])
            counts = torch.bincount(merged.seq[mine], minlength=clips).to(features.dtype)[:, None]
            total = total + sums / counts.clamp(min=1)
            present = present + (counts > 0).to(features.dtype)
        return total / present.clamp(min=1)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) logits (or (B, D) when there is no head)."""
        return self.head(self.head_drop(pooled))

    def forward(self, batch: ModalBatch, *, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_classes) logits; `embedded` as in `forward_features`."""
        features, merged = self._features(batch, embedded, keep_attention=False)
        return self.forward_head(self.pool(features, merged))

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one of `num_classes` outputs (0 removes it)."""
        self.config = self.config.replace(num_classes=num_classes)
        device = self.modality_embed.weight.device
        self.head = nn.Linear(self.config.dim, num_classes).to(device) if num_classes else nn.Identity()
        if num_classes:
            _init_weights(self.head)

    def block_index(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 for embeddings, i+1 for block i, depth+1 after."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(("norm", "head")):
            return self.config.depth + 1
        return 0
