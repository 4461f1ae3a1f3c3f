"""A person in a room who walks, sits down, bends over or falls: clips for a fall classifier, and long streams with
falls at known seconds for ``tubelet watch --alert fall``.

What ``tubelet sample-data OUT --falls`` writes:

* ``clips/SPLIT/LABEL/*.mp4`` with ``train.csv``, ``val.csv``, ``test.csv`` (path, label): 2-4 s clips labelled
  `LABELS`, split 60/20/20 per class, each from a scene of its own (never cut from a stream).
* ``streams/stream_NNN.mp4``: 60-90 s of one fixed camera where the person walks about, stands, bends over and
  recovers, sits down and gets up again, and now and then falls, lies still for a few seconds and gets up.
  ``falls.csv`` gives each fall's stream, start (the body starts to go down) and end (the person starts to get up) in
  seconds; ``activities.csv`` every stretch of the script (walk, stand, bend, sit_down, seated, stand_up, fall, lying,
  get_up), so a false alarm can be traced to what the person was doing.

The person is an articulated figure: torso, head, arms and legs as tapered capsules textured with pieces of real
photographs (the astronaut's suit and face, and others), posed by joint angles over seconds and kept standing on the
floor. The room is two photographs: a wall and a floor. What a classifier could cheat on is drawn at random for every
clip, independent of its class: position, size (the camera's distance), walking speed and direction, clothing,
room, lighting (gain, tint, slow drift), camera shake, sensor noise, frame rate (15-30 fps) and H.264 quality (crf
18-32); a seat stands in about half of the scenes whatever the class. The classes differ only in the motion: a fall
and a bend both pitch the body forward, a fall and a sit both lose height; a fall is fast, ends horizontal on the
floor and stays there, a bend comes back up, a sit ends upright.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from tubelet.data.sample_pan import photograph
from tubelet.data.sample_surveillance import SPLITS, clip_splits, write_csv
from tubelet.io.write import write_video
from tubelet.progress import each

LABELS = ("walk", "sit", "bend", "fall")
WALLS = ("coffee", "chelsea", "rocket", "camera", "stereo_motorcycle", "immunohistochemistry", "hubble_deep_field")
FLOORS = ("brick", "gravel", "grass", "coins", "text")
# Cloth and skin: (photograph, (top, bottom, left, right) of the piece cut from it).
CLOTHES = {
    "suit": ("astronaut", (300, 500, 30, 250)),
    "fur": ("chelsea", (150, 300, 150, 350)),
    "coffee": ("coffee", (50, 350, 50, 400)),
    "rocket": ("rocket", (200, 427, 0, 300)),
    "cells": ("immunohistochemistry", (0, 300, 0, 300)),
    "gravel": ("gravel", (0, 256, 0, 256)),
    "camera": ("camera", (300, 500, 0, 200)),
}
FACE = ("astronaut", (25, 195, 155, 300))
FPS_CHOICES = (15.0, 20.0, 24.0, 25.0, 30.0)
STREAM_FPS = (15.0, 20.0, 25.0)
WIDTH, HEIGHT = 320, 240

# Body proportions in units of the standing height.
THIGH, SHIN, TORSO, NECK, UPPER_ARM, FOREARM, HEAD_R = 0.245, 0.245, 0.30, 0.035, 0.17, 0.16, 0.068
# Joint angles in degrees, one pose per row of 10: torso pitch from upright (+ forward), tilt of the whole body about
# the feet (+ forward), near hip, near knee, far hip, far knee, near shoulder, near elbow, far shoulder, far elbow. A
# hip or shoulder angle is the limb's angle from hanging straight down (+ forward); a knee bends the shin back, an
# elbow the forearm forward.
STAND = np.array([3, 0, 2, 4, -2, 4, 6, 10, -6, 10], np.float32)
SEATED = np.array([6, 0, 88, 88, 84, 86, 25, 45, 20, 50], np.float32)
POSE_SIZE = len(STAND)
JITTER = np.array([1, 0, 1, 1, 1, 1, 2, 2, 2, 2], np.float32)  # how much each angle wavers while still (no tilt)


@dataclass
class Key:
    """The figure at `t` seconds: `pose`, feet at `x` pixels, facing +1 (right) or -1. The stretch from this key to
    the next one interpolates the pose with `ease` (``smooth``, ``in`` for an accelerating fall, ``linear``), and with
    `gait` the legs and arms swing as in walking."""

    t: float
    pose: np.ndarray
    x: float
    facing: int
    ease: str = "smooth"
    gait: bool = False


@dataclass
class Script:
    """What the person does over seconds: keys, and named stretches ``(activity, start, end)``."""

    keys: list[Key]
    stretches: list[tuple[str, float, float]] = field(default_factory=list)
    stride: float = 80.0  # pixels walked per gait cycle (two steps)

    @property
    def now(self) -> Key:
        return self.keys[-1]

    def to(self, activity: str | None, seconds: float, pose: np.ndarray, *, x: float | None = None, **how) -> Script:
        """Append a stretch of `seconds` ending in `pose` at `x` (default: where it is)."""
        last = self.now
        last.ease, last.gait = how.get("ease", "smooth"), how.get("gait", False)
        facing = last.facing if x is None or x == last.x else (1 if x > last.x else -1)
        if x is not None and x != last.x:
            last.facing = facing  # a walk faces where it goes from its first step
        self.keys.append(Key(last.t + seconds, np.asarray(pose, np.float32), last.x if x is None else x, facing))
        if activity is not None:
            self.stretches.append((activity, round(last.t, 3), round(last.t + seconds, 3)))
        return self

    def pose_at(self, t: float) -> tuple[np.ndarray, float, int]:
        """(pose, feet x, facing) at `t` seconds; before the first key and after the last one, as they are."""
        keys = self.keys
        i = int(np.searchsorted([k.t for k in keys], t, side="right")) - 1
        if i < 0:
            return keys[0].pose, keys[0].x, keys[0].facing
        if i >= len(keys) - 1:
            return keys[-1].pose, keys[-1].x, keys[-1].facing
        a, b = keys[i], keys[i + 1]
        s = (t - a.t) / max(b.t - a.t, 1e-6)
        w = {"smooth": s * s * (3 - 2 * s), "in": s * s, "linear": s}[a.ease]
        pose, x = a.pose + (b.pose - a.pose) * w, a.x + (b.x - a.x) * s
        if a.gait:
            pose = pose + _gait(_travelled(keys, i) + abs(x - a.x), self.stride)
        return pose, x, a.facing


def _travelled(keys: list[Key], upto: int) -> float:
    return float(sum(abs(keys[j + 1].x - keys[j].x) for j in range(upto)))


def _gait(distance: float, stride: float) -> np.ndarray:
    """Joint offsets of walking after `distance` (in the same unit as `stride`, one cycle of two steps)."""
    phase = 2 * np.pi * distance / stride
    swing, knee = 24 * np.sin(phase), 30 * max(0.0, np.cos(phase)) ** 1.5
    other = 30 * max(0.0, -np.cos(phase)) ** 1.5
    return np.array([2, 0, swing, knee, -swing, other, -18 * np.sin(phase), 8, 18 * np.sin(phase), 8], np.float32)


def bend_pose(pitch: float, knees: float) -> np.ndarray:
    """Bent over by `pitch` degrees (hips back, knees a little bent), arms hanging down."""
    return np.array([pitch, 0, 6 + knees / 2, knees, 4 + knees / 2, knees, 10, 15, 0, 20], np.float32)


def lying_pose(forward: bool) -> np.ndarray:
    """Flat on the floor: face down (arms out ahead) after a forward fall, on the back after a backward one."""
    arms = [178, 5, 170, 10] if forward else [0, 10, -10, 15]
    return np.array([0, 88 if forward else -88, 4, 8, -4, 14, *arms], np.float32)


@dataclass
class Room:
    """The fixed camera's view: wall and floor photographs, the person's size and floor line, light and lens."""

    wall: str
    floor: str
    horizon: float  # y of the wall's foot, pixels
    ground: float  # y of the person's feet on the floor, pixels
    height: float  # the person's standing height, pixels
    top: str  # clothes: upper body and arms
    legs: str  # clothes: legs
    seat: tuple[float, float] | None  # (x centre, width) of a seat on the floor line, or None
    seed: int
    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    drift: float = 0.03  # lighting drift amplitude (fraction) over `drift_period` seconds
    drift_period: float = 20.0
    shake: float = 0.5  # camera shake, pixels
    noise: float = 2.0
    width: int = WIDTH
    image_height: int = HEIGHT


def make_room(rng: np.random.Generator, *, seed: int) -> Room:
    """A room at random: every choice independent of what the person will do in it."""
    horizon = float(rng.uniform(0.3, 0.55)) * HEIGHT
    ground = float(rng.uniform(max(horizon + 25, 0.68 * HEIGHT), 0.95 * HEIGHT))
    height = float(rng.uniform(0.5, 0.8)) * HEIGHT * (0.75 + 0.3 * ground / HEIGHT)  # nearer is bigger
    height = min(height, ground - 8)
    names = list(CLOTHES)
    seat = None
    if rng.random() < 0.5:
        seat = (float(rng.uniform(0.2, 0.8)) * WIDTH, float(rng.uniform(0.3, 0.45)) * height)
    return Room(
        wall=WALLS[int(rng.integers(len(WALLS)))], floor=FLOORS[int(rng.integers(len(FLOORS)))], horizon=horizon,
        ground=ground, height=height, top=names[int(rng.integers(len(names)))],
        legs=names[int(rng.integers(len(names)))], seat=seat, seed=seed, gain=float(rng.uniform(0.65, 1.25)),
        tint=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)), drift=float(rng.uniform(0.0, 0.06)),
        drift_period=float(rng.uniform(8.0, 40.0)), shake=float(rng.uniform(0.0, 1.2)), noise=float(rng.uniform(1, 4)),
    )  # fmt: skip


# --- what each class does -------------------------------------------------------------------------------------------


def _walk(script: Script, rng: np.random.Generator, room: Room, seconds: float, *, activity: str = "walk") -> Script:
    """Walk for `seconds` at a random speed, turning back at the frame's edges."""
    speed = float(rng.uniform(0.45, 1.1)) * room.height  # standing heights per second
    left, right = 0.1 * room.width, 0.9 * room.width
    while seconds > 1e-3:
        x, facing = script.now.x, script.now.facing
        room_ahead = (right - x) if facing > 0 else (x - left)
        if room_ahead < 0.05 * room.height:
            facing = -facing
            room_ahead = (right - x) if facing > 0 else (x - left)
        step = min(seconds, room_ahead / speed)
        script.to(activity, step, STAND, x=x + facing * speed * step, gait=True, ease="linear")
        seconds -= step
    return script


def _stand(script: Script, rng: np.random.Generator, seconds: float) -> Script:
    sway = STAND + rng.uniform(-4, 4, POSE_SIZE).astype(np.float32) * JITTER
    return script.to("stand", seconds, np.clip(sway, STAND - 8, STAND + 8))


def _bend(script: Script, rng: np.random.Generator) -> Script:
    pose = bend_pose(float(rng.uniform(60, 100)), float(rng.uniform(0, 30)))
    down, hold, up = rng.uniform(0.5, 1.1), rng.uniform(0.2, 0.9), rng.uniform(0.5, 1.1)
    script.to("bend", float(down), pose).to("bend", float(hold), pose + rng.uniform(-5, 5, POSE_SIZE))
    return script.to("bend", float(up), STAND)


def _sit_down(script: Script, rng: np.random.Generator) -> Script:
    seconds = float(rng.uniform(1.0, 1.8))
    lean = SEATED + np.array([25, 0, -30, -30, -30, -30, 20, 0, 20, 0], np.float32)  # leaning forward half way down
    return script.to("sit_down", seconds * 0.55, lean).to("sit_down", seconds * 0.45, SEATED)


def _stand_up(script: Script, rng: np.random.Generator) -> Script:
    seconds = float(rng.uniform(1.0, 1.8))
    lean = SEATED + np.array([35, 0, -20, -20, -20, -20, 30, 0, 30, 0], np.float32)
    return script.to("stand_up", seconds * 0.45, lean).to("stand_up", seconds * 0.55, STAND)


def _fall(script: Script, rng: np.random.Generator) -> Script:
    """A fall: the knees give and the body topples to the floor in 0.4-0.9 s, accelerating, and lies there."""
    forward = bool(rng.random() < 0.65)
    seconds = float(rng.uniform(0.4, 0.9))
    sign = 1 if forward else -1
    buckle = np.array([10 * sign, 25 * sign, 25, 45, 20, 40, 40 * sign, 20, 30 * sign, 20], np.float32)
    script.to("fall", seconds * 0.45, buckle, ease="in")
    return script.to("fall", seconds * 0.55, lying_pose(forward), ease="in")


def _lie(script: Script, rng: np.random.Generator, seconds: float) -> Script:
    still = script.now.pose + rng.uniform(-3, 3, POSE_SIZE).astype(np.float32) * JITTER
    return script.to("lying", seconds, still, ease="smooth")


def _get_up(script: Script, rng: np.random.Generator) -> Script:
    """Slowly: onto the knees (upright torso over folded legs), then standing."""
    seconds = float(rng.uniform(2.0, 3.2))
    kneel = np.array([15, 0, 80, 150, 70, 140, 20, 20, 10, 20], np.float32)
    return script.to("get_up", seconds * 0.6, kneel).to("get_up", seconds * 0.4, STAND)


def _standing(rng: np.random.Generator, room: Room, left: float, right: float) -> Script:
    """A script that starts standing between `left` and `right` (fractions of the width), facing either way."""
    x = float(rng.uniform(left, right)) * room.width
    script = Script([Key(0.0, STAND.copy(), x, 1 if rng.random() < 0.5 else -1)])
    script.stride = float(rng.uniform(0.7, 0.9)) * room.height
    return script


def clip_script(label: str, rng: np.random.Generator, room: Room) -> tuple[Script, float]:
    """A clip's script and its length (2-4 s): a little walking or standing, then `label`'s motion and what follows."""
    script = _standing(rng, room, 0.25, 0.75)
    if room.seat is not None and label == "sit":  # seated, the hips are a thigh's length behind the feet
        script.now.x = room.seat[0] + script.now.facing * THIGH * room.height
    lead = float(rng.uniform(0.2, 1.0))
    if label == "walk":
        length = float(rng.uniform(2.0, 4.0))
        if rng.random() < 0.3:  # walkers stop too: stopping is no sign of anything
            _walk(script, rng, room, length * 0.6)
            return _stand(script, rng, length * 0.4 + 0.2), length
        return _walk(script, rng, room, length + 0.2), length
    if label != "sit" and rng.random() < 0.5:
        _walk(script, rng, room, lead)
    else:
        _stand(script, rng, lead)  # a sitter stands in front of the seat
    actions = {"sit": _sit_down, "bend": _bend, "fall": _fall}
    if label not in actions:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    actions[label](script, rng)
    length = float(np.clip(script.now.t + rng.uniform(0.4, 1.2), 2.0, 4.0))
    rest = length - script.now.t + 0.2
    if label == "fall":
        _lie(script, rng, rest)
    elif label == "sit":
        script.to("seated", rest, SEATED + rng.uniform(-3, 3, POSE_SIZE))
    elif rng.random() < 0.5:
        _walk(script, rng, room, rest)  # bent, came back up and walks off
    else:
        _stand(script, rng, rest)
    return script, length


def stream_script(seconds: float, rng: np.random.Generator, room: Room, *, falls: int) -> Script:
    """A long stretch of everyday activity with `falls` falls, the first after 10 s and then at least 18 s apart;
    after each fall the person lies 4-8 s and gets up."""
    script = _standing(rng, room, 0.2, 0.8)
    room_for = seconds - 12.0  # a fall, lying and getting up fit after the last one
    plan = np.sort(rng.uniform(10.0, room_for, falls)) if falls else np.array([])
    for i in range(1, len(plan)):
        plan[i] = max(plan[i], plan[i - 1] + 18.0)
    plan = [t for t in plan if t <= room_for]
    for fall_at in [*plan, seconds]:
        while script.now.t < fall_at - 1.0:
            what = rng.choice(["walk", "walk", "stand", "bend", "sit"])
            if what == "walk":
                _walk(script, rng, room, float(rng.uniform(2.0, 6.0)))
            elif what == "stand":
                _stand(script, rng, float(rng.uniform(1.0, 3.0)))
            elif what == "bend":
                _bend(script, rng)
            else:
                _sit_down(script, rng)
                script.to("seated", float(rng.uniform(2.0, 5.0)), SEATED + rng.uniform(-3, 3, POSE_SIZE))
                _stand_up(script, rng)
        if fall_at >= seconds:
            break
        _fall(script, rng)
        _lie(script, rng, float(rng.uniform(4.0, 8.0)))
        _get_up(script, rng)
        _stand(script, rng, float(rng.uniform(0.5, 1.5)))
    return script


def falls_of(script: Script, end: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each fall: from the first moment of going down to the first of getting up (or `end`)."""
    out, opened = [], None
    for activity, start, _ in script.stretches:
        if activity == "fall" and opened is None:
            opened = start
        elif activity == "get_up" and opened is not None:
            out.append((opened, min(start, end)))
            opened = None
    if opened is not None and opened < end:
        out.append((opened, end))
    return out


# --- drawing --------------------------------------------------------------------------------------------------------


def joints(pose: np.ndarray, x: float, facing: int, room: Room) -> list[tuple]:
    """The figure's parts as tapered capsules in drawing order (far limbs first):
    ``(name, a (2,), b (2,), radius at a, radius at b, texture, shade)``, points in pixels (x, y)."""
    H = room.height
    torso, tilt, hip_n, knee_n, hip_f, knee_f, sh_n, el_n, sh_f, el_f = (np.radians(v) for v in pose)

    def down(angle):  # a unit vector `angle` from straight down, towards where the figure faces
        return np.array([facing * np.sin(angle), np.cos(angle)])

    hip = np.zeros(2)
    up = np.array([facing * np.sin(torso), -np.cos(torso)])  # the torso points up, pitched forward
    neck = hip + TORSO * H * up
    head = neck + (NECK + HEAD_R) * H * up
    shoulder = hip + 0.93 * TORSO * H * up
    legs, arms = [], []
    for hip_a, knee_a in ((hip_n, knee_n), (hip_f, knee_f)):
        knee = hip + THIGH * H * down(hip_a)
        legs.append((knee, knee + SHIN * H * down(hip_a - knee_a)))
    for sh_a, el_a in ((sh_n, el_n), (sh_f, el_f)):
        elbow = shoulder + UPPER_ARM * H * down(sh_a)
        arms.append((elbow, elbow + FOREARM * H * down(sh_a + el_a)))
    # (name, a, b, ra, rb, texture, shade), far side first
    parts = [
        ("far thigh", hip, legs[1][0], 0.05, 0.04, room.legs, 0.72),
        ("far shin", legs[1][0], legs[1][1], 0.04, 0.03, room.legs, 0.72),
        ("far upper arm", shoulder, arms[1][0], 0.032, 0.028, room.top, 0.72),
        ("far forearm", arms[1][0], arms[1][1], 0.028, 0.024, room.top, 0.72),
        ("torso", hip, neck, 0.075, 0.085, room.top, 1.0),
        ("head", head, head, HEAD_R, HEAD_R, "face", 1.0),
        ("near thigh", hip, legs[0][0], 0.05, 0.04, room.legs, 1.0),
        ("near shin", legs[0][0], legs[0][1], 0.04, 0.03, room.legs, 1.0),
        ("near upper arm", shoulder, arms[0][0], 0.032, 0.028, room.top, 1.0),
        ("near forearm", arms[0][0], arms[0][1], 0.028, 0.024, room.top, 1.0),
    ]
    feet = (legs[0][1] + legs[1][1]) / 2
    rho = facing * np.radians(pose[1])  # the whole body turns about the feet
    turn = np.array([[np.cos(rho), -np.sin(rho)], [np.sin(rho), np.cos(rho)]])
    placed = [(n, feet + turn @ (a - feet), feet + turn @ (b - feet), ra * H, rb * H, tex, sh)
              for n, a, b, ra, rb, tex, sh in parts]  # fmt: skip
    lowest = max(max(a[1] + ra, b[1] + rb) for _, a, b, ra, rb, _, _ in placed)
    shift = np.array([x - feet[0], room.ground - lowest])  # the feet at x, the lowest point on the floor
    return [(n, a + shift, b + shift, ra, rb, tex, sh) for n, a, b, ra, rb, tex, sh in placed]


@lru_cache(maxsize=16)
def _texture(name: str) -> np.ndarray:
    """(h, w, 3) float32 pixels of a cloth (`CLOTHES`) or of the face."""
    photo, (top, bottom, left, right) = FACE if name == "face" else CLOTHES[name]
    return photograph(photo)[top:bottom, left:right].astype(np.float32)


def _draw(frame: np.ndarray, part: tuple, scale: float) -> None:
    """Paint one capsule onto `frame` ((H, W, 3) float32, in place), its texture laid along its axis."""
    _, a, b, ra, rb, name, shade = part
    pad = max(ra, rb) + 1
    y0, y1 = int(max(min(a[1], b[1]) - pad, 0)), int(min(max(a[1], b[1]) + pad + 1, frame.shape[0]))
    x0, x1 = int(max(min(a[0], b[0]) - pad, 0)), int(min(max(a[0], b[0]) + pad + 1, frame.shape[1]))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    axis = b - a
    length = float(np.hypot(*axis))
    along_unit = axis / length if length > 1e-6 else np.array([0.0, 1.0])
    rel_x, rel_y = xx - a[0], yy - a[1]
    along = np.clip(rel_x * along_unit[0] + rel_y * along_unit[1], 0, length)  # (h, w) pixels from a along the axis
    across = rel_x * along_unit[1] - rel_y * along_unit[0]  # signed distance from the axis line
    radius = ra + (rb - ra) * along / max(length, 1e-6)
    dist = np.hypot(rel_x - along * along_unit[0], rel_y - along * along_unit[1])
    alpha = np.clip(radius - dist + 0.5, 0.0, 1.0)[..., None]
    tex = _texture(name)
    if name == "face":  # the photograph's face, upright in the head's frame
        v = (across / (2 * ra) + 0.5) * (tex.shape[1] - 1)
        u = (-(rel_x * along_unit[0] + rel_y * along_unit[1]) / (2 * ra) + 0.5) * (tex.shape[0] - 1)
    else:
        u, v = along * scale, (across + radius) * scale
    pixels = tex[np.clip(u.astype(int), 0, tex.shape[0] - 1), np.clip(v.astype(int), 0, tex.shape[1] - 1)]
    frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - alpha) + pixels * shade * alpha


@lru_cache(maxsize=8)
def _room_background(wall: str, floor: str, horizon: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) float32: the wall photograph above `horizon`, the floor photograph (squashed, as seen at a
    slant) below it, a darker skirting line between them."""
    from PIL import Image

    def cover(name: str, w: int, h: int) -> np.ndarray:
        image = Image.fromarray(photograph(name))
        scale = max(w / image.width, h / image.height)
        image = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))))
        return np.asarray(image, dtype=np.float32)[:h, :w]

    out = np.empty((height, width, 3), np.float32)
    out[:horizon] = cover(wall, width, max(horizon, 1))[:horizon]
    floor_rows = height - horizon
    flat = cover(floor, width, floor_rows * 2)
    out[horizon:] = flat[::2][:floor_rows] * 0.85
    out[max(horizon - 3, 0) : horizon + 1] *= 0.45
    return out


def render(script: Script, room: Room, *, fps: float, seconds: float) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of `seconds` at `fps`: frame i shows ``i / fps`` s of the script."""
    import cv2

    base = _room_background(room.wall, room.floor, round(room.horizon), room.width, room.image_height).copy()
    if room.seat is not None:  # a seat: a box of wall photograph, seat height a quarter of the person's
        cx, w = room.seat
        top = int(room.ground - 0.25 * room.height)
        left, right = int(max(cx - w / 2, 0)), int(min(cx + w / 2, room.width))
        box = _texture("camera")[: max(int(room.ground) - top, 1), : max(right - left, 1)]
        base[top : top + box.shape[0], left : left + box.shape[1]] = box * 0.6 + 30
    rng = np.random.default_rng(room.seed)
    count = max(1, round(seconds * fps))
    frames = np.empty((count, room.image_height, room.width, 3), np.uint8)
    walk = np.cumsum(rng.standard_normal((count, 2)), axis=0)  # shake: a random walk pulled back to the centre
    shake = (walk - np.convolve(walk[:, 0], np.ones(9) / 9, mode="same")[:, None]) * room.shake * 0.5
    tex_scale = 180.0 / (room.height * 0.55)  # texture pixels per figure pixel: a piece spans about one body
    tint = np.array(room.tint, np.float32)
    for i in range(count):
        t = i / fps
        frame = base.copy()
        pose, x, facing = script.pose_at(t)
        for part in joints(pose, x, facing, room):
            _draw(frame, part, tex_scale)
        gain = room.gain * (1 + room.drift * np.sin(2 * np.pi * t / room.drift_period))
        frame = frame * (gain * tint) + rng.standard_normal(frame.shape, dtype=np.float32) * room.noise
        move = np.float32([[1, 0, shake[i, 0]], [0, 1, shake[i, 1]]])
        frame = cv2.warpAffine(frame, move, (room.width, room.image_height), borderMode=cv2.BORDER_REFLECT)
        frames[i] = np.clip(frame, 0, 255).round().astype(np.uint8)
    return frames


def _write(job: tuple[Script, Room, float, float, int, str]) -> None:
    script, room, fps, seconds, crf, path = job
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(path, render(script, room, fps=fps, seconds=seconds), fps=fps, crf=crf)


def generate_falls(
    out: str | Path,
    *,
    seed: int = 0,
    clips_per_class: int = 12,
    streams: int = 3,
    stream_seconds: float = 75.0,
    workers: int = 2,
) -> dict:
    """Write the falls sample: labelled clips of walking, sitting down, bending over and falling, and long streams
    with falls at known seconds (``falls.csv``).

    Args:
        clips_per_class: clips per label, split 60/20/20 (at least 3: one each for train, val and test).
        streams, stream_seconds: how many long streams, and how long (at least 30 s; a fall every 18 s or more,
            two in 60-75 s, three in 90).

    Returns:
        A summary: the files written and how many of each.
    """
    if clips_per_class < 3:
        raise ValueError("clips_per_class must be at least 3 (one each for train, val and test)")
    if streams and stream_seconds < 30.0:
        raise ValueError(f"stream_seconds must be at least 30 (a fall, lying and getting up), got {stream_seconds:g}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, truth, stretches, stream_rows = [], [], [], []
    for s in range(streams):
        rng = np.random.default_rng([seed, 1, s])
        room = make_room(rng, seed=seed * 10_000 + s)
        room.seat = None  # the stream's sitter sits on the floor; a seat nobody uses is no help
        script = stream_script(stream_seconds, rng, room, falls=max(1, int((stream_seconds - 12) // 30)))
        fps = float(rng.choice(STREAM_FPS))
        path = f"streams/stream_{s:03d}.mp4"
        jobs.append((script, room, fps, stream_seconds, int(rng.integers(20, 27)), str(out / path)))
        stream_rows.append((path, stream_seconds, fps))
        truth += [(path, start, end) for start, end in falls_of(script, stream_seconds)]
        stretches += [(path, a, start, min(end, stream_seconds)) for a, start, end in script.stretches
                      if start < stream_seconds]  # fmt: skip
    clip_rows = []
    for c, label in enumerate(LABELS):
        splits = clip_splits(clips_per_class, np.random.default_rng([seed, 2, c]))
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, 3, c, i])
            room = make_room(rng, seed=seed * 10_000 + 5000 + c * 500 + i)
            script, length = clip_script(label, rng, room)
            fps = float(rng.choice(FPS_CHOICES))
            path = f"clips/{splits[i]}/{label}/{label}_{i:03d}.mp4"
            jobs.append((script, room, fps, length, int(rng.integers(18, 33)), str(out / path)))
            clip_rows.append((splits[i], path, label))
    # The long streams first: with a pool they start early and the short clips fill the gaps.
    each(_write, jobs, workers=workers, desc="falls", unit="video")
    write_csv(out / "falls.csv", ("stream", "start", "end"), truth)
    write_csv(out / "activities.csv", ("stream", "activity", "start", "end"), stretches)
    write_csv(out / "streams.csv", ("path", "duration", "fps"), stream_rows)
    for split in SPLITS:
        write_csv(out / f"{split}.csv", ("path", "label"), [(p, lab) for sp, p, lab in clip_rows if sp == split])
    return {
        "out": str(out),
        "streams": streams,
        "stream_seconds": stream_seconds,
        "falls": len(truth),
        "clips": {split: sum(sp == split for sp, _, _ in clip_rows) for split in SPLITS},
        "labels": list(LABELS),
    }


def read_falls(out: str | Path) -> dict[str, list[tuple[float, float]]]:
    """``falls.csv`` of a generated folder: {stream path relative to it: [(start, end) seconds]}."""
    import csv

    truth: dict[str, list[tuple[float, float]]] = {}
    with open(Path(out) / "falls.csv", newline="") as f:
        for row in csv.DictReader(f):
            truth.setdefault(row["stream"], []).append((float(row["start"]), float(row["end"])))
    return truth
