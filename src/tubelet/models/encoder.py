"""The particle encoder: a ViT over packed particles, with positions from their seconds and grid cells.

Uniform interface (after timm): `forward_features(packed) -> (N, D)`, `pool(features, packed) -> (B, D)`,
`forward_head(pooled) -> (B, classes)`, `reset_head(num_classes)`.

Two fields exist for imported Hugging Face VideoMAE checkpoints (`tubelet.models.videomae`): ``positions="videomae"``
adds VideoMAE's fixed sin-cos embedding of the flat grid index instead of rotating by (seconds, row, column), and
``final_norm="pooled"`` moves the last LayerNorm after pooling (VideoMAE's ``fc_norm``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from tubelet.nn.layers import AttentionContext, Block
from tubelet.nn.position import POSITIONS, TIME_MODES, RotaryPositions, SpanEmbedding, grid_index, grid_sinusoids
from tubelet.particles.structure import PackedParticles
from tubelet.typed import check_range, from_dict

POOLING = ("mean", "attention")
FINAL_NORMS = ("tokens", "pooled")
ROPE_LAYOUTS = ("half", "interleaved")
EMBED_INITS = ("random", "motion")
# How much larger the motion half of a "motion" patch embedding starts than the appearance half: a slow pan changes
# a tubelet's frames by a small fraction of its content, so the frame difference is amplified to weigh as much.
MOTION_GAIN = 4.0


# What an encoder trains under any freeze (and beside LoRA adapters): its head and attention pooling.
ENCODER_KEEP = ("head.", "attn_pool.")


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and regularisation of an `Encoder`. Stored in a checkpoint's ``config.json``."""

    dim: int = 384  # width of every particle's feature
    depth: int = 12  # transformer blocks
    heads: int = 6  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    tubelet: tuple[int, int, int] = (2, 16, 16)  # frames, rows, columns per particle
    channels: int = 3  # colour channels of the input pixels
    num_classes: int = 0  # classifier outputs; 0 means no head (features only)
    pooling: str = "mean"  # per-clip pooling before the head: mean or attention
    dropout: float = 0.0  # dropout inside blocks and before the head
    attn_dropout: float = 0.0  # dropout on attention weights
    drop_path: float = 0.0  # stochastic depth, reached linearly by the last block
    time_mode: str = "seconds"  # rotary time from seconds, or from tubelet index (ablation)
    attention: str = "auto"  # attention backend (see tubelet.nn.attention)
    norm_eps: float = 1e-6  # LayerNorm epsilon
    positions: str = "rope"  # rope (rotary over seconds, row, column) or videomae (sin-cos of the flat grid index)
    final_norm: str = "tokens"  # last LayerNorm on every particle's features, or on the pooled vector (fc_norm)
    final_norm_eps: float | None = None  # epsilon of that last LayerNorm; None uses norm_eps
    rope_layout: str = "half"  # rotary channel pairs: half (i, i + d/2); interleaved (2i, 2i+1) is converted on load
    embed_init: str = "motion"  # patch embedding of a fresh model: motion (see `motion_init`) or random

    @property
    def patch_dim(self) -> int:
        t, p, q = self.tubelet
        return t * p * q * self.channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        config = from_dict(cls, data, what="encoder config")
        config.validate()
        return config

    def validate(self) -> None:
        check_range(self, "dim", "depth", "heads", "tubelet", "channels", low=1)
        check_range(self, "num_classes", "dropout", "attn_dropout", "drop_path", low=0)
        check_range(self, "mlp_ratio", "norm_eps", "final_norm_eps", low=0, strict=True)
        if self.dim % self.heads:
            raise ValueError(f"dim: expected a value divisible by heads ({self.heads}), got {self.dim}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "rope" and (self.dim // self.heads) % 2:
            raise ValueError(f"dim: expected dim / heads even for rotary positions, got {self.dim} / {self.heads}")
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {self.final_norm!r}")
        if self.rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {self.rope_layout!r}")
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.time_mode not in TIME_MODES:
            raise ValueError(f"time_mode must be one of {TIME_MODES}, got {self.time_mode!r}")
        if self.embed_init not in EMBED_INITS:
            raise ValueError(f"embed_init must be one of {EMBED_INITS}, got {self.embed_init!r}")

    def replace(self, **changes) -> EncoderConfig:
        config = replace(self, **changes)
        config.validate()
        return config


class AttentionPool(nn.Module):
    """One learned query attends over each clip's particles (multi-head), giving one vector per clip."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(dim))
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: torch.Tensor, seq: torch.Tensor, num_clips: int) -> torch.Tensor:
        """x: (N, D), seq: (N,) -> (B, D)."""
        k, v = self.kv(x).unflatten(1, (2, self.heads, -1)).unbind(1)  # each (N, h, d)
        q = self.query.view(self.heads, -1)  # (h, d)
        scores = (k * q).sum(-1) * k.shape[-1] ** -0.5  # (N, h)
        # Softmax within each clip: subtract the per-clip max for stability, then normalise per clip.
        top = torch.full((num_clips, self.heads), -torch.inf, device=x.device, dtype=scores.dtype)
        top = top.scatter_reduce(0, seq[:, None].expand_as(scores), scores, reduce="amax")
        weights = (scores - top[seq]).exp()
        total = torch.zeros_like(top).index_add_(0, seq, weights)
        weights = weights / total[seq]  # (N, h)
        pooled = torch.zeros(num_clips, self.heads, v.shape[-1], device=x.device, dtype=v.dtype)
        pooled = pooled.index_add_(0, seq, weights[..., None] * v)  # (B, h, d)
        return self.proj(pooled.flatten(1))


def mean_pool(x: torch.Tensor, seq: torch.Tensor, num_clips: int) -> torch.Tensor:
    """(N, D) particle features -> (B, D) per-clip means.

    Clips are contiguous in a packed batch, so each mean is over one slice (index_add_ over `seq` is several times
    slower on the CPU).
    """
    lengths = torch.bincount(seq, minlength=num_clips).tolist()
    return torch.stack([chunk.mean(dim=0) for chunk in x.split(lengths)])


class Encoder(nn.Module):
    """A ViT over packed particles.

    Args:
        config: an `EncoderConfig`.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        config.validate()
        if config.rope_layout != "half":
            raise ValueError(
                "rope_layout: an Encoder computes rotate-half; build it with 'half' and convert "
                "interleaved weights with interleaved_to_half after loading them"
            )
        self.config = config
        self.patch_embed = nn.Linear(config.patch_dim, config.dim)
        self.span_embed = SpanEmbedding(config.dim)
        head_dim = config.dim // config.heads
        self.rope = RotaryPositions(head_dim, time_mode=config.time_mode) if config.positions == "rope" else None
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                config.dim,
                config.heads,
                mlp_ratio=config.mlp_ratio,
                dropout=config.dropout,
                attn_dropout=config.attn_dropout,
                drop_path=rate,
                norm_eps=config.norm_eps,
            )
            for rate in rates
        )
        final_eps = config.norm_eps if config.final_norm_eps is None else config.final_norm_eps
        self.norm = nn.LayerNorm(config.dim, eps=final_eps)  # on (N, D) features, or on (B, D) when "pooled"
        self.attn_pool = AttentionPool(config.dim, config.heads) if config.pooling == "attention" else None
        self.head_drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.dim, config.num_classes) if config.num_classes else nn.Identity()
        self.apply(_init_weights)
        if config.embed_init == "motion":
            motion_init(self.patch_embed, config.tubelet, config.channels)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def embed(self, packed: PackedParticles) -> torch.Tensor:
        """(N, D) particle embeddings: pixels and span, before any position (what gradient explanations perturb)."""
        return self.patch_embed(packed.values) + self.span_embed(packed.span)

    def forward_features(
        self, packed: PackedParticles, *, keep_attention: bool = False, embedded: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-particle features.

        Args:
            packed: values (N, t*p*q*C) normalized pixels, with t, ti, y, x, span, seq, cu_seqlens.
            keep_attention: also collect per-layer attention maps (returned via `self.last_attention`).
            embedded: (N, D) to use instead of ``self.embed(packed)`` (e.g. interpolated embeddings).

        Returns:
            (N, D) after the final norm (before it when ``final_norm`` is "pooled": `pool` applies it then).
        """
        x = self.embed(packed) if embedded is None else embedded  # (N, D)
        angles = None
        if self.rope is not None:
            angles = self.rope.angles(packed.t, packed.ti, packed.y, packed.x)  # (N, head_dim/2)
        else:  # "videomae": a fixed embedding of the particle's flat index in its clip's grid, added once
            index = grid_index(packed.ti, packed.y, packed.x, packed.seq, packed.grids)  # (N,)
            x = x + grid_sinusoids(index, self.config.dim).to(x.dtype)
        ctx = AttentionContext(
            packed.cu_seqlens,
            packed.max_seqlen,
            packed.seq,
            packed.num_clips,
            angles,
            backend=self.config.attention,
            keep_attention=keep_attention,
        )
        for block in self.blocks:
            x = block(x, ctx)
        self.last_attention = ctx.attention_maps if keep_attention else None
        return self.norm(x) if self.config.final_norm == "tokens" else x

    def pool(self, features: torch.Tensor, packed: PackedParticles) -> torch.Tensor:
        """(N, D) -> (B, D) one vector per clip (normalized here when ``final_norm`` is "pooled")."""
        if self.attn_pool is not None:
            pooled = self.attn_pool(features, packed.seq, packed.num_clips)
        else:
            pooled = mean_pool(features, packed.seq, packed.num_clips)
        return self.norm(pooled) if self.config.final_norm == "pooled" else pooled

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) logits (or (B, D) when there is no head)."""
        return self.head(self.head_drop(pooled))

    def forward(self, packed: PackedParticles, *, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_classes) logits; `embedded` as in `forward_features`."""
        return self.forward_head(self.pool(self.forward_features(packed, embedded=embedded), packed))

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one of `num_classes` outputs (0 removes it)."""
        self.config = self.config.replace(num_classes=num_classes)
        device = self.patch_embed.weight.device
        self.head = nn.Linear(self.config.dim, num_classes).to(device) if num_classes else nn.Identity()
        if num_classes:
            _init_weights(self.head)

    def block_index(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 for embeddings, i+1 for block i, depth+1 after."""
        if name.startswith(("patch_embed", "span_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.config.depth + 1


@torch.no_grad()
def interleaved_to_half(model: Encoder) -> None:
    """Convert weights trained with interleaved rotary pairs (channels 2i, 2i+1) to the rotate-half layout in place.

    Rotary pair i rotates channels (2i, 2i+1) in the old layout and (i, i + d/2) now, by the same angle. Moving the
    query and key projection rows accordingly gives the same attention scores; values are untouched. Checkpoints
    written before the rotate-half change carry no ``rope_layout``: set it to "interleaved" in their config.json.
    """
    heads, head_dim = model.config.heads, model.config.dim // model.config.heads
    within = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])  # new channel j <- old within[j]
    rows = (torch.arange(heads)[:, None] * head_dim + within).flatten()
    dim = model.config.dim
    for block in model.blocks:
        for tensor in (block.attn.qkv.weight, block.attn.qkv.bias):
            for part in (0, 1):  # queries and keys; values keep their order
                section = tensor[part * dim : (part + 1) * dim]
                section.copy_(section[rows].clone())


@torch.no_grad()
def motion_init(embed: nn.Linear, tubelet: tuple[int, int, int], channels: int, gain: float = MOTION_GAIN) -> None:
    """Start a patch embedding with half its features on appearance and half on motion, in matched pairs.

    A random embedding gives each of a tubelet's frames its own independent filter, so every feature mixes what is
    there with how it changes, and the change of a slow pan is a small part of it. Here motion feature k (index
    dim/2 + k) applies a random spatial filter s_k along a ramp over the frames, from -1 on the first to +1 on the
    last: for two frames their difference (amplified by `gain`), which a shift by v pixels makes about -v times
    the response of s_k to the picture's spatial derivative. Appearance feature k applies that derivative of s_k
    (along x for even k, along y for odd k) to the frames' mean. Their product then has the sign of the motion
    along that axis whatever the texture, so direction is one multiplication away instead of a search over pairs
    of random features. Training is free to change all of it. A tubelet of one frame keeps its random init.

    Args:
        embed: the (t*p*q*C -> D) patch embedding; its input is flattened frames-major, channels last (t p q c).
    """
    frames, rows, cols = tubelet
    if frames < 2:
        return
    dim = embed.out_features
    half = dim // 2
    device = embed.weight.device
    spatial = torch.empty(dim - half, rows, cols, channels, device=device)
    nn.init.trunc_normal_(spatial, std=0.02)
    derivative = torch.zeros(half, rows, cols, channels, device=device)
    for k in range(half):
        s = spatial[k % len(spatial)]
        if k % 2 == 0:  # d/dx by a forward difference (the response to a picture's d/dx, up to its sign)
            derivative[k, :, :-1] = s[:, 1:] - s[:, :-1]
        else:  # d/dy
            derivative[k, :-1] = s[1:] - s[:-1]
    ramp = torch.linspace(-1.0, 1.0, frames, device=device)
    weight = torch.empty(dim, frames, rows * cols * channels, device=device)
    weight[:half] = derivative.reshape(half, 1, -1) / frames**0.5  # the same on each frame: the mean picture
    weight[half:] = gain * (ramp / ramp.norm())[None, :, None] * spatial.reshape(dim - half, 1, -1)
    embed.weight.copy_(weight.reshape(dim, -1))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
