"""The text decoder over particles: attention masks, teacher-forced loss, decoding, candidate ranking, history."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tubelet.data.text import train_tokenizer
from tubelet.data.transforms import Preprocessing
from tubelet.models import load, save
from tubelet.models.encoder import Encoder
from tubelet.models.registry import model_config
from tubelet.models.text_decoder import CaptionModel, Memory, TextDecoderConfig
from tubelet.nn.attention import packed_attention
from tubelet.tasks.caption import attribute_scores, bleu4
from tubelet.tasks.dialogue import ranking_metrics
from tubelet.tasks.generate import (
    Decoding,
    Sequence,
    caption_prompt,
    detokenize,
    dialogue_prompt,
    generate,
    score_candidates,
    sequence_loss,
    special_ids,
    text_ids,
    with_decoder_tokens,
)

CAPTIONS = ["a red ball moves left", "a blue cube moves right", "a green disc stays still", "a red cube moves up"]


@pytest.fixture(scope="module")
def tokenizer():
    return with_decoder_tokens(train_tokenizer(CAPTIONS + ["what colour was it", "and after that", "red", "blue"]))


def captioner(tokenizer, *, history: int = 0, seed: int = 0) -> CaptionModel:
    torch.manual_seed(seed)
    encoder = Encoder(model_config("test", num_classes=0))
    config = TextDecoderConfig(
        vocab_size=tokenizer.get_vocab_size(), dim=32, depth=2, heads=2, memory_dim=32, max_history=history,
        attention="sdpa", **special_ids(tokenizer),
    )  # fmt: skip
    return CaptionModel(encoder, config)


def memory_of(count: int, *, seed: int = 1) -> Memory:
    """`count` clips of 5, 7, 5, 7... particle features (32 wide), distinct per clip."""
    g = torch.Generator().manual_seed(seed)
    lengths = [5 + 2 * (i % 2) for i in range(count)]
    cu = torch.tensor(np.cumsum([0, *lengths]), dtype=torch.int32)
    return Memory(torch.randn(sum(lengths), 32, generator=g), cu, max(lengths))


@pytest.mark.parametrize("backend", ["sdpa", "dense"])
def test_causal_and_cross_attention_match_a_per_sequence_reference(backend):
    g = torch.Generator().manual_seed(0)
    lengths, keys = [3, 5, 1], [4, 2, 6]
    q = torch.randn(sum(lengths), 2, 8, generator=g)
    k, v = torch.randn(sum(keys), 2, 8, generator=g), torch.randn(sum(keys), 2, 8, generator=g)
    cu = torch.tensor(np.cumsum([0, *lengths]), dtype=torch.int32)
    cu_k = torch.tensor(np.cumsum([0, *keys]), dtype=torch.int32)
    cross = packed_attention(q, k, v, cu, 5, backend=backend, kv_cu_seqlens=cu_k, kv_max_seqlen=6)
    causal = packed_attention(q, q, q, cu, 5, backend=backend, causal=True)
    for b in range(3):
        qs, ks = slice(cu[b], cu[b + 1]), slice(cu_k[b], cu_k[b + 1])
        qb = q[qs].transpose(0, 1)  # (h, n, d)
        want = F.scaled_dot_product_attention(qb, k[ks].transpose(0, 1), v[ks].transpose(0, 1)).transpose(0, 1)
        torch.testing.assert_close(cross[qs], want)
        mask = torch.ones(lengths[b], lengths[b], dtype=torch.bool).tril()
        want = F.scaled_dot_product_attention(qb, qb, qb, attn_mask=mask).transpose(0, 1)
        torch.testing.assert_close(causal[qs], want)
    # the first token of a sequence sees only itself: its output is its own value
    torch.testing.assert_close(causal[cu[:-1].long()], q[cu[:-1].long()])


def test_teacher_forced_loss_falls_and_greedy_then_stops_at_the_end_token(tokenizer):
    model = captioner(tokenizer)
    memory = memory_of(4)
    eos = model.config.eos_id
    sequences = [Sequence(*caption_prompt(model.config.bos_id), text_ids(tokenizer, c) + [eos]) for c in CAPTIONS]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, tokens = sequence_loss(model, memory, sequences)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert tokens == sum(len(s.target) for s in sequences)
    assert losses[-1] < 0.1 * losses[0]
    # Overfit: greedy decoding gives back each clip's caption and stops at [EOS], before the length limit.
    prompts = [caption_prompt(model.config.bos_id)] * 4
    out = generate(model, memory, prompts, Decoding(max_tokens=20))
    assert [detokenize(tokenizer, o.ids) for o in out] == CAPTIONS
    assert all(o.finished and eos not in o.ids for o in out)
    # A limit shorter than the captions cuts every one at exactly that many tokens.
    for method in ("greedy", "beam", "sample"):
        cut = generate(model, memory, prompts, Decoding(method, beam=3, max_tokens=2))
        assert [len(o.ids) for o in cut] == [2] * 4 and not any(o.finished for o in cut)
    # Label smoothing spreads mass over the vocabulary: the same model scores a higher loss with it.
    smoothed, _ = sequence_loss(model, memory, sequences, label_smoothing=0.2)
    assert smoothed.item() > losses[-1] + 0.1


def test_beam_of_width_one_is_greedy_and_a_wider_beam_is_no_less_likely(tokenizer):
    model = captioner(tokenizer, seed=3)
    memory = memory_of(3, seed=5)
    prompts = [caption_prompt(model.config.bos_id)] * 3
    greedy = generate(model, memory, prompts, Decoding("greedy", max_tokens=8))
    beam1 = generate(model, memory, prompts, Decoding("beam", beam=1, max_tokens=8))
    assert [o.ids for o in beam1] == [o.ids for o in greedy]
    np.testing.assert_allclose([o.score for o in beam1], [o.score for o in greedy], rtol=1e-5)
    wide = generate(model, memory, prompts, Decoding("beam", beam=4, max_tokens=8, length_penalty=1.0))
    assert all(w.score >= g.score - 1e-5 for w, g in zip(wide, greedy) if w.finished and g.finished)
    # Sampling is seeded: the same seed, the same text; a cold temperature is greedy.
    a = generate(model, memory, prompts, Decoding("sample", seed=7, max_tokens=8))
    b = generate(model, memory, prompts, Decoding("sample", seed=7, max_tokens=8))
    assert [o.ids for o in a] == [o.ids for o in b]
    cold = generate(model, memory, prompts, Decoding("sample", temperature=1e-4, max_tokens=8))
    assert [o.ids for o in cold] == [o.ids for o in greedy]


def test_candidate_scores_follow_the_history_only_for_a_model_that_reads_it(tokenizer):
    ids = special_ids(tokenizer)
    candidates = [text_ids(tokenizer, c) for c in ("red", "blue", "a green disc stays still")]
    memory = memory_of(1)
    for history, changes in ((8, True), (0, False)):
        model = captioner(tokenizer, history=history, seed=2)
        scores = []
        for said in ("a red ball moves left", "a blue cube moves right"):
            prompt = dialogue_prompt(tokenizer, [("what moves", said)], "what colour was it", ids, max_history=history)
            scores.append(score_candidates(model, memory, prompt, candidates))
        assert (not np.allclose(scores[0], scores[1])) == changes
    # The score is the mean token log-prob of the candidate then [EOS], as teacher forcing computes it.
    model = captioner(tokenizer, history=8, seed=2)
    prompt = dialogue_prompt(tokenizer, [], "what colour was it", ids, max_history=8)
    loss, count = sequence_loss(model, memory, [Sequence(*prompt, candidates[2] + [ids["eos_id"]])])
    assert score_candidates(model, memory, prompt, candidates)[2] == pytest.approx(-float(loss), rel=1e-5)
    assert count == len(candidates[2]) + 1
    summed = score_candidates(model, memory, prompt, candidates, reduce="sum")[2]
    assert summed == pytest.approx(-float(loss) * count, rel=1e-5)  # the whole answer's log-probability


def test_a_trained_dialogue_models_answer_changes_when_the_history_changes(tokenizer):
    """Trained on "what colour was it?" after a caption, a model that reads the history answers with the colour of
    the caption it was given; a history-blind one cannot tell the turns apart and answers them alike."""
    ids = special_ids(tokenizer)
    memory = memory_of(1)
    said = {"a red ball moves left": "red", "a blue cube moves right": "blue", "a red cube moves up": "red"}
    answers = {}
    for history in (8, 0):
        model = captioner(tokenizer, history=history, seed=5)
        prompts = {
            c: dialogue_prompt(tokenizer, [("what moves", c)], "what colour was it", ids, max_history=history)
            for c in said
        }
        sequences = [Sequence(*prompts[c], text_ids(tokenizer, a) + [ids["eos_id"]]) for c, a in said.items()]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(120):  # the loss sits near 0.3 (the colour guessed) for a while before the copy is learned
            loss, _ = sequence_loss(model, memory.select([0] * len(sequences)), sequences)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        out = generate(model, memory.select([0] * len(said)), [prompts[c] for c in said], Decoding(max_tokens=4))
        answers[history] = [detokenize(tokenizer, o.ids) for o in out]
    assert answers[8] == list(said.values())  # red, blue, red: it follows the history
    assert len(set(answers[0])) == 1  # the same prompt every time: the same answer


def test_a_saved_captioner_reloads_with_identical_outputs(tokenizer, tmp_path):
    model = captioner(tokenizer, history=4, seed=4).eval()
    memory = memory_of(2)
    prompts = [caption_prompt(model.config.bos_id)] * 2
    before = generate(model, memory, prompts, Decoding("beam", beam=2, max_tokens=6))
    save(tmp_path / "ckpt", model, preprocessing=Preprocessing(), tokenizer=tokenizer)
    loaded = load(tmp_path / "ckpt")
    assert loaded.kind == "captioner" and loaded.model.config == model.config
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    after = generate(loaded.model.eval(), memory, prompts, Decoding("beam", beam=2, max_tokens=6))
    assert [(o.ids, o.score) for o in after] == [(o.ids, o.score) for o in before]


def test_attribute_match_bleu_and_ranking_numbers():
    refs = [
        "a red ball rolls right",
        "a blue cube and a red ball collide",
        "a red cube enters from the right and slides left",
    ]
    attrs = [{"colour": "red", "object": "ball", "direction": "right"}, {"colour": "blue", "object": "cube"},
             {"colour": "red", "object": "cube", "direction": "left"}]  # fmt: skip
    assert attribute_scores(refs, refs, attrs)["attribute_match"] == 1.0  # a reference against itself
    hyps = [
        "a red balls rolls right",
        "a red ball and a blue cube collide",
        "a red cube enters from the left and slides right",
    ]
    scores = attribute_scores(hyps, refs, attrs)
    # colour: 2 of 3 (the second names both colours in the wrong order), object 2 of 3, direction 1 of 2 (swapped)
    per = scores["per_attribute"]
    assert (per["colour"]["match"], per["object"]["match"], per["direction"]["match"]) == (2 / 3, 2 / 3, 1 / 2)
    assert scores["attribute_match"] == pytest.approx(5 / 8)
    assert bleu4(CAPTIONS, CAPTIONS) == pytest.approx(100.0)
    assert bleu4(["the the the the"], ["a red ball moves left"]) == 0.0
    metrics = ranking_metrics([np.array([0.1, 0.9, 0.3]), np.array([0.5, 0.2, 0.1])], [1, 2])
    assert metrics == {"mrr": pytest.approx((1 + 1 / 3) / 2), "r@1": 0.5, "r@5": 1.0}
