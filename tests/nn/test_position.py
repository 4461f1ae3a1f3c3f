"""Rotary positions over (seconds, row, column) and the span embedding."""

import pytest
import torch

from tubelet.nn import TIME_MODES, RotaryPositions, SpanEmbedding, grid_index, grid_sinusoids

HEAD_DIM = 16
HEADS = 2


def coords(n=6, *, seed=0):
    """(n,) float seconds, int tubelet index, int row, int column."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=gen) * 2.0
    ti = torch.randint(0, 8, (n,), generator=gen)
    y = torch.randint(0, 6, (n,), generator=gen)
    x = torch.randint(0, 10, (n,), generator=gen)
    return t, ti, y, x


def scores(rope, q, k, t, ti, y, x):
    """(N, N, heads) rotated q . k between every pair of particles."""
    angles = rope.angles(t, ti, y, x)
    qr, kr = RotaryPositions.rotate(q, angles), RotaryPositions.rotate(k, angles)
    return torch.einsum("nhd,mhd->nmh", qr, kr)


def test_angles_shape():
    t, ti, y, x = coords()
    assert RotaryPositions(HEAD_DIM).angles(t, ti, y, x).shape == (6, HEAD_DIM // 2)


@pytest.mark.parametrize("time_mode", TIME_MODES)
def test_rotation_preserves_norms(time_mode):
    rope = RotaryPositions(HEAD_DIM, time_mode=time_mode)
    t, ti, y, x = coords()
    q = torch.randn(6, HEADS, HEAD_DIM)

    rotated = RotaryPositions.rotate(q, rope.angles(t, ti, y, x))

    assert not torch.allclose(rotated, q)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)


def unit_qk(n=6, *, seed=0):
    """Unit-norm (n, heads, head_dim) q and k, so a score's tolerance is relative to |q||k| = 1."""
    q, k = torch.randn(2, n, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(seed)).unbind(0)
    return q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("time_mode", TIME_MODES)
def test_scores_depend_only_on_grid_differences(time_mode):
    rope = RotaryPositions(HEAD_DIM, time_mode=time_mode)
    t, ti, y, x = coords()
    q, k = unit_qk()

    base = scores(rope, q, k, t, ti, y, x)
    shifted = scores(rope, q, k, t, ti + 4, y + 5, x + 5)
    moved = scores(rope, q, k, t, ti, y, x.flip(0))  # not a shift: pairs' column differences change

    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(moved, base, atol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_scores_depend_only_on_differences_in_seconds(seed):
    rope = RotaryPositions(HEAD_DIM, time_mode="seconds")
    t, ti, y, x = coords(seed=seed)
    q, k = unit_qk(seed=seed)

    base = scores(rope, q, k, t, ti, y, x)
    shifted = scores(rope, q, k, t + 3.7, ti, y + 5, x + 5)
    stretched = scores(rope, q, k, t * 1.5, ti, y, x)  # not a shift: pairs' differences in seconds change

    # float32 seconds: t + 3.7 is rounded to ~2.4e-7 s, and the fastest channel turns 2*pi / 0.05 s = 126 rad/s,
    # so its angles move by up to ~3e-5 rad; 1e-4 of |q||k| still rejects any dependence on absolute time.
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=0)
    assert not torch.allclose(stretched, base, atol=1e-2)


def test_seconds_mode_uses_real_time_never_floored():
    rope = RotaryPositions(HEAD_DIM, time_mode="seconds")
    zero = torch.zeros(3, dtype=torch.long)

    a05 = rope.angles(torch.full((3,), 0.5), zero, zero, zero)
    a06 = rope.angles(torch.full((3,), 0.6), zero, zero, zero)
    a00 = rope.angles(torch.zeros(3), zero, zero, zero)
    a10 = rope.angles(torch.ones(3), zero, zero, zero)

    assert not torch.allclose(a05, a06)
    assert not torch.allclose(a05, a00) and not torch.allclose(a05, a10)  # neither floored nor rounded
    torch.testing.assert_close(a05 * 2, a10)  # angles are linear in seconds


def test_seconds_mode_ignores_tubelet_index():
    rope = RotaryPositions(HEAD_DIM, time_mode="seconds")
    t, ti, y, x = coords()
    assert torch.equal(rope.angles(t, ti, y, x), rope.angles(t, ti + 7, y, x))


def test_index_mode_ignores_seconds_and_uses_index():
    rope = RotaryPositions(HEAD_DIM, time_mode="index")
    t, ti, y, x = coords()

    base = rope.angles(t, ti, y, x)

    assert torch.equal(rope.angles(t * 3 + 1.25, ti, y, x), base)
    assert not torch.allclose(rope.angles(t, ti + 1, y, x), base)


def test_rows_and_columns_rotate_differently():
    rope = RotaryPositions(HEAD_DIM)
    t, ti, y, x = coords()
    assert not torch.allclose(rope.angles(t, ti, y, x), rope.angles(t, ti, x, y))


@pytest.mark.parametrize("head_dim", [15, 7])
def test_odd_head_dim_is_rejected(head_dim):
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryPositions(head_dim)


def test_unknown_time_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown time mode"):
        RotaryPositions(HEAD_DIM, time_mode="frames")


def test_span_embedding_starts_at_zero():
    embed = SpanEmbedding(8)
    out = embed(torch.tensor([1, 2, 3, 7, 100, 10_000]))
    assert out.shape == (6, 8)
    assert torch.equal(out, torch.zeros(6, 8))


def test_span_buckets_are_powers_of_two():
    embed = SpanEmbedding(1, buckets=12)
    with torch.no_grad():
        embed.embed.weight.copy_(torch.arange(12.0)[:, None])  # each bucket embeds as its own index
    spans = torch.tensor([1, 2, 3, 4, 5, 8, 9, 16, 17, 1024, 1025, 2048, 2049, 10**6])
    expected = torch.tensor([0, 1, 2, 2, 3, 3, 4, 4, 5, 10, 11, 11, 11, 11])  # longer runs share the last

    assert torch.equal(embed(spans)[:, 0].long(), expected)


def test_span_embedding_trains():
    embed = SpanEmbedding(4)
    embed(torch.tensor([1, 2, 5])).sum().backward()
    assert embed.embed.weight.grad[[0, 1, 3]].abs().sum() > 0


def test_grid_index_is_row_major_in_each_clips_own_grid():
    grids = [(2, 3, 4), (1, 2, 5)]
    ti, y, x = torch.tensor([1, 0, 0, 0]), torch.tensor([2, 1, 1, 0]), torch.tensor([3, 0, 4, 2])
    seq = torch.tensor([0, 0, 1, 1])
    assert grid_index(ti, y, x, seq, grids).tolist() == [1 * 12 + 2 * 4 + 3, 4, 5 + 4, 2]


@pytest.mark.parametrize("dim", [32, 7])
def test_grid_sinusoids_are_rows_of_the_videomae_table(dim):
    # transformers' get_sinusoid_encoding_table, written out: angle n / 10000^(2 (j // 2) / dim), sin even, cos odd.
    n = torch.arange(1600, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angles = n / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, angles.sin(), angles.cos()).float()
    index = torch.tensor([0, 1, 783, 1567, 1599])
    assert torch.equal(grid_sinusoids(index, dim), table[index])


def test_rotation_layout_is_pinned():
    """Channel i pairs with i + head_dim/2 (rotate half). Changing this silently changes every trained checkpoint."""
    q = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # (N=1, heads=1, head_dim=4): pairs (1, 3) and (2, 4)
    angles = torch.tensor([[torch.pi / 2, 0.0]])  # pair 0 turns a quarter, pair 1 stays
    torch.testing.assert_close(RotaryPositions.rotate(q, angles), torch.tensor([[[-3.0, 2.0, 1.0, 4.0]]]))
