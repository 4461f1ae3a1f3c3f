"""The multimodal sample dataset: real files with sound, honest captions and answers, classes decided by design."""

import csv
import json
from collections import Counter

import numpy as np
import pytest

from tubelet.data import read_samples
from tubelet.data.sample import render
from tubelet.data.sample_av import (
    AV_CLASSES,
    COLOURS,
    SOUND_HZ,
    generate_av,
    make_clip,
    scene_of,
    sentiment,
    sentiment_ceiling,
)
from tubelet.io import decode, decode_audio, probe

RATE = 16000


@pytest.fixture(scope="module")
def av(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_av")
    summary = generate_av(out, seed=1, clips_per_class=3)
    rows = [json.loads(line) for line in open(out / "metadata.jsonl")]
    return out, summary, {r["path"]: r for r in rows}


def spectrum_peak(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


def object_centre_x(frame: np.ndarray, rgb) -> float:
    """Mean column of the pixels within 40 levels of the object's colour in (H, W, 3) uint8."""
    near = np.abs(frame.astype(int) - np.array(rgb)).max(axis=2) < 40
    assert near.sum() > 20, "object not found"
    return float(np.nonzero(near)[1].mean())


def test_files_decode_with_sound_and_manifests_cover_them(av):
    root, summary, rows = av
    assert summary["clips"] == len(rows) == 3 * len(AV_CLASSES)
    for path, row in rows.items():
        info = probe(root / path)
        assert info.has_audio and info.codec == "h264"
        assert (info.width, info.height) == (row["scene"]["width"], row["scene"]["height"])
        audio = decode_audio(root / path)
        assert audio.duration == pytest.approx(row["scene"]["duration"], abs=0.1)
        assert np.abs(audio.samples).max() > 0.1

    listed = []
    for split in ("train", "val", "test"):
        samples, classes = read_samples(root / f"{split}.csv")  # the ordinary reader takes the extra columns
        assert set(classes) == set(AV_CLASSES)
        listed += [s.path for s in samples]
        qa = list(csv.DictReader(open(root / f"qa_{split}.csv")))
        assert len(qa) == 4 * len(samples)
        assert Counter(q["question_type"] for q in qa) == dict.fromkeys(
            ("motion", "colour", "shape", "sound"), len(samples)
        )
    assert sorted(str(p) for p in listed) == sorted(str(root / p) for p in rows)


def test_captions_and_answers_agree_with_the_scene(av):
    root, _, rows = av
    for row in rows.values():
        scene, answers = row["scene"], {q["type"]: q["answer"] for q in row["qa"]}
        colour = next(name for name, rgb in COLOURS.items() if list(rgb) == scene["color"])
        assert answers["colour"] == colour
        assert answers["shape"] == scene["shape"]
        assert answers["motion"] == {"static": "nowhere", "move_left": "left", "move_right": "right"}[scene["label"]]
        assert answers["sound"] == {"low": "low tone", "high": "high tone", "beep": "beeping"}[row["audio"]["kind"]]
        assert row["caption"].startswith(f"a {colour} {scene['shape']} ")
        assert ("left" in row["caption"]) == (answers["motion"] == "left")
        assert ("right" in row["caption"]) == (answers["motion"] == "right")
        assert answers["sound"].split()[0] in row["caption"] or "beeps" in row["caption"]
        assert (row["motion"], row["sound"], row["decided_by"]) == AV_CLASSES[row["label"]]


def test_the_decoded_files_show_and_sound_what_the_answers_say(av):
    root, _, rows = av
    for path, row in rows.items():
        answers = {q["type"]: q["answer"] for q in row["qa"]}
        clip = decode(root / path, end=0.25)
        shift = object_centre_x(clip.frames[-1], row["scene"]["color"]) - object_centre_x(
            clip.frames[0], row["scene"]["color"]
        )
        expected = {"left": -1, "right": 1, "nowhere": 0}[answers["motion"]]
        assert (np.sign(shift) if abs(shift) > 2 else 0) == expected, (path, shift)

        audio = decode_audio(root / path, start=0.2, end=1.2)
        assert spectrum_peak(audio.samples) == pytest.approx(row["audio"]["hz"], rel=0.01)
        assert abs(row["audio"]["hz"] - SOUND_HZ[row["sound"]]) < 0.05 * SOUND_HZ[row["sound"]]
        loud = np.abs(audio.samples).reshape(-1, 160).max(axis=1) > 0.05  # 10 ms frames
        if row["sound"] == "beep":
            assert 0.35 < loud.mean() < 0.65  # on half the time
        else:
            assert loud.mean() > 0.95


def test_sound_decided_pairs_differ_only_in_audio_and_vision_pairs_only_in_pictures():
    for i in range(6):
        low, high = make_clip("static_low", i, seed=4), make_clip("static_high", i, seed=4)
        assert {**low["scene"], "audio_hz": 0} == {**high["scene"], "audio_hz": 0}
        assert low["audio"] != high["audio"]

        left, right = make_clip("left_beep", i, seed=4), make_clip("right_beep", i, seed=4)
        assert left["audio"] == right["audio"]
        assert {**left["scene"], "label": ""} == {**right["scene"], "label": ""}  # only the direction differs
        assert (left["scene"]["label"], right["scene"]["label"]) == ("move_left", "move_right")

        # The "both" classes reuse a vision class's pictures and a sound class's soundtrack.
        assert make_clip("left_high", i, seed=4)["audio"] == high["audio"]
        assert {**make_clip("left_high", i, seed=4)["scene"], "audio_hz": 0} == {**left["scene"], "audio_hz": 0}


def test_the_pictures_of_a_sound_pair_are_the_same(av):
    root, _, rows = av
    for path in (p for p in rows if p.startswith("static_low/")):
        twin = path.replace("static_low", "static_high")
        rendered = [render(scene_of(rows[p]))[0] for p in (path, twin)]
        assert np.array_equal(*rendered)  # the source pictures are identical
        a, b = decode(root / path).frames, decode(root / twin).frames
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0  # x264 may not encode them bit for bit
        assert (
            spectrum_peak(decode_audio(root / path).samples)
            < 400
            < 1200
            < spectrum_peak(decode_audio(root / twin).samples)
        )


def test_one_modality_caps_at_half_and_both_decide_every_class():
    """Every motion and every sound is shared by two classes; (motion, sound) names exactly one."""
    by_motion = Counter(m for m, _, _ in AV_CLASSES.values())
    by_sound = Counter(s for _, s, _ in AV_CLASSES.values())
    assert set(by_motion.values()) == {2} and set(by_sound.values()) == {2}
    assert len({(m, s) for m, s, _ in AV_CLASSES.values()}) == len(AV_CLASSES)
    assert Counter(d for _, _, d in AV_CLASSES.values()) == {"sound": 2, "vision": 2, "both": 2}


def test_sentiment_follows_colour_and_sound_and_needs_both(av):
    root, _, rows = av
    assert (sentiment("red", "high"), sentiment("blue", "low"), sentiment("yellow", "low")) == (
        "positive",
        "negative",
        "neutral",
    )
    assert (sentiment("green", "beep"), sentiment("red", "beep")) == ("negative", "positive")
    listed = {}
    for split in ("train", "val", "test"):
        listed |= {r["path"]: r["sentiment"] for r in csv.DictReader(open(root / f"{split}.csv"))}
    assert listed == {path: sentiment(row["colour"], row["sound"]) for path, row in rows.items()}

    # In expectation over many clips: sound alone 1/2, vision alone 2/3, balanced labels.
    many = [make_clip(label, i, seed=5) for label in AV_CLASSES for i in range(200)]
    ceiling = sentiment_ceiling(many)
    assert ceiling["audio"] == pytest.approx(0.5, abs=0.04)
    assert ceiling["video"] == pytest.approx(2 / 3, abs=0.04)
    counts = Counter(r["sentiment"] for r in many)
    assert min(counts.values()) / len(many) > 0.28
    # Both modalities together: (motion, colour, sound) names the sentiment of every clip.
    decided = {}
    for r in many:
        decided.setdefault((r["motion"], r["colour"], r["sound"]), set()).add(r["sentiment"])
    assert all(len(s) == 1 for s in decided.values())


def test_same_seed_same_data(tmp_path):
    first = generate_av(tmp_path / "a", seed=2, clips_per_class=3, workers=1)
    second = generate_av(tmp_path / "b", seed=2, clips_per_class=3, workers=1)
    assert first["splits"] == second["splits"]
    assert open(tmp_path / "a" / "metadata.jsonl").read() == open(tmp_path / "b" / "metadata.jsonl").read()


def test_cli_flag_writes_the_multimodal_set(tmp_path, tubelet_cli):
    result = tubelet_cli("sample-data", tmp_path / "mm", "--multimodal", "--clips-per-class", "3", "--json")
    summary = json.loads(result.stdout)
    assert summary["decided_by"]["static_low"] == "sound"
    assert (tmp_path / "mm" / "qa_test.csv").exists()
