"""A multimodal sample dataset: clips with a soundtrack, a caption and question/answer pairs.

Six audio-visual classes built from a motion (what you see) and a sound (what you hear):

| class | motion | sound | decided by | confused with, by vision / by sound |
|---|---|---|---|---|
| ``static_low`` | stays still | low tone | sound | ``static_high`` / ``right_low`` |
| ``static_high`` | stays still | high tone | sound | ``static_low`` / ``left_high`` |
| ``left_beep`` | moves left | beeping | vision | ``left_high`` / ``right_beep`` |
| ``right_beep`` | moves right | beeping | vision | ``right_low`` / ``left_beep`` |
| ``left_high`` | moves left | high tone | both | ``left_beep`` / ``static_high`` |
| ``right_low`` | moves right | low tone | both | ``right_beep`` / ``static_low`` |

Each motion and each sound is shared by exactly two classes, so vision alone or sound alone can reach at most
50% accuracy (it narrows every clip to two equally likely classes) and both together 100%. The pairs are
exact, not just equal in distribution: clip i of every class has the same object, colour, size, position,
background, frame rate and duration (drawn from a seed of i, never of the class); its motion moves it or not,
and clip i of two classes with the same sound has the same soundtrack. So clip i of ``static_low`` and of
``static_high`` have identical pictures and differ only in audio, and ``left_beep`` and ``right_beep`` have
identical soundtracks and differ only in the direction of motion.

Written next to the clips:

- ``metadata.jsonl``: per clip its path, label, split, ``decided_by``, caption, question/answer pairs, the
  visual `Scene` and the `Sound`;
- ``{split}.csv``: ``path,label,caption,decided_by,motion,sound,colour,shape,sentiment`` (readable by `read_manifest`,
  which takes ``path`` and ``label`` and ignores the rest);
- ``qa_{split}.csv``: ``path,question_type,question,answer``, one row per question.

A second label set, ``sentiment`` (``positive``, ``neutral``, ``negative``), stands in for affect: a made-up but
fixed rule, not a claim about real emotion. Warm colours (red, yellow) count +1 and cool ones (green, blue) -1; a
high tone +1, a low tone -1, the beep 0; the sign of the sum is the sentiment. Colour is seen, pitch is heard, so
it needs both: in expectation sound alone can reach 1/2 and vision alone 2/3 (motion hints at the sound: a clip
moving left never has a low tone), while both together decide every clip; ``sentiment_ceiling`` computes these
ceilings for a given set of clips. The three sentiments are equally likely. ``tubelet finetune --label-column
sentiment`` trains on it.

The ordinary sample dataset (`tubelet.data.sample.generate`) is untouched: this is a separate generator.
"""

from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tubelet.data.sample import SPLITS, Scene, render
from tubelet.io.write import write_video
from tubelet.progress import bar

# class -> (motion, sound, decided_by)
AV_CLASSES = {
    "static_low": ("static", "low", "sound"),
    "static_high": ("static", "high", "sound"),
    "left_beep": ("left", "beep", "vision"),
    "right_beep": ("right", "beep", "vision"),
    "left_high": ("left", "high", "both"),
    "right_low": ("right", "low", "both"),
}
MOTIONS = ("static", "left", "right")
SOUNDS = ("low", "high", "beep")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 230), "yellow": (230, 210, 40)}
SHAPES = ("disc", "square")
SIZES = ((112, 80), (80, 112), (96, 96))  # small and even (4:2:0), so a clip costs a few ms to encode
AUDIO_RATE = 16000
# Tone pitches two octaves apart (they land in different 16-bin bands of a 64-bin mel spectrogram at 16 kHz);
# the beep is a 880 Hz tone switched on and off 4 times a second.
SOUND_HZ = {"low": 330.0, "high": 1320.0, "beep": 880.0}
BEEP_RATE = 4.0

_MOTION_LABEL = {"static": "static", "left": "move_left", "right": "move_right"}  # `Scene.label` renders motion
_MOTION_WORDS = {"static": "stays still", "left": "moves left", "right": "moves right"}
_MOTION_ANSWER = {"static": "nowhere", "left": "left", "right": "right"}
_SOUND_WORDS = {"low": "low tone", "high": "high tone", "beep": "beeping"}
# Valence of what is seen and what is heard; `sentiment` is the sign of their sum.
COLOUR_VALENCE = {"red": 1, "yellow": 1, "green": -1, "blue": -1}
SOUND_VALENCE = {"low": -1, "high": 1, "beep": 0}
SENTIMENTS = ("negative", "neutral", "positive")
_SOUND_PHRASE = {"low": "a low tone plays", "high": "a high tone plays", "beep": "something beeps"}


@dataclass
class Sound:
    """A clip's soundtrack.

    Attributes:
        kind: ``low``, ``high`` or ``beep``.
        hz: tone frequency (the nominal `SOUND_HZ` times a small jitter).
        amplitude: peak of the tone in [-1, 1] units.
        beep_phase: seconds of the first beep onset (``beep`` only).
        noise_seed: seed of the faint background hiss.
    """

    kind: str
    hz: float
    amplitude: float
    beep_phase: float
    noise_seed: int


def make_visual(motion: str, index: int, seed: int) -> tuple[Scene, str]:
    """Clip `index`'s pictures for `motion`, and its colour name. All but the motion depend on (index, seed) alone."""
    rng = np.random.default_rng([seed, 11, index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    short = min(width, height)
    scene = Scene(
        label=_MOTION_LABEL[motion],
        width=width,
        height=height,
        fps=(15, 30)[index % 2],
        duration=round(float(rng.uniform(1.5, 2.5)), 2),
        background=("textured", "noisy")[int(rng.integers(2))],
        seed=int(rng.integers(2**31)),
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        color=COLOURS[colour],
        size=float(rng.uniform(0.25, 0.35) * short),
        x0=float(rng.uniform(0.3, 0.7) * width),
        y0=float(rng.uniform(0.35, 0.65) * height),
        speed=float(rng.uniform(0.35, 0.6) * width) * (motion != "static"),  # drawn always: same draws after it
        audio=True,
        audio_hz=0.0,  # set from the Sound by `make_clip`
        container=".mp4",
    )
    return scene, colour


def make_sound(kind: str, index: int, seed: int) -> Sound:
    """Clip `index`'s soundtrack of `kind`. Depends on (kind, index, seed), never the class."""
    rng = np.random.default_rng([seed, 13, SOUNDS.index(kind), index])
    return Sound(
        kind=kind,
        hz=float(SOUND_HZ[kind] * rng.uniform(0.97, 1.03)),
        amplitude=float(rng.uniform(0.2, 0.4)),
        beep_phase=float(rng.uniform(0.0, 1.0 / BEEP_RATE)),
        noise_seed=int(rng.integers(2**31)),
    )


def render_sound(sound: Sound, duration: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """(round(duration * rate),) float32 mono: the tone (gated for ``beep``) over faint noise."""
    t = np.arange(round(duration * rate)) / rate
    wave = sound.amplitude * np.sin(2 * math.pi * sound.hz * t)
    if sound.kind == "beep":  # on for the first half of every 1/BEEP_RATE period after the phase
        wave *= ((t - sound.beep_phase) * BEEP_RATE) % 1.0 < 0.5
    noise = np.random.default_rng(sound.noise_seed).normal(0.0, 0.005, size=t.shape)
    return (wave + noise).astype(np.float32)


def caption_and_questions(motion: str, sound: str, colour: str, shape: str) -> tuple[str, list[dict]]:
    """The caption and the question/answer pairs of a clip, from its scene parameters alone."""
    caption = f"a {colour} {shape} {_MOTION_WORDS[motion]} while {_SOUND_PHRASE[sound]}"
    qa = [
        {"type": "motion", "question": "which way does it move?", "answer": _MOTION_ANSWER[motion]},
        {"type": "colour", "question": "what colour is it?", "answer": colour},
        {"type": "shape", "question": "what shape is it?", "answer": shape},
        {"type": "sound", "question": "what sound is it?", "answer": _SOUND_WORDS[sound]},
    ]
    return caption, qa


def sentiment(colour: str, sound: str) -> str:
    """The sample data's made-up affect label: the sign of the colour's and the sound's valence."""
    total = COLOUR_VALENCE[colour] + SOUND_VALENCE[sound]
    return SENTIMENTS[(total > 0) - (total < 0) + 1]


def sentiment_ceiling(rows: list[dict]) -> dict[str, float]:
    """Best accuracy on `rows` (metadata rows) of a rule that sees only what one modality shows.

    For "video" a clip shows its motion and colour; for "audio" its sound. Each group of clips that look (or
    sound) the same is given its most frequent sentiment: no model of that modality alone can do better on these
    clips. With both, every clip is decided (1.0).
    """
    seen = {"video": lambda r: (r["motion"], r["colour"]), "audio": lambda r: r["sound"]}
    ceilings = {}
    for name, key in seen.items():
        groups: dict = {}
        for row in rows:
            groups.setdefault(key(row), []).append(row["sentiment"])
        best = sum(max(labels.count(s) for s in set(labels)) for labels in groups.values())
        ceilings[name] = best / max(len(rows), 1)
    return ceilings


def make_clip(label: str, index: int, seed: int) -> dict:
    """Everything about clip `index` of class `label`: the metadata row without path and split."""
    motion, kind, decided_by = AV_CLASSES[label]
    scene, colour = make_visual(motion, index, seed)
    sound = make_sound(kind, index, seed)
    scene.audio_hz = sound.hz
    caption, qa = caption_and_questions(motion, kind, colour, scene.shape)
    return {
        "label": label,
        "decided_by": decided_by,
        "motion": motion,
        "sound": kind,
        "colour": colour,
        "shape": scene.shape,
        "sentiment": sentiment(colour, kind),
        "caption": caption,
        "qa": qa,
        "scene": asdict(scene),
        "audio": asdict(sound),
    }


def scene_of(row: dict) -> Scene:
    """The visual `Scene` of a metadata row (as `make_clip` returns it or ``metadata.jsonl`` holds it)."""
    return Scene(**{**row["scene"], "color": tuple(row["scene"]["color"])})


def _write(args: tuple[dict, str]) -> None:
    row, path = args
    scene = scene_of(row)
    frames, times = render(scene)
    audio = render_sound(Sound(**row["audio"]), scene.duration)
    write_video(path, frames, timestamps=times, audio=audio, audio_rate=AUDIO_RATE, crf=20, preset="veryfast")


def generate_av(out: str | Path, *, seed: int = 0, clips_per_class: int = 8, workers: int = 2) -> dict:
    """Write the multimodal sample dataset to `out` (layout in the module docstring).

    Returns:
        A summary: output directory, classes, clips, clips per split, and each class's ``decided_by``.
    """
    if clips_per_class < 3:
        raise ValueError("clips_per_class must be at least 3 (one each for train, val and test)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, label in enumerate(AV_CLASSES):
        order = np.random.default_rng([seed, 17, c]).permutation(clips_per_class)
        n_test = n_val = max(1, round(SPLITS["test"] * clips_per_class))
        for rank, i in enumerate(order.tolist()):
            split = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
            rows.append({"path": f"{label}/{label}_{i:03d}.mp4", "split": split, "index": i})
    rows.sort(key=lambda r: r["path"])
    for row in rows:
        label = row["path"].split("/")[0]
        row.update(make_clip(label, row.pop("index"), seed))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [(row, str(out / row["path"])) for row in rows]
        list(bar(pool.map(_write, jobs), total=len(jobs), desc="sample-data", unit="clip"))
    with open(out / "metadata.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    columns = ["path", "label", "caption", "decided_by", "motion", "sound", "colour", "shape", "sentiment"]
    for split in SPLITS:
        chosen = [r for r in rows if r["split"] == split]
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows([r[c] for c in columns] for r in chosen)
        with open(out / f"qa_{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "question_type", "question", "answer"])
            writer.writerows([r["path"], q["type"], q["question"], q["answer"]] for r in chosen for q in r["qa"])
    return {
        "out": str(out),
        "classes": list(AV_CLASSES),
        "clips": len(rows),
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "decided_by": {label: spec[2] for label, spec in AV_CLASSES.items()},
    }
