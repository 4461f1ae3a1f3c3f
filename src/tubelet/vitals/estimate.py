"""Readings per window in seconds: heart rate, breathing rate and their quality, or the reason there is none.

Windows of `window` seconds start every `stride` seconds from the first frame's time; a window is read once the
trace reaches its end (so a live source gets each reading as soon as it can exist). The pulse is read over the
window; breathing over the trailing `breathing.MIN_SECONDS` (at least the window) that end with it, as slow breathing
needs more than one cycle. The RGB means go onto a uniform grid at the footage's own median frame rate (decoder
timestamps, so variable frame rates read correctly) before the pulse methods see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tubelet.vitals import breathing
from tubelet.vitals.pulse import MIN_QUALITY_DB, Rate, heart_rate, snr_db, uniform
from tubelet.vitals.traces import Trace

MIN_SKIN_SHARE = 0.8  # a window needs skin in this share of its frames
MIN_FPS, MAX_FPS = 8.0, 60.0  # the uniform grid's rate is the median frame rate, held within these
# A learned reader's rate is refused below this quality: the smaller of its confidence (its probability near the rate
# over the rest, in dB; 0 dB: half the mass) and its support (see `learned_quality`). Units are the spectral SNR's.
LEARNED_MIN_QUALITY_DB = 0.0
# A learned heart rate also needs POS's spectrum to show power at it: POS's SNR at the model's rate, in dB, at least
# this. The model alone stayed confident on most windows of video without a pulse (it refused 18% of the test's);
# POS's spectrum there has no peak at its rate. Checked on the training split of `sample-data --vitals` (bench_vitals,
# "learned reader's gate"): its 22 no-pulse windows are all refused from -10 dB up, and -3 dB is where the MAE of the
# pulse windows kept falls (13.8 bpm by confidence alone, 8.3 at -4 dB, 4.2 at -3 dB) while keeping 36% of them.
LEARNED_MIN_SUPPORT_DB = -3.0


@dataclass
class Reading:
    """One window's result; a rate is None when its quality is too low to trust (`reason` says why)."""

    start: float
    end: float
    heart_rate_bpm: float | None
    breathing_rate_bpm: float | None
    quality: float | None  # dB: SNR of the pulse's spectral peak (a learned reader: its confidence, see read_window)
    breathing_quality: float | None  # dB: SNR of the breathing peak (a learned reader: its confidence)
    reason: str | None = None

    def to_json(self) -> dict:
        def r(value, digits):
            return None if value is None or not np.isfinite(value) else round(float(value), digits)

        return {
            "start": round(self.start, 3), "end": round(self.end, 3), "heart_rate_bpm": r(self.heart_rate_bpm, 1),
            "breathing_rate_bpm": r(self.breathing_rate_bpm, 1), "quality": r(self.quality, 2),
            "breathing_quality": r(self.breathing_quality, 2), "reason": self.reason,
        }  # fmt: skip


@dataclass
class Detail:
    """What a window's reading was made from, for plots: the pulse signal on its grid and both rates' spectra."""

    pulse_times: np.ndarray | None = None
    pulse: np.ndarray | None = None
    heart: Rate | None = None
    breath_times: np.ndarray | None = None
    breath: np.ndarray | None = None
    breathing: Rate | None = None


def grid_rate(times: np.ndarray) -> float:
    """Samples per second of the uniform grid for frames at `times`: their median rate, within 8-60."""
    steps = np.diff(times)
    steps = steps[steps > 0]
    return float(np.clip(1.0 / np.median(steps), MIN_FPS, MAX_FPS)) if len(steps) else MIN_FPS


def read_window(
    trace: Trace, start: float, end: float, method: str = "pos", *, min_quality: float = MIN_QUALITY_DB,
    reader: Callable[[Trace, float, float], tuple[Rate, Rate] | None] | None = None,
) -> tuple[Reading, Detail]:  # fmt: skip
    """The reading of window [`start`, `end`] seconds of `trace` (which must also hold the breathing span).

    `reader`, when given, is a learned reader (``reader(trace, start, end)`` -> (heart, breathing) `Rate` or None,
    e.g. `tubelet.tasks.vitals.VitalsModel.read`): its rates replace the spectral peaks of `method`'s pulse and of the
    chest motion, their qualities are its own confidence (the heart rate's lowered by `learned_quality` where
    `method`'s spectrum shows no peak at it), and they are refused below `LEARNED_MIN_QUALITY_DB` (`min_quality` then
    gates nothing); `method`'s pulse is still kept in the detail, for the plot.
    """
    detail = Detail()
    reasons = []
    part = trace.between(start, end)
    have = ~np.isnan(part.rgb[:, 0])
    hr = quality = None
    learned = None
    if len(part) < 4 or have.mean() < MIN_SKIN_SHARE:
        reasons.append(f"no skin region in {100 * (1 - have.mean() if len(part) else 1):.0f}% of the window's frames")
    else:
        fs = grid_rate(part.times)
        rgb = np.stack([np.interp(part.times, part.times[have], part.rgb[have, c]) for c in range(3)], axis=1)
        grid, rgb = uniform(part.times, rgb, fs)  # (K,), (K, 3)
        heart, pulse = heart_rate(rgb, fs, method)
        learned = reader(trace, start, end) if reader is not None else None
        if learned is not None:
            heart = replace(learned[0], quality_db=learned_quality(learned[0], heart))
            min_quality = LEARNED_MIN_QUALITY_DB
        detail.pulse_times, detail.pulse, detail.heart = grid, pulse, heart
        quality = heart.quality_db
        if quality >= min_quality:
            hr = heart.bpm
        else:
            reasons.append(f"low pulse signal quality ({quality:.1f} dB < {min_quality:g} dB)")
    br = br_quality = None
    span = trace.between(end - max(breathing.MIN_SECONDS, end - start), end)
    if len(span) >= 4 and span.times[-1] - span.times[0] >= 2.0 / breathing.BAND_HZ[0] / 2:  # half a slow cycle
        breath, motion = breathing.breathing_rate(span.times, span.chest_y, span.face_y)
        floor = breathing.MIN_QUALITY_DB
        if learned is not None:
            breath, floor = learned[1], LEARNED_MIN_QUALITY_DB
        detail.breath_times = span.times[0] + np.arange(len(motion)) / breathing.RATE_HZ
        detail.breath, detail.breathing = motion, breath
        br_quality = breath.quality_db
        if br_quality >= floor:
            br = breath.bpm
        else:
            reasons.append(f"low breathing signal quality ({br_quality:.1f} dB < {floor:g} dB)")
    reading = Reading(start, end, hr, br, quality, br_quality, "; ".join(reasons) or None)
    return reading, detail


def learned_quality(learned: Rate, spectral: Rate) -> float:
    """The quality in dB of a learned heart rate: its confidence, or less where `spectral` (POS's `Rate` of the same
    window) has little power at it: ``min(confidence, snr - LEARNED_MIN_SUPPORT_DB)``, so either refuses it below
    `LEARNED_MIN_QUALITY_DB` (0 dB)."""
    support = snr_db(spectral.spectrum, learned.hz) if np.isfinite(learned.hz) else float("-inf")
    return float(min(learned.quality_db, support - LEARNED_MIN_SUPPORT_DB))


class Windows:
    """Window start and end times, `window` seconds long every `stride` seconds, handed out as the trace grows."""

    def __init__(self, window: float, stride: float):
        if window <= 0 or stride <= 0:
            raise ValueError(f"window and stride must be positive, got {window} and {stride}")
        self.window, self.stride = window, stride
        self.next_start: float | None = None

    def due(self, first: float, last: float, period: float) -> list[tuple[float, float]]:
        """Windows whose end the trace (frames from `first` to `last` seconds, `period` apart) has reached."""
        if self.next_start is None:
            self.next_start = first
        out = []
        # The last frame of a window of W seconds at F fps sits at W - 1/F: it is whole once that frame is in.
        while self.next_start + self.window <= last + 1.01 * period + 1e-6:
            out.append((self.next_start, self.next_start + self.window))
            self.next_start += self.stride
        return out
