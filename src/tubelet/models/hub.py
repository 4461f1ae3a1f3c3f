"""Checkpoints from the Hugging Face hub: fetched only when asked for by id, and never more than configs and weights."""

from __future__ import annotations

import re
from pathlib import Path

from tubelet.errors import ConfigError

# A Hugging Face hub model id, "owner/name": tried on the hub only when no such local directory exists.
HUB_ID = re.compile(r"[A-Za-z0-9][\w-]*/[\w][\w.-]*")
# What a hub download fetches: configs, labels, tokenizer and safetensors weights; never pickles or training state.
HUB_FILES = (
    "config.json",
    "labels.json",
    "tokenizer.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
)


def is_hub_id(spec: str) -> bool:
    """Whether `spec` reads as ``owner/name`` and names nothing on the local disk."""
    return bool(HUB_ID.fullmatch(spec)) and not Path(spec).exists()


def hub_snapshot(repo_id: str) -> Path:
    """The local copy of a hub model's configs and safetensors weights (downloaded once, then from the cache).

    Raises:
        ConfigError: offline, no such repository, or a gated one (one line naming the id and the reason).
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except Exception as exc:  # offline, unknown repo, gated repo: huggingface_hub raises many kinds
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"--model {repo_id}: no such checkpoint directory, and no Hugging Face hub model could be fetched "
            f"({type(exc).__name__}: {reason})"
        ) from None
