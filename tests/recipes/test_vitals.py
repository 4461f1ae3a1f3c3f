"""tubelet vitals end to end on real encoded files: a known pulse read within 3 bpm, no pulse refused, alerts,
the report, and one-line errors for a video without skin and one shorter than a window."""

import base64
import dataclasses
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("skimage")

from tubelet.cli import main  # noqa: E402
from tubelet.data.sample_pan import photograph  # noqa: E402
from tubelet.data.sample_vitals import make_subject, write_subject  # noqa: E402
from tubelet.io import write_video  # noqa: E402
from tubelet.recipes.vitals import vitals  # noqa: E402


def _clip(path, *, bpm: float, pulse: float, seed: int = 1, times=None):
    """12 s at 30 fps, 320x240, still, crf 10: a constant heart rate of `bpm` (no variability) and 15 breaths/min."""
    subject = make_subject(0, seed=seed, motion="still", compression="low", fps=30.0, size=(320, 240), duration=12.0)
    subject = dataclasses.replace(subject, heart=[(0, bpm), (12, bpm)], rsa=0.0, hrv=0.0, pulse_levels=pulse,
                                  breath=[(0, 15.0), (12, 15.0)], breath_px=1.5)  # fmt: skip
    return write_subject(path, subject, times)


@pytest.fixture(scope="module")
def pulse_clip(tmp_path_factory):
    return _clip(tmp_path_factory.mktemp("vitals") / "pulse72.mp4", bpm=72.0, pulse=0.6)


def run_json(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_known_pulse_is_read_within_3_bpm_with_pos(pulse_clip, capsys):
    summary = run_json(capsys, ["vitals", str(pulse_clip), "--window-seconds", "8", "--stride-seconds", "2"])
    rows = summary["windows"]
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 8.0), (2.0, 10.0), (4.0, 12.0)]
    confident = [r["heart_rate_bpm"] for r in rows if r["heart_rate_bpm"] is not None]
    assert len(confident) >= 2 and all(abs(v - 72.0) <= 3.0 for v in confident)
    assert set(rows[0]) >= {"start", "end", "heart_rate_bpm", "breathing_rate_bpm", "quality"}
    assert summary["frames"] == 360 and summary["method"] == "pos"


def test_a_variable_frame_rate_is_read_in_seconds(tmp_path, capsys):
    # 40 fps for 6 s, then 20 fps, with jitter: on the container's average 30 fps, counting frames would read the
    # first half's 72 bpm as 96 and the second's as 48; the decoder's timestamps read 72 throughout.
    jitter = np.random.default_rng(0).uniform(-0.004, 0.004, size=360)
    times = np.concatenate([np.arange(0, 6, 1 / 40), np.arange(6, 12, 1 / 20)]) + jitter
    times[0] = 0.0
    path = _clip(tmp_path / "vfr.mp4", bpm=72.0, pulse=0.6, times=times)
    summary = run_json(capsys, ["vitals", str(path), "--window-seconds", "8", "--stride-seconds", "2"])
    assert summary["frames"] == len(times)
    confident = [r["heart_rate_bpm"] for r in summary["windows"] if r["heart_rate_bpm"] is not None]
    assert len(confident) >= 2 and all(abs(v - 72.0) <= 3.0 for v in confident)


def test_no_pulse_gives_low_quality_not_a_number(tmp_path, pulse_clip, capsys):
    flat = _clip(tmp_path / "flat.mp4", bpm=72.0, pulse=0.0)
    pulsing = run_json(capsys, ["vitals", str(pulse_clip), "--window-seconds", "8", "--stride-seconds", "2"])
    summary = run_json(capsys, ["vitals", str(flat), "--window-seconds", "8", "--stride-seconds", "2"])
    assert all(r["heart_rate_bpm"] is None for r in summary["windows"])
    assert all("low pulse signal quality" in r["reason"] for r in summary["windows"])
    # The same face, lighting and noise with a pulse scores clearly higher.
    assert np.mean([r["quality"] for r in pulsing["windows"]]) > np.mean([r["quality"] for r in summary["windows"]]) + 2


def test_out_writes_the_plot_the_regions_and_a_self_contained_report(pulse_clip, tmp_path):
    out = tmp_path / "report"
    emitted = []  # what a live source prints as it happens: each reading, and each event's start and end
    summary = vitals(str(pulse_clip), window_seconds=8.0, out=str(out), alert_hr="50:70", alert_seconds=2.0,
                     emit=emitted.append)  # fmt: skip
    assert [e for e in emitted if "kind" not in e] == summary["windows"]
    assert [e["phase"] for e in emitted if "kind" in e] == ["start", "end"]
    page = (out / "report.html").read_text()
    assert "not a medical device" in page and "<script" not in page and 'src="http' not in page
    images = page.count('src="data:image/png;base64,')
    assert images == 2
    start = page.index('src="data:image/png;base64,') + len('src="data:image/png;base64,')
    assert base64.b64decode(page[start : page.index('"', start)]) == (out / "signals.png").read_bytes()
    saved = json.loads((out / "vitals.json").read_text())
    assert saved["windows"] == summary["windows"]
    # 72 bpm stays above 70 the whole time: one event, from the first reading to the end of the video.
    (event,) = summary["events"]
    assert event["label"] == "heart_rate_bpm above 70" and event["start"] == 7.0 and event["end"] == 12.0


def test_a_video_without_skin_is_one_line_error(tmp_path, capsys):
    grey = np.repeat(photograph("camera")[None, ::4, ::4], 30, axis=0)  # a grey photograph: no skin colour at all
    path = write_video(tmp_path / "camera.mp4", np.ascontiguousarray(grey), fps=10.0)
    assert main(["vitals", str(path), "--window-seconds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no face or skin region found" in err and str(path) in err


def test_too_short_and_no_model_are_one_line_errors(pulse_clip, capsys):
    assert main(["vitals", str(pulse_clip), "--window-seconds", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "12.00 s of video is shorter than one window (30 s)" in err
    assert main(["vitals", str(pulse_clip), "--method", "model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--method model needs --checkpoint" in err
    assert main(["vitals", str(pulse_clip), "--checkpoint", "runs/x"]) == 2
    assert "--checkpoint runs/x: only --method model reads a checkpoint" in capsys.readouterr().err
    assert main(["vitals", str(pulse_clip), "--method", "model", "--checkpoint", "runs/x"]) == 2
    assert "--checkpoint runs/x: not a checkpoint directory" in capsys.readouterr().err
    assert main(["vitals", str(pulse_clip), "--alert-hr", "120:50"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err


def test_a_folder_is_read_live_until_stopped(pulse_clip, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    shutil.copy(pulse_clip, folder / "a.mp4")
    seen = []  # a folder never ends by itself: stop once two readings have come out
    summary = vitals(str(folder), window_seconds=8.0, stride_seconds=2.0, emit=seen.append, stop=lambda: len(seen) >= 2)
    assert seen[:2] == summary["windows"][:2]
    assert [(r["start"], r["end"]) for r in seen[:2]] == [(0.0, 8.0), (2.0, 10.0)]
    assert all(abs(r["heart_rate_bpm"] - 72.0) <= 3.0 for r in summary["windows"] if r["heart_rate_bpm"] is not None)


def test_alerts_go_into_watchs_events_database_and_webhook(pulse_clip, tmp_path):
    import sqlite3
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    posted = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        summary = vitals(str(pulse_clip), window_seconds=8.0, out=str(tmp_path), alert_hr="50:70", alert_seconds=2.0,
                         webhook=f"http://127.0.0.1:{server.server_port}/hook")  # fmt: skip
    finally:
        server.shutdown()
    db = sqlite3.connect(summary["database"])
    rows = db.execute('SELECT id, kind, label, start, "end", threshold, delivered_start, delivered_end FROM events')
    ((event_id, kind, label, start, end, threshold, sent_start, sent_end),) = rows.fetchall()
    (alert,) = summary["events"]  # the same alert as the summary's
    assert (kind, label, start, end, threshold) == ("vitals", alert["label"], alert["start"], alert["end"], 70.0)
    assert (sent_start, sent_end) == (1, 1) and summary["webhook"] == {"delivered": 2, "undelivered": 0}
    assert [(p["id"], p["phase"]) for p in posted] == [(event_id, "start"), (event_id, "end")]
    assert posted[1]["end"] == 12.0 and posted[0]["end"] is None
    with pytest.raises(Exception, match="--webhook .* needs --out"):
        vitals(str(pulse_clip), window_seconds=8.0, webhook="http://127.0.0.1:9/x")
