"""Text out of a `tubelet.models.text_decoder.CaptionModel`: sequences, teacher-forced loss, decoding, ranking.

A sequence is a prompt and a target. The prompt ends with ``[BOS]`` (a caption's prompt is ``[BOS]`` alone; an
answer's is the dialogue history and the question, `dialogue_prompt`), the target is the caption or answer followed by
``[EOS]``. Every token carries a turn (0 for captions). The loss is the token-level negative log-likelihood of the
target tokens only (label smoothing optional), averaged over them.

Decoding (`generate`): ``greedy`` (the most likely token each step), ``beam`` (width k, finished hypotheses ranked by
log-probability / length ** length_penalty; width 1 is greedy) and ``sample`` (temperature, optionally the top k
tokens only, seeded). Each stops at ``[EOS]`` or after ``max_tokens`` tokens. `score_candidates` ranks given answers by
their length-normalised log-likelihood (mean log-prob per token, ``[EOS]`` included). There is no key/value cache:
every step runs the decoder over the sequences so far, which at caption lengths (tens of tokens) and decoder sizes
of a few blocks costs less than encoding the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from tubelet.models.text_decoder import Memory
from tubelet.particles.pack import pack
from tubelet.particles.text import tokenize_text

BOS, EOS, SEP = "[BOS]", "[EOS]", "[SEP]"
DECODINGS = ("greedy", "beam", "sample")
RANK_BY = ("mean", "sum")  # how `score_candidates` reduces a candidate's token log-probs


def with_decoder_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` with ``[BOS]``, ``[EOS]`` and ``[SEP]`` added as special tokens when it lacks them (in place)."""
    missing = [t for t in (BOS, EOS, SEP) if tokenizer.token_to_id(t) is None]
    if missing:
        tokenizer.add_special_tokens(missing)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{bos_id, eos_id, sep_id} of a tokenizer that has them (`with_decoder_tokens`)."""
    return {
        "bos_id": tokenizer.token_to_id(BOS),
        "eos_id": tokenizer.token_to_id(EOS),
        "sep_id": tokenizer.token_to_id(SEP),
    }


def text_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of a text without the tokenizer's own specials (no ``[CLS]``): the decoder adds its own."""
    return tokenizer.encode(str(text), add_special_tokens=False).ids


def detokenize(tokenizer: Tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


@dataclass
class Sequence:
    """One prompt (ending with ``[BOS]``) and its target (ending with ``[EOS]``; empty when generating)."""

    prompt: list[int]
    turns: list[int]  # one per prompt token; target tokens take the last prompt token's turn
    target: list[int]


def caption_prompt(bos_id: int) -> tuple[list[int], list[int]]:
    """(ids, turns) of a caption's prompt: ``[BOS]`` alone."""
    return [bos_id], [0]


def dialogue_prompt(
    tokenizer: Tokenizer, history: list[tuple[str, str]], question: str, ids: dict[str, int], *, max_history: int
) -> tuple[list[int], list[int]]:
    """(ids, turns) of a dialogue turn's prompt: the last `max_history` (question, answer) pairs, then the question.

    ``q1 [SEP] a1 [SEP] q2 [SEP] a2 [SEP] question [BOS]``; the tokens of pair j carry turn j + 1 (counted over
    the whole history, so a dropped early pair does not renumber the rest), the question's turn is one more.
    """
    prompt, turns = [], []
    first = max(0, len(history) - max_history) if max_history > 0 else len(history)
    for j in range(first, len(history)):
        q, a = history[j]
        piece = text_ids(tokenizer, q) + [ids["sep_id"]] + text_ids(tokenizer, a) + [ids["sep_id"]]
        prompt += piece
        turns += [j + 1] * len(piece)
    piece = text_ids(tokenizer, question) + [ids["bos_id"]]
    return prompt + piece, turns + [len(history) + 1] * len(piece)


def text_batch(seqs: list[list[int]], turns: list[list[int]], device) -> tuple:
    """Text particles of `seqs` packed one sequence per clip, and (N,) int64 turns on `device`."""
    packed = pack([tokenize_text(ids, time=0.0) for ids in seqs]).to(device)
    turn = torch.tensor([t for row in turns for t in row], dtype=torch.int64, device=device)  # (N,)
    return packed, turn


def sequence_loss(
    model, memory: Memory | None, sequences: list[Sequence], *, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Teacher-forced NLL of the targets of `sequences` (sequence b reading clip b of `memory`).

    Returns:
        () the mean over target tokens, and their count.
    """
    inputs, turns, labels = [], [], []
    for s in sequences:
        full = s.prompt + s.target
        full_turns = s.turns + [s.turns[-1]] * len(s.target)
        inputs.append(full[:-1])
        turns.append(full_turns[:-1])
        labels += [-100] * (len(s.prompt) - 1) + s.target  # predict target token i from everything before it
    device = next(model.parameters()).device
    text, turn = text_batch(inputs, turns, device)
    logits = model.decoder(text, memory, turn)  # (N, V)
    target = torch.tensor(labels, dtype=torch.int64, device=device)
    loss = F.cross_entropy(logits.float(), target, ignore_index=-100, label_smoothing=label_smoothing)
    return loss, int((target >= 0).sum())


@torch.no_grad()
def next_log_probs(model, memory: Memory | None, seqs: list[list[int]], turns: list[list[int]]) -> torch.Tensor:
    """(B, V) log-probabilities of the token after each sequence."""
    text, turn = text_batch(seqs, turns, next(model.parameters()).device)
    logits = model.decoder(text, memory, turn)  # (N, V)
    last = (text.cu_seqlens[1:] - 1).long()  # (B,)
    return F.log_softmax(logits[last].float(), dim=-1)


@dataclass(frozen=True)
class Decoding:
    """How text is generated."""

    method: str = "greedy"  # greedy | beam | sample
    beam: int = 4  # beam width (method beam)
    length_penalty: float = 1.0  # beam: hypotheses ranked by log-prob / length ** length_penalty
    temperature: float = 1.0  # sample: softmax temperature
    top_k: int = 0  # sample: only the k most likely tokens (0: all)
    max_tokens: int = 32  # at most this many tokens, [EOS] not counted
    seed: int = 0  # sample: the generator's seed

    def __post_init__(self) -> None:
        if self.method not in DECODINGS:
            raise ValueError(f"decode: expected one of {', '.join(DECODINGS)}, got {self.method!r}")
        if self.beam < 1 or self.max_tokens < 1 or self.top_k < 0 or self.temperature <= 0:
            raise ValueError("decoding: beam and max_tokens must be 1 or more, top_k 0 or more, temperature > 0")


GREEDY = Decoding()  # the default decoding


@dataclass
class Generated:
    ids: list[int]  # the tokens, [EOS] not included
    score: float  # mean log-prob per token ([EOS] included when it was reached)
    finished: bool  # it ended with [EOS] (not cut at max_tokens)


@torch.no_grad()
def generate(
    model, memory: Memory | None, prompts: list[tuple[list[int], list[int]]], decoding: Decoding = GREEDY
) -> list[Generated]:
    """Text for each prompt (ids, turns), prompt b reading clip b of `memory`.

    Returns:
        One `Generated` per prompt.
    """
    model.eval()
    if decoding.method == "beam":
        out = []
        for b, prompt in enumerate(prompts):
            mine = memory.select([b]) if memory is not None else None
            out.append(_beam(model, mine, prompt, decoding))
        return out
    return _step_all(model, memory, prompts, decoding)


def _step_all(model, memory, prompts, decoding: Decoding) -> list[Generated]:
    """Greedy or sampled decoding of every prompt at once (the unfinished ones each step)."""
    eos = model.config.eos_id
    generator = torch.Generator().manual_seed(decoding.seed)
    seqs = [list(ids) for ids, _ in prompts]
    turns = [list(t) for _, t in prompts]
    outs: list[list[int]] = [[] for _ in prompts]
    logp = [0.0] * len(prompts)
    done = [False] * len(prompts)
    for _ in range(decoding.max_tokens):
        active = [i for i, d in enumerate(done) if not d]
        if not active:
            break
        mem = memory.select(active) if memory is not None else None
        lp = next_log_probs(model, mem, [seqs[i] for i in active], [turns[i] for i in active])  # (A, V)
        if decoding.method == "greedy":
            tokens = lp.argmax(dim=-1)
        else:
            scaled = lp / decoding.temperature
            if decoding.top_k:
                kth = scaled.topk(min(decoding.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            probs = torch.softmax(scaled, dim=-1).cpu()
            tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
        for row, i in enumerate(active):
            token = int(tokens[row])
            logp[i] += float(lp[row, token])
            seqs[i].append(token)
            turns[i].append(turns[i][-1])
            if token == eos:
                done[i] = True
            else:
                outs[i].append(token)
    return [
        Generated(out, logp[i] / max(1, len(out) + done[i]), done[i]) for i, out in enumerate(outs)
    ]  # fmt: skip


def _beam(model, memory, prompt, decoding: Decoding) -> Generated:
    """Beam search for one prompt: the best finished hypothesis by log-prob / length ** length_penalty."""
    eos, width = model.config.eos_id, decoding.beam
    ids, turn = prompt
    beams = [([], 0.0)]  # (tokens so far, summed log-prob)
    finished: list[tuple[list[int], float, bool]] = []
    for _ in range(decoding.max_tokens):
        mem = memory.select([0] * len(beams)) if memory is not None else None
        seqs = [list(ids) + out for out, _ in beams]
        lp = next_log_probs(model, mem, seqs, [turn + [turn[-1]] * len(out) for out, _ in beams])  # (k, V)
        total = torch.tensor([s for _, s in beams])[:, None] + lp.cpu()  # (k, V)
        best = total.flatten().topk(min(2 * width, total.numel()))
        alive = []
        for rank, (score, flat) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            beam, token = divmod(flat, total.shape[1])
            if token == eos:
                if rank < width:  # a finished hypothesis counts only when it is among the best `width`
                    finished.append((beams[beam][0], score, True))
            elif len(alive) < width:
                alive.append((beams[beam][0] + [token], score))
            if len(alive) == width:
                break
        beams = alive
        if len(finished) >= width or not beams:
            break
    if not finished:  # cut at max_tokens: the alive hypotheses compete
        finished = [(out, score, False) for out, score in beams]

    def normalised(hyp) -> float:
        out, score, ended = hyp
        return score / max(1, len(out) + ended) ** decoding.length_penalty

    out, score, ended = max(finished, key=normalised)
    return Generated(out, score / max(1, len(out) + ended), ended)


@torch.no_grad()
def score_candidates(
    model, memory: Memory | None, prompt: tuple[list[int], list[int]], candidates: list[list[int]], *,
    reduce: str = "mean",
) -> np.ndarray:  # fmt: skip
    """(C,) log-likelihood of each candidate answer (its tokens then ``[EOS]``) after `prompt`: the mean log-prob
    per token (``reduce="mean"``), or their sum (``"sum"``: the probability of the whole answer).

    Args:
        memory: the clip of the one prompt (or None).
    """
    if reduce not in RANK_BY:
        raise ValueError(f"reduce: expected one of {', '.join(RANK_BY)}, got {reduce!r}")
    model.eval()
    ids, turn = prompt
    eos = model.config.eos_id
    seqs, turns, spans = [], [], []
    for cand in candidates:
        full = list(ids) + list(cand) + [eos]
        seqs.append(full[:-1])
        turns.append(list(turn) + [turn[-1]] * len(cand))
        spans.append((len(ids) - 1, len(full) - 1))  # positions whose next token is a candidate token or [EOS]
    mem = memory.select([0] * len(candidates)) if memory is not None else None
    device = next(model.parameters()).device
    text, turn_ids = text_batch(seqs, turns, device)
    logp = F.log_softmax(model.decoder(text, mem, turn_ids).float(), dim=-1)  # (N, V)
    starts = text.cu_seqlens[:-1].tolist()
    scores = []
    for c, (cand, (lo, hi)) in enumerate(zip(candidates, spans)):
        targets = torch.tensor(list(cand) + [eos], device=device)
        rows = torch.arange(starts[c] + lo, starts[c] + hi, device=device)
        picked = logp[rows, targets]  # (len(cand) + 1,)
        scores.append(float(picked.mean() if reduce == "mean" else picked.sum()))
    return np.asarray(scores)
