"""`add_lora` and `deployable`: adapters on every block's projections, merged into a plain copy computing the same."""

import re

import pytest
import torch
from torch import nn

from tubelet.models.encoder import Encoder, EncoderConfig
from tubelet.particles.pack import pack
from tubelet.particles.tokenize import tokenize
from tubelet.train.lora import add_lora, deployable
from tubelet.train.optim import apply_freeze

pytest.importorskip("peft")

RANK, ALPHA = 2, 8.0
PROJECTION = re.compile(r"blocks\.\d\.(attn\.(qkv|proj)|mlp\.fc[12])\.weight")


def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(dim=16, depth=2, heads=2, num_classes=3, tubelet=(2, 4, 4))).eval()


def clips():
    """Two clips of 4 frames, 8x8 px: 8 particles each."""
    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    return pack([tokenize(f, timestamps=torch.arange(4) / 8, tubelet=(2, 4, 4)) for f in frames])


def train_adapters(wrapped: nn.Module) -> None:
    """Move every adapter away from its zero start, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if ".lora_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=g))


def test_adapters_go_on_every_block_projection_and_only_they_and_the_head_train():
    model = encoder()
    apply_freeze(model, "backbone")  # the head (and pooling) train in full
    wrapped = add_lora(model, rank=RANK, alpha=ALPHA)
    trainable = {n.removeprefix("base_model.model."): p for n, p in wrapped.named_parameters() if p.requires_grad}
    adapted = {n.split(".lora_")[0] for n in trainable if ".lora_" in n}
    assert adapted == {f"blocks.{i}.{k}" for i in range(2) for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert {n for n in trainable if ".lora_" not in n} == {"head.weight", "head.bias"}
    qkv_a = trainable["blocks.0.attn.qkv.lora_A.default.weight"]
    qkv_b = trainable["blocks.0.attn.qkv.lora_B.default.weight"]
    assert qkv_a.shape == (RANK, 16) and qkv_b.shape == (48, RANK)
    dim, hidden = 16, 64
    per_block = RANK * ((dim + 3 * dim) + (dim + dim) + (dim + hidden) + (hidden + dim))
    assert sum(p.numel() for n, p in trainable.items() if ".lora_" in n) == 2 * per_block


def test_adapters_start_as_a_zero_update():
    batch = clips()
    with torch.no_grad():
        reference = encoder()(batch)
        wrapped = add_lora(encoder(), rank=RANK, alpha=ALPHA).eval()
        assert torch.equal(wrapped(batch), reference)


def test_merged_weights_compute_what_the_adapted_model_computes():
    batch = clips()
    base = encoder()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    wrapped = add_lora(base, rank=RANK, alpha=ALPHA).eval()
    train_adapters(wrapped)
    with torch.no_grad():
        adapted = wrapped(batch)
        assert not torch.allclose(adapted, encoder()(batch), atol=1e-3)  # the adapters changed the outputs
        merged = deployable(wrapped)
        assert type(merged) is Encoder
        assert torch.allclose(merged.eval()(batch), adapted, atol=1e-5)

    state = merged.state_dict()
    assert state.keys() == before.keys()  # a plain encoder: loads without peft
    lora = {n.removeprefix("base_model.model."): p for n, p in wrapped.named_parameters() if ".lora_" in n}
    for key, weight in before.items():
        if PROJECTION.fullmatch(key):
            module = key.removesuffix(".weight")
            b, a = lora[f"{module}.lora_B.default.weight"], lora[f"{module}.lora_A.default.weight"]
            assert torch.allclose(state[key], weight + ALPHA / RANK * b @ a, atol=1e-6), key
        else:
            assert torch.equal(state[key], weight), key

    # merged into a copy: the wrapper keeps its adapters and goes on computing with them
    assert any(".lora_" in n for n, _ in wrapped.named_parameters())
    with torch.no_grad():
        assert torch.equal(wrapped(batch), adapted)


def test_a_tower_gets_the_adapters_and_the_rest_keeps_its_flags():
    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.video, self.text = encoder(), encoder()

    model = TwoTowers()
    apply_freeze(model.video, "backbone")
    wrapped = add_lora(model, rank=RANK, alpha=ALPHA, tower="video")
    names = {n.removeprefix("base_model.model.") for n, _ in wrapped.named_parameters()}
    assert {n.split(".")[0] for n in names if ".lora_" in n} == {"video"}
    trainable = {n.removeprefix("base_model.model.") for n, p in wrapped.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("text.")} == {f"text.{n}" for n, _ in model.text.named_parameters()}
    video = {n for n in trainable if n.startswith("video.") and ".lora_" not in n}
    assert video == {"video.head.weight", "video.head.bias"}


def test_a_module_without_adapters_is_deployed_as_it_is():
    model = encoder()
    assert deployable(model) is model
