"""`StreamSession` fed frames directly: windows, hysteresis, gaps, and a motion scorer that needs no model."""

import numpy as np
import pytest

from tubelet.stream.events import Hysteresis
from tubelet.stream.session import Detector, EventUpdate, StreamSession, WindowResult


def kept_fraction(clips):
    """(n, 1) share of each window's particles left after static pruning: a real score of how much moves."""
    return np.array([[len(c.t) / np.prod(c.grid)] for c in clips])


def run(session, frames, times, chunk=5):
    out = []
    for i in range(0, len(frames), chunk):
        out += list(session.feed(frames[i : i + chunk], times[i : i + chunk]))
    return out + list(session.close())


def test_hysteresis_merges_windows_and_waits_out_the_cooldown(S):
    h = Hysteresis(0.5, cooldown=1.0)
    scores = [0.1, 0.6, 0.4, 0.7, 0.2, 0.2, 0.2, 0.9]
    changes = [h.update(i * 0.5, i * 0.5 + 1.0, s) for i, s in enumerate(scores)]
    # Opens at window 1, survives the dip at 2 (0.5 s below < 1 s cooldown), ends once 1 s after window 3's end.
    assert changes == [None, "start", None, None, None, "end", None, "start"]
    assert (h.start, h.end, h.peak) == (3.5, 4.5, 0.9)
    assert Hysteresis(0.5, 0.0).update(0, 1, 0.5) == "start"  # "at least MIN_SCORE"
    assert Hysteresis(0.5, 0.0, strict=True).update(0, 1, 0.5) is None  # an anomaly must rise above
    assert Hysteresis(None, 0.0).update(0, 1, 9.0) is None  # still calibrating


def test_the_square_is_one_event_overlapping_it(S, tmp_path):
    frames = S.frames()
    times = np.arange(len(frames)) / S.FPS
    session = StreamSession(
        kept_fraction, pre=S.PRE, detectors=[Detector("label", 0, 0.6, "motion")], stride=0.5, cooldown=0.5,
        out=tmp_path,
    )  # fmt: skip
    out = run(session, frames, times)
    results = [o for o in out if isinstance(o, WindowResult)]
    events = [o.event for o in out if isinstance(o, EventUpdate) and o.phase == "end"]
    # 1 s windows every 0.5 s over 10 s of frames at 4 fps (the last at 9.75 s): starts 0 .. 8.5, then a tail.
    assert [r.start for r in results] == [k * 0.5 for k in range(19)]
    assert len(events) == 1
    event = events[0]
    assert event.start < S.SQUARE[1] and event.end > S.SQUARE[0]  # overlaps the square
    assert S.SQUARE[0] - 1.0 <= event.start <= S.SQUARE[0] and S.SQUARE[1] <= event.end <= S.SQUARE[1] + 1.0
    assert event.score == pytest.approx(max(r.scores[0] for r in results))
    assert event.clip.endswith(".mp4") and event.thumbnail.endswith(".png")
    from tubelet.io.decode import decode

    clip = decode(event.clip)
    # Pre- and post-roll of 2 s around the event, at the 4 fps the windows read.
    assert clip.duration == pytest.approx(event.end - event.start + 4.0 - 0.25, abs=0.3)
    idle = [r for r in results if not r.busy]
    assert all(r.kept < max(x.kept for x in results) for r in idle)  # a static window keeps fewer particles
    summary = session.summary()
    assert summary["windows"] == 19 and summary["events"] == 1
    assert summary["cost_per_minute"]["idle"]["windows"] + summary["cost_per_minute"]["busy"]["windows"] == 19
    assert summary["mean_particles"] == pytest.approx(np.mean([r.kept for r in results]), abs=0.05)


def test_frames_are_decimated_and_resized_once_and_the_buffer_stays_one_window(S):
    session = StreamSession(kept_fraction, pre=S.PRE, detectors=[], stride=1.0)
    big = np.full((4 * 30, 240, 320, 3), 90, np.uint8)  # 4 s at 30 fps, 320x240: 4 fps sampled, 32x43 frames
    out = list(session.feed(big, np.arange(len(big)) / 30))
    assert len([o for o in out if isinstance(o, WindowResult)]) == 3  # [0,1) [1,2) [2,3) complete; [3,4) pending
    buffered = session.windower.frames
    assert len(buffered) == 4 and buffered[0][1].shape == (32, 43, 3)
    # The first frame at or after each 0.25 s target: 98/30 s for 3.25, 113/30 s for 3.75.
    assert [t for t, _ in buffered] == pytest.approx([3.0, 98 / 30, 3.5, 113 / 30])


def test_a_gap_closes_the_open_event_and_is_an_event(S, tmp_path):
    frames = S.frames(square=(0.0, 10.0))
    times = np.arange(len(frames)) / S.FPS
    session = StreamSession(kept_fraction, pre=S.PRE, detectors=[Detector("label", 0, 0.6, "motion")], out=None)
    out = list(session.feed(frames[:24], times[:24]))  # 3 s
    out += list(session.gap(float(times[23]), 20.0, reason="dropped"))
    out += list(session.feed(frames[24:], times[24:] + 17.0))
    out += list(session.close())
    ends = [o.event for o in out if isinstance(o, EventUpdate) and o.phase == "end"]
    assert [e.kind for e in ends] == ["label", "gap", "label"]
    assert (ends[1].start, ends[1].end) == (times[23], 20.0)
    assert ends[0].end <= times[23] + 1 and ends[2].start >= 20.0  # no window straddles the gap


def test_a_window_that_fails_is_skipped_and_the_rest_go_on(S, caplog):
    calls = []

    def flaky(clips):
        calls.append(len(clips))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return kept_fraction(clips)

    session = StreamSession(flaky, pre=S.PRE, detectors=[], stride=1.0)
    frames = S.frames(4.0, square=None)
    out = [
        o
        for o in run(session, frames, np.arange(len(frames)) / S.FPS, chunk=len(frames))
        if isinstance(o, WindowResult)
    ]
    # First call scores the 3 complete windows: fine. Second (the tail) fails alone: logged and skipped.
    assert [r.start for r in out] == [0.0, 1.0, 2.0]
    assert "skipped" in caplog.text


def test_a_window_whose_particles_cannot_be_made_is_skipped(S, caplog):
    session = StreamSession(kept_fraction, pre=S.PRE, detectors=[], stride=1.0)
    frames = np.full((8, 32, 43, 3), 90, np.uint8)  # at the checkpoint's size: kept as they are
    out = list(session.feed(frames, np.arange(8) / 4))  # [0, 1) done; [1, 2) pending
    t, frame = session.windower.frames[-1]
    session.windower.frames[-1] = (t, frame[:20])  # a frame that is not the others' size (a broken decoder, say)
    out += list(session.feed(frames, 2 + np.arange(8) / 4)) + list(session.close())
    starts = [o.start for o in out if isinstance(o, WindowResult)]
    assert starts == [0.0, 2.0, 3.0] and "could not be made" in caplog.text
