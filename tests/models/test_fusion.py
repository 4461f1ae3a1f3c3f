import re
from types import SimpleNamespace

import pytest
import torch

from tubelet import checkpoint
from tubelet.data.av_dataset import AudioPreprocessing
from tubelet.data.transforms import Preprocessing
from tubelet.models import checkpoint_config, load
from tubelet.models.fusion import UNFROZEN, FusionConfig, FusionModel
from tubelet.particles.modalities import merge, pack_modalities
from tubelet.particles.structure import AUDIO, TEXT, VIDEO, Particles
from tubelet.particles.text import tokenize_text
from tubelet.train.lora import deployable
from tubelet.train.run import trainable_module

TINY = dict(dim=32, depth=2, heads=2, tubelet=(2, 4, 4), audio_patch=(4, 4), audio_bands=2, num_classes=3)


def video(n: int, seed: int) -> Particles:
    g = torch.Generator().manual_seed(seed)
    ti = torch.arange(n) // 4
    return Particles(
        values=torch.randn(n, 2 * 4 * 4 * 3, generator=g),
        t=0.25 * ti.float() + 0.125,
        ti=ti,
        y=torch.arange(n) % 2,
        x=(torch.arange(n) // 2) % 2,
        span=torch.ones(n, dtype=torch.long),
        seq=torch.zeros(n, dtype=torch.long),
        grid=(n // 4 + 1, 2, 2),
        tubelet=(2, 4, 4),
        frame_shape=(n, 8, 8),
    )


def audio(n: int, seed: int) -> Particles:
    g = torch.Generator().manual_seed(100 + seed)
    ti = torch.arange(n) // 2
    return Particles(
        values=torch.randn(n, 16, generator=g),
        t=0.04 * ti.float() + 0.02,
        ti=ti,
        y=torch.arange(n) % 2,  # mel band
        x=torch.zeros(n, dtype=torch.long),
        span=torch.ones(n, dtype=torch.long),
        seq=torch.zeros(n, dtype=torch.long),
        grid=(n // 2, 2, 1),
        tubelet=(4, 4, 1),
        frame_shape=(n * 2, 8, 1),
        channels=1,
        modality=torch.full((n,), AUDIO),
    )


def clips(audio_seed: int = 0) -> list[dict[str, Particles]]:
    return [
        {"video": video(8, 0), "audio": audio(6, 0)},
        {"video": video(12, 1), "audio": audio(10, audio_seed + 1)},
    ]


def model(modalities=("video", "audio"), **changes) -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(FusionConfig(modalities=modalities, **{**TINY, **changes})).eval()


def test_merge_keeps_each_clip_contiguous_video_then_audio_with_its_times():
    batch = pack_modalities(clips())
    parts = [batch.parts[n].with_values(torch.zeros(len(batch.parts[n]), 4)) for n in ("video", "audio")]  # "embedded"
    merged, order = merge(parts)
    assert merged.cu_seqlens.tolist() == [0, 14, 36]
    assert merged.seq.tolist() == [0] * 14 + [1] * 22
    # clip 0: its 8 video particles, then its 6 audio particles; clip 1 likewise
    assert merged.modality.tolist() == [VIDEO] * 8 + [AUDIO] * 6 + [VIDEO] * 12 + [AUDIO] * 10
    # times travel unchanged with their particles: one seconds axis for both modalities of a clip
    cat_t = torch.cat([batch.parts["video"].t, batch.parts["audio"].t])
    assert torch.equal(merged.t, cat_t[order])
    assert torch.equal(merged.t[8:14], clips()[0]["audio"].t) and torch.equal(merged.t[:8], clips()[0]["video"].t)


def test_attention_never_crosses_clips_of_the_merged_batch():
    m = model()
    out = m(pack_modalities(clips()))
    changed = m(pack_modalities(clips(audio_seed=7)))  # only clip 1's audio differs
    assert torch.allclose(out[0], changed[0], atol=1e-6)
    assert not torch.allclose(out[1], changed[1], atol=1e-4)


@pytest.mark.parametrize("kept,dropped", [("video", "audio"), ("audio", "video")])
def test_modality_subset_drops_the_other_modality(kept, dropped):
    m = model((kept,))
    batch = pack_modalities(clips())
    features, merged = m.forward_features(batch), m.layout(batch)
    assert len(features) == len(batch.parts[kept])  # only its particles entered the sequence
    assert set(merged.modality.tolist()) == {VIDEO if kept == "video" else AUDIO}
    noisy = pack_modalities(clips())
    noisy.parts[dropped] = noisy.parts[dropped].with_values(torch.randn_like(noisy.parts[dropped].values) * 10)
    assert torch.equal(m(batch), m(noisy))
    assert not hasattr(m, "audio_embed" if kept == "video" else "patch_embed")  # no dead parameters


def test_a_model_missing_its_modality_says_which():
    with pytest.raises(ValueError, match="no audio particles"):
        model()(pack_modalities([{"video": video(8, 0)}]))


def test_rotation_uses_seconds_for_all_and_grid_cells_for_video_only():
    m = model()
    merged = m.merged(pack_modalities(clips()))
    angles = m.angles(merged)
    audio_rows = (merged.modality == AUDIO).nonzero().flatten()
    a, b = audio_rows[0], audio_rows[1]  # same time patch, mel bands 0 and 1
    assert merged.t[a] == merged.t[b] and merged.y[a] != merged.y[b]
    assert torch.equal(angles[a], angles[b])  # the band is an embedding, not a rotation
    video_rows = (merged.modality == VIDEO).nonzero().flatten()
    v0, v1 = video_rows[0], video_rows[1]  # same time, different row
    assert merged.t[v0] == merged.t[v1] and not torch.equal(angles[v0], angles[v1])
    expected = m.rope.angles(merged.t[a : a + 1], merged.ti[a : a + 1], torch.zeros(1), torch.zeros(1))
    assert torch.allclose(angles[a], expected[0])  # audio: rotated by its seconds, as a video particle at (0, 0)


def test_every_parameter_gets_a_gradient_and_text_joins_the_sequence():
    m = model(("video", "audio", "text"), vocab_size=20).train()
    data = [{**c, "text": tokenize_text([2, 5, 7], time=0.5)} for c in clips()]
    batch = pack_modalities(data)
    m(batch).sum().backward()
    assert [name for name, p in m.named_parameters() if p.grad is None] == []
    merged = m.layout(batch)
    assert (merged.modality == TEXT).sum() == 6 and merged.cu_seqlens.tolist() == [0, 17, 42]


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    m = model()
    batch = pack_modalities(clips())
    pre, audio_pre = Preprocessing(tubelet=(2, 4, 4)), AudioPreprocessing(patch=(4, 4), n_mels=8)
    checkpoint.save_checkpoint(
        tmp_path / "ckpt",
        model=m,
        config=checkpoint_config(m, preprocessing=pre, audio=audio_pre),
        labels=["a", "b", "c"],
    )
    loaded = load(tmp_path / "ckpt")
    assert loaded.model.config == m.config and loaded.audio == audio_pre and loaded.labels == ["a", "b", "c"]
    assert torch.equal(loaded.model.eval()(batch), m(batch))


def test_config_rejects_unknown_modalities_and_text_without_vocabulary():
    with pytest.raises(ValueError, match="modalities"):
        FusionConfig(modalities=("video", "smell")).validate()
    with pytest.raises(ValueError, match="vocab_size"):
        FusionConfig(modalities=("text",)).validate()


def test_modality_pooling_weighs_each_modality_equally():
    model = FusionModel(FusionConfig(modalities=("video", "audio"), dim=8, depth=1, heads=2, pooling="modality"))
    features = torch.arange(5 * 8, dtype=torch.float32).view(5, 8)
    modality = torch.tensor([VIDEO, VIDEO, VIDEO, AUDIO, VIDEO])  # clip 0: 3 video + 1 audio; clip 1: 1 video
    merged = SimpleNamespace(modality=modality, seq=torch.tensor([0, 0, 0, 0, 1]), num_clips=2)
    pooled = model.pool(features, merged)
    torch.testing.assert_close(pooled[0], (features[:3].mean(0) + features[3]) / 2)  # not the mean of all four
    torch.testing.assert_close(pooled[1], features[4])


def test_config_from_encoder_copies_its_shape_and_refuses_other_positions():
    from tubelet.models.encoder import EncoderConfig
    from tubelet.models.fusion import ENCODER_SHAPE, config_from_encoder

    encoder = EncoderConfig(dim=48, depth=3, heads=3, mlp_ratio=2.0, tubelet=(2, 8, 8), norm_eps=1e-5)
    config = config_from_encoder(encoder, modalities=("audio",), num_classes=4)
    assert all(getattr(config, name) == getattr(encoder, name) for name in ENCODER_SHAPE)
    assert (config.modalities, config.num_classes) == (("audio",), 4)
    for change, field in (
        (dict(positions="videomae"), "positions='videomae'"),
        (dict(time_mode="index"), "time_mode='index'"),
        (dict(final_norm="pooled"), "final_norm='pooled'"),
        (dict(rope_layout="interleaved"), "rope_layout='interleaved'"),
    ):
        with pytest.raises(ValueError, match=field):
            config_from_encoder(encoder.replace(**change), modalities=("video",))


def with_lora(m: FusionModel, freeze: str = "none") -> tuple[torch.nn.Module, dict[str, int]]:
    """`m` wrapped as ``finetune --peft lora --lora-rank 2`` wraps it, and its trainable parameters' sizes by name."""
    cfg = SimpleNamespace(freeze=freeze, peft="lora", lora_rank=2, lora_alpha=4.0, lora_dropout=0.0, model="test")
    wrapped = trainable_module(m, cfg, keep=UNFROZEN)
    prefix = "base_model.model."
    return wrapped, {n.removeprefix(prefix): p.numel() for n, p in wrapped.named_parameters() if p.requires_grad}


def test_lora_trains_adapters_and_new_parts_and_saves_them_merged_into_a_plain_checkpoint(tmp_path):
    m = model()
    base = {k: v.clone() for k, v in m.state_dict().items()}
    wrapped, trainable = with_lora(m)
    dim, hidden, r, depth = 32, 128, 2, 2  # TINY: qkv 32->96, proj 32->32, fc1 32->128, fc2 128->32
    adapters = depth * r * ((dim + 3 * dim) + (dim + dim) + (dim + hidden) + (hidden + dim))
    new = sum(p.numel() for n, p in model().named_parameters() if n.startswith(UNFROZEN))  # head, audio, tags
    assert sum(trainable.values()) == adapters + new
    assert all(".lora_" in n or n.startswith(UNFROZEN) for n in trainable), sorted(trainable)

    batch = pack_modalities(clips())
    with torch.no_grad():
        plain = wrapped(batch)  # adapters start as a zero update
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:  # as if trained
                p.normal_(std=0.2)
        adapted = wrapped(batch)
    assert torch.allclose(plain, model()(batch), atol=1e-6) and not torch.allclose(adapted, plain, atol=1e-3)

    pre, audio_pre = Preprocessing(tubelet=(2, 4, 4)), AudioPreprocessing(patch=(4, 4), n_mels=8)
    merged = deployable(wrapped)
    checkpoint.save_checkpoint(
        tmp_path / "ckpt", model=merged, config=checkpoint_config(m, preprocessing=pre, audio=audio_pre)
    )
    saved = checkpoint.load_state_dict(tmp_path / "ckpt")
    assert saved.keys() == base.keys()  # no adapter keys: loads without peft
    for key, before in base.items():
        delta = saved[key] - before
        if re.fullmatch(r"blocks\.\d\.(attn\.(qkv|proj)|mlp\.fc\d)\.weight", key):
            assert 0 < torch.linalg.matrix_rank(delta, atol=1e-6) <= r, key  # the low-rank update, merged
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), key
    loaded = load(tmp_path / "ckpt")
    assert torch.allclose(loaded.model.eval()(batch), adapted, atol=1e-5)
    assert torch.allclose(merged.eval()(batch), adapted, atol=1e-5)
    assert any("lora_A" in n for n, _ in wrapped.named_parameters())  # merged into a copy: training goes on
    unwrapped = model()
    assert deployable(unwrapped) is unwrapped  # a run without LoRA saves its model as it is


def test_lora_with_top_k_also_trains_the_last_blocks_in_full():
    _, trainable = with_lora(model(), freeze="top:1")
    assert {"blocks.1.attn.qkv.base_layer.weight", "blocks.1.norm1.weight", "norm.weight"} <= trainable.keys()
    assert "blocks.0.attn.qkv.lora_A.default.weight" in trainable
    assert not any(n.startswith("blocks.0.") and ".lora_" not in n for n in trainable)
    assert "patch_embed.weight" not in trainable
