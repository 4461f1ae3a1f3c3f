"""Video summarization: importance over seconds, shots, and a selection of segments within a share of the length.

`importance`: unsupervised importance per second (novelty of pooled features against a running mean, and motion
energy from frame differences) and rank correlations. `select`: shot boundaries, segments, the knapsack selection,
and the F1 of a selection against a user's (the TVSum/SumMe protocol). ``tubelet summarize`` runs them on a file;
the learned importance is the ``importance`` task (`tubelet.tasks.importance`).
"""

from tubelet.summary.importance import combine, motion_energy, normalise, novelty, rank_correlations
from tubelet.summary.select import Segment, knapsack, segments_of, select, selection_f1, shot_bounds, summary_mask

__all__ = [
    "Segment",
    "combine",
    "knapsack",
    "motion_energy",
    "normalise",
    "novelty",
    "rank_correlations",
    "segments_of",
    "select",
    "selection_f1",
    "shot_bounds",
    "summary_mask",
]
