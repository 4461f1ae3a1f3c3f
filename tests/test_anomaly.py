"""Anomaly scores: both methods rank an abnormal window above normal ones; threshold; the frame-difference baseline."""

import numpy as np
import pytest
import torch

from tubelet import models
from tubelet.anomaly import AnomalyScorer, frame_difference, frame_difference_scores, threshold
from tubelet.data.transforms import Preprocessing
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.particles import mask_batch, pack
from tubelet.tasks.reconstruction import reconstruction_loss

PRE = Preprocessing(tubelet=(2, 8, 8), sample_fps=4.0, clip_seconds=1.0, size=None, prune_threshold=4.0)
T, H, W = 4, 32, 32


def normal_window(rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth grey ramp with a dark square walking left to right."""
    ramp = np.linspace(60, 190, W, dtype=np.float32)[None, None, :, None]
    frames = np.broadcast_to(ramp, (T, H, W, 3)).copy()
    y, x0 = rng.integers(4, H - 12), rng.integers(0, W - 14)
    for t in range(T):
        x = x0 + t
        frames[t, y : y + 8, x : x + 8] = 30
    return frames.astype(np.uint8)


def abnormal_window(rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: fine noise flickering over the whole frame."""
    return rng.integers(0, 256, (T, H, W, 1), dtype=np.uint8).repeat(3, axis=3)


def fresh() -> models.Encoder:
    return models.Encoder(models.model_config("test", num_classes=0, tubelet=PRE.tubelet))


def times() -> np.ndarray:
    return np.arange(T) / PRE.sample_fps


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    normal = [normal_window(rng) for _ in range(12)]
    held_out = [normal_window(rng) for _ in range(4)]
    return normal, held_out, abnormal_window(rng)


def particles(scorer, frames_list):
    return [scorer.particles(f, times()) for f in frames_list]


def test_features_rank_the_abnormal_window_above_held_out_normal_ones(windows):
    normal, held_out, abnormal = windows
    torch.manual_seed(0)
    loaded = models.Loaded(fresh(), PRE, source="test")
    scorer = AnomalyScorer.for_checkpoint(loaded, device="cpu")
    assert scorer.method == "features"
    calibration = scorer.fit(particles(scorer, normal))
    scores = scorer.score(particles(scorer, [*held_out, abnormal]))
    assert calibration.shape == (12,) and scores.shape == (5,)
    assert scores[-1] > 2 * scores[:-1].max()
    assert scores[-1] > threshold(calibration, 99.0)
    # Leave-one-out: each calibration window's score is its distance to the OTHERS, never zero.
    assert calibration.min() > 0


def test_features_need_fit_first(windows):
    loaded = models.Loaded(fresh(), PRE, source="test")
    scorer = AnomalyScorer.for_checkpoint(loaded, device="cpu")
    with pytest.raises(ValueError, match="fit"):
        scorer.score(particles(scorer, windows[1]))


def _train_pair(clips, steps: int = 60):
    """A fresh `test` encoder and one-block decoder, trained briefly by masked reconstruction on `clips`."""
    torch.manual_seed(0)
    encoder = fresh()
    decoder = MaskedDecoder(DecoderConfig(encoder_dim=32, patch_dim=encoder.config.patch_dim, dim=32, depth=1, heads=2))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    batch = pack(clips)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        plan = mask_batch(batch, 0.5, mode="random", generator=generator)
        pred = decoder(encoder.forward_features(plan.visible), plan.visible, plan.queries)
        loss = reconstruction_loss(pred, batch.values, plan.target_index, channels=3, mean=PRE.mean, std=PRE.std)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder, decoder


def test_reconstruction_error_from_a_saved_pretraining_checkpoint(windows, tmp_path):
    normal, held_out, abnormal = windows
    plain = AnomalyScorer(fresh(), PRE)
    encoder, decoder = _train_pair(particles(plain, normal))
    models.save(tmp_path / "run", encoder, preprocessing=PRE, decoder=decoder, training_args={"mask_ratio": 0.5})
    scorer = AnomalyScorer.for_checkpoint(models.load(tmp_path / "run"), device="cpu", draws=2)
    assert scorer.method == "reconstruction" and scorer.mask_ratio == 0.5
    calibration = scorer.fit(particles(scorer, normal))
    scores = scorer.score(particles(scorer, [*held_out, abnormal]))
    assert scores[-1] > scores[:-1].max() and scores[-1] > threshold(calibration)
    # Fixed masks: a window scores the same alone as in a batch, and the same twice.
    alone = scorer.score(particles(scorer, [abnormal]))
    np.testing.assert_allclose(alone, scores[-1:], rtol=1e-4)
    np.testing.assert_allclose(scorer.score(particles(scorer, held_out)), scores[:-1], rtol=1e-4)


def test_a_tiny_budget_batches_one_window_at_a_time_with_the_same_scores(windows):
    normal, held_out, _ = windows
    torch.manual_seed(0)
    encoder = fresh()
    wide, narrow = AnomalyScorer(encoder, PRE), AnomalyScorer(encoder, PRE, budget=1)
    wide.fit(particles(wide, normal))
    narrow.fit(particles(narrow, normal))
    assert len(narrow._batches(particles(narrow, held_out))) == len(held_out)
    np.testing.assert_allclose(narrow.score(particles(narrow, held_out)), wide.score(particles(wide, held_out)))


def test_threshold_is_the_percentile_of_calibration_scores():
    scores = np.arange(101, dtype=np.float64)
    assert threshold(scores, 99.0) == pytest.approx(99.0)
    assert threshold(scores, 50.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="calibration"):
        threshold(np.array([]))
    with pytest.raises(ValueError, match="percentile"):
        threshold(scores, 120.0)


def test_frame_difference_baseline_z_scores_against_calibration():
    still = np.full((T, H, W, 3), 100, np.uint8)
    moving = still.copy()
    moving[1::2] = 110  # every other frame 10 levels brighter: mean absolute difference 10
    assert frame_difference(still) == 0.0 and frame_difference(moving) == pytest.approx(10.0)
    calibration = np.array([1.0, 2.0, 3.0])  # raw values: mean 2, std sqrt(2/3)
    scores, calibrated = frame_difference_scores([still, moving], calibration)
    std = np.sqrt(2 / 3)
    np.testing.assert_allclose(scores, [(0 - 2) / std, (10 - 2) / std])
    np.testing.assert_allclose(calibrated, [-1 / std, 0, 1 / std])
    # Calibration frames give the same as their raw values.
    again, _ = frame_difference_scores([moving], [still, moving])
    np.testing.assert_allclose(again, [(10 - 5) / 5])
