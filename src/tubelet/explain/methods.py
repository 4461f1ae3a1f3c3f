"""Attribution methods over particles: one score per particle of one clip, for one target class.

Every method returns an `Explanation` whose ``scores[i]`` belongs to particle i, which knows its time ``t``
(seconds), tubelet index ``ti``, grid row ``y`` and column ``x``. Positive scores are evidence FOR the target.

The same methods explain a video `Encoder` on one clip's `Particles` and a `FusionModel` on a `ModalClip` (the
clip's video, audio and text particles as one flat sequence in the model's merge order): both models give
`embed(batch) -> (N, D)` in their particles' order, `forward(batch, embedded=...)` and
`forward_features(batch, keep_attention=True)`, and `pack_clips` packs either kind of clip. A fusion
explanation's particles keep their `modality`; `Explanation.of_modality` and `Explanation.modality_share` split
the evidence by modality, and `modality_occlusion` removes one whole modality at a time.

- ``occlusion``: remove particles (one, or a space-time window of tubelets at a time) from the clip and measure how
  much the target's probability falls. Removing is natural here: a particle that is not in the packed sequence is
  simply not seen, so no grey fill value has to be invented. All occluded copies of the clip run as one packed batch.
- ``gradxinput``: gradient of the target logit with respect to the particle embeddings at the input, times
  (embedding - baseline embedding), summed over channels: integrated gradients with one step, so fast and local.
- ``ig``: integrated gradients (Sundararajan et al., 2017) on the embeddings, from a baseline clip to the real one;
  the steps run as one packed batch. The baseline is the clip's AVERAGE particle at every place and time (same
  positions and spans, no content that differs between places or times). A zero or mean-colour baseline is a poor
  choice here: its embedding is nearly the zero vector, and the pre-norm blocks' LayerNorm is scale invariant, so
  the whole change of the logit would happen in a sliver of the path next to the baseline that the steps miss.
  Scores sum to logit(input) - logit(baseline) up to the Riemann error (`Explanation.meta["completeness_gap"]`;
  a sharply saturated model needs more ``steps``). Audio particles start from silence instead, and text particles
  (a VQA model's question) from one content-free token, the tokenizer's ``[PAD]`` (`baseline_particles`).
- ``rollout``: attention rollout (Abnar & Zuidema, 2020) across layers, per clip, with the residual as 0.5 I;
  a particle's score is the mean over all particles of how much it flows into them (the pooling is a mean).
  It does not depend on the target.

Text particles (token ids) fit every method: occlusion removes a token's particle (the others keep their
positions ``ti``, so the question is not re-read shifted), ``window`` groups tokens by (tokens, 1, 1), and the
gradient methods perturb the token embeddings from the baseline token's.

Captum implements IG and occlusion for dense tensors; here the inputs are packed variable-length particle
sequences whose occlusion means deleting rows, so the few lines of each method are written against our models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tubelet.models.encoder import Encoder
from tubelet.models.fusion import FusionModel
from tubelet.particles.modalities import ModalClip, pack_clips
from tubelet.particles.structure import AUDIO, MODALITIES, TEXT, Particles
from tubelet.progress import bar

METHODS = ("occlusion", "ig", "gradxinput", "rollout")

Model = Encoder | FusionModel  # what the methods explain
Clip = Particles | ModalClip  # one clip as the model reads it: video particles, or several modalities'
MODALITY_NAMES = {tag: name for name, tag in MODALITIES.items()}


@dataclass
class Explanation:
    """Scores of one clip's particles for one target class.

    Attributes:
        scores: (N,) float32, one per particle, positive = evidence for the target.
        particles: the clip's particles (``t`` relative to the clip window's start): a `Particles` (video) or a
            `ModalClip` (several modalities, in merge order).
        target: class index explained.
        method: one of `METHODS`.
        probs: (classes,) softmax of the model on the whole clip.
        meta: method details (window, steps, baseline score, completeness gap ...).
    """

    scores: torch.Tensor
    particles: Clip
    target: int
    method: str
    probs: torch.Tensor
    meta: dict = field(default_factory=dict)

    def top(self, k: int) -> list[int]:
        """Indices of the `k` highest-scoring particles, best first."""
        return torch.argsort(self.scores, descending=True)[:k].tolist()

    @property
    def modalities(self) -> list[str]:
        """The modalities of the particles, in their order (a plain clip's are all video)."""
        return list(self.particles.parts) if isinstance(self.particles, ModalClip) else ["video"]

    def of_modality(self, name: str) -> Explanation:
        """The same explanation restricted to one modality's particles (a `Particles`), e.g. for a video heatmap."""
        if not isinstance(self.particles, ModalClip):
            if name != "video":
                raise ValueError(f"a video clip has no {name} particles")
            return self
        where = self.particles.slices()[name]
        return Explanation(
            self.scores[where], self.particles.parts[name], self.target, self.method, self.probs, self.meta
        )

    def modality_share(self) -> dict[str, float]:
        """Each modality's fraction of the total positive score (all 0 when no score is positive)."""
        positive = self.scores.clamp(min=0)
        total = float(positive.sum())
        sums = {name: float(self.of_modality(name).scores.clamp(min=0).sum()) for name in self.modalities}
        return {name: (value / total if total > 0 else 0.0) for name, value in sums.items()}


def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def class_probs(model: Model, clips: list[Clip], budget: int = 32768) -> torch.Tensor:
    """(len(clips), classes) softmax of `model` on each clip, packed `budget` particles per forward."""
    device = _device(model)
    out, batch, used = [], [], 0
    for clip in bar(clips, desc="forward passes", unit="clip", leave=False, disable=len(clips) < 64):
        if batch and used + len(clip) > budget:
            out.append(torch.softmax(model(pack_clips(batch).to(device)).float(), -1).cpu())
            batch, used = [], 0
        batch.append(clip)
        used += len(clip)
    if batch:
        out.append(torch.softmax(model(pack_clips(batch).to(device)).float(), -1).cpu())
    return torch.cat(out)


def window_groups(particles: Clip, window: tuple[int, int, int]) -> torch.Tensor:
    """(N,) group id of each particle: particles of one modality in the same (ti // wt, y // wy, x // wx) window.

    For audio particles the window is (time patches, mel bands, 1), for text particles (tokens, 1, 1); windows
    never mix modalities.
    """
    wt, wy, wx = window
    if min(window) < 1:
        raise ValueError(f"occlusion window must be positive tubelets, got {window}")
    keys = torch.stack([particles.modality, particles.ti // wt, particles.y // wy, particles.x // wx], dim=1)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def _group_drops(
    model: Model, particles: Clip, target: int, groups: torch.Tensor, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes,) probabilities on the whole clip and (G,) drop of the target's probability without each group.

    All occluded copies run as packed batches. A clip that is one group only has nothing left when occluded: its
    drop is against the uniform prior.
    """
    count = int(groups.max()) + 1
    probs = class_probs(model, [particles], budget)[0]
    occluded = [particles.select(groups != g) for g in range(count)]
    kept = [i for i, clip in enumerate(occluded) if len(clip)]
    dropped = torch.full((count,), 1.0 / probs.numel())
    if kept:
        dropped[kept] = class_probs(model, [occluded[i] for i in kept], budget)[:, target]
    return probs, probs[target] - dropped


@torch.no_grad()
def occlusion(
    model: Model, particles: Clip, target: int, *, window: tuple[int, int, int] = (1, 1, 1), budget: int = 32768
) -> Explanation:
    """Score = p(target | clip) - p(target | clip without the particle's window)."""
    groups = window_groups(particles, window)
    probs, drops = _group_drops(model, particles, target, groups, budget)
    meta = {"window": list(window), "groups": len(drops)}
    return Explanation(drops[groups], particles, target, "occlusion", probs, meta)


@torch.no_grad()
def modality_occlusion(model: Model, particles: ModalClip, target: int, *, budget: int = 32768) -> dict[str, float]:
    """Per modality of the clip: p(target | clip) - p(target | clip without ANY particle of that modality)."""
    tags, groups = torch.unique(particles.modality, return_inverse=True)
    _, drops = _group_drops(model, particles, target, groups, budget)
    return {MODALITY_NAMES[int(tag)]: float(drop) for tag, drop in zip(tags, drops)}


def _target_logit(model: Model, packed, embedded: torch.Tensor, target: int) -> torch.Tensor:
    """Sum over the packed clips of the target logit, computed from the given embeddings."""
    return model(packed, embedded=embedded)[:, target].sum()


def baseline_particles(particles: Clip, *, audio_silence: float | None = None, text_token: int | None = None) -> Clip:
    """The clip gradient methods start from: every particle's positions and span kept, its content removed.

    Video particles all become the clip's average video particle. Audio particles become silence when
    `audio_silence` (the normalized log-mel value of digital silence, what a file without sound gives) is given, else
    their average too. Averaging is a poor baseline for sound: a steady tone in one mel band, averaged over the
    bands, puts part of the tone into the baseline of every band.

    Text particles all become the token `text_token`: give the tokenizer's ``[PAD]`` id. Token ids have no average
    (the mean of ids is no token), and of the embeddings a baseline could take, [PAD]'s says "no word here" best:
    packed sequences are never padded, so no training clip ever held it and its row of the embedding table is
    untrained (the small random start, shrunk by weight decay) -- it carries no learned meaning, which is what a
    baseline must not carry. The mean token embedding would be a blend of the very words being explained (a
    question of mostly one word would start near that word and credit it with little). As for video, a token's
    position (``ti``) and modality tag stay, so the baseline embedding is far from the zero vector that the blocks'
    scale-invariant LayerNorm would make a poor start. This is also what NLP attributions commonly use (Captum's
    BERT tutorials start IG from [PAD] tokens).

    Raises:
        ValueError: text particles without a `text_token`.
    """
    if isinstance(particles, ModalClip):
        options = {"audio_silence": audio_silence, "text_token": text_token}
        return ModalClip({name: baseline_particles(part, **options) for name, part in particles.parts.items()})
    if len(particles) and bool((particles.modality == TEXT).any()):
        if text_token is None:
            raise ValueError(
                "gradient methods need a baseline for text particles (token ids have no average): pass text_token, "
                "the tokenizer's [PAD] id"
            )
        return particles.with_values(torch.full_like(particles.values, text_token))
    if audio_silence is not None and len(particles) and bool((particles.modality == AUDIO).all()):
        return particles.with_values(torch.full_like(particles.values, audio_silence))
    average = particles.values.mean(0, keepdim=True).expand_as(particles.values).contiguous()
    return particles.with_values(average)


def _baseline_name(particles: Clip, audio_silence: float | None, text_token: int | None) -> str:
    """What `baseline_particles` started each modality from, for ``meta["baseline"]``."""
    if not isinstance(particles, ModalClip) or list(particles.parts) == ["video"]:
        return "average particle"
    names = {
        "video": "average video particle",
        "audio": "silence" if audio_silence is not None else "average audio particle",
        "text": f"token {text_token} for every text particle",
    }
    return ", ".join(names[name] for name in particles.parts)


def _embeddings(
    model: Model, particles: Clip, packed, audio_silence: float | None, text_token: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) embeddings of the one packed clip and of its baseline, without gradients."""
    with torch.no_grad():
        real = model.embed(packed)
        baseline = baseline_particles(particles, audio_silence=audio_silence, text_token=text_token)
        base = model.embed(pack_clips([baseline]).to(real.device))
    if real.shape[0] != len(particles):
        raise ValueError(
            f"the model embeds {real.shape[0]} of the clip's {len(particles)} particles: give it only the "
            "modalities it reads, in its order"
        )
    return real, base


def gradient_x_input(
    model: Model, particles: Clip, target: int, *, audio_silence: float | None = None, text_token: int | None = None
) -> Explanation:
    """Score = sum over channels of d logit_target / d embedding * (embedding - baseline embedding).

    `audio_silence`, `text_token`: see `baseline_particles`.
    """
    packed = pack_clips([particles]).to(_device(model))
    real, base = _embeddings(model, particles, packed, audio_silence, text_token)
    embedded = real.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_logit(model, packed, embedded, target), embedded)
    scores = (grad * (embedded - base)).sum(-1).detach().float().cpu()
    meta = {"baseline": _baseline_name(particles, audio_silence, text_token)}
    return Explanation(scores, particles, target, "gradxinput", class_probs(model, [particles])[0], meta)


def integrated_gradients(
    model: Model,
    particles: Clip,
    target: int,
    *,
    steps: int = 32,
    budget: int = 32768,
    audio_silence: float | None = None,
    text_token: int | None = None,
) -> Explanation:
    """Integrated gradients on the embeddings from the baseline clip (`baseline_particles`).

    `audio_silence`, `text_token`: see `baseline_particles`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = _device(model)
    single = pack_clips([particles]).to(device)
    real, base = _embeddings(model, particles, single, audio_silence, text_token)
    alphas = (torch.arange(steps, dtype=real.dtype, device=device) + 0.5) / steps  # midpoint rule
    per_batch = max(1, budget // max(len(particles), 1))
    total = torch.zeros_like(real)
    for first in bar(range(0, steps, per_batch), desc="integrated gradients", unit="batch", leave=False):
        chunk = alphas[first : first + per_batch]
        packed = pack_clips([particles] * len(chunk)).to(device)
        path = (base + chunk[:, None, None] * (real - base)).flatten(0, 1).requires_grad_(True)  # (len*N, D)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_target_logit(model, packed, path, target), path)
        total += grad.view(len(chunk), len(particles), -1).sum(0)
    scores = ((real - base) * total / steps).sum(-1).detach().float().cpu()
    with torch.no_grad():
        ends = [_target_logit(model, single, e, target).item() for e in (real, base)]
    meta = {"steps": steps, "baseline": _baseline_name(particles, audio_silence, text_token), "logit": ends[0]}
    meta["baseline_logit"] = ends[1]
    meta["completeness_gap"] = float(scores.sum()) - (ends[0] - ends[1])
    return Explanation(scores, particles, target, "ig", class_probs(model, [particles])[0], meta)


@torch.no_grad()
def attention_rollout(model: Model, particles: Clip, target: int) -> Explanation:
    """Rollout of head-averaged attention with the residual (0.5 A + 0.5 I, rows renormalised) over all layers."""
    device = _device(model)
    model.forward_features(pack_clips([particles]).to(device), keep_attention=True)  # maps in model.last_attention
    n = len(particles)
    rollout = torch.eye(n, device=device)
    eye = torch.eye(n, device=device)
    for layer in model.last_attention:
        attention = 0.5 * layer[0].float().mean(0) + 0.5 * eye  # (n, n): clip 0 of the batch, heads averaged
        rollout = (attention / attention.sum(-1, keepdim=True)) @ rollout
    model.last_attention = None
    scores = rollout.mean(0).cpu()  # how much each particle flows into the mean-pooled vector
    probs = class_probs(model, [particles])[0]
    return Explanation(scores, particles, target, "rollout", probs, {"class_agnostic": True})


def explain_particles(model: Model, particles: Clip, target: int, method: str, **options) -> Explanation:
    """Dispatch to one of `METHODS`.

    Options: ``window`` (occlusion), ``steps`` (ig), ``budget`` (occlusion, ig), ``audio_silence`` and
    ``text_token`` (ig, gradxinput: see `baseline_particles`); the others are ignored.
    """
    methods: dict[str, Callable[..., Explanation]] = {
        "occlusion": occlusion,
        "ig": integrated_gradients,
        "gradxinput": gradient_x_input,
        "rollout": attention_rollout,
    }
    if method not in methods:
        raise ValueError(f"method: expected {' | '.join(METHODS)}, got {method!r}")
    allowed = {
        "occlusion": ("window", "budget"),
        "ig": ("steps", "budget", "audio_silence", "text_token"),
        "gradxinput": ("audio_silence", "text_token"),
    }.get(method, ())
    model.eval()
    return methods[method](model, particles, target, **{k: v for k, v in options.items() if k in allowed})
