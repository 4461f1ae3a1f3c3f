"""The battery every registered encoder size passes, on real particles tokenized from random frames.

Sizes wider than `tiny` are built with one block so the battery stays fast; their registered widths and
depths are checked from the config alone in test_registry.py.
"""

import copy
import dataclasses
from functools import cache

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tubelet.models import Encoder, EncoderConfig, model_config, model_names
from tubelet.particles import pack, tokenize, unpack

TUBELET = (2, 16, 16)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FULL_DEPTH = ("test", "micro", "tiny")  # every other size is built with depth 1
NUM_CLASSES = 5
# (frames, height, width, fps): lengths, sizes, aspect ratios and frame rates differ; the last is one particle.
CLIPS = [(4, 32, 48, 10.0), (6, 48, 32, 30.0), (5, 32, 32, 24.0), (2, 16, 16, 8.0)]


def frames(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def particles(num_frames, height, width, fps, *, seed=0, start=0.0, prune=None):
    video = frames((num_frames, height, width), seed)
    if prune:
        video[1:4] = video[0]  # a still start, so pruning collapses a run into a span > 1
    times = start + np.arange(num_frames) / fps
    return tokenize(video, timestamps=times, tubelet=TUBELET, mean=MEAN, std=STD, prune_threshold=prune)


@cache
def clip_list():
    """Particles of each of CLIPS; the third is pruned, so its length is not its grid size."""
    return [particles(*spec, seed=i, prune=1.0 if i == 2 else None) for i, spec in enumerate(CLIPS)]


def batch():
    return pack(clip_list())


def config_for(name, **changes) -> EncoderConfig:
    """The registered config of `name` with `changes`, shallow enough to test fast."""
    config = model_config(name)
    if name not in FULL_DEPTH:
        changes.setdefault("depth", 1)
    return config.replace(**changes)


@cache
def built(name, **changes) -> Encoder:
    """One seeded model per (name, changes), shared by the tests that only run it in eval mode."""
    torch.manual_seed(0)
    return Encoder(config_for(name, **changes)).eval()


def fresh(name, **changes) -> Encoder:
    """A private copy of `built(name, **changes)` that a test may train or change."""
    return copy.deepcopy(built(name, **changes))


def sharp(name, **changes) -> Encoder:
    """A model whose attention depends strongly on positions, as a trained one does (at init q.k is ~0)."""
    model = fresh(name, **changes)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(10.0)
    return model


def shift_time(packed, seconds):
    return dataclasses.replace(packed, t=packed.t + seconds)


NAMES = model_names()


def test_every_size_is_in_the_battery():
    assert {"test", "micro", "tiny", "small", "base", "large"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_built_model_has_the_registered_width(name):
    config = model_config(name)
    model = built(name)

    assert model.patch_embed.weight.shape == (config.dim, config.patch_dim)
    assert model.blocks[0].attn.heads == config.heads
    assert len(model.blocks) == (config.depth if name in FULL_DEPTH else 1)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_no_nan(name, pooling):
    model = built(name, pooling=pooling, num_classes=NUM_CLASSES)
    packed = batch()
    dim = model.config.dim

    with torch.no_grad():
        features = model.forward_features(packed)
        pooled = model.pool(features, packed)
        logits = model.forward_head(pooled)
        direct = model(packed)

    assert features.shape == (len(packed), dim)
    assert pooled.shape == (packed.num_clips, dim)
    assert logits.shape == direct.shape == (packed.num_clips, NUM_CLASSES)
    for out in (features, pooled, logits):
        assert torch.isfinite(out).all()
    torch.testing.assert_close(direct, logits)
    assert features.std(0).mean() > 0.1  # particles differ: not collapsed to one vector


@pytest.mark.parametrize("name", NAMES)
def test_without_head_forward_returns_pooled_features(name):
    model = built(name)
    packed = batch()
    with torch.no_grad():
        assert model(packed).shape == (packed.num_clips, model.config.dim)
    assert model.num_classes == 0


@pytest.mark.parametrize(
    "name, pooling", [*((name, "attention") for name in NAMES), ("test", "mean")]
)  # attention pooling holds every parameter mean pooling does, and its own
def test_every_parameter_gets_a_gradient(name, pooling):
    model = fresh(name, pooling=pooling, num_classes=NUM_CLASSES, drop_path=0.1, dropout=0.1).train()
    packed = batch()
    torch.manual_seed(0)  # dropout and drop-path draws: a fixed draw, not whatever earlier tests left
    assert packed.span.max() > 1  # a pruned clip, so span buckets beyond the first are used

    logits = model(packed)
    torch.nn.functional.cross_entropy(logits, torch.arange(packed.num_clips) % NUM_CLASSES).backward()

    assert model.span_embed.embed.weight.abs().sum() == 0  # starts as a no-op ...
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{param_name} got a zero gradient"
    assert (model.span_embed.embed.weight.grad[1:].abs().sum(-1) > 0).any()  # ... yet learns longer spans too


@pytest.mark.parametrize("name, pooling", [*((name, "attention") for name in NAMES), ("test", "mean")])
def test_safetensors_round_trip(name, pooling, tmp_path):
    model = fresh(name, pooling=pooling, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():  # make span_embed non-zero so a missed tensor would show
        model.span_embed.embed.weight.normal_()
    packed = batch()
    path = tmp_path / "model.safetensors"

    save_file(model.state_dict(), str(path))
    torch.manual_seed(1)  # a different initialisation, overwritten by the load
    loaded = Encoder(EncoderConfig.from_dict(model.config.to_dict()))
    loaded.load_state_dict(load_file(str(path)), strict=True)
    loaded.eval()

    with torch.no_grad():
        assert torch.equal(loaded(packed), model(packed))
        assert torch.equal(loaded.forward_features(packed), model.forward_features(packed))


@pytest.mark.parametrize("name", NAMES)
def test_reset_head_changes_width_and_keeps_backbone(name):
    model = fresh(name, num_classes=NUM_CLASSES).eval()
    packed = batch()
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    with torch.no_grad():
        features = model.forward_features(packed)

    model.reset_head(7)
    with torch.no_grad():
        logits = model(packed)
        features_after = model.forward_features(packed)

    assert logits.shape == (packed.num_clips, 7)
    assert model.num_classes == model.config.num_classes == 7
    assert model.head.weight.shape == (7, model.config.dim)
    assert torch.equal(features_after, features)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in backbone.items())

    model.reset_head(0)
    with torch.no_grad():
        assert model(packed).shape == (packed.num_clips, model.config.dim)
    assert not any(k.startswith("head.") for k in model.state_dict())


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("name", NAMES)
def test_clip_output_is_the_same_alone_or_packed(name, pooling):
    model = built(name, pooling=pooling, num_classes=NUM_CLASSES)
    packed = batch()

    with torch.no_grad():
        together = model(packed)
        features = model.forward_features(packed)
        bounds = packed.cu_seqlens.tolist()
        for b, clip in enumerate(unpack(packed)):
            alone = pack([clip])
            torch.testing.assert_close(model(alone)[0], together[b], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                model.forward_features(alone), features[bounds[b] : bounds[b + 1]], atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("name", NAMES)
def test_any_resolution_aspect_ratio_and_frame_count(name):
    model = built(name)
    shapes = [(n, h, w) for h, w in ((48, 80), (80, 48)) for n in (8, 16, 32, 57)]
    clips = [particles(n, h, w, 25.0, seed=i) for i, (n, h, w) in enumerate(shapes)]
    packed = pack(clips)

    with torch.no_grad():
        features = model.forward_features(packed)
        pooled = model.pool(features, packed)

    grids = [(-(-n // 2), -(-h // 16), -(-w // 16)) for n, h, w in shapes]
    assert packed.grids == grids
    assert packed.lengths.tolist() == [a * b * c for a, b, c in grids]
    assert features.shape == (len(packed), model.config.dim)
    assert pooled.shape == (len(shapes), model.config.dim)
    assert torch.isfinite(pooled).all()


@pytest.mark.parametrize("name", NAMES)
def test_seconds_mode_is_invariant_to_a_time_shift(name):
    model = built(name, time_mode="seconds")
    packed = batch()

    with torch.no_grad():
        base = model.forward_features(packed)
        shifted = model.forward_features(shift_time(packed, 3.7))
        stretched = model.forward_features(dataclasses.replace(packed, t=packed.t * 2))  # half the frame rate

    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stretched, base, atol=1e-5, rtol=0)  # time does reach the model


def test_seconds_mode_is_invariant_to_a_time_shift_with_sharp_attention():
    model = sharp("test", time_mode="seconds").eval()
    packed = batch()

    with torch.no_grad():
        base = model(packed)
        shifted = model(shift_time(packed, 3.7))
        stretched = model(dataclasses.replace(packed, t=packed.t * 2))

    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stretched, base, atol=1e-2)


def test_the_same_frames_later_in_a_video_give_the_same_output():
    """Tokenized from timestamps starting at 0 s and at 3.7 s: only differences in seconds reach the model."""
    model = built("micro")
    spec = CLIPS[1]

    with torch.no_grad():
        early = model(pack([particles(*spec, seed=5)]))
        late = model(pack([particles(*spec, seed=5, start=3.7)]))
        other = model(pack([particles(*spec, seed=6, start=3.7)]))

    torch.testing.assert_close(late, early, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other, early, atol=1e-3)


def test_seconds_mode_shift_of_one_clip_leaves_the_others_unchanged():
    model = built("test")
    packed = batch()
    first = packed.cu_seqlens[1].item()
    t = packed.t.clone()
    t[:first] += 100.0

    with torch.no_grad():
        base = model(packed)
        moved = model(dataclasses.replace(packed, t=t))

    torch.testing.assert_close(moved, base, atol=1e-4, rtol=1e-4)
    assert torch.equal(moved[1:], base[1:])


def test_index_mode_ignores_seconds_and_follows_tubelet_index():
    model = sharp("test", time_mode="index").eval()
    packed = batch()

    with torch.no_grad():
        base = model.forward_features(packed)
        stretched = model.forward_features(dataclasses.replace(packed, t=packed.t * 2 + 1.0))
        reindexed = model.forward_features(dataclasses.replace(packed, ti=packed.ti * 2))

    assert torch.equal(stretched, base)
    assert not torch.allclose(reindexed, base, atol=1e-3)


def test_seconds_mode_sees_frame_rate_as_time():
    """The same motion filmed at 10 and 20 fps, sampled to the same seconds, gives the same particles' times."""
    video = frames((8, 32, 32), 0)
    slow = tokenize(video, timestamps=np.arange(8) / 10, tubelet=TUBELET, mean=MEAN, std=STD)
    fast = tokenize(video, timestamps=np.arange(8) / 20, tubelet=TUBELET, mean=MEAN, std=STD)
    model = sharp("test", embed_init="random").eval()  # (the motion init's outputs at init vary less with anything)

    with torch.no_grad():
        out_slow, out_fast = model(pack([slow])), model(pack([fast]))

    assert not torch.allclose(out_slow, out_fast, atol=1e-2)
    with torch.no_grad():
        same = model(pack([dataclasses.replace(fast, t=slow.t)]))
    torch.testing.assert_close(same, out_slow)


@pytest.mark.parametrize("backend", ["sdpa", "dense"])
def test_attention_backends_give_the_same_model_output(backend):
    packed = batch()
    with torch.no_grad():
        reference = built("test", attention="sdpa", pooling="attention")(packed)
        out = built("test", attention=backend, pooling="attention")(packed)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_keep_attention_collects_one_map_list_per_block():
    model = built("test")
    packed = batch()

    with torch.no_grad():
        model.forward_features(packed, keep_attention=True)

    assert len(model.last_attention) == model.config.depth
    heads = model.config.heads
    assert [m.shape for m in model.last_attention[0]] == [(heads, n, n) for n in packed.lengths.tolist()]

    with torch.no_grad():
        model.forward_features(packed)
    assert model.last_attention is None


def test_config_round_trips_through_a_dict():
    config = config_for("test", num_classes=3, pooling="attention", time_mode="index")
    assert EncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="bogus"):
        EncoderConfig.from_dict({**config.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "changes, field",
    [({"dim": 30, "heads": 4}, "divisible"), ({"dim": 36, "heads": 4}, "even"), ({"pooling": "max"}, "pooling")],
)
def test_impossible_config_is_rejected(changes, field):
    with pytest.raises(ValueError, match=field):
        model_config("test").replace(**changes)


def test_interleaved_rope_checkpoints_load_to_the_same_function(tmp_path, monkeypatch):
    """Weights trained when rotary pairs were (2i, 2i+1) compute the same outputs after `interleaved_to_half`."""
    from tubelet.models.encoder import interleaved_to_half
    from tubelet.nn.position import RotaryPositions
    from tubelet.particles import pack, tokenize

    torch.manual_seed(0)
    model = Encoder(model_config("test", num_classes=3, tubelet=(2, 8, 8))).eval()
    for param in model.parameters():  # weights big enough for rotations to matter
        param.data.normal_(0, 0.3)
    frames = torch.randint(0, 255, (4, 24, 32, 3), dtype=torch.uint8)
    times = torch.arange(4) / 10.0
    packed = pack([tokenize(frames, timestamps=times, tubelet=(2, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)])

    def interleaved_cos_sin(angles):
        cos, sin = angles.cos(), angles.sin()
        return cos.repeat_interleave(2, -1)[:, None, :], sin.repeat_interleave(2, -1)[:, None, :]

    def interleaved_rotate(q, cos, sin):
        rotated = torch.stack((-q[..., 1::2], q[..., ::2]), dim=-1).flatten(-2)
        return q * cos + rotated * sin

    with monkeypatch.context() as patch:  # the code as it was before the rotate-half change
        patch.setattr(RotaryPositions, "cos_sin", staticmethod(interleaved_cos_sin))
        patch.setattr(RotaryPositions, "rotate_with", staticmethod(interleaved_rotate))
        with torch.no_grad():
            before = model(packed)
    with torch.no_grad():
        assert not torch.allclose(model(packed), before, atol=1e-3)  # read as rotate-half, the weights differ
        interleaved_to_half(model)
        torch.testing.assert_close(model(packed), before, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_marked_interleaved_is_converted_when_loaded(tmp_path):
    from tubelet.checkpoint import save_checkpoint
    from tubelet.data.transforms import Preprocessing
    from tubelet.models import checkpoint_config, load
    from tubelet.models.encoder import interleaved_to_half

    torch.manual_seed(0)
    model = Encoder(model_config("test", num_classes=2))
    config = checkpoint_config(model, preprocessing=Preprocessing())
    config["encoder"]["rope_layout"] = "interleaved"  # as if written by the code before rotate-half
    save_checkpoint(tmp_path / "old", model=model, config=config, labels=["a", "b"])
    loaded = load(str(tmp_path / "old")).model
    interleaved_to_half(model)
    assert loaded.config.rope_layout == "half"
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)


def test_an_encoder_is_never_built_with_interleaved_rope():
    with pytest.raises(ValueError, match="interleaved_to_half"):
        Encoder(model_config("test", rope_layout="interleaved"))


def test_a_motion_init_sees_a_shift_that_a_random_init_barely_tells_from_the_picture():
    """Half the features of a motion-initialised embedding are blind to a still picture and respond to its change;
    the other half see the frames' mean, each frame weighed alike."""
    config = EncoderConfig(dim=64, depth=1, heads=2, tubelet=(2, 8, 8))
    torch.manual_seed(0)
    picture = torch.randn(8, 8, 3)
    still = torch.stack([picture, picture]).reshape(1, -1)  # (1, t p q c): the same frame twice
    shifted = torch.stack([picture, picture.roll(1, dims=1)]).reshape(1, -1)  # moved by one pixel
    half_gone = torch.stack([picture, picture * 0]).reshape(1, -1)
    embed = Encoder(config.replace(embed_init="motion")).patch_embed
    response = {name: (embed(x) - embed.bias)[0] for name, x in (("still", still), ("shifted", shifted),
                                                                  ("half_gone", half_gone))}  # fmt: skip
    assert response["still"][32:].abs().max() < 1e-5  # the motion half: zero on a still picture
    assert response["shifted"][32:].norm() > 0.5 * response["still"][:32].norm()  # and strong on a shift
    torch.testing.assert_close(response["half_gone"][:32], response["still"][:32] / 2, atol=1e-5, rtol=0)
    random = Encoder(config.replace(embed_init="random")).patch_embed
    assert (random(still) - random.bias)[0, 32:].abs().max() > 1e-2  # a random embedding mixes both everywhere
    with pytest.raises(ValueError, match="embed_init"):
        config.replace(embed_init="sideways")
