"""Breathing rate from the vertical motion of the chest and shoulders.

The signal is the chest box's vertical displacement minus the face box's (both in pixels, from `traces`): breathing
lifts the shoulders and collar under a head that stays put, while swaying and nodding move both together and cancel.
It is resampled to `RATE_HZ`, linearly detrended, band-passed to 0.1-0.7 Hz (6-42 breaths per minute), and its
spectral peak is the rate (the same periodogram and sub-bin parabola as the pulse). Quality is the power within one
frequency resolution (1 / seconds) of the peak over the rest of the band, in dB.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from tubelet.vitals.pulse import Rate, bandpass, rate, uniform

BAND_HZ = (0.1, 0.7)
RATE_HZ = 10.0  # breathing needs no more samples per second than this
MIN_SECONDS = 20.0  # breathing is read over at least this many trailing seconds: 8 breaths/min is 1.3 per 10 s
MIN_QUALITY_DB = -3.0  # below this the breathing peak is not trusted (see pulse.MIN_QUALITY_DB for the rule)


def breathing_signal(times: np.ndarray, chest_y: np.ndarray, face_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) grid seconds and the band-passed relative chest motion (K,) on them, from per-frame arrays (N,)."""
    grid, moves = uniform(times, np.stack([chest_y, face_y], axis=1), RATE_HZ)  # (K,), (K, 2)
    relative = signal.detrend(moves[:, 0] - moves[:, 1])
    return grid, bandpass(relative, RATE_HZ, BAND_HZ, order=2)


def breathing_rate(times: np.ndarray, chest_y: np.ndarray, face_y: np.ndarray) -> tuple[Rate, np.ndarray]:
    """The breathing rate of a span of frames (see the module docstring), and the signal it read."""
    grid, motion = breathing_signal(times, chest_y, face_y)
    seconds = max(float(grid[-1] - grid[0]), 1.0)
    return rate(motion, RATE_HZ, BAND_HZ, width=1.0 / seconds, harmonic=False), motion
