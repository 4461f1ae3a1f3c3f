"""`tubelet watch` end to end on real encoded files: events printed and stored, the database schema, errors, an
HTTP source that drops and is reconnected (a `gap` event), --anomaly on a planted square, and SIGTERM mid-event."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tubelet.cli import main
from tubelet.io import write_video
from tubelet.stream.events import EVENT_KEYS

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def watch(capsys, *args) -> tuple[int, list[dict], str]:
    code = main(["watch", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def rows(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "events.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY start")]
    finally:
        db.close()


def wait_for_open_event(out: Path, seconds: float = 40.0) -> None:
    """Until the database holds a row (inserted when the event starts); it may not exist, or hold no table, yet."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if (out / "events.sqlite").exists() and rows(out):
                return
        except sqlite3.OperationalError:  # the schema is being created
            pass
        time.sleep(0.2)
    raise AssertionError(f"no event in {out} after {seconds} s")


def test_an_alert_is_one_event_printed_saved_and_stored(tmp_path, capsys, checkpoint, square_video):
    # MIN_SCORE 0: every window predicts "person" with at least 0, so the whole video is one event.
    code, lines, _ = watch(capsys, square_video, "--checkpoint", checkpoint, "--out", tmp_path, "--alert", "person:0")
    assert code == 0
    *events, summary = lines
    assert len(events) == 1
    event = events[0]
    assert list(event) == [*EVENT_KEYS, "id"]
    assert (event["kind"], event["label"], event["start"], event["end"]) == ("label", "person", 0.0, 10.0)
    assert Path(event["clip"]).is_file() and Path(event["thumbnail"]).is_file()
    # 1 s windows (the checkpoint's) over 10 s: 10 windows (the last flush with the last frame).
    assert (summary["windows"], summary["events"], summary["gaps"]) == (10, 1, 0)
    assert summary["cost_per_minute"]["busy"]["windows"] == 10 and summary["realtime_factor"] > 1
    (row,) = rows(tmp_path)
    assert row["id"] == event["id"] and row["end"] == 10.0 and row["score"] == pytest.approx(event["score"], abs=1e-4)
    assert row["delivered_start"] is None  # no webhook configured
    db = sqlite3.connect(tmp_path / "events.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    assert columns == [
        "id", "kind", "label", "start", "end", "wall_start", "wall_end", "score", "threshold", "clip", "thumbnail",
        "source", "delivered_start", "delivered_end",
    ]  # fmt: skip
    db.close()


def test_the_webhook_gets_start_and_end_of_each_event(tmp_path, capsys, checkpoint, square_video, S):
    receiver = S.Receiver()
    try:
        code, lines, _ = watch(
            capsys, square_video, "--checkpoint", checkpoint, "--out", tmp_path, "--alert", "person:0",
            "--webhook", receiver.url,
        )  # fmt: skip
    finally:
        receiver.close()
    assert code == 0
    event, summary = lines
    assert [(p["id"], p["phase"]) for p in receiver.payloads] == [(event["id"], "start"), (event["id"], "end")]
    assert receiver.payloads[1] == {**event, "phase": "end"}
    assert summary["webhook"] == {"delivered": 2, "undelivered": 0}
    (row,) = rows(tmp_path)
    assert (row["delivered_start"], row["delivered_end"]) == (1, 1)


def test_a_label_it_does_not_know_is_one_line_listing_its_labels(tmp_path, capsys, checkpoint, square_video):
    code, _, err = watch(capsys, square_video, "--checkpoint", checkpoint, "--out", tmp_path, "--alert", "fall")
    assert code == 2
    assert (
        err.strip()
        == f"tubelet watch: error: --alert fall: 'fall' is not a label of {checkpoint} (labels: idle, person, car)"
    )
    code, _, err = watch(capsys, square_video, "--checkpoint", checkpoint, "--out", tmp_path)
    assert code == 2 and "--alert LABEL[:MIN_SCORE] and/or --anomaly" in err
    code, _, err = watch(capsys, tmp_path / "nope.mp4", "--checkpoint", checkpoint, "--out", tmp_path, "--anomaly")
    assert code == 2 and "no such file or folder" in err


@pytest.mark.parametrize("calibration", ["stream", "file"])
def test_anomaly_is_one_event_overlapping_the_planted_square(
    tmp_path, capsys, checkpoint, square_video, S, calibration
):
    if calibration == "file":  # normal is a separate recording of the empty scene
        normal = write_video(tmp_path / "normal.mp4", S.frames(3.0, square=None), fps=S.FPS)
        calibrate = ["--calibration", normal]
    else:  # normal is the stream's first 3 s
        calibrate = ["--calibrate-seconds", 3]
    code, lines, _ = watch(
        capsys, square_video, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--anomaly", *calibrate,
        "--stride-seconds", 0.5, "--cooldown-seconds", 0.5, "--alert", "person:1",  # an alert that never fires
    )  # fmt: skip
    assert code == 0
    threshold, *events, summary = lines
    assert set(threshold) == {"anomaly_threshold"}
    assert [e["kind"] for e in events] == ["anomaly"]
    start, end = S.SQUARE
    assert start - 1.0 <= events[0]["start"] <= start and end <= events[0]["end"] <= end + 1.0
    assert summary["anomaly_threshold"] == threshold["anomaly_threshold"]


def test_an_http_source_that_drops_is_reconnected_and_the_gap_is_an_event(tmp_path, capsys, checkpoint, square_mkv, S):
    server = S.VideoServer(square_mkv, drops=1, cut_bytes=os.path.getsize(square_mkv) // 2)
    try:
        code, lines, _ = watch(
            capsys, server.url, "--checkpoint", checkpoint, "--out", tmp_path, "--alert", "person:0",
        )  # fmt: skip
    finally:
        server.close()
    assert code == 0
    *events, summary = lines
    assert server.requests == 2  # cut, then whole: a recording read to its end is the end
    kinds = [e["kind"] for e in events]
    assert kinds.count("gap") == 1 and summary["gaps"] == 1 and summary["reconnects"] == 1
    gap = next(e for e in events if e["kind"] == "gap")
    labels = [e for e in events if e["kind"] == "label"]
    # The alert closes at the drop and opens again after it; the second read covers the whole 10 s file.
    assert len(labels) == 2 and labels[0]["end"] <= gap["start"] < gap["end"] <= labels[1]["start"]
    assert labels[1]["end"] - labels[1]["start"] == pytest.approx(10.0, abs=0.5)
    assert [r["kind"] for r in rows(tmp_path)] == kinds


def test_sigterm_mid_event_leaves_a_closed_event(tmp_path, checkpoint, square_video):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tubelet", "watch", str(square_video), "--checkpoint", str(checkpoint), "--out",
         str(out), "--alert", "person:0", "--realtime", "--json"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_open_event(out)
        assert rows(out)[0]["end"] is None
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    *events, summary = [json.loads(line) for line in stdout.splitlines()]
    (row,) = rows(out)
    assert row["end"] is not None and row["end"] < 10.0  # closed where the stream stopped, not at the file's end
    assert events[0]["id"] == row["id"] and events[0]["end"] == row["end"]
    assert summary["events"] == 1
    db = sqlite3.connect(out / "events.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_sigkill_leaves_a_readable_database(tmp_path, checkpoint, square_video):
    """A kill the process cannot catch: the database is whole and holds the open event (its end still NULL)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tubelet", "watch", str(square_video), "--checkpoint", str(checkpoint), "--out",
         str(out), "--alert", "person:0", "--realtime", "--json"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_open_event(out)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    db = sqlite3.connect(out / "events.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    (row,) = rows(out)
    assert row["kind"] == "label" and row["end"] is None
