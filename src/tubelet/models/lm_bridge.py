"""A bridge from a clip encoder to a Hugging Face causal language model (``finetune --task caption --lm DIR``).

LLaVA-style: the clip's particle features are pooled into `LMBridgeConfig.prefix_tokens` vectors (the mean of each
of that many equal runs of the clip's particles, which are in time order), a trained projector (Linear, GELU, Linear)
maps each to the LM's input-embedding width, and the LM reads them as a prefix before the caption's tokens. The LM
stays frozen; with ``lora`` peft adds LoRA adapters to its attention, and only those train in it.

The checkpoint (kind ``lm-captioner``, `tubelet.models.kinds`) holds the encoder, the projector and the LoRA weights,
plus the LM's path (or hub id) in config.json: the LM's own weights are never copied, and are read again from that
path on load. The tokenizer is the LM's (``tokenizer.json`` in its directory), saved beside the checkpoint.

`LMCaptionModel` offers what decoding in `tubelet.tasks.generate` calls on a `CaptionModel`: ``config`` (with
``bos_id``, ``eos_id``, ``sep_id``, ``max_history``), ``memory(batch)``, ``modalities``, ``pool`` and ``decoder(text,
memory, turns)`` -> (N, vocab) next-token logits over packed text, so captions are decoded, scored and trained by the
same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from tubelet.models.encoder import Encoder, mean_pool
from tubelet.models.text_decoder import Memory
from tubelet.particles.structure import PackedParticles
from tubelet.typed import check_range, from_dict

MODEL_TYPE = "tubelet-lm-captioner"
BRIDGE_KEEP = ("projector.",)


@dataclass(frozen=True)
class LMBridgeConfig:
    """The LM a `LMCaptionModel` speaks through. Stored in config.json under ``lm_bridge``."""

    lm: str = ""  # the Hugging Face causal LM: a local directory (or a hub id, fetched only then)
    hidden: int = 0  # the LM's input-embedding width
    vocab_size: int = 0  # the LM's vocabulary
    prefix_tokens: int = 4  # pooled clip vectors the LM reads before the text
    lora: bool = False  # LoRA adapters on the LM (peft); otherwise it is frozen whole
    lora_rank: int = 8  # their rank
    lora_alpha: float = 16.0  # their scaling numerator
    bos_id: int = 0  # starts a caption (the LM's bos token, else its eos)
    eos_id: int = 0  # ends one (the LM's eos token)
    sep_id: int = 0  # separates a dialogue's turns (the eos token: the bridge captions only)
    max_history: int = 0  # no dialogue history
    attention: str = "auto"  # the encoder's attention backend (the LM keeps its own)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LMBridgeConfig:
        config = from_dict(cls, data, what="lm bridge config")
        config.validate()
        return config

    def validate(self) -> None:
        if not self.lm:
            raise ValueError("lm: the language model's directory or hub id")
        check_range(self, "hidden", "vocab_size", "prefix_tokens", "lora_rank", low=1)
        check_range(self, "bos_id", "eos_id", "sep_id", "max_history", low=0)

    def replace(self, **changes) -> LMBridgeConfig:
        return replace(self, **changes)


def load_lm(name: str):
    """A Hugging Face causal LM from a local directory, or from the hub when `name` is no directory.

    Raises:
        ConfigError: it cannot be loaded (one line naming --lm).
    """
    from transformers import AutoModelForCausalLM

    from tubelet.errors import ConfigError

    try:
        return AutoModelForCausalLM.from_pretrained(name, local_files_only=Path(name).is_dir())
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise ConfigError(f"--lm {name}: not a Hugging Face causal LM ({' '.join(str(exc).split())[:200]})") from None


def bridge_config(lm_name: str, lm, **fields) -> LMBridgeConfig:
    """The `LMBridgeConfig` of a loaded LM: its width, vocabulary and bos/eos tokens."""
    config = lm.config
    eos = config.eos_token_id if config.eos_token_id is not None else 0
    eos = eos[0] if isinstance(eos, list) else eos
    bos = config.bos_token_id if config.bos_token_id is not None else eos
    hidden = lm.get_input_embeddings().weight.shape[1]
    return LMBridgeConfig(
        lm=lm_name, hidden=hidden, vocab_size=lm.get_input_embeddings().weight.shape[0], bos_id=bos, eos_id=eos,
        sep_id=eos, **fields,
    )  # fmt: skip


class LMDecoder(nn.Module):
    """Packed text + clip memory -> the LM's next-token logits, the clip entering as projected prefix embeddings."""

    def __init__(self, lm, projector: nn.Module, prefix_tokens: int):
        super().__init__()
        self.lm = lm
        self.projector = projector
        self.prefix_tokens = prefix_tokens

    def prefix(self, memory: Memory) -> torch.Tensor:
        """(B, k, hidden): each clip's particles cut into k equal runs (time order), each run's mean projected."""
        bounds = memory.cu_seqlens.tolist()
        pooled = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            runs = torch.tensor_split(memory.features[a:b], self.prefix_tokens)  # k runs of (n_i, D); short: empty
            pooled.append(torch.stack([r.mean(0) if len(r) else memory.features[a:b].mean(0) for r in runs]))
        return self.projector(torch.stack(pooled))  # (B, k, hidden)

    def forward(self, text: PackedParticles, memory: Memory | None, turns: torch.Tensor | None = None) -> torch.Tensor:
        """(N, vocab) next-token logits of the packed text (turns are ignored: the bridge reads no history)."""
        ids = text.values[:, 0].long()
        bounds = text.cu_seqlens.tolist()
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        embed = self.lm.get_input_embeddings()
        tokens = embed(ids)  # (N, hidden)
        prefix = self.prefix(memory).to(tokens.dtype)  # (B, k, hidden)
        k, width = self.prefix_tokens, max(lengths)
        batch = tokens.new_zeros(len(lengths), k + width, tokens.shape[1])  # (B, k + L, hidden), right-padded
        mask = torch.zeros(len(lengths), k + width, dtype=torch.long, device=tokens.device)
        for b, (a, n) in enumerate(zip(bounds[:-1], lengths)):
            batch[b, :k] = prefix[b]
            batch[b, k : k + n] = tokens[a : a + n]
            mask[b, : k + n] = 1
        logits = self.lm(inputs_embeds=batch, attention_mask=mask).logits  # (B, k + L, V)
        return torch.cat([logits[b, k : k + n] for b, n in enumerate(lengths)])  # (N, V)


class LMCaptionModel(nn.Module):
    """A clip encoder, a projector and a frozen Hugging Face causal LM (with optional LoRA adapters).

    Args:
        encoder: the clip's `Encoder` (no head).
        config: an `LMBridgeConfig`.
        lm: the LM (`load_lm`); LoRA adapters are added here when ``config.lora``.
    """

    def __init__(self, encoder: Encoder, config: LMBridgeConfig, lm):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = encoder
        for p in lm.parameters():
            p.requires_grad_(False)
        if config.lora:
            from peft import LoraConfig, get_peft_model

            lm = get_peft_model(lm, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0))
        dim, hidden = encoder.config.dim, config.hidden
        self.projector = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.decoder = LMDecoder(lm, self.projector, config.prefix_tokens)
        # model.safetensors holds the encoder, the projector and the LoRA weights: never the LM's own.
        self._register_state_dict_hook(_without_lm_weights)

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("video",)

    @property
    def video_config(self):
        return self.encoder.config

    def memory(self, batch: PackedParticles | None) -> Memory | None:
        features = self.encoder.forward_features(batch)
        return Memory(features, batch.cu_seqlens, int(batch.max_seqlen))

    def pool(self, features: torch.Tensor, batch: PackedParticles) -> torch.Tensor:
        return mean_pool(features, batch.seq, batch.num_clips)

    def forward_features(self, batch: PackedParticles) -> torch.Tensor:
        return self.encoder.forward_features(batch)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled

    def reset_head(self, num_classes: int) -> None:
        raise NotImplementedError("an LM captioner has no classifier head: its output is text")

    def block_index(self, name: str) -> int:
        if name.startswith("encoder."):
            return self.encoder.block_index(name.removeprefix("encoder."))
        return self.encoder.config.depth + 1


def _without_lm_weights(module, state_dict, prefix, local_metadata):
    """Drop the frozen LM's own tensors (and the projector's second name under the decoder) from a state dict."""
    for key in list(state_dict):
        inside = key[len(prefix) :]
        if inside.startswith("decoder.projector."):
            del state_dict[key]  # the same module as `projector.`
        elif inside.startswith("decoder.lm.") and "lora_" not in inside:
            del state_dict[key]
    return state_dict
