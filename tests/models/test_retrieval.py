import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tubelet.data.captions import caption_batch
from tubelet.data.text import encode, train_tokenizer
from tubelet.data.transforms import Preprocessing
from tubelet.models import Loaded, load, save
from tubelet.models.registry import model_config
from tubelet.models.retrieval import RetrievalConfig, RetrievalModel
from tubelet.particles.pack import pack
from tubelet.particles.tokenize import tokenize
from tubelet.tasks.retrieval import chance_recall, info_nce, recall_at_k, retrieval_metrics
from tubelet.train.run import trainable_module

CAPTIONS = ["a red disc moves left", "a blue square stays still while a low tone plays", "something beeps"]


def _model(vocab_size: int = 40) -> RetrievalModel:
    torch.manual_seed(0)
    video = model_config("test", tubelet=(2, 8, 8))
    return RetrievalModel(video, RetrievalConfig(vocab_size=vocab_size, text_dim=32, text_depth=1, text_heads=2,
                                                 embed_dim=16))  # fmt: skip


def _video_batch(clips: int = 2):
    gen = torch.Generator().manual_seed(1)
    out = []
    for c in range(clips):
        frames = torch.randint(0, 256, (4, 16 + 8 * c, 16, 3), generator=gen, dtype=torch.uint8).numpy()
        out.append(tokenize(frames, timestamps=np.arange(4) / 8.0, tubelet=(2, 8, 8), prune_threshold=0.0))
    return pack(out)


def test_info_nce_is_lower_for_matched_than_shuffled_pairs():
    gen = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(video + 0.1 * torch.randn(8, 16, generator=gen), dim=-1)
    shuffled = text[torch.roll(torch.arange(8), 1)]
    matched, wrong = info_nce(video, text, 10.0), info_nce(video, shuffled, 10.0)
    assert matched < 0.1 < math.log(8) < wrong


def test_info_nce_counts_equal_captions_as_positives():
    gen = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=-1)
    text = video.clone()
    swapped = text[[1, 0, 2, 3]]  # clips 0 and 1 share a caption: swapping their texts changes nothing
    groups = torch.tensor([0, 0, 1, 2])
    same = info_nce(video, text, 10.0, groups=groups)
    assert torch.allclose(same, info_nce(video, swapped, 10.0, groups=groups))
    assert not torch.allclose(info_nce(video, text, 10.0), info_nce(video, swapped, 10.0))  # without groups it does


def test_text_tower_attends_within_each_caption_and_reads_word_order():
    tokenizer = train_tokenizer(CAPTIONS)
    model = _model(tokenizer.get_vocab_size()).eval()
    ids = [encode(tokenizer, c) for c in CAPTIONS]
    assert len({len(i) for i in ids}) == 3  # variable lengths, packed with no padding
    with torch.no_grad():
        together = model.encode_text(caption_batch(ids))  # (3, E)
        alone = torch.cat([model.encode_text(caption_batch([i])) for i in ids])
        reordered = model.encode_text(caption_batch([[ids[0][0], *ids[0][:0:-1]]]))  # words reversed after [CLS]
    assert together.shape == (3, 16)
    assert torch.allclose(together, alone, atol=1e-5)  # a longer caption in the batch changes no other caption
    assert torch.allclose(together.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(reordered[0], alone[0], atol=1e-3)


def test_different_captions_are_told_apart_before_any_training():
    """At init the words must outweigh the positions, or every caption pools to one vector and InfoNCE stalls."""
    from tubelet.models.retrieval import TextTower

    captions = ["a red disc moves left", "a blue square moves right", "a green disc stays still"]  # equal lengths
    tokenizer = train_tokenizer(captions)
    torch.manual_seed(0)
    tower = TextTower(tokenizer.get_vocab_size(), 128, depth=1, heads=4).eval()  # micro's width
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(tower(caption_batch([encode(tokenizer, c) for c in captions])))
    cosines = (pooled @ pooled.T)[~torch.eye(3, dtype=torch.bool)]
    assert cosines.max() < 0.97, cosines


def test_every_parameter_gets_a_gradient():
    model = _model()
    video, text = model(_video_batch(), caption_batch([[2, 5, 6], [2, 7]]))
    info_nce(video, text, model.scale()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    tokenizer = train_tokenizer(CAPTIONS)
    model = _model(tokenizer.get_vocab_size()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    pre = Preprocessing(tubelet=(2, 8, 8), size=16)
    save(tmp_path / "ckpt", Loaded(model, pre, tokenizer=tokenizer))
    loaded = load(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer.json").is_file()
    assert loaded.tokenizer.encode(CAPTIONS[0]).ids == tokenizer.encode(CAPTIONS[0]).ids
    assert loaded.preprocessing == pre and loaded.model.logit_scale.item() == 3.0
    ids = [encode(tokenizer, c) for c in CAPTIONS]
    video = _video_batch()
    loaded.model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_text(caption_batch(ids)), loaded.model.encode_text(caption_batch(ids)))
        assert torch.equal(model.encode_video(video), loaded.model.encode_video(video))


def test_recall_at_k_on_a_hand_made_similarity_matrix():
    similarity = np.array(
        [
            [0.9, 0.1, 0.2, 0.0],  # query 0: its item ranked 1st
            [0.8, 0.1, 0.7, 0.6],  # query 1: its item (1) ranked 4th
            [0.5, 0.9, 0.6, 0.0],  # query 2: its item (2) ranked 2nd
            [0.1, 0.2, 0.3, 0.0],  # query 3: its item (3) ranked 4th
        ]
    )
    got = recall_at_k(similarity, np.eye(4, dtype=bool), ks=(1, 2, 3, 10))
    assert got == {"R@1": 0.25, "R@2": 0.5, "R@3": 0.5, "R@10": 1.0}
    relevant = np.eye(4, dtype=bool)
    relevant[1, 0] = True  # another item answers query 1 too: now found at rank 1
    assert recall_at_k(similarity, relevant, ks=(1,))["R@1"] == 0.5


def test_retrieval_metrics_count_an_equal_caption_as_a_hit():
    video = np.eye(3, dtype=np.float32)
    text = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)  # clips 0 and 1 swapped their texts
    metrics = retrieval_metrics(video, text, ["a cat", "A  cat", "a dog"])  # 0 and 1: the same caption
    assert metrics["video_to_text"]["R@1"] == 1.0 and metrics["text_to_video"]["R@1"] == 1.0
    assert metrics["instance"]["video_to_text"]["R@1"] == pytest.approx(1 / 3)
    assert metrics["num_captions"] == 2 and metrics["mean_recall"] == 1.0


def test_chance_recall_is_the_mean_over_every_ranking():
    captions = ["a cat", "a cat", "a dog", "A  cat", "a bird"]  # three share one caption
    keys = np.array(["a cat", "a cat", "a dog", "a cat", "a bird"])
    relevant = keys[:, None] == keys[None, :]  # (5, 5)
    rankings = list(itertools.permutations(range(5)))  # every order of the gallery, equally likely
    mean = {f"R@{k}": 0.0 for k in (1, 2, 5)}
    for order in rankings:
        similarity = np.tile(-np.argsort(order).astype(float), (5, 1))  # every query ranks the gallery as `order`
        for key, value in recall_at_k(similarity, relevant, ks=(1, 2, 5)).items():
            mean[key] += value / len(rankings)
    got = chance_recall(captions, ks=(1, 2, 5))
    assert got == pytest.approx(mean) and got["R@5"] == 1.0 and got["R@1"] == pytest.approx((3 * 3 / 5 + 2 / 5) / 5)


@pytest.mark.parametrize("freeze,peft", [("backbone", "none"), ("top:1", "none"), ("none", "lora")])
def test_freeze_and_lora_reach_the_video_tower_only(freeze, peft):
    model = _model()
    cfg = SimpleNamespace(freeze=freeze, peft=peft, lora_rank=2, lora_alpha=4.0, lora_dropout=0.0, model="test")
    module = trainable_module(model, cfg, tower="video")
    trainable = {n.removeprefix("base_model.model.") for n, p in module.named_parameters() if p.requires_grad}
    rest = {n for n, _ in _model().named_parameters() if not n.startswith("video.")}  # text tower, projections, scale
    assert rest <= trainable
    video = {n for n in trainable if n.startswith("video.")}
    if freeze == "top:1":
        assert video and all(n.startswith(("video.blocks.1.", "video.norm.")) for n in video), video
    elif peft == "lora":
        assert video and all(".lora_" in n for n in video), video
        assert not any(".lora_" in n for n in trainable - video)  # the text tower trains in full
    else:
        assert video == set()
