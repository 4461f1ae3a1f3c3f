"""One attention entry point over packed particles: clips never attend to each other.

Backends, chosen by `resolve_backend("auto", device)`:

| name    | where            | how                                                                  |
|---------|------------------|----------------------------------------------------------------------|
| varlen  | CUDA             | `torch.nn.attention.varlen.varlen_attn` (FlashAttention varlen kernel) |
| flash   | CUDA             | `flash_attn.flash_attn_varlen_func`, when the package is installed    |
| flex    | CUDA (compiled)  | FlexAttention with a document mask built from `cu_seqlens`           |
| sdpa    | anywhere         | scaled_dot_product_attention on each clip in turn (the CPU default)  |
| dense   | anywhere         | one SDPA call with a block-diagonal mask (the export-friendly graph)  |

All take q, k, v of shape (N, heads, head_dim) and return (N, heads, head_dim); all support backward
(flex only on CUDA). Attention dropout is applied by sdpa, dense and flash; varlen and flex ignore it, so
`resolve_backend` falls back to sdpa when dropout is asked for on them.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "varlen", "flash", "flex", "sdpa", "dense")


def available_backends(device: torch.device | str) -> list[str]:
    """Backends that can run on `device` in this installation."""
    device = torch.device(device)
    names = ["sdpa", "dense"]
    if device.type == "cuda":
        if _varlen_attn() is not None:
            names.append("varlen")
        if importlib.util.find_spec("flash_attn") is not None:
            names.append("flash")
        names.append("flex")
    return names


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend for a requested name (``auto`` picks the fastest available)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    available = available_backends(device)
    if backend == "auto":
        for name in ("varlen", "flash", "sdpa"):
            if name in available:
                return name
    if backend not in available:
        raise ValueError(f"attention backend {backend!r} is not available on {device} (available: {available})")
    return backend


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    backend: str = "auto",
    dropout: float = 0.0,
    causal: bool = False,
    kv_cu_seqlens: torch.Tensor | None = None,
    kv_max_seqlen: int | None = None,
) -> torch.Tensor:
    """Softmax attention within each clip of a packed batch.

    Args:
        q, k, v: (N, heads, head_dim); with `kv_cu_seqlens`, k and v are (M, heads, head_dim).
        cu_seqlens: (B+1,) int32 clip boundaries (of the queries).
        max_seqlen: particles in the longest clip.
        backend: one of `BACKENDS`.
        dropout: attention dropout probability (training only).
        causal: a query attends only to keys at or before its own place in its sequence (a text decoder).
        kv_cu_seqlens, kv_max_seqlen: (B+1,) boundaries of the keys and values when they are another packed
            sequence than the queries (cross-attention: the tokens of caption b attend to the particles of clip b).

    Returns:
        (N, heads, head_dim).
    """
    backend = resolve_backend(backend, q.device)
    if dropout > 0 and backend in ("varlen", "flex"):
        backend = "sdpa"  # these kernels take no dropout argument
    if kv_cu_seqlens is None:
        kv_cu_seqlens, kv_max_seqlen = cu_seqlens, max_seqlen
    elif causal:
        raise ValueError("causal attention is self-attention: give no kv_cu_seqlens")
    if backend == "varlen":
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        cu_k = kv_cu_seqlens.to(device=q.device, dtype=torch.int32)
        window = (-1, 0) if causal else (-1, -1)
        return _varlen_attn()(q, k, v, cu, cu_k, max_seqlen, kv_max_seqlen, window_size=window)
    if backend == "flash":
        from flash_attn import flash_attn_varlen_func

        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        cu_k = kv_cu_seqlens.to(device=q.device, dtype=torch.int32)
        return flash_attn_varlen_func(
            q, k, v, cu, cu_k, max_seqlen, kv_max_seqlen, dropout_p=dropout, causal=causal
        )  # fmt: skip
    if backend == "flex":
        return _flex(q, k, v, cu_seqlens, kv_cu_seqlens, causal)
    if backend == "dense":
        return _dense(q, k, v, cu_seqlens, dropout, kv_cu_seqlens, causal)
    if kv_cu_seqlens is not cu_seqlens or causal:
        return _per_pair(q, k, v, cu_seqlens, kv_cu_seqlens, dropout, causal)
    return _per_clip(q, k, v, cu_seqlens, dropout)


def _per_pair(q, k, v, cu_q, cu_k, dropout, causal):
    """SDPA on each (query sequence, key sequence) pair in turn: cross-attention, or causal self-attention."""
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    lengths = {(bq - aq, bk - ak) for aq, bq, ak, bk in zip(bounds_q[:-1], bounds_q[1:], bounds_k[:-1], bounds_k[1:])}
    if len(lengths) == 1:  # every pair of one shape (beams of one length): one batched call
        n, m = lengths.pop()
        qb = q.unflatten(0, (-1, n)).transpose(1, 2)  # (B, h, n, d)
        kb, vb = (x.unflatten(0, (-1, m)).transpose(1, 2) for x in (k, v))  # (B, h, m, d)
        out = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout, is_causal=causal and n > 1)
        return out.transpose(1, 2).flatten(0, 1)  # (N, h, d)
    outs = []
    for aq, bq, ak, bk in zip(bounds_q[:-1], bounds_q[1:], bounds_k[:-1], bounds_k[1:]):
        qi = q[aq:bq].transpose(0, 1).unsqueeze(0)  # (1, h, n, d)
        ki, vi = (x[ak:bk].transpose(0, 1).unsqueeze(0) for x in (k, v))  # (1, h, m, d)
        out = F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout, is_causal=causal and bq - aq > 1)
        outs.append(out[0].transpose(0, 1))
    return torch.cat(outs)


def _per_clip(q, k, v, cu_seqlens, dropout):
    bounds = cu_seqlens.tolist()
    lengths = {end - start for start, end in zip(bounds[:-1], bounds[1:])}
    if len(lengths) == 1:  # clips of one length (unpruned, same size): one batched call, no Python loop
        n = lengths.pop()
        qb, kb, vb = (x.unflatten(0, (-1, n)).transpose(1, 2) for x in (q, k, v))  # (B, h, n, d)
        out = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout)  # (B, h, n, d)
        return out.transpose(1, 2).flatten(0, 1)  # (N, h, d)
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        # (n, h, d) -> (1, h, n, d) for SDPA
        qi, ki, vi = (x[start:end].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout)[0].transpose(0, 1))
    return torch.cat(outs)


def clip_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(N,) int64 clip index of every particle from (B+1,) boundaries."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths, output_size=total)


def clip_ids_traceable(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(N,) int64 clip index of every particle, as `clip_ids`, by comparing positions with the boundaries.

    O(N * B) instead of O(N), but built from ops every exporter knows (no ``repeat_interleave`` with a length taken
    from the data), so a traced graph keeps the particle and clip counts dynamic (`tubelet.export`).
    """
    positions = torch.arange(total, device=cu_seqlens.device)  # (N,)
    return (positions[:, None] >= cu_seqlens[None, 1:]).sum(dim=1)  # (N,) boundaries passed


def _dense(q, k, v, cu_seqlens, dropout, kv_cu_seqlens=None, causal=False):
    ids = clip_ids_traceable(cu_seqlens.to(q.device), q.shape[0])  # the dense mask is O(N^2) anyway
    kv_ids = ids if kv_cu_seqlens is None else clip_ids_traceable(kv_cu_seqlens.to(q.device), k.shape[0])
    mask = ids[:, None] == kv_ids[None, :]  # (N, M) block diagonal
    if causal:
        place = torch.arange(q.shape[0], device=q.device)
        mask = mask & (place[:, None] >= place[None, :])  # (N, N): earlier keys of the same sequence
    qd, kd, vd = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, h, N, d)
    return F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, dropout_p=dropout)[0].transpose(0, 1)


def _flex(q, k, v, cu_seqlens, kv_cu_seqlens=None, causal=False):
    from torch.nn.attention.flex_attention import create_block_mask

    total, keys = q.shape[0], k.shape[0]
    ids = clip_ids(cu_seqlens.to(q.device), total)
    kv_ids = ids if kv_cu_seqlens is None else clip_ids(kv_cu_seqlens.to(q.device), keys)

    def same_clip(b, h, qi, ki):
        same = ids[qi] == kv_ids[ki]
        return same & (qi >= ki) if causal else same

    block_mask = create_block_mask(same_clip, None, None, total, keys, device=q.device)
    qd, kd, vd = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, h, N, d)
    return _compiled_flex()(qd, kd, vd, block_mask=block_mask)[0].transpose(0, 1)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


@functools.cache
def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn
