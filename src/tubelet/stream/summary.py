"""What a watched stream cost: windows, real-time factor, particles kept, and processing per stream minute for idle
and busy stretches (an event open or not), as running totals: nothing per window is kept, so memory stays flat."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tubelet.stream.session import WindowResult


class Tally:
    """Running totals of window results (nothing per window is kept: memory stays flat)."""

    def __init__(self):
        self.windows = 0
        self.kept = 0
        self.total = 0
        self.first: float | None = None
        self.last = 0.0
        self.by = {"idle": [0, 0.0, 0.0, 0], "busy": [0, 0.0, 0.0, 0]}  # windows, seconds, stream s, particles

    def add(self, r: WindowResult, stride: float) -> None:
        self.windows += 1
        self.kept += r.kept
        self.total += r.total
        self.first = r.start if self.first is None else self.first
        self.last = max(self.last, r.end)
        part = self.by["busy" if r.busy else "idle"]
        part[0] += 1
        part[1] += r.seconds
        part[2] += min(stride, r.end - r.start)  # each window stands for one stride of new stream
        part[3] += r.kept

    def summary(self, events: int, elapsed: float, stream_seconds: float | None) -> dict:
        stream = stream_seconds if stream_seconds is not None else (self.last - (self.first or 0.0))
        cost = {}
        for name, (n, seconds, span, kept) in self.by.items():
            minutes = span / 60.0
            cost[name] = {
                "windows": n,
                "stream_seconds": round(span, 3),
                "seconds_per_minute": round(seconds / minutes, 4) if minutes else None,
                "particles_per_minute": round(kept / minutes, 1) if minutes else None,
            }
        return {
            "windows": self.windows,
            "events": events,
            "stream_seconds": round(stream, 3),
            "processing_seconds": round(elapsed, 3),
            "realtime_factor": round(stream / elapsed, 3) if elapsed > 0 else None,
            "mean_particles": round(self.kept / self.windows, 1) if self.windows else 0.0,
            "kept_fraction": round(self.kept / self.total, 4) if self.total else None,
            "cost_per_minute": cost,
        }
