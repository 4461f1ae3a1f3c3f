"""Transformer building blocks over packed particles: attention, MLP, drop-path, pre-norm block."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.nn.attention import packed_attention
from tubelet.nn.position import RotaryPositions


class DropPath(nn.Module):
    """Stochastic depth per clip: drops a block's residual branch for whole clips of the packed batch."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, seq: torch.Tensor, num_clips: int) -> torch.Tensor:
        """x: (N, D); seq: (N,) clip index."""
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(num_clips, device=x.device) >= self.p  # (B,)
        scale = keep.to(x.dtype) / (1.0 - self.p)
        return x * scale[seq][:, None]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention within each clip, with rotary positions from the particle fields.

    The q/k/v projection is one Linear with a bias (VideoMAE's separate q_bias/v_bias load into it, with a
    zero key bias).
    """

    def __init__(self, dim: int, heads: int, *, attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = attn_dropout
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """x: (N, D) -> (N, D)."""
        q, k, v = self.qkv(x).unflatten(1, (3, self.heads, self.head_dim)).unbind(1)  # each (N, h, d)
        if ctx.cos is not None:
            q, k = RotaryPositions.rotate_with(q, ctx.cos, ctx.sin), RotaryPositions.rotate_with(k, ctx.cos, ctx.sin)
        out = packed_attention(
            q,
            k,
            v,
            ctx.cu_seqlens,
            ctx.max_seqlen,
            backend=ctx.backend,
            dropout=self.attn_dropout if self.training else 0.0,
        )
        if ctx.keep_attention:
            ctx.attention_maps.append(_attention_maps(q, k, ctx.cu_seqlens))
        return self.proj_drop(self.proj(out.flatten(1)))


class AttentionContext:
    """What every block of one forward pass shares: clip boundaries, rotary angles, backend.

    Attributes:
        keep_attention: collect each layer's per-clip attention matrices (for rollout explanations).
        attention_maps: filled with one list per layer of (heads, n_b, n_b) tensors, when kept.
    """

    def __init__(self, cu_seqlens, max_seqlen, seq, num_clips, angles, backend="auto", keep_attention=False):
        self.cu_seqlens = cu_seqlens
        self.max_seqlen = max_seqlen
        self.seq = seq
        self.num_clips = num_clips
        self.angles = angles
        # (N, 1, head_dim): computed once per forward pass, shared by every block.
        self.cos, self.sin = RotaryPositions.cos_sin(angles) if angles is not None else (None, None)
        self.backend = backend
        self.keep_attention = keep_attention
        self.attention_maps: list[list[torch.Tensor]] = []


def _attention_maps(q, k, cu_seqlens) -> list[torch.Tensor]:
    bounds = cu_seqlens.tolist()
    maps = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        qi, ki = q[start:end].transpose(0, 1), k[start:end].transpose(0, 1)  # (h, n, d)
        maps.append(torch.softmax(qi @ ki.transpose(1, 2) * qi.shape[-1] ** -0.5, dim=-1))  # (h, n, n)
    return maps


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)), each with drop-path."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, attn_dropout=attn_dropout, proj_dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), ctx), ctx.seq, ctx.num_clips)
        return x + self.drop_path(self.mlp(self.norm2(x)), ctx.seq, ctx.num_clips)
