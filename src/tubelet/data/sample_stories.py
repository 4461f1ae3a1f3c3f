"""Stories: 30-120 s videos of timed events over photographs, for captions, dialogue and summaries.

What ``tubelet sample-data OUT --stories`` writes:

* ``videos/story_NNN.mp4``: H.264 with an AAC soundtrack, 160x120 at 15 fps. A story is a few shots (hard cuts
  between them, at whole seconds), each a slow camera pan over a photograph shipped with scikit-image (test stories
  pan over photographs no training story shows). Events happen in a shot one after another with idle stretches
  between: a textured object (`OBJECTS` in `COLOURS`) crosses the frame (``cross``), two collide in the middle and
  bounce apart with a bang (``collide``), or one drops from the top, lands with a thud and rolls off (``drop``).
  Short sounds (`SOUNDS`) play at collisions, landings and at some entries.
* ``captions_{split}.jsonl``: one line per event, ``{"path", "start", "end", "caption", "object", "colour",
  "direction", "sound"}`` (seconds; an attribute an event lacks is null).
* ``importance_{split}.jsonl``: one line per video, ``{"path", "seconds": N, "annotators": [[N values in [0, 1]],
  ...]}`` from 3-5 simulated annotators: each a noisy, gain- and bias-changed, sometimes one-second-shifted view of
  one latent importance (`latent_importance`) in which collisions and sounds matter most, other events less and idle
  time least. They agree on the shape and disagree a little on every value.
* ``dialogues_{split}.jsonl``: one line per turn of the dialogues of each video (2 by default: one walks the events
  forward, one backward; ``dialogues`` more start at a random event, "what happens third?"), ``{"path", "dialogue",
  "turn", "history": [[q, a], ...], "question", "answer", "candidates": [12 strings, the answer among them],
  "needs_history"}``. "and after that?" or "what colour was it?" need the turns before; "what made a sound first?"
  does not.
* ``stories.jsonl``: everything about each story (split, duration, shots, events with their key frames, sounds):
  the truth the files were rendered from.

Splits are by video (a test story's files appear in no training line). Everything is a function of seconds and of
the seed: the same seed writes the same files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tubelet.data.sample_pan import TEST_PHOTOS, TRAIN_PHOTOS, Pan, photograph, render_pan
from tubelet.io.write import write_video
from tubelet.progress import each

WIDTH, HEIGHT, FPS = 160, 120, 15
AUDIO_RATE = 16000
OBJECTS = ("ball", "cube", "triangle")
COLOURS = {"red": (225, 45, 40), "green": (45, 195, 70), "blue": (50, 95, 235), "yellow": (235, 210, 45)}
SOUNDS = ("chime", "whistle", "bang", "thud")
KINDS = ("cross", "collide", "drop")
SPLIT_SHARES = {"val": 0.15, "test": 0.2}  # the rest trains
_VERB = {"ball": "rolls", "cube": "slides", "triangle": "glides"}
_KIND_P = (0.45, 0.3, 0.25)
_LENGTH = {"cross": (3.5, 6.0), "collide": (3.0, 5.0), "drop": (2.5, 4.0)}  # seconds an event lasts
_LEVEL = {"cross": 0.35, "drop": 0.45, "collide": 0.5}  # latent importance while an event is on screen
IDLE_LEVEL = 0.1
PEAK = {"collide": 0.5, "drop": 0.35}  # added around the moment of impact
SOUND_BOOST = 0.3  # added around every sound's onset
BUMP_S = 0.8  # standard deviation of those bumps, seconds


@dataclass
class Thing:
    """One object on screen: its look and its path ``(seconds, x, y)`` of its centre, linear between keys."""

    object: str
    colour: str
    size: int
    texture: tuple[str, int, int]  # (photograph, row, column) of the grey texture patch
    keys: list[tuple[float, float, float]]


@dataclass
class Event:
    """A captioned event: what happens between `start` and `end` seconds and what can be said about it."""

    kind: str
    start: float
    end: float
    caption: str
    object: str | None
    colour: str | None
    direction: str | None
    sound: str | None
    sound_at: float | None  # seconds of the sound's onset
    impact: float | None  # seconds of a collision or a landing
    things: list[Thing] = field(default_factory=list)


@dataclass
class Shot:
    """A camera's pan over a photograph from `start` to `end` seconds (whole seconds: the cuts)."""

    start: int
    end: int
    photo: str
    scale: float
    speed: float
    x0: float
    y0: float
    gain: float
    hum_hz: float  # a quiet room tone per shot, so a cut is heard as well as seen
    seed: int


@dataclass
class Story:
    path: str
    split: str
    duration: int
    seed: int
    shots: list[Shot]
    events: list[Event]


def _thing(rng: np.random.Generator, keys, *, colour: str | None = None, obj: str | None = None) -> Thing:
    size = int(rng.integers(18, 27))
    photo = (TRAIN_PHOTOS + TEST_PHOTOS)[int(rng.integers(len(TRAIN_PHOTOS) + len(TEST_PHOTOS)))]
    h, w = photograph(photo).shape[:2]
    return Thing(
        object=obj or OBJECTS[int(rng.integers(len(OBJECTS)))],
        colour=colour or list(COLOURS)[int(rng.integers(len(COLOURS)))],
        size=size,
        texture=(photo, int(rng.integers(0, h - size)), int(rng.integers(0, w - size))),
        keys=[(round(float(t), 3), round(float(x), 2), round(float(y), 2)) for t, x, y in keys],
    )


def _event(kind: str, start: float, end: float, rng: np.random.Generator) -> Event:
    """Event `kind` from `start` to `end` seconds: its objects' paths, its sound and its caption."""
    W, H = WIDTH, HEIGHT
    m = 16.0  # off-screen margin: an object is wholly outside the frame at its first and last key
    y = float(rng.uniform(0.35, 0.8) * H)
    if kind == "cross":
        rightward = bool(rng.integers(2))
        x0, x1 = (-m, W + m) if rightward else (W + m, -m)
        thing = _thing(rng, [(start, x0, y), (end, x1, y)])
        sound = [None, "chime", "whistle"][int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
        side, direction = ("left", "right") if rightward else ("right", "left")
        caption = f"a {thing.colour} {thing.object} enters from the {side} and {_VERB[thing.object]} {direction}"
        if sound:
            caption += f" as a {sound} sounds"
        at = round(start + 0.5, 3) if sound else None
        return Event(kind, start, end, caption, thing.object, thing.colour, direction, sound, at, None, [thing])
    if kind == "collide":
        impact = round(start + (end - start) * float(rng.uniform(0.4, 0.6)), 3)
        a = _thing(rng, [(start, -m, y), (impact, W / 2 - 11, y), (end, -m, y + 6)])
        other = [c for c in COLOURS if c != a.colour]
        b = _thing(rng, [(start, W + m, y), (impact, W / 2 + 11, y), (end, W + m, y - 6)],
                   colour=other[int(rng.integers(len(other)))])  # fmt: skip
        caption = f"a {a.colour} {a.object} and a {b.colour} {b.object} collide and bounce apart with a bang"
        return Event(kind, start, end, caption, a.object, a.colour, None, "bang", impact, impact, [a, b])
    if kind == "drop":
        x, floor = float(rng.uniform(0.3, 0.7) * W), 0.82 * H
        rightward = bool(rng.integers(2))
        d = 1.0 if rightward else -1.0
        impact = round(start + 0.8, 3)
        bounce = [(impact, x, floor), (impact + 0.3, x + 6 * d, floor - 16), (impact + 0.6, x + 12 * d, floor)]
        keys = [(start, x, -m), *bounce, (end, W + m if rightward else -m, floor)]
        thing = _thing(rng, keys)
        direction = "right" if rightward else "left"
        caption = f"a {thing.colour} {thing.object} drops from the top, lands with a thud and rolls {direction}"
        return Event(kind, start, end, caption, thing.object, thing.colour, direction, "thud", impact, impact, [thing])
    raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")


def _shot_lengths(duration: int, rng: np.random.Generator) -> list[int]:
    """Whole-second shot lengths summing to `duration`: 2 to 5 shots of at least 4 s."""
    count = int(np.clip(duration // 10, 2, 5))
    lengths = np.full(count, 4)
    spare = duration - 4 * count
    lengths += rng.multinomial(spare, rng.dirichlet(np.full(count, 2.0)))
    return [int(v) for v in lengths]


def make_story(index: int, split: str, *, seed: int, seconds: int) -> Story:
    """Story `index` of `seconds` seconds: its shots and events, deterministic in (index, seed)."""
    rng = np.random.default_rng([seed, 23, index])
    photos = TEST_PHOTOS if split == "test" else TRAIN_PHOTOS
    shots, events, t0 = [], [], 0
    for length in _shot_lengths(seconds, rng):
        fresh = [p for p in photos if not shots or p != shots[-1].photo]  # a cut always changes the picture
        photo = fresh[int(rng.integers(len(fresh)))]
        h, w = photograph(photo).shape[:2]
        scale = max(float(rng.uniform(0.5, 0.9)), (HEIGHT + 4) / h, (WIDTH + 4) / w)
        speed = float(rng.uniform(3.0, 8.0)) * (1 if rng.integers(2) else -1)
        travel = abs(speed) * length
        x0 = float(rng.uniform(0, max(w * scale - WIDTH - travel - 2, 0))) + (travel if speed < 0 else 0.0)
        y0 = float(rng.uniform(0, h * scale - HEIGHT - 2))
        shots.append(Shot(t0, t0 + length, photo, scale, speed, x0, y0, float(rng.uniform(0.85, 1.15)),
                          float(rng.uniform(60, 140)), int(rng.integers(2**31))))  # fmt: skip
        t = t0 + float(rng.uniform(0.3, 1.5))
        while True:
            kind = KINDS[int(rng.choice(len(KINDS), p=_KIND_P))]
            room = t0 + length - 0.3 - t
            span = min(float(rng.uniform(*_LENGTH[kind])), room)
            if span < _LENGTH[kind][0] * 0.8:
                break
            start, end = round(t, 1), round(t + span, 1)
            events.append(_event(kind, start, end, rng))
            t = end + float(rng.uniform(1.0, 4.0))
        t0 += length
    if not events:  # short shots left no room: one crossing in the longest, so every story has something to say
        shot = max(shots, key=lambda s: s.end - s.start)
        start = shot.start + 0.3
        events.append(_event("cross", start, round(start + min(shot.end - shot.start - 0.6, 5.0), 1), rng))
    return Story(f"videos/story_{index:03d}.mp4", split, seconds, seed, shots, events)


def _bump(centres: np.ndarray, at: float) -> np.ndarray:
    return np.exp(-((centres - at) ** 2) / (2 * BUMP_S**2))


def latent_importance(story: Story) -> np.ndarray:
    """(N,) the importance of each whole second that every annotator sees through their own noise.

    Idle seconds `IDLE_LEVEL`; a second with an event on screen its kind's `_LEVEL`; a bump of `PEAK` around a
    collision or a landing and of `SOUND_BOOST` around every sound's onset; clipped to [0, 1].
    """
    centres = np.arange(story.duration) + 0.5
    value = np.full(story.duration, IDLE_LEVEL)
    for e in story.events:
        on = (np.arange(story.duration) + 1 > e.start) & (np.arange(story.duration) < e.end)
        value[on] = np.maximum(value[on], _LEVEL[e.kind])
        if e.impact is not None:
            value += PEAK[e.kind] * _bump(centres, e.impact)
        if e.sound_at is not None:
            value += SOUND_BOOST * _bump(centres, e.sound_at)
    return np.clip(value, 0.0, 1.0)


def annotate(story: Story, *, seed: int) -> list[list[float]]:
    """3-5 annotators' per-second scores of `story`: the latent importance shifted by -1, 0 or 1 s, times a gain,
    plus a bias and noise, clipped to [0, 1]."""
    rng = np.random.default_rng([seed, 29, int(story.path[-7:-4])])
    latent = latent_importance(story)
    out = []
    for _ in range(int(rng.integers(3, 6))):
        shift = int(rng.choice([-1, 0, 1], p=[0.25, 0.5, 0.25]))
        seen = np.roll(latent, shift)
        if shift:  # no wrapping round: the edge second repeats
            seen[0 if shift > 0 else -1] = latent[0 if shift > 0 else -1]
        noisy = seen * rng.uniform(0.8, 1.15) + rng.uniform(-0.05, 0.05) + rng.normal(0, 0.06, len(seen))
        out.append([round(float(v), 3) for v in np.clip(noisy, 0.0, 1.0)])
    return out


# --- rendering ------------------------------------------------------------------------------------------------


def _sprite(thing: Thing) -> tuple[np.ndarray, np.ndarray]:
    """(s, s, 3) float32 pixels (the colour modulated by a photograph's grey texture) and (s, s, 1) alpha."""
    s = thing.size
    photo, row, col = thing.texture
    grey = photograph(photo)[row : row + s, col : col + s].mean(axis=2)
    grey = (grey - grey.min()) / (np.ptp(grey) + 1e-6)
    pixels = np.asarray(COLOURS[thing.colour], np.float32) * (0.55 + 0.45 * grey[..., None])
    yy, xx = (np.mgrid[0:s, 0:s] + 0.5) / s
    if thing.object == "ball":
        mask = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 <= 0.25
    elif thing.object == "cube":
        mask = np.ones((s, s), bool)
    else:  # an upward triangle
        mask = np.abs(xx - 0.5) <= yy / 2
    return pixels.astype(np.float32), mask[..., None].astype(np.float32)


def _at(thing: Thing, t: float) -> tuple[float, float] | None:
    times = [k[0] for k in thing.keys]
    if not times[0] <= t <= times[-1]:
        return None
    xs, ys = [k[1] for k in thing.keys], [k[2] for k in thing.keys]
    return float(np.interp(t, times, xs)), float(np.interp(t, times, ys))


def _paste(frame: np.ndarray, pixels: np.ndarray, alpha: np.ndarray, cx: float, cy: float) -> None:
    s = pixels.shape[0]
    top, left = int(round(cy - s / 2)), int(round(cx - s / 2))
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + s, frame.shape[0]), min(left + s, frame.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    mixed = region * (1 - a) + pixels[y0 - top : y1 - top, x0 - left : x1 - left] * a
    frame[y0:y1, x0:x1] = mixed.round().astype(np.uint8)


def render_story(story: Story) -> np.ndarray:
    """(duration * FPS, HEIGHT, WIDTH, 3) uint8: frame i shows second i / FPS."""
    parts = []
    for shot in story.shots:
        length = shot.end - shot.start
        pan = Pan("story", shot.photo, shot.scale, WIDTH, HEIGHT, shot.speed, shot.x0, shot.y0, shot.gain,
                  shot.gain * 1.05, 2.0, float(length), shot.seed)  # fmt: skip
        frames = render_pan(pan, FPS)  # (length * FPS, H, W, 3)
        things = [th for e in story.events if shot.start <= e.start < shot.end for th in e.things]
        sprites = [_sprite(th) for th in things]
        for i, frame in enumerate(frames):
            t = shot.start + i / FPS
            for thing, (pixels, alpha) in zip(things, sprites):
                where = _at(thing, t)
                if where is not None:
                    _paste(frame, pixels, alpha, *where)
        parts.append(frames)
    return np.concatenate(parts)


def sound_wave(kind: str, rate: int = AUDIO_RATE) -> np.ndarray:
    """(n,) float32: one short sound of `kind` (`SOUNDS`), its onset at sample 0."""
    rng = np.random.default_rng(SOUNDS.index(kind))
    t = np.arange(int((0.4 if kind in ("bang", "thud") else 0.6) * rate)) / rate
    if kind == "chime":
        wave = 0.35 * np.exp(-t / 0.25) * (np.sin(2 * math.pi * 1320 * t) + 0.4 * np.sin(2 * math.pi * 2640 * t))
    elif kind == "whistle":
        phase = 2 * math.pi * (900 * t + 900 * t**2 / (2 * t[-1]))  # 900 -> 1800 Hz
        wave = 0.3 * np.sin(phase) * np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    elif kind == "bang":
        wave = 0.6 * np.exp(-t / 0.08) * rng.normal(0, 1, len(t)).clip(-2.5, 2.5) / 2.5
    else:  # thud: a low thump
        wave = 0.5 * np.exp(-t / 0.12) * np.sin(2 * math.pi * 90 * t)
    return wave.astype(np.float32)


def render_audio(story: Story, rate: int = AUDIO_RATE) -> np.ndarray:
    """(duration * rate,) float32 mono: a room tone per shot, faint hiss, and every event's sound at its onset."""
    total = story.duration * rate
    audio = np.random.default_rng([story.seed, 31, int(story.path[-7:-4])]).normal(0, 0.004, total)
    t = np.arange(total) / rate
    for shot in story.shots:
        span = slice(shot.start * rate, shot.end * rate)
        audio[span] += 0.015 * np.sin(2 * math.pi * shot.hum_hz * t[span])
    for e in story.events:
        if e.sound is not None:
            wave = sound_wave(e.sound, rate)
            at = round(e.sound_at * rate)
            audio[at : at + len(wave)] += wave[: max(0, total - at)]
    return np.clip(audio, -1, 1).astype(np.float32)


def _write(args: tuple[Story, str]) -> None:
    story, path = args
    frames = render_story(story)
    # A keyframe every second: windows anywhere in a long story decode without reading the seconds before them.
    write_video(path, frames, fps=FPS, audio=render_audio(story), audio_rate=AUDIO_RATE, crf=23, gop=FPS)


# --- text: captions and dialogues -------------------------------------------------------------------------------


def caption_rows(story: Story) -> list[dict]:
    keys = ("caption", "object", "colour", "direction", "sound")
    return [{"path": story.path, "start": e.start, "end": e.end, **{k: getattr(e, k) for k in keys}}
            for e in story.events]  # fmt: skip


def _direction_answer(e: Event) -> str:
    return f"to the {e.direction}" if e.direction else "they bounced back the way they came"


def _dialogue_turns(story: Story, number: int) -> list[tuple[str, str, bool, str]]:
    """(question, answer, needs_history, answer type) of dialogue `number` (0 walks forward, 1 backward)."""
    events = story.events if number == 0 else story.events[::-1]
    if number == 0:
        first, nxt, none = "what happens first?", "and after that?", "nothing else happens"
    else:
        first, nxt, none = "what happens last?", "and before that?", "nothing happens before that"
    turns = [(first, events[0].caption, False, "caption")]
    follow = events[1] if len(events) > 1 else None
    turns.append((nxt, follow.caption if follow else none, True, "caption"))
    said = follow or events[0]
    turns.append(("what colour was it?", said.colour, True, "colour"))
    if number == 0:
        turns.append(("which way did it go?", _direction_answer(said), True, "direction"))
    else:
        turns.append(("what sound did it make?", said.sound or "no sound", True, "sound"))
    if number == 0:
        loud = next((e for e in story.events if e.sound), None)
        answer = f"a {loud.colour} {loud.object}" if loud else "nothing made a sound"
        turns.append(("what made a sound first?", answer, False, "thing"))
    else:
        turns.append(("how many things happen?", str(len(story.events)), False, "count"))
    if len(events) > 2:
        turns.append((nxt, events[2].caption, True, "caption"))
    return turns


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_ASK = {  # a follow-up about the event the last answer described: (question, answer of an event, answer type)
    "colour": ("what colour was it?", lambda e: e.colour),
    "direction": ("which way did it go?", _direction_answer),
    "sound": ("what sound did it make?", lambda e: e.sound or "no sound"),
}


def _variant_turns(story: Story, number: int, rng: np.random.Generator) -> list[tuple[str, str, bool, str]]:
    """Dialogue `number` (2 and up) of a story: it starts at a random event (named by its place), walks forward
    (even) or backward (odd) one event, and asks about the colour, direction or sound of the event just described.

    These are many more turns of the same video whose follow-ups can only be answered from the history: what
    trains a decoder to read its prompt (dialogues 0 and 1, `_dialogue_turns`, are the two every story has).
    """
    events = story.events
    i = int(rng.integers(len(events)))
    forward = number % 2 == 0
    nxt, none = (
        ("and after that?", "nothing else happens") if forward else ("and before that?", "nothing happens before that")
    )
    ordinal = _ORDINALS[i] if i < len(_ORDINALS) else f"number {i + 1}"

    def asks(said: Event, count: int) -> list[tuple[str, str, bool, str]]:
        kinds = [str(k) for k in rng.permutation(list(_ASK))[:count]]  # different questions about one event
        return [(_ASK[k][0], str(_ASK[k][1](said)), True, k) for k in kinds]

    turns = [(f"what happens {ordinal}?", events[i].caption, False, "caption"), *asks(events[i], 1)]
    j = i + 1 if forward else i - 1
    said = events[j] if 0 <= j < len(events) else events[i]
    turns.append((nxt, said.caption if said is not events[i] else none, True, "caption"))
    turns += asks(said, 2)
    if rng.integers(2):
        turns.append(("how many things happen?", str(len(events)), False, "count"))
    else:
        loud = next((e for e in events if e.sound), None)
        turns.append(("what made a sound first?", f"a {loud.colour} {loud.object}" if loud else "nothing made a sound",
                      False, "thing"))  # fmt: skip
    return turns


def _pools(stories: list[Story]) -> dict[str, list[str]]:
    """Answers of each type to draw wrong candidates from."""
    return {
        "caption": sorted({e.caption for s in stories for e in s.events}),
        "colour": list(COLOURS),
        "direction": ["to the left", "to the right", "they bounced back the way they came"],
        "sound": [*SOUNDS, "no sound"],
        "thing": [f"a {c} {o}" for c in COLOURS for o in OBJECTS] + ["nothing made a sound"],
        "count": [str(n) for n in range(1, 13)],
    }


def candidates(answer: str, kind: str, pools: dict[str, list[str]], rng: np.random.Generator, n: int = 12):
    """`n` distinct candidate answers: `answer`, wrong ones of its type first, then of other types; shuffled."""
    same = [a for a in pools[kind] if a != answer]
    others = [a for k, pool in pools.items() if k != kind for a in pool if a != answer and a not in same]
    picked = list(rng.permutation(same)[: n - 1]) if same else []
    if len(picked) < n - 1:
        picked += list(rng.permutation(others)[: n - 1 - len(picked)])
    out = [answer, *picked]
    return [str(a) for a in rng.permutation(out)]


def dialogue_rows(story: Story, pools: dict[str, list[str]], seed: int, *, dialogues: int = 2) -> list[dict]:
    """The turns of `dialogues` dialogues about `story`: the forward and backward walks (`_dialogue_turns`), then
    dialogues from random events (`_variant_turns`)."""
    rng = np.random.default_rng([seed, 37, int(story.path[-7:-4])])
    variants = np.random.default_rng([seed, 47, int(story.path[-7:-4])])  # its own stream: dialogues 0, 1 stay put
    rows = []
    name = Path(story.path).stem
    for number in range(dialogues):
        history: list[list[str]] = []
        turns = _dialogue_turns(story, number) if number < 2 else _variant_turns(story, number, variants)
        for turn, (question, answer, needs, kind) in enumerate(turns):
            rows.append({
                "path": story.path, "dialogue": f"{name}-{number}", "turn": turn, "history": [list(h) for h in history],
                "question": question, "answer": answer, "candidates": candidates(answer, kind, pools, rng),
                "needs_history": needs,
            })  # fmt: skip
            history.append([question, answer])
    return rows


# --- the dataset ----------------------------------------------------------------------------------------------


def split_of(count: int, seed: int) -> list[str]:
    """The split of each of `count` stories: `SPLIT_SHARES` of them (at least one each) for val and test."""
    n_test = max(1, round(SPLIT_SHARES["test"] * count))
    n_val = max(1, round(SPLIT_SHARES["val"] * count))
    order = np.random.default_rng([seed, 41]).permutation(count)
    splits = ["train"] * count
    for rank, i in enumerate(order.tolist()):
        splits[i] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return splits


def generate_stories(
    out: str | Path, *, seed: int = 0, stories: int = 38, story_seconds: float = 40.0, dialogues: int = 2,
    workers: int = 2,
) -> dict:  # fmt: skip
    """Write the stories dataset to `out` (layout in the module docstring).

    Args:
        stories: videos to write (at least 3: one per split); by default 24 train, 6 val and 8 test.
        story_seconds: mean length; each story lasts a whole number of seconds in [0.75, 1.25] times it.
        dialogues: dialogues per story (at least 2): the forward and backward walks, then ones from random events.

    Returns:
        A summary: output directory, videos and seconds per split, events, dialogue turns.
    """
    if stories < 3:
        raise ValueError(f"stories: at least 3 (one per split), got {stories}")
    if dialogues < 2:
        raise ValueError(f"dialogues: at least 2 per story (the forward and backward walks), got {dialogues}")
    if story_seconds < 8:
        raise ValueError(f"story_seconds: at least 8 (two shots of 4 s), got {story_seconds:g}")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 43])
    lengths = [int(round(story_seconds * rng.uniform(0.75, 1.25))) for _ in range(stories)]
    made = [make_story(i, s, seed=seed, seconds=max(8, n)) for i, (s, n) in enumerate(zip(split_of(stories, seed),
                                                                                          lengths))]  # fmt: skip
    each(_write, [(s, str(out / s.path)) for s in made], workers=workers, desc="stories", unit="story")
    summary = {"out": str(out), "stories": stories, "splits": {}, "seconds": {}, "events": 0, "dialogue_turns": 0}
    with open(out / "stories.jsonl", "w") as f:
        f.writelines(json.dumps(asdict(s)) + "\n" for s in made)
    for split in ("train", "val", "test"):
        chosen = [s for s in made if s.split == split]
        pools = _pools(chosen)
        captions = [row for s in chosen for row in caption_rows(s)]
        importance = [{"path": s.path, "seconds": s.duration, "annotators": annotate(s, seed=seed)} for s in chosen]
        turns = [row for s in chosen for row in dialogue_rows(s, pools, seed, dialogues=dialogues)]
        for name, rows in (("captions", captions), ("importance", importance), ("dialogues", turns)):
            with open(out / f"{name}_{split}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        summary["splits"][split] = len(chosen)
        summary["seconds"][split] = sum(s.duration for s in chosen)
        summary["events"] += len(captions)
        summary["dialogue_turns"] += len(turns)
    return summary
