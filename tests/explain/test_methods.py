"""Attribution methods and their honesty checks, on a model trained here to find a planted bright square.

Class 1 clips carry a bright square on one grid cell (the same cell at every frame) over grey noise; class 0 clips
are noise only. A model that learned the task must rest its decision on the square, so a method that does not
point at it is wrong, and a map that survives weight randomization explains the input, not the model.
"""

import numpy as np
import pytest
import torch

from tubelet.explain import (
    METHODS,
    deletion_auc,
    explain_particles,
    integrated_gradients,
    occlusion,
    particle_boxes,
    pointing_hit,
    random_deletion_auc,
    randomized_model,
    rank_correlation,
)
from tubelet.explain.methods import (
    attention_rollout,
    baseline_particles,
    class_probs,
    gradient_x_input,
    modality_occlusion,
    window_groups,
)
from tubelet.explain.render import score_volume
from tubelet.io import Audio
from tubelet.models.encoder import Encoder
from tubelet.models.fusion import FusionConfig, FusionModel
from tubelet.models.registry import model_config
from tubelet.particles import pack, tokenize
from tubelet.particles.audio import tokenize_audio
from tubelet.particles.modalities import ModalClip, pack_clips
from tubelet.particles.structure import AUDIO, TEXT, VIDEO
from tubelet.particles.text import tokenize_text

TUBELET = (2, 8, 8)
FRAMES, SIDE = 4, 32  # grid 2 x 4 x 4 = 32 particles


def planted_clip(rng: np.random.Generator, positive: bool, *, frames_shown: int = 2) -> tuple:
    """(particles, box_at) where ``box_at(t)`` is the square's (x0, y0, x1, y1) while it is shown, else far away.

    The square is on one cell for `frames_shown` frames starting at a random whole tubelet: WHEN and WHERE are known.
    """
    frames = rng.integers(60, 140, size=(FRAMES, SIDE, SIDE, 3)).astype(np.uint8)
    times = np.arange(FRAMES) / 8.0
    box_at = None
    if positive:
        row, col = rng.integers(0, SIDE // 8, size=2)
        first = 2 * int(rng.integers(0, (FRAMES - frames_shown) // 2 + 1))
        frames[first : first + frames_shown, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 250
        shown = (times[first], times[first + frames_shown - 1])
        box = (col * 8, row * 8, col * 8 + 8, row * 8 + 8)

        def box_at(t, box=box, shown=shown):
            return box if shown[0] <= t <= shown[1] else (-99, -99, -98, -98)

    particles = tokenize(frames, timestamps=times, tubelet=TUBELET, mean=(0.45,) * 3, std=(0.225,) * 3)
    return particles, box_at


@pytest.fixture(scope="module")
def planted():
    """A `test`-size classifier trained until it finds the square, and 10 positive clips it has never seen."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Encoder(model_config("test", num_classes=2, tubelet=TUBELET))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(150):
        labels = rng.integers(0, 2, size=16)
        clips = [planted_clip(rng, bool(y))[0] for y in labels]
        # Label smoothing keeps the logits moderate: a saturated model's gradients vanish along most of the path.
        loss = torch.nn.functional.cross_entropy(model(pack(clips)), torch.as_tensor(labels), label_smoothing=0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_rng = np.random.default_rng(1)
    held_out = [planted_clip(test_rng, True) for _ in range(10)]
    negatives = [planted_clip(test_rng, False)[0] for _ in range(10)]
    accuracy = (class_probs(model, [p for p, _ in held_out]).argmax(1) == 1).float().mean() + (
        class_probs(model, negatives).argmax(1) == 0
    ).float().mean()
    assert accuracy / 2 >= 0.9, "the planted task did not train; every check below would be meaningless"
    return model, held_out


@pytest.mark.parametrize("method", ["occlusion", "ig", "gradxinput"])
def test_methods_point_at_the_planted_square(planted, method):
    model, clips = planted
    hits = [pointing_hit(explain_particles(model, p, 1, method), box_at) for p, box_at in clips]
    assert np.mean(hits) >= 0.8, hits


def test_occlusion_windows_find_an_object_that_persists(planted):
    """A square shown in both tubelets is redundant to per-particle occlusion; a window over time removes it whole."""
    model, _ = planted
    rng = np.random.default_rng(5)
    clips = [planted_clip(rng, True, frames_shown=FRAMES) for _ in range(10)]
    hits = [pointing_hit(occlusion(model, p, 1, window=(2, 1, 1)), box_at) for p, box_at in clips]
    assert np.mean(hits) >= 0.8, hits


def test_every_method_gives_one_finite_score_per_particle(planted):
    model, clips = planted
    particles = clips[0][0]
    for method in METHODS:
        explanation = explain_particles(model, particles, 1, method)
        assert explanation.scores.shape == (len(particles),)
        assert torch.isfinite(explanation.scores).all()
        assert explanation.probs.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_occlusion_score_is_the_probability_drop_without_that_particle(planted):
    model, clips = planted
    particles = clips[3][0]
    explanation = occlusion(model, particles, 1)
    full = class_probs(model, [particles])[0, 1]
    for i in (0, 7, len(particles) - 1):
        keep = torch.ones(len(particles), dtype=torch.bool)
        keep[i] = False
        without = class_probs(model, [particles.select(keep)])[0, 1]
        assert explanation.scores[i].item() == pytest.approx((full - without).item(), abs=1e-5)


def test_occlusion_windows_group_neighbouring_tubelets(planted):
    model, clips = planted
    particles = clips[0][0]
    groups = window_groups(particles, (2, 2, 2))
    assert int(groups.max()) + 1 == 4  # a 2 x 4 x 4 grid in 2 x 2 x 2 windows: 1 x 2 x 2 of them
    explanation = occlusion(model, particles, 1, window=(2, 2, 2))
    for g in range(4):
        assert len(set(explanation.scores[groups == g].tolist())) == 1  # one drop per window
    with pytest.raises(ValueError, match="window"):
        window_groups(particles, (0, 1, 1))


def test_integrated_gradients_are_complete(planted):
    """Scores add up to logit(input) - logit(baseline) (the axiom IG is built on), up to the Riemann error.

    Checked on a randomized copy of the model: the trained one is nearly a step function along the path (its logit
    jumps within 1% of it), which no uniform step count integrates; that is the model's sharpness, not the method's.
    """
    model, clips = planted
    smooth = randomized_model(model, seed=1)
    coarse = integrated_gradients(smooth, clips[2][0], 1, steps=4)
    fine = integrated_gradients(smooth, clips[2][0], 1, steps=64)
    change = fine.meta["logit"] - fine.meta["baseline_logit"]
    assert abs(change) > 0.05
    assert abs(fine.meta["completeness_gap"]) < 0.01 * abs(change)
    assert abs(fine.meta["completeness_gap"]) < abs(coarse.meta["completeness_gap"])  # more steps, smaller error


def test_integrated_gradients_do_not_depend_on_how_steps_are_batched(planted):
    model, clips = planted
    particles = clips[1][0]
    whole = integrated_gradients(model, particles, 1, steps=8)
    split = integrated_gradients(model, particles, 1, steps=8, budget=len(particles) * 3)  # 3 + 3 + 2 copies
    torch.testing.assert_close(whole.scores, split.scores, atol=1e-5, rtol=1e-4)


def test_rollout_distributes_the_pooled_feature_over_particles(planted):
    model, clips = planted
    explanation = explain_particles(model, clips[0][0], 1, "rollout")
    assert explanation.scores.sum().item() == pytest.approx(1.0, abs=1e-4)  # rollout rows are distributions
    assert (explanation.scores > 0).all()
    assert model.last_attention is None  # the maps are not kept alive after the explanation


@pytest.mark.parametrize("method", ["occlusion", "gradxinput", "ig"])
def test_maps_change_when_the_weights_are_randomized(planted, method):
    """Adebayo et al.'s model-randomization check: mean rank correlation with the trained model's map < 0.5."""
    model, clips = planted
    random_model = randomized_model(model, seed=0)
    assert not torch.equal(random_model.head.weight, model.head.weight)
    correlations = []
    for particles, _ in clips:
        trained = explain_particles(model, particles, 1, method).scores
        correlations.append(rank_correlation(trained, explain_particles(random_model, particles, 1, method).scores))
    assert np.mean(correlations) < 0.5, correlations


def test_deleting_top_particles_first_hurts_more_than_random_deletion(planted):
    model, clips = planted
    ranked, shuffled = [], []
    for particles, _ in clips[:5]:
        explanation = occlusion(model, particles, 1)
        ranked.append(deletion_auc(model, explanation))
        shuffled.append(random_deletion_auc(model, particles, 1, repeats=3))
    assert np.mean(ranked) < np.mean(shuffled) - 0.1, (ranked, shuffled)


def test_rank_correlation_of_a_constant_map_is_zero():
    assert rank_correlation(np.ones(5), np.arange(5)) == 0.0
    assert rank_correlation(np.arange(5), np.arange(5)) == pytest.approx(1.0)


def test_particle_boxes_are_cells_scaled_to_source_pixels(planted):
    _, clips = planted
    particles = clips[0][0]
    boxes = particle_boxes(particles, scale=(2.0, 3.0))
    i = int(torch.nonzero((particles.y == 1) & (particles.x == 2))[0])
    assert boxes[i].tolist() == [2 * 8 * 3.0, 1 * 8 * 2.0, 3 * 8 * 3.0, 2 * 8 * 2.0]


def test_score_volume_paints_each_score_on_its_tubelet_and_its_pruned_run():
    frames = np.full((6, 16, 16, 3), 100, np.uint8)
    frames[:, :8, :8] = np.arange(6)[:, None, None, None] * 40  # only the top-left cell changes over time
    particles = tokenize(frames, timestamps=np.arange(6) / 6, tubelet=(2, 8, 8), prune_threshold=1.0)
    assert len(particles) < 12  # static cells collapsed into runs
    from tubelet.explain.methods import Explanation

    scores = torch.arange(len(particles), dtype=torch.float32) + 1
    volume = score_volume(Explanation(scores, particles, 0, "test", torch.ones(1)))
    assert volume.shape == (6, 16, 16)
    for i in range(len(particles)):
        t0, t1 = int(particles.ti[i]) * 2, (int(particles.ti[i]) + int(particles.span[i])) * 2
        y, x = int(particles.y[i]) * 8, int(particles.x[i]) * 8
        assert (volume[t0:t1, y : y + 8, x : x + 8] == scores[i].item()).all()


# --- fusion models: the same methods over a clip's video AND audio particles (a `ModalClip`) ----------------------


def fusion_clip(seed: int = 0) -> ModalClip:
    """A real clip's worth of particles: 32 video particles of `planted_clip` and 8 audio ones of 0.5 s of noise."""
    rng = np.random.default_rng(seed)
    video, _ = planted_clip(rng, True)
    noise = Audio(rng.normal(0, 0.1, 8000).astype(np.float32), 16000, 0.0, "noise")
    audio = tokenize_audio(noise, patch=(16, 16), n_mels=32)  # 4 time patches x 2 mel bands
    return ModalClip({"video": video, "audio": audio})


@pytest.fixture(scope="module")
def fusion_model():
    """An untrained (random, hence smooth) video + audio fusion classifier of the test size."""
    torch.manual_seed(0)
    config = FusionConfig(
        modalities=("video", "audio"), dim=32, depth=2, heads=2, tubelet=TUBELET, audio_bands=2, num_classes=2
    )
    return FusionModel(config).eval()


def test_a_modal_clip_is_one_sequence_in_the_model_merge_order(fusion_model):
    clip = fusion_clip()
    assert len(clip) == 40 and clip.modality.tolist() == [VIDEO] * 32 + [AUDIO] * 8
    packed = pack_clips([clip])
    embedded = fusion_model.embed(packed)  # (40, D), merged order
    where = clip.slices()
    torch.testing.assert_close(embedded[where["audio"]], fusion_model.embed_modality("audio", packed.parts["audio"]))
    kept = clip.select(torch.tensor([35, 2, 33]))  # any order in, merge order out
    assert kept.modality.tolist() == [VIDEO, AUDIO, AUDIO] and kept.t.tolist() == clip.t[[2, 33, 35]].tolist()
    assert len(clip.select(clip.modality == VIDEO).parts["audio"]) == 0  # a modality can be left empty


def test_fusion_occlusion_scores_video_and_audio_particles_by_their_probability_drop(fusion_model):
    clip = fusion_clip()
    explanation = occlusion(fusion_model, clip, 1)
    full = class_probs(fusion_model, [clip])[0, 1]
    for i in (0, 31, 32, 39):  # first and last of each modality
        keep = torch.ones(len(clip), dtype=torch.bool)
        keep[i] = False
        without = class_probs(fusion_model, [clip.select(keep)])[0, 1]
        assert explanation.scores[i].item() == pytest.approx((full - without).item(), abs=1e-6)
    assert explanation.of_modality("audio").scores.tolist() == explanation.scores[32:].tolist()
    groups = window_groups(clip, (2, 4, 4))  # video: the whole 2 x 4 x 4 grid; audio: 2 time patches x both bands
    assert groups.tolist() == [0] * 32 + [1] * 4 + [2] * 4  # windows never mix modalities
    share = explanation.modality_share()
    assert set(share) == {"video", "audio"} and sum(share.values()) == pytest.approx(1.0)
    drops = modality_occlusion(fusion_model, clip, 1)
    without_audio = class_probs(fusion_model, [clip.select(clip.modality == VIDEO)])[0, 1]
    assert drops["audio"] == pytest.approx((full - without_audio).item(), abs=1e-6)


def test_fusion_integrated_gradients_are_complete_from_video_average_and_silent_audio(fusion_model):
    clip = fusion_clip()
    baseline = baseline_particles(clip, audio_silence=-3.0)
    assert (baseline.parts["audio"].values == -3.0).all()
    assert torch.allclose(baseline.parts["video"].values, clip.parts["video"].values.mean(0).expand(32, -1))
    explanation = integrated_gradients(fusion_model, clip, 1, steps=64, audio_silence=-3.0)
    change = explanation.meta["logit"] - explanation.meta["baseline_logit"]
    assert explanation.meta["baseline"] == "average video particle, silence"
    assert abs(change) > 0.01 and abs(explanation.meta["completeness_gap"]) < 0.02 * abs(change)
    silent_start = gradient_x_input(fusion_model, clip, 1, audio_silence=-3.0).scores
    assert not torch.allclose(silent_start, gradient_x_input(fusion_model, clip, 1).scores)  # the baseline counts


def test_fusion_rollout(fusion_model):
    explanation = attention_rollout(fusion_model, fusion_clip(), 1)
    assert explanation.scores.shape == (40,) and explanation.scores.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert fusion_model.last_attention is None


# --- VQA models: the question's tokens are particles too ---------------------------------------------------------

PAD_ID = 0  # [PAD] of a trained tokenizer
QUESTION = [2, 7, 9, 4, 11]  # [CLS] and four word ids


@pytest.fixture(scope="module")
def vqa_model():
    """An untrained video + audio + question fusion classifier; the token table is drawn wide (std 1, not 0.02) so
    that, untrained, the words weigh as much as the pictures and sounds."""
    torch.manual_seed(1)
    config = FusionConfig(
        modalities=("video", "audio", "text"), dim=32, depth=2, heads=2, tubelet=TUBELET, audio_bands=2,
        vocab_size=16, num_classes=3,
    )  # fmt: skip
    model = FusionModel(config).eval()
    torch.nn.init.normal_(model.token_embed.weight, std=1.0)
    return model


def vqa_clip() -> ModalClip:
    """`fusion_clip`'s 32 video and 8 audio particles and the 5 tokens of `QUESTION` at the window's centre."""
    clip = fusion_clip()
    return ModalClip({**clip.parts, "text": tokenize_text(QUESTION, time=0.25)})


def test_text_particles_start_gradient_methods_from_the_pad_token(vqa_model):
    question = ModalClip({"text": tokenize_text(QUESTION, time=0.5)})
    with pytest.raises(ValueError, match="text_token"):
        baseline_particles(question)
    baseline = baseline_particles(vqa_clip(), audio_silence=-3.0, text_token=PAD_ID).parts["text"]
    assert baseline.values[:, 0].tolist() == [PAD_ID] * 5 and baseline.ti.tolist() == [0, 1, 2, 3, 4]  # places kept
    clip = vqa_clip()
    explanation = integrated_gradients(vqa_model, clip, 2, steps=64, audio_silence=-3.0, text_token=PAD_ID)
    change = explanation.meta["logit"] - explanation.meta["baseline_logit"]
    assert explanation.meta["baseline"] == "average video particle, silence, token 0 for every text particle"
    assert abs(change) > 0.01 and abs(explanation.meta["completeness_gap"]) < 0.02 * abs(change)
    # A model that reads the question alone: the whole change of the logit is the tokens', and still complete.
    torch.manual_seed(2)
    config = FusionConfig(modalities=("text",), dim=32, depth=2, heads=2, vocab_size=16, num_classes=3)
    reader = FusionModel(config).eval()
    torch.nn.init.normal_(reader.token_embed.weight, std=1.0)
    words = integrated_gradients(reader, question, 2, steps=64, text_token=PAD_ID)
    change = words.meta["logit"] - words.meta["baseline_logit"]
    assert words.meta["baseline"] == "token 0 for every text particle"
    assert abs(change) > 0.01 and abs(words.meta["completeness_gap"]) < 0.02 * abs(change)
    other_start = gradient_x_input(vqa_model, clip, 2, audio_silence=-3.0, text_token=5).of_modality("text").scores
    pad_start = gradient_x_input(vqa_model, clip, 2, audio_silence=-3.0, text_token=PAD_ID).of_modality("text")
    assert not torch.allclose(other_start, pad_start.scores)  # the text baseline counts


def test_occluding_a_token_is_removing_its_particle(vqa_model):
    clip = vqa_clip()
    explanation = occlusion(vqa_model, clip, 2)
    full = class_probs(vqa_model, [clip])[0, 2]
    for k in range(len(QUESTION)):
        keep = torch.ones(len(clip), dtype=torch.bool)
        keep[40 + k] = False
        without = clip.select(keep)
        assert without.parts["text"].ti.tolist() == [i for i in range(5) if i != k]  # the others keep their places
        drop = full - class_probs(vqa_model, [without])[0, 2]
        assert explanation.of_modality("text").scores[k].item() == pytest.approx(drop.item(), abs=1e-6)
    groups = window_groups(clip, (2, 1, 1))
    tokens = groups[40:] - groups[40]
    assert tokens.tolist() == [0, 0, 1, 1, 2] and groups[40] > groups[:40].max()  # two by two, never with others
    drops = modality_occlusion(vqa_model, clip, 2)
    without_question = class_probs(vqa_model, [clip.select(clip.modality != TEXT)])[0, 2]
    assert set(drops) == {"video", "audio", "text"}
    assert drops["text"] == pytest.approx((full - without_question).item(), abs=1e-6)
    rollout = attention_rollout(vqa_model, clip, 2)
    assert rollout.scores.shape == (45,) and rollout.scores.sum().item() == pytest.approx(1.0, abs=1e-4)
