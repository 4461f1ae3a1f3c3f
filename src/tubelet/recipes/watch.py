"""Watch a camera: `tubelet watch SOURCE --checkpoint C --out DIR`.

setup (checkpoint, detectors, database, webhook) -> loop (source frames into a `StreamSession`, events printed as
they end) -> summary. SIGINT and SIGTERM stop the source; open events are then closed, their clips written and the
database closed cleanly before the summary.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from tubelet.data.pipeline import window_and_stride
from tubelet.errors import ConfigError
from tubelet.models import load
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.stream.events import EventStore
from tubelet.stream.session import Calibration, Detector, EventUpdate, StreamSession, Windower, model_scorer
from tubelet.stream.source import Frames, Gap, Source, source_kind, stop_on_signals
from tubelet.tasks.base import Reads, task_of

log = logging.getLogger("tubelet.watch")

DEFAULT_MIN_SCORE = 0.5
# A file read faster than real time is fed in chunks of this many strides, so the model scores windows in batches; a
# live source is fed every stride (an event is not held back for a batch to fill).
BATCH_WINDOWS = 8


def parse_alerts(alerts: list[str], labels: list[str] | None, source: str) -> list[Detector]:
    """``LABEL[:MIN_SCORE]`` -> a detector on that label's probability column."""
    if alerts and not labels:
        raise ConfigError(f"--alert: {source} has no labels (a classifier checkpoint is needed)")
    detectors = []
    for text in alerts:
        label, _, score = text.rpartition(":") if ":" in text else (text, "", "")
        try:
            min_score = float(score) if score else DEFAULT_MIN_SCORE
        except ValueError:
            label, min_score = text, DEFAULT_MIN_SCORE  # a label with a colon in it
        if label not in labels:
            raise ConfigError(f"--alert {text}: {label!r} is not a label of {source} (labels: {', '.join(labels)})")
        if not 0.0 <= min_score <= 1.0:
            raise ConfigError(f"--alert {text}: MIN_SCORE must be between 0 and 1, got {min_score}")
        detectors.append(Detector("label", labels.index(label), min_score, label))
    return detectors


def watch(
    source: str,
    *,
    checkpoint: str,
    out: str,
    alerts: list[str] | None = None,
    anomaly: bool = False,
    calibrate_seconds: float = 30.0,
    calibration: str | None = None,
    percentile: float = 99.0,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    cooldown_seconds: float = 2.0,
    pre_roll: float = 2.0,
    post_roll: float = 2.0,
    webhook: str | None = None,
    realtime: bool = False,
    reconnect_tries: int | None = None,
    device: str = "auto",
    emit: Callable[[dict], None] = lambda d: print(json.dumps(d), flush=True),
    say: Callable[[str], None] = lambda s: print(s, flush=True),
    json_lines: bool = False,
) -> dict:
    """Watch `source` until it ends or a signal stops it; returns the summary.

    Each event is emitted (``emit``) as one JSON object when it ends (with ``json_lines``), and said in words when it
    starts and ends otherwise.
    """
    alerts = alerts or []
    if not alerts and not anomaly:
        raise ConfigError("nothing to watch for: give --alert LABEL[:MIN_SCORE] and/or --anomaly")
    kind = source_kind(source)  # a missing file is an error before the model loads
    out_dir = Path(writable_dir(out, "--out"))
    loaded = load(checkpoint)
    if Reads.of(loaded).modalities != ("video",):
        raise ConfigError(f"--checkpoint {checkpoint}: watch reads video only; this model reads {Reads.of(loaded)}")
    pre = loaded.preprocessing
    if pre is None:
        raise ConfigError(f"--checkpoint {checkpoint}: no preprocessing saved with it (a trained checkpoint is needed)")
    window, stride = window_and_stride(pre, window_seconds, stride_seconds)
    detectors = parse_alerts(alerts, loaded.labels, checkpoint)
    device_ = resolve_device(device)
    score = None
    if alerts:
        task_of(loaded).check_predict(loaded)
        score = model_scorer(loaded, device=device_)
    cal = None
    if anomaly:
        cal = _calibration(loaded, device_, calibrate_seconds, calibration, percentile, pre, window, stride)
        detectors.append(Detector("anomaly", len(loaded.labels or []) if alerts else 0, None, strict=True))

    stop = threading.Event()
    restore = stop_on_signals(stop, what="closing open events and the database")
    store = EventStore(out_dir / "events.sqlite", source=source, webhook=webhook is not None)
    sender = None
    if webhook is not None:
        from tubelet.stream.webhook import WebhookSender

        sender = WebhookSender(webhook, store.path).start()

    def on_event(update: EventUpdate) -> None:
        event = update.event
        if sender is not None:
            sender.send(event.id, update.phase)
        if update.phase == "end":
            if json_lines:
                emit(event.to_json())
            else:
                say(_words(event.to_json()))
        elif not json_lines and event.kind != "gap":
            what = f"{event.kind} {event.label}" if event.label else event.kind
            say(f"event start {what} at {event.start:.2f} s (score {event.score:.3f})")

    session = StreamSession(
        score, pre=pre, detectors=detectors, window=window, stride=stride, cooldown=cooldown_seconds,
        calibration=cal, store=store, out=out_dir, pre_roll=pre_roll, post_roll=post_roll, on_event=on_event,
    )  # fmt: skip
    if cal is not None and cal.limit is not None:
        _announce(cal, emit, say, json_lines)
    reader = Source(
        source, size=pre.output_size, fps=pre.sample_fps, realtime=realtime, reconnect_tries=reconnect_tries,
        stop=stop.is_set, chunk_seconds=stride if kind in ("network", "device") else BATCH_WINDOWS * stride,
    )  # fmt: skip
    log.info("watching %s (%s): windows of %g s every %g s", source, kind, window, stride)
    first = last = None
    announced = cal is None or cal.limit is not None
    try:
        for item in reader:
            if isinstance(item, Gap):
                for _ in session.gap(item.start, item.end, wall=item.wall, reason=item.reason):
                    pass
                continue
            assert isinstance(item, Frames)
            first = item.timestamps[0] if first is None else first
            last = item.timestamps[-1]
            for _ in session.feed(item.frames, item.timestamps, wall=item.wall):
                if not announced and cal.limit is not None:
                    announced = True
                    _announce(cal, emit, say, json_lines)
    finally:
        for _ in session.close():
            pass
        left = sender.close() if sender is not None else 0
        store.close()
        restore()
    summary = session.summary(float(last - first) if first is not None else 0.0)
    summary.update(
        corrupt_packets=reader.stats.corrupt_packets, reconnects=reader.stats.reconnects,
        gaps=sum(e.kind == "gap" for e in session.events), database=str(store.path),
    )  # fmt: skip
    if sender is not None:
        summary["webhook"] = {"delivered": sender.delivered, "undelivered": left}
    if cal is not None:
        summary["anomaly_threshold"] = cal.limit
    return summary


def _calibration(loaded, device, seconds, path, percentile, pre, window, stride) -> Calibration:
    try:
        from tubelet.anomaly import AnomalyScorer, threshold
    except ImportError as exc:
        raise ConfigError("--anomaly: the anomaly scorer (tubelet.anomaly) is not in this build") from exc
    if seconds <= 0:
        raise ConfigError(f"--calibrate-seconds must be positive, got {seconds}")
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"--percentile must be in (0, 100], got {percentile}")
    try:
        scorer = AnomalyScorer.for_checkpoint(loaded, device=device)
    except ValueError as exc:
        raise ConfigError(f"--anomaly: {exc}") from exc
    cal = Calibration(scorer, seconds, lambda scores: threshold(scores, percentile=percentile))
    if path is not None:
        cal.clips = calibration_clips(path, pre, window, stride)
        if not cal.clips:
            raise ConfigError(f"--calibration {path}: no window could be cut from it (shorter than one window?)")
    return cal


def calibration_clips(path: str, pre, window: float, stride: float) -> list:
    """Every window's particles of a calibration video, cut exactly as the stream's are."""
    if source_kind(path) != "file":
        raise ConfigError(f"--calibration {path}: not a video file")
    windower = Windower(pre, window, stride)
    clips = []
    for item in Source(path, size=pre.output_size, fps=pre.sample_fps, chunk_seconds=10.0):
        if isinstance(item, Frames):
            clips += [w.particles for w in windower.push(item.frames, item.timestamps, item.wall)[2]]
    return clips + [w.particles for w in windower.flush()]


def _announce(cal: Calibration, emit, say, json_lines: bool) -> None:
    if json_lines:
        emit({"anomaly_threshold": cal.limit})
    else:
        say(f"anomaly threshold {cal.limit:.6g} (calibration windows define normal)")


def _words(event: dict) -> str:
    what = event["kind"] if event["label"] is None else f"{event['kind']} {event['label']}"
    score = f" score {event['score']:.3f}" if event["score"] is not None else ""
    clip = f" -> {event['clip']}" if event["clip"] else ""
    return f"event {what} {event['start']:.2f}-{event['end']:.2f} s{score}{clip}"
