"""Attribution methods over particles: one score per particle of one clip, for one target class.

Every method returns an `Explanation` whose ``scores[i]`` belongs to particle i, which knows its time ``t``
(seconds), tubelet index ``ti``, grid row ``y`` and column ``x``. Positive scores are evidence FOR the target.

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
  a sharply saturated model needs more ``steps``).
- ``rollout``: attention rollout (Abnar & Zuidema, 2020) across layers, per clip, with the residual as 0.5 I;
  a particle's score is the mean over all particles of how much it flows into them (the pooling is a mean).
  It does not depend on the target.

Captum implements IG and occlusion for dense tensors; here the inputs are packed variable-length particle
sequences whose occlusion means deleting rows, so the few lines of each method are written against our encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tubelet.models.encoder import Encoder
from tubelet.particles import pack
from tubelet.particles.structure import Particles

METHODS = ("occlusion", "ig", "gradxinput", "rollout")


@dataclass
class Explanation:
    """Scores of one clip's particles for one target class.

    Attributes:
        scores: (N,) float32, one per particle, positive = evidence for the target.
        particles: the clip's particles (``t`` relative to the clip window's start).
        target: class index explained.
        method: one of `METHODS`.
        probs: (classes,) softmax of the model on the whole clip.
        meta: method details (window, steps, baseline score, completeness gap ...).
    """

    scores: torch.Tensor
    particles: Particles
    target: int
    method: str
    probs: torch.Tensor
    meta: dict = field(default_factory=dict)

    def top(self, k: int) -> list[int]:
        """Indices of the `k` highest-scoring particles, best first."""
        return torch.argsort(self.scores, descending=True)[:k].tolist()


@torch.no_grad()
def class_probs(model: Encoder, clips: list[Particles], budget: int = 32768) -> torch.Tensor:
    """(len(clips), classes) softmax of `model` on each clip, packed `budget` particles per forward."""
    device = next(model.parameters()).device
    out, batch, used = [], [], 0
    for clip in clips:
        if batch and used + len(clip) > budget:
            out.append(torch.softmax(model(pack(batch).to(device)).float(), -1).cpu())
            batch, used = [], 0
        batch.append(clip)
        used += len(clip)
    if batch:
        out.append(torch.softmax(model(pack(batch).to(device)).float(), -1).cpu())
    return torch.cat(out)


def window_groups(particles: Particles, window: tuple[int, int, int]) -> torch.Tensor:
    """(N,) group id of each particle: particles in the same (ti // wt, y // wy, x // wx) window share one."""
    wt, wy, wx = window
    if min(window) < 1:
        raise ValueError(f"occlusion window must be positive tubelets, got {window}")
    keys = torch.stack([particles.ti // wt, particles.y // wy, particles.x // wx], dim=1)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


@torch.no_grad()
def occlusion(
    model: Encoder, particles: Particles, target: int, *, window: tuple[int, int, int] = (1, 1, 1), budget: int = 32768
) -> Explanation:
    """Score = p(target | clip) - p(target | clip without the particle's window)."""
    groups = window_groups(particles, window)
    count = int(groups.max()) + 1
    probs = class_probs(model, [particles], budget)[0]
    occluded = [particles.select(groups != g) for g in range(count)]
    # A clip that is one window only has nothing left when occluded: its drop is against the uniform prior.
    kept = [i for i, clip in enumerate(occluded) if len(clip)]
    dropped = torch.full((count,), 1.0 / probs.numel())
    if kept:
        dropped[kept] = class_probs(model, [occluded[i] for i in kept], budget)[:, target]
    scores = probs[target] - dropped[groups]
    return Explanation(scores, particles, target, "occlusion", probs, {"window": list(window), "groups": count})


def _target_logit(model: Encoder, packed, embedded: torch.Tensor, target: int) -> torch.Tensor:
    """Sum over the packed clips of the target logit, computed from the given embeddings."""
    features = model.forward_features(packed, embedded=embedded)
    return model.forward_head(model.pool(features, packed))[:, target].sum()


def baseline_particles(particles: Particles) -> Particles:
    """The clip with every particle's pixels replaced by the clip's average particle (positions and spans kept)."""
    average = particles.values.mean(0, keepdim=True).expand_as(particles.values).contiguous()
    return particles.with_values(average)


def gradient_x_input(model: Encoder, particles: Particles, target: int) -> Explanation:
    """Score = sum over channels of d logit_target / d embedding * (embedding - baseline embedding)."""
    device = next(model.parameters()).device
    packed = pack([particles]).to(device)
    with torch.no_grad():
        base = model.embed(pack([baseline_particles(particles)]).to(device))
    embedded = model.embed(packed).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_logit(model, packed, embedded, target), embedded)
    scores = (grad * (embedded - base)).sum(-1).detach().float().cpu()
    meta = {"baseline": "average particle"}
    return Explanation(scores, particles, target, "gradxinput", class_probs(model, [particles])[0], meta)


def integrated_gradients(
    model: Encoder, particles: Particles, target: int, *, steps: int = 32, budget: int = 32768
) -> Explanation:
    """Integrated gradients on the embeddings from the average-particle baseline (`baseline_particles`)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = next(model.parameters()).device
    single = pack([particles]).to(device)
    with torch.no_grad():
        real = model.embed(single)
        base = model.embed(pack([baseline_particles(particles)]).to(device))
    alphas = (torch.arange(steps, dtype=real.dtype, device=device) + 0.5) / steps  # midpoint rule
    per_batch = max(1, budget // max(len(particles), 1))
    total = torch.zeros_like(real)
    for first in range(0, steps, per_batch):
        chunk = alphas[first : first + per_batch]
        packed = pack([particles] * len(chunk)).to(device)
        path = (base + chunk[:, None, None] * (real - base)).flatten(0, 1).requires_grad_(True)  # (len*N, D)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_target_logit(model, packed, path, target), path)
        total += grad.view(len(chunk), len(particles), -1).sum(0)
    scores = ((real - base) * total / steps).sum(-1).detach().float().cpu()
    with torch.no_grad():
        ends = [_target_logit(model, single, e, target).item() for e in (real, base)]
    meta = {"steps": steps, "baseline": "average particle", "logit": ends[0], "baseline_logit": ends[1]}
    meta["completeness_gap"] = float(scores.sum()) - (ends[0] - ends[1])
    return Explanation(scores, particles, target, "ig", class_probs(model, [particles])[0], meta)


@torch.no_grad()
def attention_rollout(model: Encoder, particles: Particles, target: int) -> Explanation:
    """Rollout of head-averaged attention with the residual (0.5 A + 0.5 I, rows renormalised) over all layers."""
    device = next(model.parameters()).device
    packed = pack([particles]).to(device)
    features = model.forward_features(packed, keep_attention=True)
    probs = torch.softmax(model.forward_head(model.pool(features, packed)).float(), -1)[0].cpu()
    n = len(particles)
    rollout = torch.eye(n, device=device)
    eye = torch.eye(n, device=device)
    for layer in model.last_attention:
        attention = 0.5 * layer[0].float().mean(0) + 0.5 * eye  # (n, n): clip 0 of the batch, heads averaged
        rollout = (attention / attention.sum(-1, keepdim=True)) @ rollout
    model.last_attention = None
    scores = rollout.mean(0).cpu()  # how much each particle flows into the mean-pooled vector
    return Explanation(scores, particles, target, "rollout", probs, {"class_agnostic": True})


def explain_particles(model: Encoder, particles: Particles, target: int, method: str, **options) -> Explanation:
    """Dispatch to one of `METHODS` (options: ``window`` for occlusion, ``steps`` for ig, ``budget``)."""
    methods: dict[str, Callable[..., Explanation]] = {
        "occlusion": occlusion,
        "ig": integrated_gradients,
        "gradxinput": gradient_x_input,
        "rollout": attention_rollout,
    }
    if method not in methods:
        raise ValueError(f"method: expected {' | '.join(METHODS)}, got {method!r}")
    allowed = {"occlusion": ("window", "budget"), "ig": ("steps", "budget")}.get(method, ())
    model.eval()
    return methods[method](model, particles, target, **{k: v for k, v in options.items() if k in allowed})
