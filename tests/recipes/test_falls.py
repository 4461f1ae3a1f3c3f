"""Falls end to end on real H.264 files: a tiny classifier fine-tuned on walk and fall clips of one room, then
`tubelet watch --alert fall` over a stream of that room (walking, a fall, lying, getting up).

What this checks is the plumbing: watch's fall events are exactly the stretches where the checkpoint's window scores
(from `tubelet predict`) reach the alert's MIN_SCORE, at the stream's seconds, and the fall's own windows raise one.
Whether a classifier tells falls from walking, sitting and bending, and how early, is measured by
`benchmarks/bench_falls.py`: a classifier this small, trained in seconds, also calls some walking "fall"."""

import json
from dataclasses import replace

import numpy as np
import pytest

from tubelet.cli import main
from tubelet.data.sample_falls import STAND, Key, Script, _fall, _get_up, _lie, _walk, clip_script, make_room, render
from tubelet.io import write_video
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.recipes.watch import DEFAULT_MIN_SCORE
from tubelet.stream.events import Hysteresis

FPS = 8.0
CLIPS = 8  # per class
FALL_AT = 14.0  # seconds into the stream: walking before, lying after
# The `test` encoder on 64-px frames, 2 s windows at 4 fps: a few dozen particles a window.
TINY = dict(model="test", size=64, max_long_side=96, sample_fps=4.0, clip_seconds=2.0, batch_particles=600,
            workers=0, lr=3e-3, crop_scale_min=1.0, flip=True, min_steps_per_epoch=0)  # fmt: skip


def room():
    """One camera: the same room for the training clips and the stream (what is learnt is the motion, not the room).
    No seat: with a few clips, where a seat stands and where bodies lie would be learnt together."""
    return replace(make_room(np.random.default_rng(11), seed=11), seat=None)


@pytest.fixture(scope="module")
def falls_run(tmp_path_factory):
    return build(tmp_path_factory.mktemp("falls"))


def build(root):
    """(checkpoint, stream, fall start, fall end, run summary): a tiny classifier trained on 12 walk and 12 fall
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
    run = finetune(FinetuneConfig(data=str(root / "train.csv"), out=str(root / "run"), epochs=15, seed=0,
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
    assert len(events) == len(expected) and np.ravel(events) == pytest.approx(np.ravel(expected), abs=0.01), events
    # The classifier (trained on a few clips of one room) says fall on the windows around the fall's first second.
    assert any(s <= start + 1.0 and e >= start for s, e in events), (events, start)
