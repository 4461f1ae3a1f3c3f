import pytest

from tubelet.cli import main
from tubelet.data.sample import generate
from tubelet.data.sample_av import generate_av


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Sample data with 3 clips per class: 5 train, 5 val, 5 test clips."""
    out = tmp_path_factory.mktemp("recipes") / "data"
    generate(out, seed=2, clips_per_class=3)
    return out


@pytest.fixture(scope="session")
def av_data(tmp_path_factory):
    """The AV sample data at 3 clips per class: 6 train, 6 val, 6 test clips with captions and 4 questions each.

    Read-only: tests that need other manifests write them elsewhere.
    """
    out = tmp_path_factory.mktemp("av") / "data"
    generate_av(out, seed=1, clips_per_class=3, workers=1)
    return out


@pytest.fixture(scope="session")
def retrieval_run(av_data, tmp_path_factory):
    """One ``finetune --task retrieval`` CLI run on `av_data` (2 epochs, test size); returns its directory.

    Shared by the retrieval tests and `tubelet evaluate`'s, which re-score its ``best`` against its report.
    """
    run = tmp_path_factory.mktemp("retrieval_run") / "run"
    args = ["finetune", "--task", "retrieval", "--data", str(av_data), "--out", str(run), "--model", "test"]
    fast = ["--size", "32", "--max-long-side", "48", "--sample-fps", "4", "--clip-seconds", "1"]
    fast += ["--batch-particles", "2000", "--workers", "0", "--epochs", "2", "--lr", "3e-3"]
    assert main([*args, *fast]) == 0
    return run


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
