"""Windows and readings: on traces made by hand, and on rendered faces whose true rates are known."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("skimage")

from tubelet.data.sample_vitals import frames, make_subject, truth_per_second  # noqa: E402
from tubelet.vitals.estimate import LEARNED_MIN_QUALITY_DB, LEARNED_MIN_SUPPORT_DB, Windows, read_window  # noqa: E402
from tubelet.vitals.pulse import Rate, Spectrum  # noqa: E402
from tubelet.vitals.regions import find_regions  # noqa: E402
from tubelet.vitals.traces import Trace, Tracer  # noqa: E402


def _trace(rgb: np.ndarray, fs: float) -> Trace:
    zeros = np.zeros(len(rgb))
    return Trace(np.arange(len(rgb)) / fs, rgb, zeros + 100, zeros, zeros)


def test_windows_come_due_as_the_trace_grows():
    windows = Windows(10.0, 1.0)
    period = 1 / 30
    assert windows.due(0.0, 9.9, period) == []  # the frame at 9.9667 s is not in yet
    assert windows.due(0.0, 10 - period, period) == [(0.0, 10.0)]
    assert windows.due(0.0, 20 - period, period) == [(float(s), s + 10.0) for s in range(1, 11)]


def test_a_pulse_is_read_and_its_absence_is_refused():
    fs = 30.0
    t = np.arange(300) / fs
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, (300, 3))
    skin = np.array([150.0, 110.0, 90.0])
    beat = 0.003 * np.sin(2 * np.pi * 1.5 * t)[:, None] * np.array([0.33, 0.77, 0.53])
    reading, detail = read_window(_trace(skin * (1 - beat) + noise, fs), 0.0, 10.0, "pos")
    assert reading.heart_rate_bpm == pytest.approx(90.0, abs=1.0) and reading.reason is None
    assert detail.heart.quality_db == reading.quality > 3
    reading, _ = read_window(_trace(skin + noise, fs), 0.0, 10.0, "pos")
    assert reading.heart_rate_bpm is None and "low pulse signal quality" in reading.reason
    gone = skin + noise
    gone[:100] = np.nan  # no skin in a third of the frames
    reading, _ = read_window(_trace(gone, fs), 0.0, 10.0, "pos")
    assert reading.heart_rate_bpm is None and "no skin region" in reading.reason


def test_a_learned_rate_needs_a_peak_in_the_pulse_spectrum():
    fs = 30.0
    t = np.arange(300) / fs
    noise = np.random.default_rng(0).normal(0, 0.05, (300, 3))
    skin = np.array([150.0, 110.0, 90.0])
    beat = 0.003 * np.sin(2 * np.pi * 1.5 * t)[:, None] * np.array([0.33, 0.77, 0.53])  # 90 bpm
    pulsed, flat = _trace(skin * (1 - beat) + noise, fs), _trace(skin + noise, fs)
    flat_bins = Spectrum(np.array([1.0, 2.0]), np.array([0.5, 0.5]))

    def sure_of(bpm: float):  # a learned reader 10 dB confident of `bpm` whatever it reads (as one was on no pulse)
        return lambda trace, start, end: (Rate(bpm / 60, 10.0, flat_bins),) * 2

    reading, detail = read_window(pulsed, 0.0, 10.0, reader=sure_of(90.0))
    assert reading.heart_rate_bpm == 90.0 and reading.quality == detail.heart.quality_db == 10.0  # POS agrees
    own, _ = read_window(flat, 0.0, 10.0, "pos")
    reading, _ = read_window(flat, 0.0, 10.0, reader=sure_of(90.0))  # no pulse: POS's spectrum has no peak at 90
    assert reading.heart_rate_bpm is None and "low pulse signal quality" in reading.reason
    assert reading.quality < LEARNED_MIN_QUALITY_DB and reading.quality < own.quality - LEARNED_MIN_SUPPORT_DB + 1e-9
    reading, _ = read_window(pulsed, 0.0, 10.0, reader=sure_of(60.0))  # a pulse, but not where the model says
    assert reading.heart_rate_bpm is None and reading.quality < LEARNED_MIN_QUALITY_DB


def _subject(seed: int, **changes):
    subject = make_subject(0, seed=seed, motion="still", compression="low", fps=30.0, size=(160, 120), duration=20.0)
    return dataclasses.replace(subject, rsa=0.0, hrv=0.0, pulse_levels=0.6, **changes)


def _traced(subject) -> Trace:
    tracer = Tracer()
    for t, frame in frames(subject):
        tracer.add(frame, t)
    return tracer.trace()


def test_a_rate_step_is_tracked_within_a_few_windows():
    # 60 bpm for 10 s, then 100 bpm (a half-second ramp), rendered faces without compression; 6 s windows.
    step = _subject(4, heart=[(0, 60.0), (10, 60.0), (10.5, 100.0), (20, 100.0)])
    trace = _traced(step)
    read = {s: read_window(trace, s, s + 6, "pos")[0].heart_rate_bpm for s in range(0, 15)}
    before = [v for s, v in read.items() if s + 6 <= 10 and v is not None]
    after = [v for s, v in read.items() if s >= 10.5 and v is not None]
    assert len(before) >= 4 and all(abs(v - 60) < 3 for v in before)
    assert len(after) >= 3 and all(abs(v - 100) < 3 for v in after)
    # The first window that reads above 80 ends at most 3 s after a window could first be mostly past the step.
    first_high = min(s for s, v in read.items() if v is not None and v > 80)
    assert first_high + 6 <= 10.5 + 6 / 2 + 3


def test_breathing_is_read_from_the_shoulders():
    subject = _subject(3, breath=[(0, 12.0), (20, 12.0)], breath_px=1.5)
    trace = _traced(subject)
    reading, _ = read_window(trace, 10.0, 20.0, "pos")  # breathing reads the 20 s up to the window's end
    assert reading.breathing_rate_bpm == pytest.approx(12.0, abs=1.5)
    still = _traced(dataclasses.replace(subject, breath_px=0.0))  # no breathing: nothing periodic to find
    quiet, _ = read_window(still, 10.0, 20.0, "pos")
    assert quiet.breathing_quality < reading.breathing_quality - 3


def test_a_live_tracer_keeps_only_recent_seconds():
    _, frame = next(frames(_subject(1)))
    tracer = Tracer(keep_seconds=1.0)
    for i in range(60):
        tracer.add(frame, i / 30)
    trace = tracer.trace()
    assert len(trace) == 31 and trace.times[0] == pytest.approx(29 / 30)
    assert np.all(trace.skin_pixels > 100) and np.allclose(trace.chest_y, 0.0, atol=1e-3)  # a still frame: no motion


def test_the_face_is_found_in_a_generated_frame():
    subject = _subject(1)
    _, frame = next(frames(subject))
    regions = find_regions(frame)
    x0, y0, x1, y1 = regions.face
    assert 40 < (x0 + x1) / 2 < 120 and y1 < 80  # her face: upper middle of the 160x120 frame
    assert regions.chest is not None and regions.chest[1] >= y1
    assert truth_per_second(subject)[0][1] == pytest.approx(subject.heart[0][1], abs=0.5)
