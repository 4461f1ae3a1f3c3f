"""Static pruning by run length (after RLT, Choudhury et al., NeurIPS 2024).

A tubelet that barely differs from the tubelet just before it at the same grid position is dropped, and the
kept particle that starts its run stands for it: that particle's `span` grows by one. The first tubelet of
every position is always kept. A fixed camera on an empty scene collapses to about one particle per position.
"""

from __future__ import annotations

import torch


def static_runs(patches: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tubelets to keep, and how many tubelets each kept one stands for.

    Args:
        patches: (T', H', W', D) tubelet pixels in 0-255 levels (from `patchify` of uint8 frames).
        threshold: mean absolute difference, in 0-255 pixel levels, below which a tubelet counts as static.

    Returns:
        keep: (T', H', W') bool.
        span: (T', H', W') int64, the run length at kept tubelets and 0 at dropped ones.
    """
    Tp, Hp, Wp, _ = patches.shape
    keep = torch.ones((Tp, Hp, Wp), dtype=torch.bool, device=patches.device)
    if Tp > 1 and threshold > 0:
        diff = (patches[1:].float() - patches[:-1].float()).abs().mean(dim=-1)  # (T'-1, H', W')
        keep[1:] = diff >= threshold
    # Each tubelet belongs to the run opened by the last kept tubelet at or before it at its (y, x).
    run = keep.long().cumsum(dim=0) - 1  # (T', H', W') run number per position, 0-based
    span = torch.zeros((Tp, Hp, Wp), dtype=torch.long, device=patches.device)
    lengths = torch.zeros((Tp, Hp, Wp), dtype=torch.long, device=patches.device)
    lengths.scatter_add_(0, run, torch.ones_like(run))  # lengths[r, y, x] = tubelets in run r at (y, x)
    # The k-th kept tubelet at a position opens run k, so its span is lengths[k].
    span[keep] = lengths.gather(0, run)[keep]
    return keep, span
