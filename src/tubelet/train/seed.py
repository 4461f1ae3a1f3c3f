"""Seeding a run: python, numpy and torch (sampling, augmentation and masks take their own seeded streams)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (initialisation; sampling and masks take their own seeded streams)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
