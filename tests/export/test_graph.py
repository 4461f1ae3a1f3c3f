"""The traced graph against the eager encoder: attention pooling, a pooled final norm, any particle and clip count."""

import numpy as np
import pytest
import torch

from tubelet.export.graph import PackedGraph, export_onnx, exportable_encoder
from tubelet.models import Encoder, model_config
from tubelet.models.onnx_model import OnnxModel
from tubelet.particles.pack import pack
from tubelet.particles.structure import Particles


def clip(length: int, seed: int, *, patch_dim: int) -> Particles:
    """`length` random particles of one clip on a 4 x 6 x 6 grid, some standing for pruned runs (span > 1)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(4 * 6 * 6, generator=g)[:length].sort().values
    ti, y, x = index // 36, index % 36 // 6, index % 6
    return Particles(
        values=torch.randn(length, patch_dim, generator=g),
        t=ti.float() * 0.25 + 0.125,  # seconds, as 8 fps tubelets of 2 frames
        ti=ti,
        y=y,
        x=x,
        span=torch.randint(1, 5, (length,), generator=g),
        seq=torch.zeros(length, dtype=torch.long),
        grid=(4, 6, 6),
        tubelet=(2, 4, 4),
        frame_shape=(8, 24, 24),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(eager encoder on its CPU default backend, the same weights exported and run by onnxruntime)."""
    torch.manual_seed(0)
    config = model_config("test", num_classes=4, tubelet=(2, 4, 4), pooling="attention", final_norm="pooled")
    eager = Encoder(config).eval()
    with torch.no_grad():  # a nonzero span embedding and sharp attention, so that span and positions show
        eager.span_embed.embed.weight.normal_(0, 0.5)
        for block in eager.blocks:
            block.attn.qkv.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    example = pack([clip(17, 1, patch_dim=config.patch_dim), clip(29, 2, patch_dim=config.patch_dim)])
    opset = export_onnx(PackedGraph(exportable_encoder(eager, source="test")), example, path)
    assert opset >= 17
    return eager, OnnxModel(path, config)


@pytest.mark.parametrize("lengths", [[1], [40], [144], [5, 144, 1, 60], [3] * 9])
def test_onnx_logits_match_eager_at_any_particle_and_clip_count(exported, lengths):
    eager, runtime = exported
    packed = pack([clip(n, 10 + i, patch_dim=eager.config.patch_dim) for i, n in enumerate(lengths)])
    with torch.no_grad():
        want = eager(packed)  # (B, 4)
    got = runtime(packed)
    assert got.shape == (len(lengths), 4)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_clips_in_one_batch_do_not_see_each_other(exported):
    eager, runtime = exported
    a, b = clip(30, 3, patch_dim=eager.config.patch_dim), clip(50, 4, patch_dim=eager.config.patch_dim)
    together = runtime(pack([a, b]))
    np.testing.assert_allclose(together[:1].numpy(), runtime(pack([a])).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(together[1:].numpy(), runtime(pack([b])).numpy(), atol=1e-5, rtol=0)


def test_span_and_seconds_reach_the_graph(exported):
    """The graph reads span and t from its inputs (not constants baked in at trace time)."""
    eager, runtime = exported
    base = clip(30, 5, patch_dim=eager.config.patch_dim)
    moved = Particles(**{**base.__dict__, "t": base.t * 2.0})
    spans = Particles(**{**base.__dict__, "span": base.span + 7})
    logits = [runtime(pack([c])) for c in (base, moved, spans)]
    assert (logits[0] - logits[1]).abs().max() > 1e-4
    assert (logits[0] - logits[2]).abs().max() > 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(logits[1].numpy(), eager(pack([moved])).numpy(), atol=1e-5, rtol=0)


def test_an_encoder_without_a_head_or_with_videomae_positions_is_refused():
    from tubelet.errors import ConfigError

    with pytest.raises(ConfigError, match="no classifier head"):
        exportable_encoder(Encoder(model_config("test")), source="ckpt")
    with pytest.raises(ConfigError, match="positions 'videomae'"):
        exportable_encoder(Encoder(model_config("test", num_classes=3, positions="videomae")), source="ckpt")


def test_large_batches_run_in_groups_of_whole_clips_with_the_same_logits(exported):
    from tubelet.models.onnx_model import clip_groups

    assert clip_groups(np.array([0, 10, 30, 100, 105, 110]), 40) == [(0, 2), (2, 3), (3, 5)]
    assert clip_groups(np.array([0, 7]), 3) == [(0, 1)]  # one clip longer than the limit runs alone
    eager, runtime = exported
    packed = pack([clip(n, 20 + i, patch_dim=eager.config.patch_dim) for i, n in enumerate([50, 60, 70, 5])])
    whole = runtime(packed)
    runtime.group_particles = 64
    try:
        np.testing.assert_allclose(runtime(packed).numpy(), whole.numpy(), atol=1e-6, rtol=0)
    finally:
        runtime.group_particles = 2048
