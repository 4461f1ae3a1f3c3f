"""DropPath, Block and AttentionContext over a packed batch of clips."""

import pytest
import torch

from tubelet.nn import AttentionContext, Block, DropPath, RotaryPositions

LENGTHS = (5, 17, 1, 9)
DIM, HEADS = 16, 2


def packed_context(*, keep_attention=False, backend="auto"):
    """(N, DIM) features and the AttentionContext of a batch of clips of LENGTHS, with rotary angles."""
    gen = torch.Generator().manual_seed(0)
    n = sum(LENGTHS)
    cu = torch.zeros(len(LENGTHS) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(LENGTHS).cumsum(0)
    seq = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    t = torch.rand(n, generator=gen)
    ti, y, x = (torch.randint(0, 6, (n,), generator=gen) for _ in range(3))
    angles = RotaryPositions(DIM // HEADS).angles(t, ti, y, x)
    ctx = AttentionContext(cu, max(LENGTHS), seq, len(LENGTHS), angles, backend=backend, keep_attention=keep_attention)
    return torch.randn(n, DIM, generator=gen), ctx


def clip_rows(seq, num_clips):
    return [torch.nonzero(seq == b).flatten() for b in range(num_clips)]


def test_drop_path_drops_whole_clips_and_rescales_the_rest():
    torch.manual_seed(0)
    num_clips = 64
    seq = torch.arange(num_clips).repeat_interleave(3)  # three particles per clip
    x = torch.randn(len(seq), 4)
    drop = DropPath(0.5).train()

    out = drop(x, seq, num_clips)

    kept = dropped = 0
    for rows in clip_rows(seq, num_clips):
        if torch.equal(out[rows], torch.zeros_like(out[rows])):
            dropped += 1
        else:
            torch.testing.assert_close(out[rows], 2 * x[rows])
            kept += 1
    assert kept + dropped == num_clips
    assert 16 < kept < 48  # p = 0.5 over 64 clips; a per-particle or all-or-nothing drop would fail above


def test_drop_path_draws_fresh_masks_each_call():
    torch.manual_seed(0)
    seq = torch.arange(32)
    x = torch.ones(32, 2)
    drop = DropPath(0.5).train()
    assert not torch.equal(drop(x, seq, 32), drop(x, seq, 32))


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_drop_path_is_identity_in_eval(p):
    seq = torch.arange(8).repeat_interleave(2)
    x = torch.randn(16, 4)
    drop = DropPath(p).eval()
    assert torch.equal(drop(x, seq, 8), x)


def test_drop_path_zero_is_identity_in_train():
    seq = torch.arange(8)
    x = torch.randn(8, 4)
    assert torch.equal(DropPath(0.0).train()(x, seq, 8), x)


def test_block_keeps_shape_and_is_finite():
    x, ctx = packed_context()
    block = Block(DIM, HEADS, drop_path=0.1)

    out = block(x, ctx)

    assert out.shape == x.shape == (sum(LENGTHS), DIM)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, x)


def test_block_is_deterministic_in_eval_and_backends_agree():
    x, ctx = packed_context(backend="sdpa")
    _, dense_ctx = packed_context(backend="dense")
    block = Block(DIM, HEADS, dropout=0.5, attn_dropout=0.5, drop_path=0.5).eval()

    torch.testing.assert_close(block(x, ctx), block(x, dense_ctx), atol=1e-5, rtol=1e-5)
    assert torch.equal(block(x, ctx), block(x, ctx))


def test_keep_attention_gives_per_clip_maps_whose_rows_sum_to_one():
    x, ctx = packed_context(keep_attention=True)
    blocks = [Block(DIM, HEADS), Block(DIM, HEADS)]

    for block in blocks:
        x = block(x, ctx)

    assert len(ctx.attention_maps) == len(blocks)
    for layer in ctx.attention_maps:
        assert [m.shape for m in layer] == [(HEADS, n, n) for n in LENGTHS]
        for attn in layer:
            assert (attn >= 0).all()
            torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5, rtol=1e-5)
    assert torch.equal(ctx.attention_maps[0][2], torch.ones(HEADS, 1, 1))  # a lone particle sees only itself


def test_kept_attention_maps_are_the_attention_used():
    """Attention rows times v reproduce the attention output, so the maps are not an approximation."""
    x, ctx = packed_context(keep_attention=True)
    block = Block(DIM, HEADS).eval()
    attn = block.attn
    seen = {}
    attn.proj.register_forward_hook(lambda module, inputs, output: seen.setdefault("out", inputs[0]))

    attn(block.norm1(x), ctx)

    h = block.norm1(x)
    v = attn.qkv(h).unflatten(1, (3, HEADS, DIM // HEADS))[:, 2]  # (N, heads, head_dim)
    start = 0
    for n, maps in zip(LENGTHS, ctx.attention_maps[0]):
        expected = (maps @ v[start : start + n].transpose(0, 1)).transpose(0, 1).flatten(1)  # (n, DIM)
        torch.testing.assert_close(seen["out"][start : start + n], expected, atol=1e-5, rtol=1e-5)
        start += n


def test_attention_maps_are_not_kept_by_default():
    x, ctx = packed_context()
    Block(DIM, HEADS)(x, ctx)
    assert ctx.attention_maps == []


def test_block_rejects_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        Block(10, 3)
