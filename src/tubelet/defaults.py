"""Defaults shared by the library and the CLI, kept free of heavy imports so `tubelet --help` stays fast."""

# Frames, rows, columns per tubelet (VideoMAE's 2x16x16).
DEFAULT_TUBELET = (2, 16, 16)

# Mean absolute difference (0-255 levels) under which a tubelet counts as a repeat of the one before it.
# Measured on the sample data: 4 levels prunes a fixed camera with sensor noise to ~5% and keeps moving
# objects; compression noise alone sits around 1-2 levels.
DEFAULT_PRUNE_THRESHOLD = 4.0

# What a tubelet is compared with when pruning: "previous" (the tubelet just before it at its place) or "anchor"
# (the particle that opened its run, so slow drift adds up until it crosses the threshold). "anchor" is the default
# since it measured better on slow pans over real texture (benchmarks/bench_motion.py); a checkpoint saved without
# the field was trained with "previous" (`LEGACY_PRUNE_REFERENCE`) and keeps it.
PRUNE_REFERENCES = ("previous", "anchor")
DEFAULT_PRUNE_REFERENCE = "anchor"
LEGACY_PRUNE_REFERENCE = "previous"
