"""Hugging Face VideoMAE checkpoints imported into the particle encoder.

Tiny random transformers models (dim 32, 2 blocks, 32 px, 4 frames) are saved with ``save_pretrained`` and imported
with `tubelet.models.load`; features and logits must match transformers on the same pixels. Every parameter is random
(norms, q/v biases included), so a tensor mapped to the wrong place, transposed or left at zero shows.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tubelet import checkpoint
from tubelet.data.sample import generate
from tubelet.errors import ConfigError
from tubelet.models import load
from tubelet.models.videomae import IMAGENET_MEAN, IMAGENET_STD, load_videomae
from tubelet.particles import pack, tokenize
from tubelet.recipes.finetune import FinetuneConfig, finetune

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
LABELS = ["bowling", "juggling", "surfing"]
MEAN, STD = (0.45, 0.4, 0.35), (0.2, 0.25, 0.3)  # not ImageNet's, so the processor file is seen to be read


def hf_config(**changes):
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    video = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2)
    decoder = dict(
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32
    )
    return transformers.VideoMAEConfig(**shape, **video, **decoder, **changes)


def save_hf(directory, cls, seed=0, **changes):
    """A random `cls` saved with save_pretrained; returns the transformers model (eval mode)."""
    torch.manual_seed(seed)
    model = getattr(transformers, cls)(hf_config(**changes)).eval()
    gen = torch.Generator().manual_seed(seed)
    qv_biases = ("q_bias", "v_bias", "query.bias", "value.bias")  # the names of transformers 4 and 5
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith(qv_biases):  # set explicitly, well away from zero: loading them as zeros must show
                param.copy_(0.5 + 0.2 * noise)
            elif "norm" in name and name.endswith("weight"):  # LayerNorm weights around 1
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(0.1 * noise)
    assert sum(name.endswith(qv_biases) and "encoder.layer." in name for name, _ in model.named_parameters()) == 4
    model.save_pretrained(directory)
    return model


def write_processor(directory, mean=MEAN, std=STD):
    """preprocessor_config.json as VideoMAEImageProcessor writes it."""
    processor = {
        "image_processor_type": "VideoMAEImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))


def video(seed, frames=4, size=32):
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def normalized(frames, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(T, H, W, 3) uint8 -> (T, H, W, 3) float32 as transformers' processor normalizes."""
    return (torch.from_numpy(frames).float() / 255.0 - torch.tensor(mean)) / torch.tensor(std)


def particles_of(pixels, tubelet=(2, 16, 16)):
    """Particles of already-normalized (T, H, W, C) float pixels, unpruned, 8 fps."""
    return tokenize(pixels, timestamps=np.arange(len(pixels)) / 8.0, tubelet=tubelet)


def hf_input(*pixel_clips):
    """(B, T, C, H, W) pixel_values from (T, H, W, C) clips."""
    return torch.stack([p.permute(0, 3, 1, 2) for p in pixel_clips])


def rewrite_weights(directory, edit):
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def features_of(model, pixels):
    with torch.no_grad():
        return model.forward_features(pack([particles_of(pixels)]))


# --- parity --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_videomae_model_features_match_transformers(tmp_path, use_mean_pooling):
    hf = save_hf(tmp_path, "VideoMAEModel", use_mean_pooling=use_mean_pooling)
    loaded = load(str(tmp_path))
    model = loaded.model.eval()
    assert model.config.positions == "videomae" and model.config.norm_eps == 1e-12 and model.num_classes == 0
    assert model.config.final_norm == ("pooled" if use_mean_pooling else "tokens")
    clips = [normalized(video(1)), normalized(video(2))]
    with torch.no_grad():
        expected = hf(hf_input(*clips)).last_hidden_state  # (2, 8, 32)
        packed = pack([particles_of(c) for c in clips])  # two clips packed: each keeps its own grid index
        ours = model.forward_features(packed)  # (16, 32)
    diff = (ours - expected.flatten(0, 1)).abs().max().item()
    assert diff <= TOLERANCE, diff
    assert expected.abs().max() > 0.5  # a real signal, not two near-zero tensors


def test_classifier_logits_match_transformers(tmp_path):
    id2label = dict(enumerate(LABELS))
    hf = save_hf(tmp_path, "VideoMAEForVideoClassification", id2label=id2label)
    loaded = load(str(tmp_path))
    model = loaded.model.eval()
    assert loaded.labels == LABELS and model.num_classes == 3
    assert model.config.final_norm == "pooled" and model.config.final_norm_eps == 1e-5
    pixels = normalized(video(3))
    with torch.no_grad():
        output = hf(hf_input(pixels))
        features = hf.videomae(hf_input(pixels)).last_hidden_state[0]
        packed = pack([particles_of(pixels)])
        logits = model(packed)
    assert (model.forward_features(packed) - features).abs().max().item() <= TOLERANCE
    diff = (logits - output.logits).abs().max().item()
    assert diff <= TOLERANCE, diff


def test_pretraining_checkpoint_imports_its_encoder_and_names_the_decoder_keys_it_leaves(tmp_path):
    hf = save_hf(tmp_path, "VideoMAEForPreTraining", use_mean_pooling=False)
    imported = load_videomae(tmp_path)
    assert imported.architecture == "VideoMAEForPreTraining" and imported.labels is None
    assert "mask_token" in imported.ignored and "encoder_to_decoder.weight" in imported.ignored
    assert imported.ignored and all(
        k.startswith(("decoder.", "encoder_to_decoder.", "mask_token")) for k in imported.ignored
    )
    pixels = normalized(video(4))
    with torch.no_grad():
        expected = hf.videomae(hf_input(pixels)).last_hidden_state[0]
    assert (features_of(imported.model.eval(), pixels) - expected).abs().max().item() <= TOLERANCE


def test_uint8_frames_through_the_imported_preprocessing_match_transformers(tmp_path):
    hf = save_hf(tmp_path, "VideoMAEModel")
    write_processor(tmp_path)
    loaded = load(str(tmp_path))
    pre = loaded.preprocessing
    frames = video(5)
    ours_particles = tokenize(frames, timestamps=np.arange(4) / 8.0, tubelet=pre.tubelet, mean=pre.mean, std=pre.std)
    with torch.no_grad():
        expected = hf(hf_input(normalized(frames, MEAN, STD))).last_hidden_state[0]
        ours = loaded.model.eval().forward_features(pack([ours_particles]))
    assert (ours - expected).abs().max().item() <= TOLERANCE


def test_encoder_keys_with_the_videomae_prefix_load_the_same(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    plain = load(str(tmp_path)).model.eval()
    rewrite_weights(tmp_path, lambda t: t.update({f"videomae.{k}": t.pop(k) for k in list(t)}))
    prefixed = load(str(tmp_path)).model.eval()
    pixels = normalized(video(6))
    assert torch.equal(features_of(plain, pixels), features_of(prefixed, pixels))


def test_query_bias_spelling_of_transformers_5_loads_the_same(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    before = load(str(tmp_path)).model.state_dict()

    def rename(tensors):
        for key in [k for k in tensors if k.endswith(("q_bias", "v_bias"))]:
            tensors[key.replace("q_bias", "query.bias").replace("v_bias", "value.bias")] = tensors.pop(key)

    rewrite_weights(tmp_path, rename)
    after = load(str(tmp_path)).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_packed_clips_of_other_sizes_and_pruned_clips_run_as_alone(tmp_path):
    # Each particle's flat index comes from its own clip's grid, so packing changes nothing; a pruned clip runs
    # (its particles keep the index of the tubelet that opened their run).
    save_hf(tmp_path, "VideoMAEModel")
    model = load(str(tmp_path)).model.eval()
    still = video(8, frames=6, size=48)
    still[1:4] = still[0]
    clips = [
        particles_of(normalized(video(9))),
        tokenize(still, timestamps=np.arange(6) / 8.0, tubelet=(2, 16, 16), prune_threshold=1.0),
    ]
    assert len(clips[1]) < clips[1].total
    with torch.no_grad():
        alone = [model.forward_features(pack([c])) for c in clips]
        packed = model.forward_features(pack(clips))
    assert torch.allclose(packed, torch.cat(alone), atol=1e-5) and packed.isfinite().all()


# --- the biases really load ----------------------------------------------------------------------------------------


def test_qkv_bias_is_q_bias_zeros_v_bias(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    saved = load_file(tmp_path / "model.safetensors")
    layer = "encoder.layer.1.attention.attention."
    q, v = (
        saved.get(f"{layer}q_bias", saved.get(f"{layer}query.bias")),
        saved.get(f"{layer}v_bias", saved.get(f"{layer}value.bias")),
    )
    bias = load(str(tmp_path)).model.blocks[1].attn.qkv.bias.detach()
    assert torch.equal(bias, torch.cat([q, torch.zeros(32), v])) and q.abs().min() > 0


def test_zeroing_q_bias_in_the_file_changes_the_features(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    pixels = normalized(video(7))
    before = features_of(load(str(tmp_path)).model.eval(), pixels)
    rewrite_weights(
        tmp_path,
        lambda t: t.update({k: torch.zeros_like(v) for k, v in t.items() if k.endswith(("q_bias", "query.bias"))}),
    )
    after = features_of(load(str(tmp_path)).model.eval(), pixels)
    assert (before - after).abs().max() > 1e-2


# --- strict keys ---------------------------------------------------------------------------------------------------


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    rewrite_weights(tmp_path, lambda t: t.pop("encoder.layer.1.attention.attention.v_bias"))
    with pytest.raises(ConfigError, match=r"missing 1 \(encoder\.layer\.1\.attention\.attention\.v_bias\)") as error:
        load(str(tmp_path))
    assert str(tmp_path) in str(error.value)


def test_an_unexpected_key_is_an_error_naming_it(tmp_path):
    save_hf(tmp_path, "VideoMAEForVideoClassification", id2label=dict(enumerate(LABELS)))
    rewrite_weights(tmp_path, lambda t: t.update({"videomae.encoder.layer.0.extra.weight": torch.ones(3)}))
    with pytest.raises(ConfigError, match=r"unexpected 1 \(videomae\.encoder\.layer\.0\.extra\.weight\)") as error:
        load(str(tmp_path))
    assert str(tmp_path) in str(error.value)


def test_a_missing_classifier_is_an_error(tmp_path):
    save_hf(tmp_path, "VideoMAEForVideoClassification", id2label=dict(enumerate(LABELS)))
    rewrite_weights(tmp_path, lambda t: (t.pop("classifier.weight"), t.pop("fc_norm.bias")))
    with pytest.raises(ConfigError, match="missing 2 .*fc_norm.bias.*classifier.weight"):
        load(str(tmp_path))


def test_weights_that_disagree_with_the_config_in_shape_are_an_error(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(ConfigError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(64, 32\) vs model \(128, 32\)"):
        load(str(tmp_path))


def test_a_pickle_only_checkpoint_is_refused_without_reading_it(tmp_path):
    config = hf_config().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not even a pickle: it must never be opened")
    with pytest.raises(ConfigError, match=r"only pickled weights \(pytorch_model\.bin\); tubelet loads safetensors"):
        load(str(tmp_path))


def test_a_classifier_reading_the_first_token_is_refused(tmp_path):
    save_hf(tmp_path, "VideoMAEForVideoClassification", id2label=dict(enumerate(LABELS)), use_mean_pooling=False)
    with pytest.raises(ConfigError, match="use_mean_pooling=false classifies from the first patch token"):
        load(str(tmp_path))


# --- preprocessing -------------------------------------------------------------------------------------------------


def test_preprocessing_comes_from_the_checkpoint(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    pre = load(str(tmp_path)).preprocessing
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD  # no processor file: VideoMAE's defaults
    assert pre.tubelet == (2, 16, 16) and pre.size == 32 and pre.max_long_side == 32
    assert round(pre.clip_seconds * pre.sample_fps) == 4 and pre.prune_threshold == 0.0
    write_processor(tmp_path)
    pre = load(str(tmp_path)).preprocessing
    assert np.allclose(pre.mean, MEAN, atol=1e-12) and np.allclose(pre.std, STD, atol=1e-12)


def test_runtime_fields_may_change_but_not_the_architecture(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    assert load(str(tmp_path), dropout=0.1, attention="dense").model.config.dropout == 0.1
    with pytest.raises(ConfigError, match="cannot change depth"):
        load(str(tmp_path), depth=1)


def test_an_import_may_switch_to_rotary_positions(tmp_path):
    save_hf(tmp_path, "VideoMAEModel")
    fixed, rope = load(str(tmp_path)).model.eval(), load(str(tmp_path), positions="rope").model.eval()
    assert rope.config.positions == "rope" and rope.config.time_mode == "seconds"
    assert all(torch.equal(v, rope.state_dict()[k]) for k, v in fixed.state_dict().items())
    pixels = normalized(video(10))
    assert (features_of(fixed, pixels) - features_of(rope, pixels)).abs().max() > 1e-2


# --- fine-tuning an imported checkpoint ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("videomae") / "data"
    generate(out, seed=3, clips_per_class=3)
    return out


def test_finetune_from_an_imported_checkpoint(tmp_path, sample_data):
    hf_dir = tmp_path / "hf"
    save_hf(hf_dir, "VideoMAEModel")
    write_processor(hf_dir)
    cfg = FinetuneConfig(
        data=str(sample_data),
        model=str(hf_dir),
        out=str(tmp_path / "run"),
        epochs=1,
        size=32,
        max_long_side=64,
        sample_fps=4.0,
        clip_seconds=1.0,
        prune_threshold=0.0,
        batch_particles=256,
        workers=0,
    )
    summary = finetune(cfg)
    for name in ("best", "last"):
        assert (tmp_path / "run" / name / "model.safetensors").is_file()
    assert summary["steps"] >= 1
    reloaded = load(summary["best"])
    assert reloaded.model.config.positions == "videomae" and reloaded.model.num_classes == 5
    assert reloaded.preprocessing.tubelet == (2, 16, 16)
    assert np.allclose(reloaded.preprocessing.mean, MEAN) and np.allclose(reloaded.preprocessing.std, STD)
    assert checkpoint.load_labels(summary["best"]) == ["grow", "move_left", "move_right", "rotate", "static"]
    # The backbone started from the imported weights: the first block's LayerNorm moved only by one epoch's steps.
    imported = load(str(hf_dir)).model.blocks[0].norm1.weight
    assert (reloaded.model.blocks[0].norm1.weight - imported).abs().max() < 0.05


def test_the_finetune_command_takes_a_videomae_directory(tmp_path, sample_data, tubelet_cli):
    hf_dir = tmp_path / "hf"
    save_hf(hf_dir, "VideoMAEForVideoClassification", id2label=dict(enumerate(LABELS)))
    flags = ["--size", 32, "--max-long-side", 64, "--sample-fps", 4, "--clip-seconds", 1, "--workers", 0]
    run = tmp_path / "run"
    tubelet_cli("finetune", "--data", sample_data, "--model", hf_dir, "--out", run, "--max-steps", 1, *flags)
    config = checkpoint.load_config(run / "last")
    assert config["encoder"]["positions"] == "videomae" and config["encoder"]["final_norm"] == "pooled"
    assert config["preprocessing"]["mean"] == list(IMAGENET_MEAN) and config["preprocessing"]["tubelet"] == [2, 16, 16]
