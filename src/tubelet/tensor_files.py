"""Reading safetensors files with one clear error (no tubelet imports: models/ and train/ both use it)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tubelet.errors import ConfigError


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing or corrupt file is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own SafetensorError for a corrupt file
        raise ConfigError(f"{path}: not a valid safetensors file ({' '.join(str(exc).split())})") from None
