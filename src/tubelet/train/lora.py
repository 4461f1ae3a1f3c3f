"""LoRA adapters (Hugging Face `peft`) on the transformer blocks, and the plain model a run saves after them.

`add_lora` puts rank-r adapters on the attention and MLP projections of every `tubelet.nn.layers.Block` of a
model (of one tower of it, for a model with several) and freezes the rest of the model, except the parameters
that were trainable before it was called: a recipe first chooses those with `tubelet.train.optim.apply_freeze`
(a head, attention pooling, the new embeddings of a fusion model, a retrieval model's text tower). peft injects
the adapters into the model's own modules, so the model itself computes with them; the wrapper it returns is
what the optimizer, the trainer state and `deployable` see.

`deployable` is what every checkpoint stores: the adapters merged into a copy of the weights, so a LoRA run's
``best/`` and ``last/`` load like any other checkpoint, without peft. A resumed run gets the adapters back from
the wrapper's own state in ``last/trainer`` (`tubelet.train.resume`).
"""

from __future__ import annotations

import copy
import re

from torch import nn

# The Linear layers of every `Block` (attention in and out, MLP in and out), as a peft full-match pattern.
BLOCK_LINEARS = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"


def add_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0, tower: str = "") -> nn.Module:
    """Wrap `model` with LoRA adapters on the blocks; only the adapters and the already trainable parameters train.

    Args:
        model: a model whose blocks are ``blocks.<i>`` (an `Encoder`, a `FusionModel`), or whose ``tower`` has
            them; its ``requires_grad`` flags say what trains in full besides the adapters.
        rank, alpha, dropout: the adapters' rank, scaling numerator (the update is ``alpha / rank * B A``) and the
            dropout on their input.
        tower: the submodule whose blocks get adapters (``video`` of a `RetrievalModel`); empty for the model's own.

    Returns:
        The peft wrapper (``base_model.model`` is `model`, now computing with its adapters). The adapters start
        as a zero update: it computes what `model` did.
    """
    from peft import LoraConfig, get_peft_model  # imported on use: it pulls in transformers

    trainable = [p for p in model.parameters() if p.requires_grad]
    prefix = re.escape(f"{tower}.") if tower else ""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=prefix + BLOCK_LINEARS)
    wrapped = get_peft_model(model, config)
    for param in trainable:  # peft froze every base parameter; these are the model's own, not copies
        param.requires_grad_(True)
    return wrapped


def deployable(module: nn.Module) -> nn.Module:
    """The plain model to save: a LoRA wrapper's adapters merged into a copy (it loads without peft); any other
    module as it is."""
    if not hasattr(module, "merge_and_unload"):
        return module
    return copy.deepcopy(module).merge_and_unload()
