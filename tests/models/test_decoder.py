"""The MAE decoder over particles: shapes, gradients, per-clip attention, positions, and decoder masking."""

import dataclasses

import numpy as np
import pytest
import torch

from tubelet.models import Encoder, model_config
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.particles import mask_batch, pack, tokenize

MEAN, STD = (0.45,) * 3, (0.225,) * 3
# (frames, height, width, fps): clips of different length, size and frame rate share the batch.
CLIPS = [(8, 64, 96, 30.0), (4, 32, 48, 10.0), (6, 48, 48, 24.0)]


def batch():
    rng = np.random.default_rng(0)
    clips = []
    for frames, height, width, fps in CLIPS:
        video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        clips.append(tokenize(video, timestamps=np.arange(frames) / fps, tubelet=(2, 16, 16), mean=MEAN, std=STD))
    return pack(clips)


def models(**decoder):
    torch.manual_seed(0)
    encoder = Encoder(model_config("test"))
    config = DecoderConfig(
        encoder.config.dim, encoder.config.patch_dim, **{"dim": 32, "depth": 2, "heads": 2, **decoder}
    )
    return encoder.eval(), MaskedDecoder(config).eval()


def sharpen(decoder):
    """At init q.k is ~0 and attention is nearly uniform; scaled weights make positions and neighbours matter."""
    with torch.no_grad():
        for block in decoder.blocks:
            block.attn.qkv.weight.mul_(20.0)
    return decoder


def plan(ratio=0.75, decoder_ratio=0.0, seed=0):
    return mask_batch(
        batch(), ratio, mode="tube", decoder_ratio=decoder_ratio, generator=torch.Generator().manual_seed(seed)
    )


def run(encoder, decoder, masked):
    with torch.no_grad():
        return decoder(encoder.forward_features(masked.visible), masked.visible, masked.queries)


def test_predicts_one_patch_per_query():
    encoder, decoder = models()
    masked = plan()
    pred = run(encoder, decoder, masked)
    assert pred.shape == (len(masked.queries), 2 * 16 * 16 * 3) == (len(masked.target_index), 1536)
    assert torch.isfinite(pred).all()
    assert pred.std(0).mean() > 0  # queries at different places get different predictions


def test_every_decoder_parameter_gets_a_gradient():
    encoder, decoder = models()
    decoder.train()
    masked = plan()
    pred = decoder(encoder.forward_features(masked.visible), masked.visible, masked.queries)
    pred.pow(2).mean().backward()
    missing = [name for name, p in decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_decoder_masking_reconstructs_only_the_chosen_subset():
    encoder, decoder = models()
    full, half = plan(decoder_ratio=0.0, seed=3), plan(decoder_ratio=0.5, seed=3)
    assert torch.equal(half.visible.values, full.visible.values)
    pred = run(encoder, decoder, half)
    assert pred.shape[0] == len(half.target_index) < len(full.target_index)
    # The chosen queries are the full plan's queries at those rows, and nothing else is predicted.
    rows = [full.target_index.tolist().index(i) for i in half.target_index.tolist()]
    assert torch.equal(half.queries.t, full.queries.t[rows]) and torch.equal(half.queries.x, full.queries.x[rows])


def test_attention_stays_inside_each_clip():
    encoder, decoder = models()
    sharpen(decoder)
    masked = plan()
    pred = run(encoder, decoder, masked)
    # Move every query of the last clip in time: the first clips' predictions must not change.
    last = masked.queries.seq == masked.queries.num_clips - 1
    moved = dataclasses.replace(masked.queries, t=torch.where(last, masked.queries.t + 0.5, masked.queries.t))
    pred_moved = run(encoder, decoder, dataclasses.replace(masked, queries=moved))
    torch.testing.assert_close(pred_moved[~last], pred[~last])
    assert not torch.allclose(pred_moved[last], pred[last], atol=1e-5)  # while the moved ones do: positions count


def test_output_rows_follow_the_query_order():
    encoder, decoder = models()
    sharpen(decoder)
    masked = plan()
    pred = run(encoder, decoder, masked)
    order = torch.arange(len(masked.queries)).flip(0)  # reversed: the clips' queries are no longer grouped
    fields = {name: getattr(masked.queries, name)[order] for name in ("values", "t", "ti", "y", "x", "span", "seq")}
    shuffled = dataclasses.replace(masked.queries, **fields)
    torch.testing.assert_close(run(encoder, decoder, dataclasses.replace(masked, queries=shuffled)), pred[order])


def test_features_must_match_the_visible_particles():
    encoder, decoder = models()
    masked = plan()
    features = encoder.forward_features(masked.visible)
    with pytest.raises(ValueError, match="feature rows"):
        decoder(features[1:], masked.visible, masked.queries)


def test_heads_of_odd_width_are_refused():
    with pytest.raises(ValueError, match="even width"):
        DecoderConfig(32, 1536, dim=30, heads=2).validate()
