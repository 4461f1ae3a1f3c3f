"""`StreamSession`: frames with their timestamps in, window results and events out.

Frames are decimated to the checkpoint's ``sample_fps`` and resized once as they arrive, held in a rolling buffer no
longer than one window, and each window's particles are made by `tubelet.data.pipeline.clip_particles` (static
particles pruned, so an idle camera costs little). Windows are scored in batches by a plain function (clips -> (n, K)
scores); detectors turn one column each into events with hysteresis. The CLI (`tubelet watch`) is a loop over a
source feeding a session; your own capture code can feed one just the same::

    session = StreamSession(model_scorer(loaded), pre=loaded.preprocessing, detectors=[...])
    for out in session.feed(frames, timestamps):   # frames (T, H, W, 3) uint8, timestamps (T,) seconds
        ...                                          # `WindowResult`s and `EventUpdate`s
    session.close()
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tubelet.data.pipeline import clip_particles
from tubelet.data.transforms import Preprocessing
from tubelet.particles import Particles
from tubelet.stream.events import Event, EventStore, Hysteresis, Recorder
from tubelet.stream.summary import Tally

log = logging.getLogger("tubelet.watch")

Scorer = Callable[[list[Particles]], np.ndarray]  # clips -> (n, K) scores


@dataclass
class Detector:
    """Turns column `column` of the window scores into events of `kind` (``label`` or ``anomaly``).

    `threshold` None means not yet known (an anomaly detector still calibrating): no event. A label's probability
    raises one when it reaches the threshold (``--alert LABEL:MIN_SCORE``); an anomaly score when it rises above it
    (`strict`: a calibration of identical windows has a threshold of exactly their score).
    """

    kind: str
    column: int
    threshold: float | None
    label: str | None = None
    strict: bool = False


@dataclass
class Window:
    """One window cut from the buffer: (start, end) seconds and its particles."""

    start: float
    end: float
    particles: Particles
    wall: float  # Unix time its last frame arrived


@dataclass
class WindowResult:
    start: float
    end: float
    wall: float
    kept: int  # particles after static pruning
    total: int  # particles of the full grid
    scores: np.ndarray  # (K,) the scorer's row (NaN: the window was not scored)
    seconds: float  # processing seconds charged to it (its share of its batch)
    busy: bool = False  # an event was open over it


@dataclass
class EventUpdate:
    """An event that started (``phase`` ``start``) or ended (``end``)."""

    phase: str
    event: Event


class Windower:
    """Sliding windows of `window` seconds every `stride` over frames that arrive in order.

    Holds at most one window of frames (decimated to ``pre.sample_fps``, resized to ``pre.output_size``).
    """

    def __init__(self, pre: Preprocessing, window: float, stride: float):
        if window <= 0 or stride <= 0:
            raise ValueError(f"windows need a positive length and stride, got {window} and {stride} s")
        self.pre, self.window, self.stride = pre, window, stride
        self.period = 1.0 / pre.sample_fps if pre.sample_fps else 0.0
        self.frames: deque[tuple[float, np.ndarray]] = deque()
        self.reset()

    def reset(self) -> None:
        """Forget the buffer (after a gap): the next window starts at the next frame."""
        self.frames.clear()
        self.next_start: float | None = None
        self.next_keep = -math.inf
        self.last_wall = 0.0

    def keep(self, t: float) -> bool:
        """Whether a frame at `t` seconds is one of the sampled ones (and, when it is, advance the sampler)."""
        if t + 1e-6 < self.next_keep:
            return False
        self.next_keep = self.next_keep + self.period if self.next_keep + self.period > t else t + self.period
        return True

    def push(self, frames: np.ndarray, timestamps: np.ndarray, wall: float) -> tuple[np.ndarray, np.ndarray, list]:
        """Add frames; returns the kept (resized) frames, their times, and the windows they completed."""
        kept_f, kept_t, done = [], [], []
        for frame, t in zip(frames, np.asarray(timestamps, dtype=np.float64), strict=True):
            t = float(t)
            if self.frames and t <= self.frames[-1][0]:
                continue  # out of order or repeated: a stream's hiccup
            if not self.keep(t):
                continue
            frame = resize(frame, self.pre)
            if self.next_start is None:
                self.next_start = t
            while t >= self.next_start + self.window:  # this frame lies past the pending window: it is complete
                done.append(self._cut(self.next_start, self.next_start + self.window))
                self.next_start = round(self.next_start + self.stride, 6)
            self.frames.append((t, frame))
            self.last_wall = wall
            kept_f.append(frame)
            kept_t.append(t)
        while self.frames and self.frames[0][0] < (self.next_start or 0.0):
            self.frames.popleft()
        return kept_f, kept_t, [w for w in done if w is not None]

    def flush(self) -> list[Window]:
        """The last, partial window at the end of a stream (when it holds at least one tubelet of frames)."""
        if self.next_start is None or not self.frames:
            return []
        last = self.frames[-1][0]
        window = self._cut(self.next_start, last + max(self.period, 1e-3), min_frames=self.pre.tubelet[0])
        self.next_start = None
        return [window] if window is not None else []

    def _cut(self, start: float, end: float, *, min_frames: int = 1) -> Window | None:
        picked = [(t, f) for t, f in self.frames if start <= t < end]
        if len(picked) < min_frames:
            return None
        times = np.array([t for t, _ in picked])
        try:
            frames = np.stack([f for _, f in picked])  # (T, H, W, 3)
            particles = clip_particles((start, end), pre=self.pre, frames=frames, timestamps=times)
        except Exception as exc:  # noqa: BLE001 - frames of another size mid-stream, say: skip the window, go on
            log.warning("window %.2f-%.2f s skipped: its particles could not be made (%s)", start, end, exc)
            return None
        return Window(start, end, particles, self.last_wall)


def resize(frame: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """A (H, W, 3) uint8 frame at ``pre.output_size`` (returned as is when it already is)."""
    h, w = frame.shape[:2]
    size = pre.output_size(h, w)
    if size == (h, w):
        return np.ascontiguousarray(frame)
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()  # (H', W', 3)


@dataclass
class Calibration:
    """What an anomaly detector needs before it can score: the first `seconds` of windows define normal.

    Args:
        scorer: a `tubelet.anomaly.AnomalyScorer` (``fit(clips)`` -> calibration scores, ``score(clips)`` -> (n,)).
        seconds: stream seconds of calibration (ignored when `clips` are given).
        clips: calibration windows decoded elsewhere (``--calibration FILE``): fit at once.
        threshold: ``threshold(calibration_scores)`` -> the score limit.
    """

    scorer: object
    seconds: float
    threshold: Callable[[np.ndarray], float]
    clips: list = field(default_factory=list)
    limit: float | None = None
    first: float | None = None

    def fit(self, clips: list[Particles]) -> float:
        self.limit = float(self.threshold(np.asarray(self.scorer.fit(clips), dtype=np.float64)))
        self.clips = []
        return self.limit


class StreamSession:
    """Windows, scores and events of one stream.

    Args:
        score: clips -> (n, K) scores (`model_scorer`); may be None when only anomaly detection runs.
        pre: the checkpoint's preprocessing (tubelet, sample rate, size, pruning).
        detectors: which score columns raise events, at which thresholds.
        window, stride: window length and step, seconds.
        cooldown: seconds a score must stay below its threshold before an event ends.
        calibration: an anomaly scorer and its calibration; its score is the last column (after `score`'s).
        store: the events database; None keeps events in memory only.
        out: where clips and thumbnails go (None: none written).
        on_event: called with each `EventUpdate` as it happens (the webhook sender).
    """

    def __init__(
        self,
        score: Scorer | None,
        *,
        pre: Preprocessing,
        detectors: list[Detector],
        window: float | None = None,
        stride: float | None = None,
        cooldown: float = 2.0,
        calibration: Calibration | None = None,
        store: EventStore | None = None,
        out: str | Path | None = None,
        pre_roll: float = 2.0,
        post_roll: float = 2.0,
        max_clip_seconds: float = 60.0,
        on_event: Callable[[EventUpdate], None] | None = None,
    ):
        window = window or pre.clip_seconds
        self.windower = Windower(pre, window, stride or window)
        self.score_fn, self.detectors, self.calibration = score, detectors, calibration
        self.cooldown, self.store, self.on_event = cooldown, store, on_event
        self.hysteresis = [Hysteresis(d.threshold, cooldown, strict=d.strict) for d in detectors]
        self.open: list[Event | None] = [None] * len(detectors)
        self.recorder = Recorder(out, keep_seconds=max_clip_seconds + pre_roll + window + post_roll, pre_roll=pre_roll,
                                 post_roll=post_roll)  # fmt: skip
        self.events: list[Event] = []
        self.closing: list[Event] = []  # ended, waiting for their post-roll
        self.results = Tally()
        self.started = time.perf_counter()
        if calibration is not None and calibration.clips:
            self._calibrated(calibration.fit(calibration.clips))

    # --- input ------------------------------------------------------------------------------------------------
    def feed(self, frames, timestamps, *, wall: float | None = None) -> Iterator[WindowResult | EventUpdate]:
        """Add frames (T, H, W, 3) uint8 at `timestamps` (T,) seconds (increasing); yields what they complete."""
        wall = time.time() if wall is None else wall
        kept, times, windows = self.windower.push(np.asarray(frames), np.asarray(timestamps), wall)
        if kept:
            self.recorder.add(kept, times)
        yield from self._run(windows)
        if kept:
            yield from self._finish(times[-1])

    def gap(self, start: float, end: float, *, wall: float | None = None, reason: str = "") -> Iterator[EventUpdate]:
        """The source dropped from `start` to `end` seconds: open events close, a ``gap`` event is recorded, and the
        next window starts at the next frame."""
        yield from self._close_all()
        yield from self._finish(np.inf)
        self.windower.reset()
        self.recorder.reset()
        event = Event(kind="gap", start=start, end=end, wall_start=time.time() if wall is None else wall,
                      label=reason or None)  # fmt: skip
        event.wall_end = time.time()
        yield from self._emit("start", event)
        yield from self._emit("end", event)

    def close(self) -> Iterator[WindowResult | EventUpdate]:
        """The stream ended (or was stopped): score the last partial window and close open events."""
        yield from self._run(self.windower.flush())
        yield from self._close_all()
        yield from self._finish(np.inf)

    # --- scoring ----------------------------------------------------------------------------------------------
    def _run(self, windows: list[Window]) -> Iterator[WindowResult | EventUpdate]:
        if not windows:
            return
        for window, row, seconds in self._score(windows):
            result = WindowResult(window.start, window.end, window.wall, len(window.particles.t),
                                  _grid_size(window.particles), row, seconds)  # fmt: skip
            yield from self._detect(result)
            result.busy = any(e is not None for e in self.open)
            self.results.add(result, self.windower.stride)
            yield result

    def _score(self, windows: list[Window]) -> list[tuple[Window, np.ndarray, float]]:
        """Score a batch; a batch that fails is retried window by window, and a window that fails is logged and
        skipped (NaN scores)."""
        began = time.perf_counter()
        try:
            rows = self._rows(windows)
        except Exception as exc:  # noqa: BLE001 - one bad window must not stop a camera
            if len(windows) == 1:
                w = windows[0]
                log.warning("window %.2f-%.2f s skipped: %s", w.start, w.end, exc)
                return []
            return [r for w in windows for r in self._score([w])]
        seconds = time.perf_counter() - began
        particles = np.array([max(1, len(w.particles.t)) for w in windows], dtype=np.float64)
        share = seconds * particles / particles.sum()
        return [(w, rows[i], float(share[i])) for i, w in enumerate(windows)]

    def _rows(self, windows: list[Window]) -> np.ndarray:
        clips = [w.particles for w in windows]
        parts = []
        if self.score_fn is not None:
            parts.append(np.asarray(self.score_fn(clips), dtype=np.float64).reshape(len(clips), -1))
        if self.calibration is not None:
            parts.append(self._anomaly(windows)[:, None])
        return np.concatenate(parts, axis=1)  # (n, K)

    def _anomaly(self, windows: list[Window]) -> np.ndarray:
        """(n,) anomaly scores; NaN for windows spent calibrating (the last of them fits the scorer)."""
        cal = self.calibration
        scores = np.full(len(windows), np.nan)
        if cal.limit is None:
            cal.first = windows[0].start if cal.first is None else cal.first
            for i, w in enumerate(windows):
                if w.end <= cal.first + cal.seconds or not cal.clips:
                    cal.clips.append(w.particles)
                    continue
                self._calibrated(cal.fit(cal.clips))
                scores[i:] = np.asarray(cal.scorer.score([x.particles for x in windows[i:]]), dtype=np.float64)
                break
            return scores
        return np.asarray(cal.scorer.score([w.particles for w in windows]), dtype=np.float64)

    def _calibrated(self, limit: float) -> None:
        log.debug("anomaly threshold %.6g", limit)
        for d, h in zip(self.detectors, self.hysteresis, strict=True):
            if d.kind == "anomaly":
                d.threshold = h.threshold = limit

    # --- events -----------------------------------------------------------------------------------------------
    def _detect(self, result: WindowResult) -> Iterator[EventUpdate]:
        for i, (d, h) in enumerate(zip(self.detectors, self.hysteresis, strict=True)):
            score = float(result.scores[d.column])
            change = h.update(result.start, result.end, score)
            if change == "start":
                event = Event(kind=d.kind, label=d.label, start=h.start, wall_start=result.wall, score=score,
                              threshold=d.threshold)  # fmt: skip
                event.thumbnail = self.recorder.thumbnail(event, (result.start + result.end) / 2)
                self.open[i] = event
                yield from self._emit("start", event)
            elif self.open[i] is not None:
                self.open[i].score = max(self.open[i].score, score) if not np.isnan(score) else self.open[i].score
                if change == "end":
                    yield from self._end(i)

    def _end(self, i: int) -> Iterator[EventUpdate]:
        """Close detector i's event; it is told (``end``) once its post-roll has arrived (`_finish`)."""
        event, self.open[i] = self.open[i], None
        event.end, event.wall_end = self.hysteresis[i].end, time.time()
        self.closing.append(event)
        return iter(())

    def _finish(self, now: float) -> Iterator[EventUpdate]:
        """Write the clips of closed events whose post-roll ends by `now` seconds, and tell their end."""
        due = [e for e in self.closing if e.end + self.recorder.post_roll <= now]
        for event in due:
            self.closing.remove(event)
            event.clip = self.recorder.clip(event)
            yield from self._emit("end", event)

    def _close_all(self) -> Iterator[EventUpdate]:
        for i, h in enumerate(self.hysteresis):
            if h.close() and self.open[i] is not None:
                yield from self._end(i)

    def _emit(self, phase: str, event: Event) -> Iterator[EventUpdate]:
        if self.store is not None:
            (self.store.insert if phase == "start" else self.store.update)(event)
        if phase == "start":
            self.events.append(event)
        update = EventUpdate(phase, event)
        if self.on_event is not None:
            self.on_event(update)
        yield update

    # --- summary ----------------------------------------------------------------------------------------------
    def summary(self, stream_seconds: float | None = None) -> dict:
        """windows, events, real-time factor, mean particles kept, and cost per stream minute idle and busy."""
        elapsed = time.perf_counter() - self.started
        return self.results.summary(len(self.events), elapsed, stream_seconds)


def _grid_size(p: Particles) -> int:
    return int(np.prod(p.grid)) if p.grid is not None else len(p.t)


def model_scorer(loaded, *, device: torch.device | str = "cpu") -> Scorer:
    """Scores of a checkpoint that predicts: its task's forward on the packed windows, then its postprocess (a
    classifier's class probabilities), (n, K)."""
    from tubelet.particles import pack
    from tubelet.tasks.base import task_of

    task = task_of(loaded)
    model = loaded.model.to(device).eval()

    def score(clips: list[Particles]) -> np.ndarray:
        with torch.inference_mode():
            out = task.forward(model, pack(clips).to(device))
        return task.postprocess(out.float().reshape(len(clips), -1).cpu().numpy())

    return score
