"""Text particles: token ids with positions, a caption time, the TEXT tag; they pack like other particles."""

import math

import pytest
import torch

from tubelet.data.text import encode, train_tokenizer
from tubelet.particles import TEXT, pack, tokenize_text, unpack


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["a red disc moves left", "a blue square moves right", "what sound is it?"])


def test_fields(tokenizer):
    ids = encode(tokenizer, "a red disc moves left")

    particles = tokenize_text(ids, time=1.25)

    assert particles.values.tolist() == [[i] for i in ids]
    assert particles.values.dtype == torch.int64
    assert particles.ti.tolist() == list(range(len(ids)))
    assert torch.equal(particles.t, torch.full((len(ids),), 1.25))
    assert not particles.y.any() and not particles.x.any()
    assert torch.equal(particles.modality, torch.full((len(ids),), TEXT))
    assert particles.grid == (len(ids), 1, 1)


def test_captions_of_different_lengths_pack_and_unpack(tokenizer):
    short = tokenize_text(encode(tokenizer, "a red disc"), time=0.5)
    long = tokenize_text(encode(tokenizer, "a blue square moves right"), time=2.0)

    packed = pack([short, long])

    assert packed.cu_seqlens.tolist() == [0, len(short), len(short) + len(long)]
    assert packed.max_seqlen == len(long)
    assert torch.equal(unpack(packed)[1].values, long.values)
    assert (packed.modality == TEXT).all()


@pytest.mark.parametrize("time", [math.nan, math.inf])
def test_time_must_be_real_seconds(time):
    with pytest.raises(ValueError, match="finite"):
        tokenize_text([2, 5, 6], time=time)


def test_no_tokens_is_an_error():
    with pytest.raises(ValueError, match="at least one token"):
        tokenize_text([], time=0.0)
