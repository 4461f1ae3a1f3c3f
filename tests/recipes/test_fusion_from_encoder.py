"""A fusion model started from a pretrained video encoder (`tubelet pretrain`'s RUN/best): weights, report, errors."""

import json
import shutil

import pytest
import torch

from tubelet import checkpoint
from tubelet.cli import main
from tubelet.data.av_dataset import AudioPreprocessing, AVClipDataset
from tubelet.data.manifest import load_dataset
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models import checkpoint_config, load
from tubelet.models.encoder import Encoder
from tubelet.models.fusion_from_encoder import build_fusion
from tubelet.models.registry import model_config
from tubelet.particles.modalities import pack_modalities
from tubelet.recipes.finetune import FinetuneConfig, finetune

RUN = dict(size=48, max_long_side=64, sample_fps=4.0, clip_seconds=1.0, batch_particles=600, workers=0, epochs=1)
LABELS = ["a", "b", "c"]


def test_a_video_only_fusion_model_from_an_encoder_computes_its_features(pretrained_encoder, av_data):
    cfg = FinetuneConfig(data=str(av_data), model=str(pretrained_encoder), modalities="video", **RUN)
    fusion, pre, report = build_fusion(cfg, ("video",), LABELS)
    encoder = load(str(pretrained_encoder)).model
    weights = encoder.state_dict()
    for key, value in fusion.state_dict().items():
        if key.startswith(("blocks.", "norm.", "patch_embed.", "span_embed.")):
            assert torch.equal(value, weights[key]), key
    assert set(report["loaded"]) == set(weights) and report["unused"] == {}  # a pretrained encoder has no head
    assert set(report["new"]) == {"modality_embed.weight", "head.weight", "head.bias"}
    assert pre == load(str(pretrained_encoder)).preprocessing

    # Same rotary angles (seconds, row, column), blocks and final norm, and a zero video modality embedding: the
    # fusion model's particle features and pooled vectors are the encoder's.
    data = load_dataset(av_data, split="val")
    dataset = AVClipDataset(data, pre, AudioPreprocessing(), modalities=("video",))
    batch = pack_modalities([dataset[i].particles for i in range(3)])
    fusion.eval(), encoder.eval()
    with torch.no_grad():
        features, merged = fusion.forward_features(batch), fusion.layout(batch)
        expected = encoder.forward_features(batch.parts["video"])
        assert torch.allclose(features, expected, atol=1e-6)
        assert torch.allclose(fusion.pool(features, merged), encoder.pool(expected, batch.parts["video"]), atol=1e-6)


def test_finetune_from_an_encoder_reports_the_weights_it_used_per_arm(pretrained_encoder, av_data, tmp_path):
    encoder = tmp_path / "encoder"  # the pretrained encoder with its own pixel statistics, as an import would have
    shutil.copytree(pretrained_encoder, encoder)
    config = checkpoint.load_config(encoder)
    config["preprocessing"]["mean"] = [0.3, 0.4, 0.5]
    (encoder / "config.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    cfg = FinetuneConfig(
        data=str(av_data / "train.csv"), out=str(run), model=str(encoder), modalities="video,audio", **RUN
    )
    finetune(cfg)
    fused = json.loads((run / "load_report.json").read_text())
    assert fused["encoder"] == str(encoder) and fused["loaded_parameters"] > 0
    assert any(k.startswith("blocks.1.") for k in fused["loaded"]) and "patch_embed.weight" in fused["loaded"]
    assert {"audio_embed.weight", "band_embed.weight", "modality_embed.weight", "head.weight"} <= fused["new"].keys()
    audio = json.loads((run / "ablation/audio/load_report.json").read_text())
    assert "reads no video" in audio["unused"]["patch_embed.weight"] and "blocks.0.attn.qkv.weight" in audio["loaded"]
    best = load(run / "best")
    assert best.preprocessing.mean == (0.3, 0.4, 0.5)  # the encoder's, with the run's sampling
    assert (best.preprocessing.sample_fps, best.preprocessing.size) == (4.0, 48)
    assert best.model.config.dim == model_config("test").dim


def test_an_encoder_with_other_positions_is_a_one_line_error(av_data, tmp_path, capsys):
    encoder = Encoder(model_config("test", positions="videomae"))  # as a Hugging Face VideoMAE import has
    checkpoint.save_checkpoint(
        tmp_path / "imported", model=encoder, config=checkpoint_config(encoder, preprocessing=Preprocessing())
    )
    args = ["finetune", "--data", str(av_data), "--out", str(tmp_path / "run"), "--modalities", "video,audio"]
    assert main([*args, "--model", str(tmp_path / "imported")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "imported") in err and "positions='videomae'" in err


def test_a_directory_that_is_no_checkpoint_names_it(av_data, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = FinetuneConfig(data=str(av_data), model=str(tmp_path / "empty"), modalities="audio")
    with pytest.raises(ConfigError, match="empty/config.json: no such file"):
        build_fusion(cfg, ("audio",), LABELS)
