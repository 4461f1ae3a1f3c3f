"""Parameter groups (weight decay, layer-wise LR decay), freezing, and the warmup + cosine schedule."""

import math

import pytest
import torch

from tubelet.errors import ConfigError
from tubelet.models.encoder import Encoder, EncoderConfig
from tubelet.train.optim import apply_freeze, build_optimizer, param_groups, parse_freeze, warmup_cosine

DEPTH = 3


def tiny_encoder() -> Encoder:
    """dim 16, 3 blocks, attention pooling and a 3-class head: every kind of parameter an encoder has."""
    return Encoder(EncoderConfig(dim=16, depth=DEPTH, heads=2, num_classes=3, pooling="attention"))


def group_of(groups: list[dict]) -> dict[str, dict]:
    """Parameter name -> the group that holds it (each name in exactly one)."""
    out = {}
    for group in groups:
        for name in group["names"]:
            assert name not in out, f"{name} is in two groups"
            out[name] = group
    return out


def test_no_weight_decay_on_biases_norms_and_position_parameters():
    model = tiny_encoder()
    by_name = group_of(param_groups(model, weight_decay=0.05))
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    no_decay = {n for n, g in by_name.items() if g["weight_decay"] == 0.0}
    assert {n for n in by_name if n.endswith(".bias")} <= no_decay
    assert {"norm.weight", "blocks.0.norm1.weight", "blocks.2.norm2.weight"} <= no_decay
    assert {"span_embed.embed.weight", "attn_pool.query"} <= no_decay  # position parameters, 2-D or not
    decayed = {n for n, g in by_name.items() if g["weight_decay"] == 0.05}
    assert decayed == set(by_name) - no_decay
    assert decayed == {
        "patch_embed.weight",
        *(f"blocks.{i}.{k}.weight" for i in range(DEPTH) for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
        "attn_pool.kv.weight",
        "attn_pool.proj.weight",
        "head.weight",
    }
    assert all(g["lr_scale"] == 1.0 for g in by_name.values())  # no layer decay asked for


def test_layer_decay_scales_each_depth_and_the_optimizer_applies_it():
    model, lr, decay = tiny_encoder(), 0.1, 0.5
    groups = param_groups(model, weight_decay=0.05, layer_decay=decay, depth_of=model.block_index)
    by_name = group_of(groups)
    # depth d: 0 embeddings, i + 1 block i, DEPTH + 1 the final norm, pooling and head
    expected = {"patch_embed.weight": DEPTH + 1, "span_embed.embed.weight": DEPTH + 1, "head.weight": 0}
    expected |= {f"blocks.{i}.attn.qkv.weight": DEPTH - i for i in range(DEPTH)}
    expected |= {"norm.weight": 0, "attn_pool.query": 0}
    for name, power in expected.items():
        assert by_name[name]["lr_scale"] == pytest.approx(decay**power), name
    for name, group in by_name.items():
        assert group["lr_scale"] == pytest.approx(decay ** (DEPTH + 1 - model.block_index(name))), name

    for kind in ("sgd", "adamw"):
        optimizer = build_optimizer(groups, name=kind, lr=lr)
        assert len(optimizer.param_groups) == len(groups)
        for torch_group, group in zip(optimizer.param_groups, groups):
            assert torch_group["lr"] == pytest.approx(lr * group["lr_scale"])
            assert torch_group["weight_decay"] == group["weight_decay"]
            assert [id(p) for p in torch_group["params"]] == [id(p) for p in group["params"]]
    assert isinstance(build_optimizer(groups, name="sgd", lr=lr), torch.optim.SGD)
    with pytest.raises(ConfigError, match="optimizer: expected adamw or sgd, got 'adam'"):
        build_optimizer(groups, name="adam", lr=lr)


def test_frozen_parameters_are_left_out_and_nothing_trainable_is_an_error():
    model = tiny_encoder()
    apply_freeze(model, "backbone")
    names = set(group_of(param_groups(model, weight_decay=0.05)))
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("head.", "attn_pool."))}
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        param_groups(model, weight_decay=0.05)


@pytest.mark.parametrize(
    "spec, expected",
    [("none", ("none", 0)), ("backbone", ("backbone", 0)), ("top:2", ("top", 2)), ("top:0", ("top", 0))],
)
def test_parse_freeze(spec, expected):
    assert parse_freeze(spec) == expected


@pytest.mark.parametrize("spec", ["half", "top:", "top:-1", "top:x", "Backbone"])
def test_parse_freeze_rejects_other_specs_naming_the_field(spec):
    with pytest.raises(ConfigError, match=rf"^freeze: expected none, backbone or top:K .*got '{spec}'"):
        parse_freeze(spec)


def test_apply_freeze_trains_what_each_mode_says():
    model = tiny_encoder()
    names = [n for n, _ in model.named_parameters()]

    def trainable(spec: str, **kw) -> set[str]:
        apply_freeze(model, spec, **kw)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    head = {n for n in names if n.startswith(("head.", "attn_pool."))}
    assert trainable("none") == set(names)
    assert trainable("backbone") == head
    top = trainable("top:1")
    assert top == head | {n for n in names if n.startswith(("blocks.2.", "norm."))}
    assert trainable("top:2") == top | {n for n in names if n.startswith("blocks.1.")}
    assert trainable("backbone", keep=("head.",)) == {"head.weight", "head.bias"}
    assert trainable("none") == set(names)  # every mode sets every flag, so modes do not leak into each other
    with pytest.raises(ConfigError, match=r"freeze: top:4 asks for more blocks than the model has \(3\)"):
        apply_freeze(model, "top:4")


def test_warmup_cosine_values_at_known_steps():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    groups = [{"params": [params[0]], "weight_decay": 0.0, "lr_scale": 1.0},
              {"params": [params[1]], "weight_decay": 0.0, "lr_scale": 0.5}]  # fmt: skip
    optimizer = build_optimizer(groups, name="sgd", lr=1.0, momentum=0.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14, min_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    first = [lr for lr, _ in lrs]
    # warmup: (step + 1) / 4; then 0.1 + 0.9 * (1 + cos(pi * (step - 4) / 10)) / 2, flat at 0.1 after step 14
    assert first[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert first[4] == pytest.approx(1.0)
    assert first[9] == pytest.approx(0.55)  # half way through the decay: the mean of 1 and 0.1
    assert first[6] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.2)))
    assert first[14:] == pytest.approx([0.1, 0.1])
    assert [b for _, b in lrs] == pytest.approx([0.5 * a for a in first])  # each group keeps its own scale


def test_warmup_cosine_without_warmup_starts_at_the_full_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=0, total_steps=2, min_ratio=0.0)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0, 1.0, 0.0])
