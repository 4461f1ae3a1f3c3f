"""Static pruning by run length (after RLT, Choudhury et al., NeurIPS 2024).

A tubelet that barely differs from its reference at the same grid position is dropped, and the kept particle
that starts its run stands for it: that particle's `span` grows by one. The first tubelet of every position is
always kept. A fixed camera on an empty scene collapses to about one particle per position.

The reference is either

- ``"previous"``: the tubelet just before it (RLT's rule). Cheap and fully vectorised, but a slow pan over smooth
  texture changes little from one tubelet to the next, so a whole run can be dropped while the content drifts far
  from the particle that stands for it.
- ``"anchor"``: the particle that opened its run (the last kept tubelet at its position). Drift adds up until it
  crosses the threshold, and then a new particle is kept. Which tubelet is the anchor depends on the decisions
  before it, so this walks time in order (T' steps, vectorised over the H' x W' positions).
"""

from __future__ import annotations

import torch

from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, PRUNE_REFERENCES


def static_runs(
    patches: torch.Tensor, threshold: float, reference: str = DEFAULT_PRUNE_REFERENCE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tubelets to keep, and how many tubelets each kept one stands for.

    Args:
        patches: (T', H', W', D) tubelet pixels in 0-255 levels (from `patchify` of uint8 frames).
        threshold: mean absolute difference, in 0-255 pixel levels, below which a tubelet counts as static.
        reference: what a tubelet is compared with: ``"previous"`` (the tubelet before it) or ``"anchor"`` (the
            kept particle that opened its run).

    Returns:
        keep: (T', H', W') bool.
        span: (T', H', W') int64, the run length at kept tubelets and 0 at dropped ones.

    Raises:
        ValueError: `reference` is not one of `PRUNE_REFERENCES`.
    """
    check_reference(reference)
    Tp, Hp, Wp, _ = patches.shape
    keep = torch.ones((Tp, Hp, Wp), dtype=torch.bool, device=patches.device)
    if Tp > 1 and threshold > 0:
        keep[1:] = _changed_from_anchor(patches, threshold) if reference == "anchor" else _changed(patches, threshold)
    return keep, _run_spans(keep)


def check_reference(reference: str) -> None:
    """Raises ValueError naming the field when `reference` is not one of `PRUNE_REFERENCES`."""
    if reference not in PRUNE_REFERENCES:
        raise ValueError(f"prune_reference: expected {' or '.join(PRUNE_REFERENCES)}, got {reference!r}")


def _changed(patches: torch.Tensor, threshold: float) -> torch.Tensor:
    """(T'-1, H', W') bool: tubelets 1.. differ from the tubelet before them by at least `threshold` levels."""
    diff = (patches[1:].float() - patches[:-1].float()).abs().mean(dim=-1)  # (T'-1, H', W')
    return diff >= threshold


def _changed_from_anchor(patches: torch.Tensor, threshold: float) -> torch.Tensor:
    """(T'-1, H', W') bool: tubelets 1.. differ from the last kept tubelet at their place by at least `threshold`."""
    Tp, Hp, Wp, D = patches.shape
    flat = patches.float().reshape(Tp, Hp * Wp, D)  # (T', P, D) with P = H' * W' positions
    positions = torch.arange(Hp * Wp, device=patches.device)  # (P,)
    anchor = torch.zeros(Hp * Wp, dtype=torch.long, device=patches.device)  # (P,) time of each position's anchor
    changed = torch.empty((Tp - 1, Hp * Wp), dtype=torch.bool, device=patches.device)  # (T'-1, P)
    # One step per tubelet in time: whether tubelet t is kept decides the anchor tubelet t+1 is compared with.
    # A step touches only (P, D) values, which stay in cache, so on one thread (as in loader workers) the loop
    # costs no more than the one-shot difference of "previous", whose (T'-1, P, D) temporaries do not fit
    # (benchmarks/bench_prune.py). Its many small ops suffer more from a thread pool on a busy machine.
    for t in range(1, Tp):
        kept = (flat[t] - flat[anchor, positions]).abs_().mean(dim=-1) >= threshold  # (P,)
        changed[t - 1] = kept
        anchor = torch.where(kept, t, anchor)  # a kept tubelet opens a new run
    return changed.reshape(Tp - 1, Hp, Wp)


def _run_spans(keep: torch.Tensor) -> torch.Tensor:
    """(T', H', W') int64 run length at each kept tubelet, 0 at dropped ones.

    Args:
        keep: (T', H', W') bool with every position's first tubelet kept.
    """
    # Each tubelet belongs to the run opened by the last kept tubelet at or before it at its (y, x).
    run = keep.long().cumsum(dim=0) - 1  # (T', H', W') run number per position, 0-based
    lengths = torch.zeros_like(run)
    lengths.scatter_add_(0, run, torch.ones_like(run))  # lengths[r, y, x] = tubelets in run r at (y, x)
    # The k-th kept tubelet at a position opens run k, so its span is lengths[k].
    span = torch.zeros_like(run)
    span[keep] = lengths.gather(0, run)[keep]
    return span
