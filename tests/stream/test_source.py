"""Sources: a file with corrupt packets is read past them, a folder's files continue one timeline, and a session's
memory is bounded however long the stream."""

import numpy as np
import pytest

from tubelet.errors import ConfigError
from tubelet.io import write_video
from tubelet.stream.session import StreamSession, WindowResult
from tubelet.stream.source import Frames, Source, source_kind


def frames_of(source) -> np.ndarray:
    return np.concatenate([item.timestamps for item in source if isinstance(item, Frames)])


def test_corrupt_packets_are_skipped_and_reading_goes_on(tmp_path, S):
    path = write_video(tmp_path / "clean.mkv", S.frames(), fps=S.FPS, gop=8)
    whole = frames_of(Source(str(path), size=S.PRE.output_size, fps=S.PRE.sample_fps))
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):  # 200 bytes of garbage at 1/5, 2/5, 3/5 of the file
        at = len(data) * k // 5
        data[at : at + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mkv").write_bytes(data)
    source = Source(str(tmp_path / "bad.mkv"), size=S.PRE.output_size, fps=S.PRE.sample_fps)
    times = frames_of(source)
    assert len(whole) == 40 and whole[-1] == 9.75  # 10 s at 4 fps
    assert source.stats.corrupt_packets >= 1
    assert 0 < len(times) < len(whole) and times[-1] == 9.75  # frames lost where the garbage was, not the rest
    assert set(times) <= set(whole)


def test_a_folder_is_one_timeline_over_its_files(tmp_path, S):
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, S.frames(2.0, square=None), fps=S.FPS)
    (tmp_path / "notes.txt").write_text("not a video")
    seen = []

    def stop():
        return len(seen) >= 16  # both files' frames at 4 fps

    source = Source(str(tmp_path), fps=S.PRE.sample_fps, poll_seconds=0.05, stop=stop)
    assert source.kind == "folder"
    for item in source:
        seen.extend(item.timestamps)
    assert source.stats.files == 2
    # The second file continues 1/4 s after the first one's last frame (1.75 s).
    assert seen == pytest.approx([k * 0.25 for k in range(16)])


def test_sources_are_told_apart_and_a_missing_one_is_one_line(tmp_path):
    assert [source_kind(s) for s in ("rtsp://cam/1", "https://x/y.m3u8", "/dev/video0", "v4l2:/dev/video2")] == [
        "network", "network", "device", "device",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="no such file or folder"):
        source_kind(str(tmp_path / "missing.mp4"))


def test_memory_is_bounded_over_a_long_stream(S):
    """Ten minutes at 8 fps through a session: the buffers hold one window and the clip history, never the stream."""
    session = StreamSession(
        lambda clips: np.zeros((len(clips), 1)), pre=S.PRE, detectors=[], max_clip_seconds=5.0, pre_roll=1.0,
        post_roll=1.0,
    )  # fmt: skip
    frame = np.full((1, 32, 43, 3), 90, np.uint8)
    windows, longest = 0, 0
    for i in range(600 * S.FPS):
        windows += sum(isinstance(o, WindowResult) for o in session.feed(frame, [i / S.FPS]))
        longest = max(longest, len(session.recorder.frames), len(session.windower.frames))
    assert windows == 599  # 1 s windows, the last still pending
    # The clip history: 5 s + the rolls + a window, at the 4 fps sampled: 8 s -> 33 frames at most.
    assert longest == 33
    assert session.summary()["windows"] == 599


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.slow
def test_rss_stays_flat_over_an_hour_of_stream(tmp_path, checkpoint, S):
    """An hour of a scene with a walker every minute, through the model, events and their clips and the database:
    resident memory after the first ten minutes grows by less than 20 MB."""
    from tubelet.models import load
    from tubelet.stream.events import EventStore
    from tubelet.stream.session import Detector, model_scorer

    loaded = load(str(checkpoint))
    store = EventStore(tmp_path / "events.sqlite")
    session = StreamSession(
        model_scorer(loaded), pre=S.PRE, detectors=[Detector("label", 1, 0.0, "person")], store=store, out=tmp_path,
        stride=1.0,
    )  # fmt: skip
    minute = S.frames(60.0, square=(20.0, 30.0))[:: S.FPS // 4]  # 4 fps, as sampled
    after_warmup = None
    for m in range(60):
        times = m * 60 + np.arange(len(minute)) / 4
        for i in range(0, len(minute), 4):
            list(session.feed(minute[i : i + 4], times[i : i + 4]))
        if m == 10:
            after_warmup = rss_mb()
    list(session.close())
    store.close()
    assert session.summary()["windows"] == 3600
    assert rss_mb() - after_warmup < 20


def test_a_stream_that_never_comes_back_is_given_up_after_the_tries(square_mkv, S):
    server = S.VideoServer(square_mkv, drops=0, serves=0)  # every request: 404
    try:
        items = list(Source(server.url, reconnect_tries=2, backoff=0.01, open_timeout=2))
    finally:
        server.close()
    assert items == [] and server.requests == 3  # the first try and two more
