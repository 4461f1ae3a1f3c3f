"""The stories sample: decodable videos whose pixels, sounds and cuts are where the captions, shots and sounds say,
and the pinned files (captions, importance, dialogues) with their fields, split by video."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from tubelet.data.sample_stories import (
    COLOURS,
    KINDS,
    OBJECTS,
    SOUNDS,
    _pools,
    caption_rows,
    dialogue_rows,
    generate_stories,
    make_story,
)
from tubelet.io import decode, probe
from tubelet.io.audio import decode_audio
from tubelet.video2video.baselines import cuts

SPLITS = ("train", "val", "test")
CAPTION_FIELDS = {"path", "start", "end", "caption", "object", "colour", "direction", "sound"}
DIALOGUE_FIELDS = {"path", "dialogue", "turn", "history", "question", "answer", "candidates", "needs_history"}


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    out = tmp_path_factory.mktemp("stories")
    summary = generate_stories(out, seed=3, stories=4, story_seconds=12, workers=1)
    truth = [json.loads(line) for line in (out / "stories.jsonl").read_text().splitlines()]
    return out, summary, truth


def read(out, name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{name}_{split}.jsonl").read_text().splitlines()]


def test_videos_decode_with_sound_for_as_long_as_the_story_and_cuts_fall_on_the_shot_boundaries(stories):
    out, summary, truth = stories
    assert summary["splits"] == {"train": 2, "val": 1, "test": 1}
    for story in truth:
        info = probe(out / story["path"])
        assert info.duration_s == pytest.approx(story["duration"], abs=1 / 15 + 1e-6)
        assert info.has_audio and (info.width, info.height) == (160, 120)
        clip = decode(out / story["path"])
        found = clip.timestamps[cuts(clip.frames)]
        assert found == pytest.approx([s["start"] for s in story["shots"][1:]], abs=1e-6)


def test_captions_have_the_pinned_fields_and_times_inside_the_video_and_events_inside_one_shot(stories):
    out, _, truth = stories
    duration = {s["path"]: s["duration"] for s in truth}
    rows = [row for split in SPLITS for row in read(out, "captions", split)]
    assert len(rows) == sum(len(s["events"]) for s in truth) > 0
    for row in rows:
        assert set(row) == CAPTION_FIELDS
        assert 0 <= row["start"] < row["end"] <= duration[row["path"]]
        assert row["object"] in OBJECTS and row["colour"] in COLOURS and row["sound"] in (*SOUNDS, None)
        assert row["direction"] in ("left", "right", None)
        assert f"{row['colour']} {row['object']}" in row["caption"]
    for story in truth:
        for e in story["events"]:
            assert any(s["start"] <= e["start"] and e["end"] <= s["end"] for s in story["shots"])


def test_an_object_shows_its_colour_where_its_path_says(stories):
    out, _, truth = stories
    checked = 0
    for story in truth:
        clip = decode(out / story["path"])
        for event in story["events"]:
            thing = event["things"][0]
            t = (event["start"] + event["end"]) / 2
            times, xs, ys = zip(*thing["keys"])
            x, y = np.interp(t, times, xs), np.interp(t, times, ys)
            if not (12 <= x <= 148 and 12 <= y <= 108):
                continue
            frame = clip.frames[np.argmin(np.abs(clip.timestamps - t))]
            r, g, b = frame[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3].reshape(-1, 3).mean(axis=0)
            dominant = {"red": r > g + 40 and r > b + 40, "green": g > r + 40 and g > b + 40,
                        "blue": b > r + 40 and b > g + 40, "yellow": min(r, g) > b + 60}  # fmt: skip
            assert dominant[thing["colour"]], (story["path"], t, thing["colour"], (r, g, b))
            checked += 1
    assert checked >= 3


def test_sounds_are_heard_at_their_onsets(stories):
    out, _, truth = stories
    heard = 0
    for story in truth:
        samples = decode_audio(out / story["path"], sample_rate=16000).samples

        def rms(a, b, samples=samples):
            return float(np.sqrt(np.mean(samples[int(a * 16000) : int(b * 16000)] ** 2)))

        quiet = np.median([rms(k, k + 0.25) for k in np.arange(0, story["duration"] - 0.25, 0.25)])
        for e in story["events"]:
            if e["sound"] is not None:
                assert rms(e["sound_at"], e["sound_at"] + 0.2) > 4 * quiet
                heard += 1
    assert heard >= 1


def test_annotators_agree_on_the_shape_and_differ_on_the_values(stories):
    out, _, truth = stories
    duration = {s["path"]: s["duration"] for s in truth}
    rows = [row for split in SPLITS for row in read(out, "importance", split)]
    assert len(rows) == len(truth)
    correlations = []
    for row in rows:
        users = np.asarray(row["annotators"])
        assert set(row) == {"path", "seconds", "annotators"} and row["seconds"] == duration[row["path"]]
        assert 3 <= len(users) <= 5 and users.shape[1] == row["seconds"]
        assert users.min() >= 0 and users.max() <= 1
        for a in range(len(users)):
            for b in range(a + 1, len(users)):
                assert not np.array_equal(users[a], users[b])
                correlations.append(spearmanr(users[a], users[b]).statistic)
    assert np.mean(correlations) > 0.3  # one latent importance under the noise
    assert np.mean(correlations) < 0.98


def test_important_seconds_are_those_with_collisions_and_sounds(stories):
    _, _, truth = stories
    story = next(s for s in truth if any(e["sound"] for e in s["events"]))
    from tubelet.data.sample_stories import Event, Story, latent_importance

    latent = latent_importance(Story(**{**story, "events": [Event(**e) for e in story["events"]], "shots": []}))
    loud = {int(e["sound_at"]) for e in story["events"] if e["sound_at"] is not None}
    busy = {k for e in story["events"] for k in range(int(e["start"]), int(np.ceil(e["end"])))}
    idle = [k for k in range(story["duration"]) if k not in busy]
    assert min(latent[k] for k in loud) > max(latent[k] for k in idle)


def test_dialogues_carry_their_history_and_candidates_hold_the_answer(stories):
    out, _, _ = stories
    rows = [row for split in SPLITS for row in read(out, "dialogues", split)]
    by_dialogue: dict[str, list[dict]] = {}
    for row in rows:
        assert set(row) == DIALOGUE_FIELDS
        assert len(set(row["candidates"])) == len(row["candidates"]) >= 10 and row["answer"] in row["candidates"]
        by_dialogue.setdefault(row["dialogue"], []).append(row)
    for turns in by_dialogue.values():
        turns.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in turns] == list(range(len(turns)))
        for k, row in enumerate(turns):
            assert row["history"] == [[r["question"], r["answer"]] for r in turns[:k]]
    assert {r["needs_history"] for r in rows} == {True, False}
    follow = [r for r in rows if r["question"] == "what colour was it?"]
    assert follow and all(
        r["answer"] == r["history"][-1][1].split()[1] for r in follow if r["history"][-1][1][:2] == "a "
    )


def test_more_dialogues_per_story_keep_the_first_two_and_follow_ups_are_answered_by_the_history():
    story = make_story(0, "train", seed=3, seconds=40)
    pools = _pools([story])
    two, ten = dialogue_rows(story, pools, 3), dialogue_rows(story, pools, 3, dialogues=10)
    assert ten[: len(two)] == two  # more dialogues leave the first two as they were
    assert len({r["dialogue"] for r in ten}) == 10
    said = {e.caption: e for e in story.events}
    asked = {"what colour was it?": "colour", "which way did it go?": "direction", "what sound did it make?": "sound"}
    follow = [r for r in ten if r["question"] in asked]
    assert len(follow) > 20 and all(r["needs_history"] for r in follow)
    for r in follow:  # the answer is an attribute of the event the last caption in the history describes
        event = said[[a for _, a in r["history"] if a in said][-1]]
        expected = {"colour": event.colour, "sound": event.sound or "no sound",
                    "direction": f"to the {event.direction}" if event.direction else None}  # fmt: skip
        if expected[asked[r["question"]]] is not None:
            assert r["answer"] == expected[asked[r["question"]]]
    with pytest.raises(ValueError, match="dialogues"):
        generate_stories("unused", dialogues=1)


def test_splits_are_by_video_and_the_same_seed_gives_the_same_stories(stories):
    out, _, truth = stories
    paths = {split: {r["path"] for name in ("captions", "importance", "dialogues") for r in read(out, name, split)}
             for split in SPLITS}  # fmt: skip
    assert not (paths["train"] & paths["test"]) and not (paths["train"] & paths["val"])
    assert not (paths["val"] & paths["test"])
    assert {s["path"] for s in truth if s["split"] == "test"} == paths["test"]
    first, again = make_story(5, "train", seed=9, seconds=30), make_story(5, "train", seed=9, seconds=30)
    assert caption_rows(first) == caption_rows(again) and {e.kind for e in first.events} <= set(KINDS)
    assert caption_rows(make_story(5, "train", seed=10, seconds=30)) != caption_rows(first)


def test_the_command_writes_stories_and_refuses_too_few(tmp_path, tubelet_cli):
    result = tubelet_cli("sample-data", tmp_path / "s", "--stories", "3", "--story-seconds", "8", "--json")
    summary = json.loads(result.stdout)
    assert summary["stories"] == 3 and summary["splits"] == {"train": 1, "val": 1, "test": 1}
    assert len(list((tmp_path / "s" / "videos").glob("story_*.mp4"))) == 3
    bad = tubelet_cli("sample-data", tmp_path / "t", "--stories", "2", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--stories" in bad.stderr


def test_every_story_however_short_has_events_inside_its_shots():
    for index in range(60):
        story = make_story(index, "train", seed=1, seconds=8)
        assert story.events and sum(s.end - s.start for s in story.shots) == 8
        assert all(any(s.start <= e.start and e.end <= s.end for s in story.shots) for e in story.events)
