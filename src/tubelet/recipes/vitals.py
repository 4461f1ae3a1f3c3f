"""Heart and breathing rate from video: `tubelet vitals FILE_OR_SOURCE [--method pos|chrom|green] [--out DIR]`.

setup (the source: a file, a folder, a stream or a camera, read incrementally by `tubelet.stream.source`; the method;
the alerts) -> loop (each frame measured into a `Tracer`, which keeps per-frame numbers only; each window read as
soon as the trace reaches its end; range alerts through watch's `Hysteresis`) -> outputs (the readings; with
``--out``: a plot of the rates, their quality and their spectra over seconds, the measured regions drawn on a frame,
and a self-contained report.html). Not a medical device.

``--method model --checkpoint C`` reads heart and breathing rate with a learned `vitals` checkpoint (``tubelet finetune
--task vitals``, `tubelet.tasks.vitals`) from the same trace, per window; each quality is the model's own confidence
in dB (the heart rate's lowered where POS's spectrum has little power at the model's rate, `learned_quality`),
refused below `tubelet.vitals.estimate.LEARNED_MIN_QUALITY_DB` (see `read_window`), and windows, outputs and alerts
stay as they are.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tubelet.errors import ConfigError
from tubelet.outputs import writable_dir
from tubelet.progress import bar
from tubelet.stream.events import Event, EventStore, Hysteresis
from tubelet.stream.source import Frames, Gap, Source, source_kind, stop_on_signals
from tubelet.vitals import breathing
from tubelet.vitals.estimate import Reading, Windows, read_window
from tubelet.vitals.pulse import METHODS
from tubelet.vitals.traces import Tracer

log = logging.getLogger("tubelet.vitals")

DISCLAIMER = "tubelet is not a medical device: these are estimates for research and demonstration, not for diagnosis."
BPM_GRID = np.arange(42.0, 240.5, 1.0)  # spectra are kept per window on this grid, for the spectrogram plot
BREATH_GRID = np.arange(6.0, 42.5, 0.5)


def parse_range(text: str | None, flag: str) -> tuple[float, float] | None:
    """``MIN:MAX`` (either side may be empty) -> (min, max) per minute; None when not given."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        lo = float(low) if low.strip() else -np.inf
        hi = float(high) if high.strip() else np.inf
    except ValueError:
        lo = hi = None
    if not sep or lo is None or hi is None or lo >= hi:
        raise ConfigError(f"{flag} {text!r}: expected MIN:MAX per minute with MIN < MAX, e.g. 50:120 (or :120, 50:)")
    return lo, hi


class RangeAlert:
    """An event while a rate stays outside [`low`, `high`] for at least `seconds`.

    The score fed to watch's `Hysteresis` is how long the rate has been out of range, up to each window's end (a
    window counts for its stride); the event opens when that reaches `seconds` and closes at the first window back
    in range. A window without a confident rate breaks the run but does not close an open event.
    """

    def __init__(self, name: str, low: float, high: float, seconds: float, stride: float):
        self.name, self.low, self.high, self.stride = name, low, high, stride
        self.gate = Hysteresis(seconds, cooldown=0.0)
        self.since: float | None = None  # when the current out-of-range run began
        self.worst: float | None = None
        self.event: dict | None = None

    def update(self, reading: Reading) -> dict | None:
        """The event dict when one starts or ends at this reading, else None."""
        value = getattr(reading, self.name)
        if value is None:
            self.since = None
            return None
        outside = not self.low <= value <= self.high
        if outside:
            self.since = reading.end - self.stride if self.since is None else self.since
            far = value if self.worst is None or abs(value - self._edge(value)) > abs(self.worst - self._edge(
                self.worst)) else self.worst  # fmt: skip
            self.worst = far
        else:
            self.since = None
        score = reading.end - self.since if outside else 0.0
        phase = self.gate.update(reading.start, reading.end, score)
        if phase == "start":
            side = "above" if value > self.high else "below"
            limit = self.high if value > self.high else self.low
            self.event = {"kind": "vitals", "label": f"{self.name} {side} {limit:g}", "start": round(self.since, 3),
                          "end": None, "phase": "start", "value": round(value, 1)}  # fmt: skip
            return dict(self.event)
        if phase == "end" and self.event is not None:
            self.event.update(end=round(self.gate.end, 3), phase="end", value=round(self.worst, 1))
            done, self.event, self.worst = dict(self.event), None, None
            return done
        return None

    def close(self, last: float | None) -> dict | None:
        """End an open event when the source ends."""
        if self.event is None or not self.gate.close():
            return None
        end = self.gate.end if last is None else max(self.gate.end, last)
        self.event.update(end=round(end, 3), phase="end", value=round(self.worst, 1))
        done, self.event = dict(self.event), None
        return done

    def _edge(self, value: float) -> float:
        return self.high if value > self.high else self.low


def vitals(
    source: str,
    *,
    method: str = "pos",
    checkpoint: str | None = None,
    window_seconds: float = 10.0,
    stride_seconds: float = 1.0,
    out: str | None = None,
    alert_hr: str | None = None,
    alert_br: str | None = None,
    alert_seconds: float = 10.0,
    realtime: bool = False,
    reconnect_tries: int | None = None,
    emit: Callable[[dict], None] | None = None,
    stop: Callable[[], bool] | None = None,
    webhook: str | None = None,
) -> dict:
    """Read heart and breathing rate per window from `source`; returns the summary with every window's reading.

    `emit`, when given, receives each reading and each alert event as a dict the moment it exists (a live source's
    output); the summary holds them all as well. Reading ends with the source, when `stop` returns True, or at
    SIGINT/SIGTERM (a camera or a folder never ends by itself): the summary and the report are then still written.
    With `out` and alerts, each alert is also a row of ``out/events.sqlite`` (the database ``tubelet watch`` writes),
    and with `webhook` its start and end are POSTed as watch's are.
    """
    learned = None  # a learned heart and breathing rate reader
    if method == "model":
        if checkpoint is None:
            raise ConfigError("--method model needs --checkpoint C (a run of tubelet finetune --task vitals: RUN/best)")
        from tubelet.tasks.vitals import VitalsModel

        learned = VitalsModel(checkpoint).read
    elif checkpoint is not None:
        raise ConfigError(f"--checkpoint {checkpoint}: only --method model reads a checkpoint (got --method {method})")
    elif method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)} or model (with --checkpoint)")
    if window_seconds < 2.0:
        raise ConfigError(f"--window-seconds {window_seconds:g}: a window needs at least 2 s (two beats at 60 bpm)")
    if stride_seconds <= 0:
        raise ConfigError(f"--stride-seconds must be positive, got {stride_seconds:g}")
    if alert_seconds < 0:
        raise ConfigError(f"--alert-seconds must be 0 or more, got {alert_seconds:g}")
    alerts = []
    for name, text, flag in (
        ("heart_rate_bpm", alert_hr, "--alert-hr"),
        ("breathing_rate_bpm", alert_br, "--alert-br"),
    ):
        bounds = parse_range(text, flag)
        if bounds is not None:
            alerts.append(RangeAlert(name, *bounds, alert_seconds, stride_seconds))
    if webhook is not None and (out is None or not alerts):
        raise ConfigError(f"--webhook {webhook}: needs --out DIR (its events.sqlite) and --alert-hr or --alert-br")
    kind = source_kind(source)
    out_dir = writable_dir(out, "--out") if out is not None else None
    total = _duration(source) if kind == "file" else None
    if total is not None and total + 1e-6 < window_seconds:
        raise ConfigError(
            f"{source}: {total:.2f} s of video is shorter than one window ({window_seconds:g} s); "
            f"give a longer video or a shorter --window-seconds"
        )

    began = time.perf_counter()
    live = kind in ("network", "device", "folder")
    keep = max(window_seconds, breathing.MIN_SECONDS) + stride_seconds + 5.0
    # Only the seconds the next windows read are kept, file or camera: memory and the work per window stay flat over
    # an hour-long video (the plot and report need the readings, not the trace).
    tracer = Tracer(keep_seconds=keep)
    windows = Windows(window_seconds, stride_seconds)
    readings: list[Reading] = []
    events: list[dict] = []
    spectra: list[tuple[np.ndarray, np.ndarray]] = []  # per window: pulse and breathing power on the fixed grids
    best = None  # (quality, detail) of the clearest pulse window, for the plot
    first = last = None
    frames_read = 0
    sink = AlertSink(Path(out_dir) / "events.sqlite", source, webhook) if out_dir is not None and alerts else None
    halt = threading.Event()
    restore = stop_on_signals(halt, what="finishing the readings and the report") if stop is None else lambda: None
    reader = Source(source, realtime=realtime, reconnect_tries=reconnect_tries, chunk_seconds=1.0,
                    stop=stop or halt.is_set)  # fmt: skip
    try:
        with bar(total=round(total, 1) if total else None, desc="vitals", unit="s", disable=live) as progress:
            for item in reader:
                if isinstance(item, Gap):  # a dropped stream: start over after it rather than read across the hole
                    log.warning("%s: no frames from %.2f to %.2f s (%s); windows restart", source, item.start, item.end,
                                item.reason)  # fmt: skip
                    tracer, windows = Tracer(keep_seconds=tracer.keep_seconds), Windows(window_seconds, stride_seconds)
                    continue
                assert isinstance(item, Frames)
                for frame, t in zip(item.frames, item.timestamps):
                    tracer.add(frame, float(t))
                frames_read += len(item.frames)
                first = float(item.timestamps[0]) if first is None else first
                progress.update(round(float(item.timestamps[-1]) - (last if last is not None else first), 3))
                last = float(item.timestamps[-1])
                trace = tracer.trace()
                period = float(np.median(np.diff(trace.times))) if len(trace) > 1 else 0.0
                for start, end in windows.due(float(trace.times[0]), last, period):
                    reading, detail = read_window(trace, start, end, "pos" if learned else method, reader=learned)
                    readings.append(reading)
                    spectra.append(_on_grids(detail))
                    if detail.heart is not None and (best is None or detail.heart.quality_db > best[0]):
                        best = (detail.heart.quality_db, detail)
                    if emit is not None:
                        emit(reading.to_json())
                    for alert in alerts:
                        _announce(alert.update(reading), events, emit, sink)
    finally:
        restore()
        for alert in alerts:
            _announce(alert.close(last), events, emit, sink)
        delivery = sink.close() if sink is not None else None
    if frames_read == 0:
        raise ConfigError(f"{source}: no frames could be read")
    if tracer.first is None and not any(r.quality is not None for r in readings):
        raise ConfigError(
            f"{source}: no face or skin region found in any frame (vitals needs a face or bare skin in view, lit "
            f"well enough to show its colour)"
        )
    if not readings:
        seconds = (last - first) if last is not None else 0.0
        raise ConfigError(
            f"{source}: {seconds:.2f} s of video is shorter than one window ({window_seconds:g} s); give a longer "
            f"video or a shorter --window-seconds"
        )
    seconds = time.perf_counter() - began
    stream_seconds = float(last - first) if last is not None else 0.0
    rows = [r.to_json() for r in readings]
    hrs = [r["heart_rate_bpm"] for r in rows if r["heart_rate_bpm"] is not None]
    brs = [r["breathing_rate_bpm"] for r in rows if r["breathing_rate_bpm"] is not None]
    summary = {
        "source": source, "method": method, "window_seconds": window_seconds, "stride_seconds": stride_seconds,
        "stream_seconds": round(stream_seconds, 3), "frames": frames_read, "seconds": round(seconds, 3),
        "realtime_factor": round(stream_seconds / max(seconds, 1e-9), 2),
        "heart_rate_bpm": round(float(np.median(hrs)), 1) if hrs else None,
        "breathing_rate_bpm": round(float(np.median(brs)), 1) if brs else None,
        "confident_windows": len(hrs), "windows": rows, "events": events, "note": DISCLAIMER,
    }  # fmt: skip
    if sink is not None:
        summary["database"] = str(sink.store.path)
    if delivery is not None:
        summary["webhook"] = delivery
    if out_dir is not None:
        summary["outputs"] = _write_outputs(Path(out_dir), summary, tracer, spectra, best)
    return summary


class AlertSink:
    """Vitals alerts as rows of watch's events database (`EventStore`, kind ``vitals``), and POSTed by its
    `WebhookSender` when a webhook is given: a row is inserted when an alert starts and updated when it ends."""

    def __init__(self, path: Path, source: str, webhook: str | None):
        self.store = EventStore(path, source=source, webhook=webhook is not None)
        self.sender = None
        if webhook is not None:
            from tubelet.stream.webhook import WebhookSender

            self.sender = WebhookSender(webhook, self.store.path).start()
        self.open: dict[str, Event] = {}  # by label, while the alert lasts

    def __call__(self, alert: dict) -> None:
        if alert["phase"] == "start":
            limit = float(alert["label"].rsplit(" ", 1)[1])
            event = Event("vitals", alert["start"], time.time(), label=alert["label"], score=alert["value"],
                          threshold=limit)  # fmt: skip
            self.store.insert(event)
            self.open[alert["label"]] = event
        else:
            event = self.open.pop(alert["label"], None)
            if event is None:
                return
            event.end, event.wall_end, event.score = alert["end"], time.time(), alert["value"]
            self.store.update(event)
        if self.sender is not None:
            self.sender.send(event.id, alert["phase"])

    def close(self) -> dict | None:
        """Deliver what is queued (a few seconds at most) and close the database; the webhook's counts."""
        left = self.sender.close() if self.sender is not None else None
        self.store.close()
        return None if self.sender is None else {"delivered": self.sender.delivered, "undelivered": left}


def _announce(event: dict | None, events: list[dict], emit, sink: AlertSink | None = None) -> None:
    """Hand an event's start and end to `emit` (and the database) as they happen; keep the finished ones."""
    if event is None:
        return
    if sink is not None:
        sink(event)
    if event["phase"] == "end":
        events.append({k: v for k, v in event.items() if k != "phase"})
    if emit is not None:
        emit(event)


def _duration(path: str) -> float:
    from tubelet.video2video.windows import frame_times

    times = frame_times(path)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return float(times[-1] - times[0]) + step if len(times) else 0.0


def _on_grids(detail) -> tuple[np.ndarray, np.ndarray]:
    """A window's pulse and breathing power, each scaled to its maximum, on `BPM_GRID` and `BREATH_GRID`."""
    out = []
    for rate, grid in ((detail.heart, BPM_GRID), (detail.breathing, BREATH_GRID)):
        if rate is None or not len(rate.spectrum.power):
            out.append(np.full(len(grid), np.nan))
            continue
        power = np.interp(grid, 60.0 * rate.spectrum.freqs, rate.spectrum.power, left=np.nan, right=np.nan)
        out.append(power / max(float(np.nanmax(power)), 1e-30))
    return out[0], out[1]


def _write_outputs(out: Path, summary: dict, tracer: Tracer, spectra, best) -> dict:
    """signals.png, regions.png, vitals.json and report.html in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"plot": out / "signals.png", "regions": out / "regions.png", "json": out / "vitals.json",
             "report": out / "report.html"}  # fmt: skip
    _plot(paths["plot"], summary, spectra, best)
    from PIL import Image

    from tubelet.vitals.regions import draw

    if tracer.first_frame is not None:
        Image.fromarray(draw(tracer.first_frame, tracer.first)).save(paths["regions"])
    else:
        paths.pop("regions")
    written = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps({**summary, "outputs": written}, indent=1))
    paths["report"].write_text(_report(summary, paths))
    return written


def _plot(path: Path, summary: dict, spectra, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["windows"]
    mid = np.array([(r["start"] + r["end"]) / 2 for r in rows])

    def series(key):
        return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)

    fig, axes = plt.subplots(3, 2, figsize=(12, 9), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(mid, series("heart_rate_bpm"), "o-", ms=3, color="tab:red", label="heart rate")
    ax.set(xlabel="seconds (window centre)", ylabel="beats per minute", title=f"heart rate ({summary['method']})")
    ax2 = axes[0, 1]
    ax2.plot(mid, series("breathing_rate_bpm"), "o-", ms=3, color="tab:blue")
    ax2.set(xlabel="seconds (window centre)", ylabel="breaths per minute", title="breathing rate")
    ax3 = axes[1, 0]
    ax3.plot(mid, series("quality"), "o-", ms=3, color="tab:red", label="pulse")
    ax3.plot(mid, series("breathing_quality"), "o-", ms=3, color="tab:blue", label="breathing")
    from tubelet.vitals.estimate import LEARNED_MIN_QUALITY_DB
    from tubelet.vitals.pulse import MIN_QUALITY_DB

    learned = summary["method"] == "model"  # a learned quality (`learned_quality`) has its own threshold
    ax3.axhline(LEARNED_MIN_QUALITY_DB if learned else MIN_QUALITY_DB, color="tab:red", ls="--", lw=0.8,
                label="pulse threshold")  # fmt: skip
    ax3.axhline(LEARNED_MIN_QUALITY_DB if learned else breathing.MIN_QUALITY_DB, color="tab:blue", ls=":", lw=0.8,
                label="breathing threshold")  # fmt: skip
    ax3.set(xlabel="seconds (window centre)", ylabel="SNR of the peak, dB", title="signal quality")
    ax3.legend(fontsize=8)
    if spectra:
        pulse = np.stack([s[0] for s in spectra], axis=1)  # (bpm, windows)
        breath = np.stack([s[1] for s in spectra], axis=1)
        extent = (mid[0], mid[-1] if len(mid) > 1 else mid[0] + 1)
        axes[1, 1].imshow(pulse, aspect="auto", origin="lower", cmap="magma",
                          extent=(*extent, BPM_GRID[0], BPM_GRID[-1]))  # fmt: skip
        axes[1, 1].plot(mid, series("heart_rate_bpm"), "c.", ms=3)
        axes[1, 1].set(xlabel="seconds (window centre)", ylabel="bpm", title="pulse spectrum per window")
        axes[2, 1].imshow(breath, aspect="auto", origin="lower", cmap="viridis",
                          extent=(*extent, BREATH_GRID[0], BREATH_GRID[-1]))  # fmt: skip
        axes[2, 1].plot(mid, series("breathing_rate_bpm"), "w.", ms=3)
        axes[2, 1].set(xlabel="seconds (window centre)", ylabel="breaths/min", title="breathing spectrum per window")
    ax4 = axes[2, 0]
    if best is not None:
        detail = best[1]
        ax4.plot(detail.pulse_times, detail.pulse / max(np.abs(detail.pulse).max(), 1e-12), color="tab:red", lw=0.8,
                 label=f"pulse ({detail.heart.bpm:.0f} bpm, {detail.heart.quality_db:.1f} dB)")  # fmt: skip
        if detail.breath is not None:
            ax4.plot(detail.breath_times, detail.breath / max(np.abs(detail.breath).max(), 1e-12) - 2.2,
                     color="tab:blue", lw=0.8, label="chest motion")  # fmt: skip
        ax4.legend(fontsize=8, loc="upper right")
    ax4.set(xlabel="seconds", yticks=[], title="signals of the clearest pulse window")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _report(summary: dict, paths: dict) -> str:
    """A self-contained HTML page: the summary, the pictures inlined as base64, the table of windows."""

    def image(key):
        if key not in paths or not Path(paths[key]).exists():
            return ""
        data = base64.b64encode(Path(paths[key]).read_bytes()).decode()
        return f'<img alt="{key}" src="data:image/png;base64,{data}" style="max-width:100%">'

    def cell(value):
        return "&mdash;" if value is None else html.escape(str(value))

    keys = ("start", "end", "heart_rate_bpm", "breathing_rate_bpm", "quality", "breathing_quality", "reason")
    rows = "\n".join("<tr>" + "".join(f"<td>{cell(r[k])}</td>" for k in keys) + "</tr>" for r in summary["windows"])
    events = "".join(f"<li>{html.escape(json.dumps(e))}</li>" for e in summary["events"]) or "<li>none</li>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tubelet vitals: {html.escape(summary["source"])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;text-align:right}}
.warn{{background:#fff3cd;padding:8px}}</style></head><body>
<h1>Vital signs from video</h1>
<p class="warn">{html.escape(DISCLAIMER)}</p>
<p>{html.escape(summary["source"])}: method <b>{summary["method"]}</b>, windows of {summary["window_seconds"]:g} s
every {summary["stride_seconds"]:g} s over {summary["stream_seconds"]:.1f} s; median heart rate
<b>{cell(summary["heart_rate_bpm"])}</b> bpm, median breathing rate <b>{cell(summary["breathing_rate_bpm"])}</b>
per minute; {summary["confident_windows"]} of {len(summary["windows"])} windows with a confident heart rate;
{summary["realtime_factor"]}x real time.</p>
<h2>Signals and spectra</h2>{image("plot")}
<h2>Where it measured</h2><p>Skin (green tint, green box) and the chest box (blue) on the first frame with skin.</p>
{image("regions")}
<h2>Alerts</h2><ul>{events}</ul>
<h2>Windows</h2><table><tr>{"".join(f"<th>{k}</th>" for k in keys)}</tr>
{rows}</table></body></html>
"""
