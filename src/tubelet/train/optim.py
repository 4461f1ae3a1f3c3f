"""Optimizers with parameter groups, layer-wise LR decay, freezing, and the warmup + cosine schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from tubelet.errors import ConfigError
from tubelet.models.encoder import ENCODER_KEEP

# Parameters that get no weight decay besides biases and norm weights (every 1-D tensor).
_NO_DECAY = ("span_embed", "attn_pool.query")


def parse_freeze(spec: str) -> tuple[str, int]:
    """``none`` | ``backbone`` | ``top:K`` -> (mode, K)."""
    if spec in ("none", "backbone"):
        return spec, 0
    match = re.fullmatch(r"top:(\d+)", spec)
    if match:
        return "top", int(match.group(1))
    raise ConfigError(f"freeze: expected none, backbone or top:K (train the top K blocks), got {spec!r}")


def apply_freeze(model: nn.Module, spec: str, *, keep: tuple[str, ...] = ENCODER_KEEP) -> None:
    """Set requires_grad: ``none`` trains everything, ``backbone`` only the parameters named in `keep`, ``top:K``
    also the last K blocks and the final norm.

    Args:
        model: an `Encoder` (anything with `blocks`, `head`, `norm`).
        keep: name prefixes trained whatever `spec` says: the head and attention pooling of an encoder; a
            `FusionModel` adds what no video encoder provides (`tubelet.models.fusion.UNFROZEN`).
    """
    mode, k = parse_freeze(spec)
    depth = len(model.blocks)
    if mode == "top" and k > depth:
        raise ConfigError(f"freeze: top:{k} asks for more blocks than the model has ({depth})")
    for name, param in model.named_parameters():
        if mode == "none":
            trainable = True
        elif name.startswith(keep):
            trainable = True
        elif mode == "top":
            block = re.match(r"blocks\.(\d+)\.", name)
            trainable = name.startswith("norm.") or (block is not None and int(block.group(1)) >= depth - k)
        else:
            trainable = False
        param.requires_grad_(trainable)


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float = 1.0, depth_of=None) -> list[dict]:
    """Trainable parameters grouped by (weight decay, LR scale).

    No decay on biases, norm weights and position parameters. With ``layer_decay < 1`` a parameter at depth
    d (0 = embeddings, depth+1 = head) gets ``lr * layer_decay ** (depth + 1 - d)``.

    Args:
        depth_of: name -> depth function (e.g. `Encoder.block_index`); needed when layer_decay != 1.
    """
    groups: dict[tuple[float, float], list] = {}
    names: dict[tuple[float, float], list] = {}
    top = None
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if (param.ndim <= 1 or any(k in name for k in _NO_DECAY)) else weight_decay
        scale = 1.0
        if layer_decay != 1.0 and depth_of is not None:
            if top is None:
                top = max(depth_of(n) for n, _ in model.named_parameters())
            scale = layer_decay ** (top - depth_of(_base_name(name)))
        groups.setdefault((decay, scale), []).append(param)
        names.setdefault((decay, scale), []).append(name)
    if not groups:
        raise ConfigError("no trainable parameters (check freeze / peft settings)")
    return [
        {"params": params, "weight_decay": decay, "lr_scale": scale, "names": names[(decay, scale)]}
        for (decay, scale), params in groups.items()
    ]


def _base_name(name: str) -> str:
    # peft wraps modules: base_model.model.blocks.0.attn.qkv.lora_A.default.weight -> blocks.0...
    return name.removeprefix("base_model.model.")


def build_optimizer(groups: list[dict], *, name: str, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over `param_groups`; each group's LR is ``lr * lr_scale``."""
    torch_groups = [
        {"params": g["params"], "weight_decay": g["weight_decay"], "lr": lr * g["lr_scale"], "lr_scale": g["lr_scale"]}
        for g in groups
    ]
    if name == "adamw":
        return torch.optim.AdamW(torch_groups, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ConfigError(f"optimizer: expected adamw or sgd, got {name!r}")


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
    """Linear warmup to each group's LR, then cosine decay to ``min_ratio`` of it at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
