"""Sources `tubelet watch` reads with PyAV: a file, a folder whose files are read as they appear, a network stream
(``rtsp://``, ``http(s)://``, ...) or a capture device (``/dev/video0``, ``v4l2:/dev/video0``, ``avfoundation:0``).

A source yields `Frames` (decoded, decimated to the sample rate, resized as the checkpoint says, with stream times in
seconds and the wall-clock time beside them) and `Gap`s. Times never go back: a reconnected stream, or the next file
of a folder, continues after the last frame. A corrupt packet is skipped; a network source or device that drops is
reopened with exponential backoff, and the seconds it was away become a `Gap`; a network source that is a recording
(its container has a duration) ends when it has been read to its end.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tubelet.errors import ConfigError, VideoError
from tubelet.io.container import _AV_ERRORS, _reason

log = logging.getLogger("tubelet.watch")

NETWORK = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DEVICE_FORMATS = ("v4l2", "avfoundation", "dshow", "gdigrab", "x11grab")
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv"}


@dataclass
class Frames:
    frames: list[np.ndarray]  # (H, W, 3) uint8 each, at the checkpoint's size
    timestamps: np.ndarray  # (T,) stream seconds
    wall: float  # Unix time the last of them arrived


@dataclass
class Gap:
    start: float  # stream seconds of the last frame before the drop
    end: float  # stream seconds of the first frame after it
    wall: float  # Unix time the drop was noticed
    reason: str


@dataclass
class Stats:
    corrupt_packets: int = 0
    reconnects: int = 0
    files: int = 0


class Source:
    """Frames of SOURCE, in chunks, until it ends (a file, a network source that cannot be reopened).

    Args:
        spec: the SOURCE argument.
        size: (height, width) -> (H, W) frames are resized to (``Preprocessing.output_size``).
        fps: decimate to this rate (``sample_fps``); None keeps every frame.
        realtime: pace a file at its own speed, as a camera delivers it.
        chunk_seconds: stream seconds per yielded chunk (a chunk per frame in real time).
        reconnect_tries: reopen attempts in a row before a dropped network source counts as ended (None: forever).
        backoff: first wait before reopening, doubled each failed try up to `max_backoff` seconds.
        poll_seconds: how often a folder is listed for new files.
        stop: returns True when reading should stop (a signal arrived).
    """

    def __init__(
        self,
        spec: str,
        *,
        size: Callable[[int, int], tuple[int, int]] | None = None,
        fps: float | None = None,
        realtime: bool = False,
        chunk_seconds: float = 1.0,
        reconnect_tries: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        poll_seconds: float = 1.0,
        open_timeout: float = 10.0,
        stop: Callable[[], bool] = lambda: False,
    ):
        self.spec, self.size, self.fps, self.realtime = spec, size, fps, realtime
        self.chunk_seconds, self.reconnect_tries = chunk_seconds, reconnect_tries
        self.backoff, self.max_backoff, self.poll_seconds = backoff, max_backoff, poll_seconds
        self.open_timeout, self.stop = open_timeout, stop
        self.stats = Stats()
        self.kind = source_kind(spec)
        self._offset = 0.0  # added to a container's times so that the timeline never goes back
        self._last: float | None = None  # stream seconds of the last frame given out
        self._last_wall: float | None = None  # and the Unix time it was read
        self._next_keep = -np.inf
        self._finite = False  # the container being read has a duration (a recording, not a live stream)

    def __iter__(self) -> Iterator[Frames | Gap]:
        if self.kind == "file":
            yield from self._container(self.spec)
        elif self.kind == "folder":
            yield from self._folder(Path(self.spec))
        else:
            yield from self._live()

    # --- kinds ------------------------------------------------------------------------------------------------
    def _live(self) -> Iterator[Frames | Gap]:
        tries, wait, dropped = 0, self.backoff, None
        while not self.stop():
            try:
                for item in self._container(self.spec, live=True):
                    if dropped is not None and isinstance(item, Frames):
                        yield Gap(dropped[0], float(item.timestamps[0]), dropped[1], dropped[2])
                        dropped, tries, wait = None, 0, self.backoff
                    yield item
                if self._finite:  # a recording served over the network (it has a duration) that was read to its end
                    return
                reason = "stream ended"
            except VideoError as exc:
                reason = exc.reason
            if self.stop():
                return
            tries += 1
            if dropped is None:
                dropped = (self._last if self._last is not None else 0.0, time.time(), reason)
            if self.reconnect_tries is not None and tries > self.reconnect_tries:
                log.warning("%s: gave up after %d tries to reconnect (%s)", self.spec, tries - 1, reason)
                return
            log.warning("%s: %s; reconnecting in %.1f s", self.spec, reason, wait)
            self.stats.reconnects += 1
            _sleep(wait, self.stop)
            wait = min(wait * 2, self.max_backoff)

    def _folder(self, folder: Path) -> Iterator[Frames | Gap]:
        """Every video of the folder in name order, then each new one once its size stops changing."""
        if not folder.is_dir():
            raise ConfigError(f"SOURCE {folder}: not a folder")
        done: set[Path] = set()
        sizes: dict[Path, int] = {}
        while not self.stop():
            fresh = []
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p not in done):
                size = path.stat().st_size
                if sizes.get(path) == size:  # unchanged since the last look: finished writing
                    fresh.append(path)
                sizes[path] = size
            for path in fresh:
                done.add(path)
                self.stats.files += 1
                try:
                    yield from self._container(str(path))
                except VideoError as exc:
                    log.warning("%s", exc)
                if self.stop():
                    return
            if not fresh:
                _sleep(self.poll_seconds, self.stop)

    def _container(self, spec: str, *, live: bool = False) -> Iterator[Frames]:
        """Frames of one opened container, in chunks; a corrupt packet is skipped, a read error ends it."""
        container = open_source(spec, timeout=self.open_timeout)
        try:
            if not container.streams.video:
                raise VideoError(spec, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._finite = container.duration is not None and container.duration > 0
            base, first, began = self._offset, None, time.monotonic()
            chunk, times = [], []
            packets = container.demux(stream)
            while not self.stop():
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except _AV_ERRORS as exc:
                    if live:
                        if chunk:  # what arrived before the drop is the stream's all the same
                            yield Frames(chunk, np.array(times), time.time())
                        raise VideoError(spec, f"read failed ({_reason(exc)})") from exc
                    log.warning("%s: read failed (%s); file ends here", spec, _reason(exc))
                    break
                try:
                    decoded = packet.decode()
                except _AV_ERRORS as exc:
                    self.stats.corrupt_packets += 1
                    log.debug("%s: corrupt packet skipped (%s)", spec, _reason(exc))
                    continue
                for frame in decoded:
                    t = frame.time
                    if t is None:
                        continue
                    if first is None:  # the container's own zero: continue the timeline after the last frame
                        first = t
                        gap = (1.0 / self.fps) if self.fps else 1e-3
                        if live and self._last_wall is not None:  # a live source was away this long
                            gap = max(gap, time.time() - self._last_wall)
                        base = self._offset = (self._last + gap - t) if self._last is not None else -t
                    t = float(t + base)
                    if self._last is not None and t <= self._last:
                        continue
                    if not self._keep(t):
                        continue
                    if self.realtime:
                        _sleep(began + (t - base - first) - time.monotonic(), self.stop)
                    chunk.append(self._rgb(frame))
                    times.append(t)
                    self._last, self._last_wall = t, time.time()
                    if self.realtime or times[-1] - times[0] >= self.chunk_seconds:
                        yield Frames(chunk, np.array(times), time.time())
                        chunk, times = [], []
            if chunk:
                yield Frames(chunk, np.array(times), time.time())
        finally:
            container.close()

    def _keep(self, t: float) -> bool:
        if not self.fps:
            return True
        if t + 1e-6 < self._next_keep:
            return False
        period = 1.0 / self.fps
        self._next_keep = self._next_keep + period if self._next_keep + period > t else t + period
        return True

    def _rgb(self, frame) -> np.ndarray:
        h, w = frame.height, frame.width
        out_h, out_w = self.size(h, w) if self.size is not None else (h, w)
        return frame.to_ndarray(format="rgb24", width=out_w, height=out_h)


def source_kind(spec: str) -> str:
    """``file``, ``folder``, ``network`` or ``device`` for a SOURCE argument."""
    if spec.startswith(NETWORK):
        return "network"
    if spec.startswith("/dev/video") or spec.split(":", 1)[0] in DEVICE_FORMATS:
        return "device"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise ConfigError(
        f"SOURCE {spec}: no such file or folder (a stream is rtsp://, http(s)://...; a camera /dev/videoN or "
        f"v4l2:/dev/videoN, avfoundation:0, dshow:video=NAME)"
    )


def open_source(spec: str, *, timeout: float = 10.0):
    """A PyAV input container for SOURCE (a path, a URL, or a capture device); a VideoError when it cannot open."""
    options, fmt, target = {}, None, spec
    if spec.startswith("/dev/video"):
        fmt = "v4l2"
    elif spec.split(":", 1)[0] in DEVICE_FORMATS:
        fmt, target = spec.split(":", 1)
    if spec.startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
    try:
        kwargs = {"timeout": (timeout, timeout)} if spec.startswith(NETWORK) else {}
        return av.open(target, mode="r", format=fmt, options=options, metadata_errors="ignore", **kwargs)
    except _AV_ERRORS as exc:
        raise VideoError(spec, f"cannot open ({_reason(exc)})") from exc


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep, waking every 0.1 s to see whether to stop."""
    end = time.monotonic() + seconds
    while not stop() and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def stop_on_signals(stop: threading.Event, *, what: str = "winding down") -> Callable[[], None]:
    """SIGINT/SIGTERM set `stop` (a reading loop then winds down and flushes); a second one interrupts at once.

    Returns the function that puts the previous handlers back. Off the main thread (where Python cannot install
    handlers) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: %s", signum, what)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
