"""Watching a stream: sources, windows and scores (`StreamSession`), events, the database and webhooks."""

from tubelet.stream.events import EVENT_KEYS, Event, EventStore, Hysteresis
from tubelet.stream.session import Calibration, Detector, EventUpdate, StreamSession, WindowResult, model_scorer
from tubelet.stream.source import Frames, Gap, Source

__all__ = [
    "EVENT_KEYS", "Calibration", "Detector", "Event", "EventStore", "EventUpdate", "Frames", "Gap", "Hysteresis",
    "Source", "StreamSession", "WindowResult", "model_scorer",
]  # fmt: skip
