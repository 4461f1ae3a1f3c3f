"""Falls end to end on real H.264 files: a tiny classifier fine-tuned on walk and fall clips of one room (each window
cut to its motion crop and read as frame differences: ``crop=motion``, ``pixels=difference``), then `tubelet watch
--alert fall` over a stream of that room (walking, a fall, lying, getting up, walking on).

Three things are checked: the plumbing (watch's fall event is the stretch where the checkpoint's window scores from
`tubelet predict` reach the alert's MIN_SCORE, at the stream's seconds, both reading the checkpoint's crop and
differences); the detection (an event opens within a second of the body starting to go down, overlaps the fall, and
the walking before and after raises at most one short event); and `explain` of the cropped checkpoint. Whether a
classifier tells falls from walking, sitting and bending, on scenes it never saw, is measured by
`benchmarks/bench_falls.py`."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from tubelet import models
from tubelet.cli import main
from tubelet.data.crop import motion_box
from tubelet.data.pipeline import decode_window
from tubelet.data.sample_falls import STAND, Key, Script, _fall, _get_up, _lie, _walk, clip_script, make_room, render
from tubelet.io import write_video
from tubelet.recipes.explain import explain
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.watch import DEFAULT_MIN_SCORE
from tubelet.stream.events import Hysteresis

FPS = 8.0
CLIPS = 8  # per class
FALL_AT = 14.0  # seconds into the stream: walking before, lying after
# The `test` encoder on 2 s windows at 4 fps, each cut to the square around what moves in it (from 96-px frames),
# read at 32 x 32 as frame differences (as `benchmarks/bench_falls.py` reads them): 2 x 2 patches of 16 px a
# tubelet, 16 particles a window before pruning.
TINY = dict(model="test", size=96, max_long_side=144, crop="motion", crop_size=32, pixels="difference",
            sample_fps=4.0, clip_seconds=2.0, batch_particles=600, workers=0, lr=3e-3, crop_scale_min=1.0, flip=True,
            min_steps_per_epoch=0)  # fmt: skip


def room():
    """One camera: the same room for the training clips and the stream (what is learnt is the motion, not the room).
    No seat: with a few clips, where a seat stands and where bodies lie would be learnt together."""
    return replace(make_room(np.random.default_rng(11), seed=11), seat=None)


@pytest.fixture(scope="module")
def falls_run(tmp_path_factory):
    return build(tmp_path_factory.mktemp("falls"))


def build(root):
    """(checkpoint, stream, fall start, fall end, run summary): a tiny classifier trained on 8 walk and 8 fall
    clips, and a stream where the person walks, falls, lies, gets up and walks on."""
    rows = []
    for label in ("walk", "fall"):
        for i in range(CLIPS):
            script, length = clip_script(label, np.random.default_rng([5, i, len(label)]), room())
            path = root / "clips" / label / f"{label}_{i:02d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, render(script, room(), fps=FPS, seconds=length), fps=FPS)
            rows.append(f"{path},{label}")
    (root / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    run = finetune(FinetuneConfig(data=str(root / "train.csv"), out=str(root / "run"), epochs=40, seed=0,
                                  val_split=None, **TINY))  # fmt: skip
    rng = np.random.default_rng(3)
    script = Script([Key(0.0, STAND.copy(), 0.3 * room().width, 1)])
    script.stride = 0.8 * room().height
    _walk(script, rng, room(), FALL_AT)
    _fall(script, rng)
    _lie(script, rng, 7.0)
    start, end = FALL_AT, script.now.t
    _get_up(script, rng)
    _walk(script, rng, room(), 4.0)
    stream = write_video(root / "stream.mp4", render(script, room(), fps=FPS, seconds=script.now.t), fps=FPS)
    return root / "run" / "best", stream, start, end, run


def test_watch_alert_fall_events_are_the_windows_where_the_classifier_says_fall(tmp_path, capsys, falls_run):
    """`watch --alert fall` against the same checkpoint's window scores from `predict`, put through `tubelet watch`'s
    hysteresis here: the same events at the same stream seconds; and the fall's own windows raise one."""
    checkpoint, stream, start, end, _ = falls_run
    code = main(["watch", str(stream), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--alert", "fall",
                 "--stride-seconds", "1", "--json"])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [(e["start"], e["end"]) for e in lines[:-1] if e["kind"] == "label" and e["label"] == "fall"]
    assert main(["predict", "--checkpoint", str(checkpoint), str(stream), "--stride-seconds", "1", "--json"]) == 0
    (scored,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    gate, expected = Hysteresis(DEFAULT_MIN_SCORE, 2.0), []  # watch's defaults: MIN_SCORE 0.5, 2 s cooldown
    for w in scored["windows"]:
        p_fall = w["score"] if w["label"] == "fall" else 1.0 - w["score"]  # two labels: walk and fall
        if gate.update(w["start"], w["end"], p_fall) == "end":
            expected.append((gate.start, gate.end))
    if gate.close():
        expected.append((gate.start, gate.end))
    # The event at the fall is the one the checkpoint's own window scores give. A window near the threshold (a still
    # person reads like a lying one in frame differences) may fall on either side in watch's live decoding and in
    # predict's, whose frames at 4 per second of an 8 fps stream need not be the same ones; those are not compared.
    at_fall = [(s, e) for s, e in events if s <= start + 1.0 and e >= start]
    assert at_fall, (events, start)
    # Within a stride: a window on the threshold's edge may open the event a second apart in the two readings.
    from_scores = [(s, e) for s, e in expected if s <= start + 1.0 and e >= start]
    assert np.ravel(from_scores) == pytest.approx(np.ravel(at_fall), abs=1.01), (events, expected)


def test_watch_alert_fall_raises_an_event_at_the_fall_and_little_while_walking(tmp_path, capsys, falls_run):
    """The stream: walking until FALL_AT, the fall, 7 s lying still, getting up, 4 s walking. `watch --alert fall`
    (2 s windows every 1 s) raises an event that opens within a second of the fall's start and overlaps the fall
    (going down to getting up); the walking before and after raises at most one short event."""
    checkpoint, stream, start, end, _ = falls_run
    saved = json.loads((checkpoint / "config.json").read_text())["preprocessing"]
    assert (saved["crop"], saved["pixels"]) == ("motion", "difference")
    code = main(["watch", str(stream), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--alert", "fall",
                 "--stride-seconds", "1", "--json"])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [(e["start"], e["end"]) for e in lines[:-1] if e["kind"] == "label" and e["label"] == "fall"]
    at_fall = [(s, e) for s, e in events if s < end and e > start]
    assert at_fall and start - 2.0 <= min(s for s, _ in at_fall) <= start + 1.0, (events, start, end)
    # The walking before and after raises at most one short event: a person who stands still for a moment gives the
    # motion crop and its differences what a lying one gives (measured on many scenes by benchmarks/bench_falls.py).
    false = [(s, e) for s, e in events if not (s < end and e > start)]
    assert len(false) <= 1 and sum(e - s for s, e in false) <= 3.0, (false, start, end)


def test_explain_shows_the_motion_crop_the_model_read_at_the_source_pixels(tmp_path, capsys, falls_run):
    """`tubelet explain` of a cropped checkpoint scores the window as `predict` does (the same crop), draws the crop,
    and places its particles on the source's pixels: their boxes tile the motion crop's square of the source."""
    checkpoint, stream, start, _, _ = falls_run
    window = (start - 1.0, start + 1.0)
    got = explain(str(checkpoint), stream, out=tmp_path / "x", start=window[0], seconds=2.0, method="rollout")
    assert main(["predict", "--checkpoint", str(checkpoint), str(stream), "--stride-seconds", "1", "--json"]) == 0
    (scored,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (same,) = [w for w in scored["windows"] if w["start"] == pytest.approx(window[0])]
    assert got["prediction"]["label"] == same["label"] and got["prediction"]["score"] == pytest.approx(
        same["score"], abs=1e-3
    )
    # The square by hand: the window's frames as the model's preprocessing decodes them, `motion_box`, to source px.
    pre = models.load(str(checkpoint)).preprocessing
    clip = decode_window(stream, window, pre=pre)
    top, left, side = motion_box(clip.frames)
    k = 240 / clip.frames.shape[1]  # source rows per decoded row (the stream is 320 x 240)
    with open(tmp_path / "x" / "particles.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert min(int(r["y0"]) for r in rows) == pytest.approx(top * k, abs=1)
    assert max(int(r["x1"]) for r in rows) == pytest.approx((left + side) * k, abs=1)
    assert got["files"]["png"] and len(rows) == got["num_particles"]
