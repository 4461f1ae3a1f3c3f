"""`Preprocessing`, the part of a checkpoint that says how video becomes particles: its pruning reference."""

import numpy as np
import pytest
import torch

from tubelet.data.pipeline import clip_particles
from tubelet.data.transforms import Preprocessing
from tubelet.particles.tokenize import tokenize


def test_an_unknown_prune_reference_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"^prune_reference: expected previous or anchor, got 'sideways'$"):
        Preprocessing(prune_reference="sideways")
    with pytest.raises(ValueError, match=r"^prune_reference: expected previous or anchor, got 'sideways'$"):
        Preprocessing.from_dict({"prune_reference": "sideways"})


def test_a_saved_preprocessing_without_prune_reference_loads_as_previous():
    saved = Preprocessing(prune_threshold=2.0).to_dict()
    del saved["prune_reference"]  # as written by every checkpoint before the field existed

    loaded = Preprocessing.from_dict(saved)

    assert loaded.prune_reference == "previous"  # what it was trained with, though new runs default to "anchor"
    assert loaded == Preprocessing(prune_threshold=2.0, prune_reference="previous")
    assert Preprocessing().prune_reference == "anchor"


def test_prune_reference_survives_a_round_trip():
    pre = Preprocessing(prune_reference="anchor")

    assert pre.to_dict()["prune_reference"] == "anchor"
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_the_pipeline_prunes_with_the_saved_reference():
    # 16 frames of one 16x16 position whose level rises by 1 per 2-frame tubelet: a drift under the threshold.
    levels = 100 + np.arange(8, dtype=np.uint8).repeat(2)  # (T,)
    frames = np.broadcast_to(levels[:, None, None, None], (16, 16, 16, 3)).copy()
    times = np.arange(16) / 8
    kept = {}
    for reference in ("previous", "anchor"):
        pre = Preprocessing(tubelet=(2, 16, 16), size=None, prune_threshold=4.0, prune_reference=reference)
        particles = clip_particles((0.0, 2.0), pre=pre, frames=frames, timestamps=times)
        direct = tokenize(torch.from_numpy(frames), timestamps=times, tubelet=(2, 16, 16), prune_threshold=4.0,
                          prune_reference=reference, mean=pre.mean, std=pre.std)  # fmt: skip
        assert torch.equal(particles.values, direct.values) and torch.equal(particles.span, direct.span)
        kept[reference] = particles.ti.tolist()

    assert kept == {"previous": [0], "anchor": [0, 4]}
