import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from tubelet.cli import main
from tubelet.data.sample import generate
from tubelet.data.sample_av import generate_av
from tubelet.data.text import SPECIAL_TOKENS, save_tokenizer, train_tokenizer
from tubelet.io.write import write_video
from tubelet.recipes.finetune import FinetuneConfig, finetune

# Told apart by sound alone: clip i of each class has the same pictures, one plays a low tone, the other a high one.
SOUND_PAIR = ("static_low", "static_high")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Sample data with 3 clips per class: 5 train, 5 val, 5 test clips."""
    out = tmp_path_factory.mktemp("recipes") / "data"
    generate(out, seed=2, clips_per_class=3)
    return out


# The `test` encoder on 64-px frames, 1 s clips at 4 fps: the fine-tuning settings of test_finetune.py's FAST.
CLASSIFIER = dict(
    model="test", size=64, max_long_side=96, sample_fps=4.0, clip_seconds=1.0, batch_particles=400, workers=0, lr=3e-3
)


@pytest.fixture(scope="session")
def classifier_run(tiny_data, tmp_path_factory):
    """One 2-epoch fine-tuning run on `tiny_data`; returns (its summary, its directory). Read-only.

    Shared by the tests of what a run writes and of the commands that read a classifier checkpoint (evaluate,
    predict, explain), and the starting point of the runs that continue from one (freeze, LoRA).
    """
    out = tmp_path_factory.mktemp("classifier") / "run"
    return finetune(FinetuneConfig(data=str(tiny_data), out=str(out), epochs=2, **CLASSIFIER)), out


@pytest.fixture(scope="session")
def av_data(tmp_path_factory):
    """The AV sample data at 3 clips per class: 6 train, 6 val, 6 test clips with captions and 4 questions each.

    Read-only: tests that need other manifests write them elsewhere.
    """
    out = tmp_path_factory.mktemp("av") / "data"
    generate_av(out, seed=1, clips_per_class=3, workers=1)
    return out


@pytest.fixture
def first_train_clips(av_data, tmp_path):
    """Writes a manifest of the first `count` train clips of `av_data` (absolute paths) with some of its columns.

    One manifest: a run on it has no val or test split to evaluate. Returns ``write(count, columns) -> path``.
    """

    def write(count: int, columns: tuple[str, ...] = ("label",)) -> Path:
        rows = list(csv.DictReader(open(av_data / "train.csv")))[:count]
        path = tmp_path / f"first_{count}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", *columns])
            writer.writerows([str(av_data / r["path"]), *(r[c] for c in columns)] for r in rows)
        return path

    return write


def word_tokenizer(texts: list[str]):
    """`train_tokenizer`'s tokenizer with a vocabulary that is the same in every process: the specials, then every
    character (alone and as a ``##`` continuation) and every whole word of `texts`, sorted.

    The WordPiece trainer's vocabulary varies from run to run (ties between merges), and with it the text tower's
    initial weights and everything trained from them; a fixture whose numbers tests compare must not.
    """
    trained = train_tokenizer(texts)
    words = sorted(
        {w for t in texts for w, _ in trained.pre_tokenizer.pre_tokenize_str(trained.normalizer.normalize_str(t))}
    )
    chars = sorted({c for w in words for c in w})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *(w for w in words if len(w) > 1)]
    config = json.loads(trained.to_str())
    config["model"]["vocab"] = {token: i for i, token in enumerate(vocab)}  # the specials keep ids 0, 1, 2
    return Tokenizer.from_str(json.dumps(config))


@pytest.fixture(scope="session")
def retrieval_run(av_data, tmp_path_factory):
    """One ``finetune --task retrieval`` CLI run on `av_data` (8 epochs, test size); returns its directory.

    Shared by the retrieval tests and `tubelet evaluate`'s, which re-score its ``best`` against its report. Long
    enough, at a constant LR and without random crops, for ``last`` to rank its 6 training pairs clearly better than
    chance and than random weights (a few seconds: one 6-clip step per epoch).
    """
    root = tmp_path_factory.mktemp("retrieval_run")
    captions = [row["caption"] for row in csv.DictReader(open(av_data / "train.csv"))]
    save_tokenizer(word_tokenizer(captions), root / "tokenizer")
    run = root / "run"
    args = ["finetune", "--task", "retrieval", "--data", str(av_data), "--out", str(run), "--model", "test"]
    args += ["--tokenizer", str(root / "tokenizer")]
    fast = ["--size", "32", "--max-long-side", "48", "--sample-fps", "4", "--clip-seconds", "1"]
    fast += ["--batch-particles", "2000", "--workers", "0", "--epochs", "8", "--lr", "3e-3"]
    fast += ["--warmup-epochs", "0", "--crop-scale-min", "1.0"]
    assert main([*args, *fast]) == 0
    return run


@pytest.fixture(scope="session")
def silent_mp4(tmp_path_factory):
    """2 s of random frames with no audio stream."""
    frames = np.random.default_rng(0).integers(0, 255, (16, 48, 64, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("silent") / "silent.mp4", frames, fps=8)


@pytest.fixture(scope="session")
def sound_pair(av_data, tmp_path_factory):
    """`SOUND_PAIR` and two fusion classifiers of it, one reading video and audio, one audio alone.

    Trained on the 4 train and val clips of the pair (10 tiny epochs, a few seconds each); the test split's two
    clips are unseen. Returns ``{"test": {label: path}, "video,audio": checkpoint, "audio": checkpoint}``.
    """
    root = tmp_path_factory.mktemp("sound-pair")
    for split, sources in (("train", ("train", "val")), ("test", ("test",))):
        rows = [r for s in sources for r in csv.DictReader(open(av_data / f"{s}.csv")) if r["label"] in SOUND_PAIR]
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([str(av_data / r["path"]), r["label"]] for r in rows)
    pair = {"test": {r["label"]: r["path"] for r in csv.DictReader(open(root / "test.csv"))}}
    for modalities in ("video,audio", "audio"):
        out = root / modalities.replace(",", "+")
        cfg = FinetuneConfig(
            data=str(root), out=str(out), model="test", size=48, max_long_side=64, sample_fps=4.0, clip_seconds=1.0,
            batch_particles=600, workers=0, epochs=10, lr=0.002, warmup_epochs=0, modalities=modalities, ablate=False,
            val_split="none", min_steps_per_epoch=0,  # all 4 clips a batch: 10 steps, as these tests were tuned with
        )  # fmt: skip
        finetune(cfg)
        pair[modalities] = out / "best"
    return pair


@pytest.fixture(scope="session")
def vqa_run(av_data, tmp_path_factory):
    """One ``finetune --task vqa`` CLI run (video + question, and the question-only arm); returns its directory.

    Shared by the VQA tests and `tubelet evaluate`'s.
    """
    run = tmp_path_factory.mktemp("vqa_run") / "run"
    args = ["finetune", "--task", "vqa", "--data", str(av_data), "--out", str(run), "--model", "test"]
    fast = ["--size", "48", "--max-long-side", "64", "--sample-fps", "4", "--clip-seconds", "1"]
    fast += ["--batch-particles", "600", "--workers", "0", "--epochs", "1"]
    assert main([*args, *fast]) == 0
    return run


@pytest.fixture(scope="session")
def pretrained_encoder(av_data, tmp_path_factory):
    """``tubelet pretrain``'s RUN/best after a few steps on the AV train clips: a tubelet encoder checkpoint (the
    `test` size, 48-px frames, 1 s at 4 fps). Read-only."""
    from tubelet.recipes.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrained") / "run"
    cfg = PretrainConfig(
        data=str(av_data), split="train", out=str(out), model="test", size=48, max_long_side=64, sample_fps=4.0,
        clip_seconds=1.0, batch_particles=200, workers=0, decoder_dim=32, decoder_depth=1, decoder_heads=2, epochs=1,
        max_steps=3,
    )  # fmt: skip
    pretrain(cfg)
    return out / "best"
