"""pack / unpack: clips of any length and size in one batch, no padding, boundaries in cu_seqlens."""

import dataclasses

import numpy as np
import pytest
import torch

from tubelet.particles import pack, to_grid, tokenize, unpack, unpatchify

TUBELET = (2, 16, 16)
SHAPES = [(4, 32, 48), (6, 16, 16), (3, 48, 33), (2, 64, 80)]  # (T, H, W): lengths, sizes, aspect ratios differ


def clip_frames(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def videos():
    """Random clips; the second holds still for its first four frames, so pruning drops one of its tubelets."""
    out = [clip_frames(shape, seed) for seed, shape in enumerate(SHAPES)]
    out[1][1:4] = out[1][0]
    return out


@pytest.fixture(scope="module")
def clips(videos):
    """Particles of each video at its own frame rate; the second is pruned so its length is not its grid size."""
    return [
        tokenize(v, timestamps=np.arange(len(v)) / (10 + k), tubelet=TUBELET, prune_threshold=1.0 if k == 1 else None)
        for k, v in enumerate(videos)
    ]


def test_cu_seqlens_marks_clip_boundaries(clips):
    lengths = [len(c) for c in clips]

    packed = pack(clips)

    assert packed.cu_seqlens.dtype == torch.int32
    assert packed.cu_seqlens.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert len(packed.cu_seqlens) == len(clips) + 1
    assert packed.lengths.tolist() == lengths
    assert packed.num_clips == 4


def test_no_padding(clips):
    packed = pack(clips)

    assert len(packed) == packed.values.shape[0] == sum(len(c) for c in clips)
    for name in ("t", "ti", "y", "x", "span", "seq"):
        assert getattr(packed, name).shape == (len(packed),)


def test_seq_is_each_particles_clip(clips):
    packed = pack(clips)

    expected = torch.cat([torch.full((len(c),), b) for b, c in enumerate(clips)])
    assert torch.equal(packed.seq, expected)


def test_max_seqlen_is_the_longest_clip(clips):
    packed = pack(clips)

    assert isinstance(packed.max_seqlen, int)
    assert packed.max_seqlen == max(len(c) for c in clips) == 20  # the 2 x 64 x 80 clip: grid (1, 4, 5)


def test_pruned_clip_packs_its_kept_particles_only(clips):
    assert (len(clips[1]), clips[1].total) == (2, 3)  # the still tubelet was folded into the first one's span

    packed = pack(clips)

    assert packed.lengths[1] == len(clips[1])


def test_unpack_gives_back_each_clip_exactly(clips):
    back = unpack(pack(clips))

    assert len(back) == len(clips)
    for original, restored in zip(clips, back):
        for field in dataclasses.fields(original):
            a, b = getattr(original, field.name), getattr(restored, field.name)
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b, field.name


def test_unpacked_clips_rebuild_their_videos(videos, clips):
    for video, clip in zip(videos, unpack(pack(clips))):
        rebuilt = unpatchify(to_grid(clip), TUBELET, frame_shape=clip.frame_shape)
        assert torch.equal(rebuilt, torch.from_numpy(video).float())


def test_packing_a_single_clip(clips):
    packed = pack([clips[0]])

    assert packed.cu_seqlens.tolist() == [0, len(clips[0])]
    assert packed.max_seqlen == len(clips[0])
    assert bool((packed.seq == 0).all())


def test_batch_position_replaces_any_previous_seq(clips):
    renumbered = [dataclasses.replace(c, seq=torch.full_like(c.seq, 9)) for c in clips[:2]]

    packed = pack(renumbered)

    assert sorted(set(packed.seq.tolist())) == [0, 1]
    assert all(bool((c.seq == 0).all()) for c in unpack(packed))


def test_mixed_tubelet_sizes_are_refused(videos, clips):
    other = tokenize(videos[0], timestamps=np.arange(4) / 10, tubelet=(1, 16, 16))

    with pytest.raises(ValueError, match="tubelet"):
        pack([clips[0], other])


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one clip"):
        pack([])
