"""A checkpoint's config.json and labels.json are checked once, at load: a bad field is a one-line ConfigError.

Each case saves a tiny real checkpoint, corrupts one field, and expects `tubelet.models.load` to name the file and
the field (``RUN/config.json: preprocessing.sample_fps: expected a number or null, got 'fast'``), never a traceback
from deep inside sampling or a tensor constructor.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tubelet import models
from tubelet.cli import main
from tubelet.data.av_dataset import AudioPreprocessing
from tubelet.data.text import train_tokenizer
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.io import write_video
from tubelet.models import (
    DecoderConfig,
    Encoder,
    FusionConfig,
    FusionModel,
    MaskedDecoder,
    RetrievalConfig,
    RetrievalModel,
    model_config,
)

TUBELET = (2, 8, 8)
PRE = Preprocessing(tubelet=TUBELET, size=16, max_long_side=32)
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny checkpoint of each kind that has its own config.json blocks, by kind name."""
    root = tmp_path_factory.mktemp("checkpoints")
    encoder = Encoder(model_config("test", num_classes=3, tubelet=TUBELET))
    decoder = MaskedDecoder(DecoderConfig(encoder_dim=32, patch_dim=encoder.config.patch_dim, dim=16, depth=1, heads=2))
    fusion = FusionModel(FusionConfig(dim=32, depth=1, heads=2, tubelet=TUBELET, audio_patch=(4, 4), num_classes=3))
    tokenizer = train_tokenizer(["a red disc moves left", "a blue square stays still"])
    text = RetrievalConfig(vocab_size=tokenizer.get_vocab_size(), text_dim=32, text_depth=1, text_heads=2, embed_dim=16)
    return {
        "encoder": models.save(root / "encoder", encoder, preprocessing=PRE, labels=LABELS, decoder=decoder),
        "fusion": models.save(
            root / "fusion", fusion, preprocessing=PRE, labels=LABELS, audio=AudioPreprocessing(patch=(4, 4), n_mels=8)
        ),
        "retrieval": models.save(
            root / "retrieval",
            RetrievalModel(model_config("test", tubelet=TUBELET), text),
            preprocessing=PRE,
            tokenizer=tokenizer,
        ),
    }


def corrupt(saved, tmp_path, kind: str, block: str, field: str, value):
    """A copy of `kind`'s checkpoint whose config.json has ``block.field = value``."""
    directory = shutil.copytree(saved[kind], tmp_path / kind)
    config = json.loads((directory / "config.json").read_text())
    config[block][field] = value
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(
    "kind, block, field, value, expected",
    [
        ("encoder", "preprocessing", "sample_fps", "fast", "expected a number or null, got 'fast'"),
        ("encoder", "preprocessing", "sample_fps", 0, "expected a value > 0"),
        ("encoder", "preprocessing", "clip_seconds", -2, "expected a value > 0, got -2"),
        ("encoder", "preprocessing", "tubelet", [2, -8, 8], "expected values >= 1"),
        ("encoder", "preprocessing", "tubelet", [2, 8], "expected a list of 3 integers, got [2, 8]"),
        ("encoder", "preprocessing", "size", 0, "expected a value >= 1"),
        ("encoder", "preprocessing", "max_long_side", "big", "expected an integer or null"),
        ("encoder", "preprocessing", "std", [0.2, 0.0, 0.2], "expected values > 0"),
        ("encoder", "preprocessing", "mean", [0.4, 0.4], "expected a list of 3 numbers"),
        ("encoder", "preprocessing", "prune_threshold", -1, "expected a value >= 0"),
        ("encoder", "preprocessing", "prune_reference", "sideways", "expected previous or anchor, got 'sideways'"),
        ("encoder", "preprocessing", "prune_reference", 1, "expected a string, got 1"),
        ("encoder", "preprocessing", "resolution", 16, "unknown preprocessing field"),
        ("encoder", "encoder", "dim", -128, "expected a value >= 1, got -128"),
        ("encoder", "encoder", "dim", "abc", "expected an integer, got 'abc'"),
        ("encoder", "encoder", "heads", 0, "expected a value >= 1"),
        ("encoder", "encoder", "tubelet", [2, 0, 8], "expected values >= 1"),
        ("encoder", "encoder", "num_classes", True, "expected an integer, got True"),
        ("encoder", "encoder", "dim", 33, "expected a value divisible by heads"),
        ("encoder", "encoder", "pooling", 3, "expected a string"),
        ("encoder", "encoder", "widht", 32, "unknown encoder config field"),
        ("encoder", "decoder", "heads", -1, "expected a value >= 1"),
        ("fusion", "fusion", "modalities", "video", "expected a list of strings"),
        ("fusion", "fusion", "audio_patch", [4, 0], "expected values >= 1"),
        ("fusion", "fusion", "num_classes", -3, "expected a value >= 0"),
        ("fusion", "audio", "n_mels", "64", "expected an integer"),
        ("fusion", "audio", "std", 0, "expected a value > 0"),
        ("fusion", "audio", "allow_missing_audio", "yes", "expected true or false"),
        ("fusion", "audio", "bands", 2, "unknown audio preprocessing field"),
        ("retrieval", "retrieval", "text_heads", 0, "expected a value >= 1"),
        ("retrieval", "retrieval", "temperature", None, "expected a number, got None"),
        ("retrieval", "encoder", "depth", -1, "expected a value >= 1"),
    ],
)
def test_a_bad_config_field_is_one_line_naming_the_file_and_field(saved, tmp_path, kind, block, field, value, expected):
    directory = corrupt(saved, tmp_path, kind, block, field, value)
    with pytest.raises(ConfigError) as error:
        models.load(directory)
    message = str(error.value)
    assert message.startswith(f"{directory}/config.json: {block}.{field}: ")
    assert expected in message
    assert "\n" not in message


def test_a_missing_block_or_one_that_is_not_an_object_is_named(saved, tmp_path):
    directory = shutil.copytree(saved["fusion"], tmp_path / "fusion")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "audio": [1, 2]}))
    with pytest.raises(ConfigError, match=r"config\.json: audio: expected an object of fields, got \[1, 2\]$"):
        models.load(directory)
    del config["preprocessing"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config\.json: missing 'preprocessing'$"):
        models.load(directory)


@pytest.mark.parametrize("kind, labels", [("encoder", ["a", "b"]), ("encoder", LABELS + ["d"]), ("fusion", ["a"])])
def test_labels_that_do_not_match_the_head_are_named_at_load(saved, tmp_path, kind, labels):
    directory = shutil.copytree(saved[kind], tmp_path / kind)
    (directory / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ConfigError) as error:
        models.load(directory)
    assert str(error.value) == (
        f"{directory}/labels.json: {len(labels)} labels, but the model's head has 3 outputs; give one name per class"
    )


def test_valid_checkpoints_still_load_with_what_was_saved(saved):
    for kind, directory in saved.items():
        loaded = models.load(directory)
        assert (loaded.kind, loaded.preprocessing) == (kind, PRE)
        assert loaded.labels == (None if kind == "retrieval" else LABELS)
    decoder = models.load_decoder(saved["encoder"])
    assert (decoder.config.dim, decoder.config.encoder_dim) == (16, 32)


def test_a_checkpoint_saved_before_prune_reference_loads_as_previous(saved, tmp_path):
    directory = shutil.copytree(saved["encoder"], tmp_path / "encoder")
    config = json.loads((directory / "config.json").read_text())
    assert config["preprocessing"].pop("prune_reference") == "anchor"  # saved now; before the field, none
    (directory / "config.json").write_text(json.dumps(config))

    assert models.load(directory).preprocessing.prune_reference == "previous"


def test_predict_on_a_corrupt_checkpoint_exits_2_with_one_line(saved, tmp_path, capsys):
    directory = corrupt(saved, tmp_path, "encoder", "preprocessing", "sample_fps", "fast")
    frames = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=8)
    assert main(["predict", "--checkpoint", str(directory), str(video)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "config.json: preprocessing.sample_fps: expected a number or null, got 'fast'" in lines[0]
