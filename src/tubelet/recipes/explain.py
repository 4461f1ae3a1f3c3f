"""Why did the classifier decide? Scores per particle (where, when) for one window of a video, and pictures of them.

Read top to bottom: load the checkpoint -> decode the window exactly as training did -> particles (both through
`tubelet.data.pipeline`, as every dataset) -> predict ->
attribute (one of `tubelet.explain.METHODS`) -> files: ``particles.csv`` (every particle with its seconds, cell and
score), ``heatmap.mp4/.gif/.png``, ``timeline.png``, ``report.html`` (self-contained) and ``explanation.json``.

A fusion checkpoint (``tubelet finetune --modalities video,audio``, or audio alone) is explained over ALL its
particles: the window's audio is decoded beside its frames, and one attribution scores video and audio particles
on the same scale. Its outputs add the evidence per modality: ``particles.csv`` has a ``modality`` column,
``explanation.json`` has ``modality_share`` (each modality's fraction of the positive scores),
``modality_occlusion`` (the target's probability drop without all of a modality's particles) and ``audio`` (the
audio particles' scores over seconds x mel band, drawn in ``audio.png``); the heatmap and timeline are drawn from
the video particles only.

A VQA checkpoint (``tubelet finetune --task vqa``: a fusion model that also reads a question) is explained for one
``question`` (``--question TEXT``, checked and turned into text particles exactly as ``tubelet predict --question``
does: `tubelet.data.qa.asked_questions`, `tubelet.data.pipeline.question_particles`); the target is an answer,
default the predicted one. Its question's tokens are particles like the others, so every method scores them beside the
video (and audio) particles: ``explanation.json`` adds ``question`` (the text) and ``tokens`` ([{token, score}] in the
question's order), ``modality_occlusion`` has a ``text`` entry (the drop without the question), ``particles.csv``
a ``token`` column, and ``report.html`` shows the question with each token shaded by its score.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from tubelet import models
from tubelet.data.av_dataset import MISSING_AUDIO, AudioPreprocessing
from tubelet.data.crop import motion_box, motion_crop
from tubelet.data.pipeline import DecodedWindow, check_window, clip_particles, decode_window
from tubelet.data.qa import QUESTION, asked_questions
from tubelet.data.text import PAD, encode
from tubelet.data.transforms import clip_window
from tubelet.errors import ConfigError, DataError
from tubelet.explain.checks import particle_boxes
from tubelet.explain.methods import (
    METHODS,
    Clip,
    Explanation,
    class_probs,
    explain_particles,
    modality_occlusion,
)
from tubelet.explain.render import audio_scores, plot_audio, plot_timeline, write_heatmap_video, write_html
from tubelet.io import decode, probe
from tubelet.io.probe import VideoInfo
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.particles.modalities import ModalClip
from tubelet.tasks.classification import NEAR_CHANCE

log = logging.getLogger("tubelet.explain")

METHOD_NOTES = {
    "occlusion": "Occlusion: each score is how much the target's probability falls when that particle (or its "
    "space-time window) is removed from the clip.",
    "ig": "Integrated gradients on the particle embeddings from a baseline clip (every video particle the clip's "
    "average particle; audio particles silent; the question's tokens [PAD]); scores sum to the change of the target's "
    "logit.",
    "gradxinput": "Gradient x input on the particle embeddings (target logit): a fast, local estimate.",
    "rollout": "Attention rollout across layers: how much each particle flows into the pooled feature. It is the "
    "same for every target class.",
}


def explain(
    checkpoint: str | models.Loaded,
    path: str | Path,
    *,
    out: str | Path,
    method: str = "occlusion",
    target: str | None = None,
    question: str | None = None,
    start: float | None = None,
    seconds: float | None = None,
    topk: int = 10,
    window: tuple[int, int, int] = (1, 1, 1),
    steps: int = 32,
    device: str = "auto",
    pictures: bool = True,
) -> dict:
    """Explain the classifier's decision on one window of `path`; returns the ``explanation.json`` content.

    Args:
        checkpoint: a classifier checkpoint directory, video, fusion or VQA (or an already loaded model).
        method: occlusion, ig, gradxinput or rollout.
        target: class name to explain (an answer, for a VQA checkpoint); default the predicted class.
        question: what a VQA checkpoint (one that reads text) is asked about the window; required by one, an error
            for others (as ``predict --question``).
        start, seconds: the window in the video; default the checkpoint's ``clip_seconds``, centred.
        window: occlusion window in tubelets (time, rows, columns); for audio particles (time patches, mel
            bands, 1), for a question's tokens (tokens, 1, 1).
        steps: integrated-gradients steps.
        pictures: write the heatmap video, timeline, audio picture and HTML (False: scores and JSON only).
    """
    if steps < 1:
        raise ConfigError(f"--steps: must be at least 1, got {steps}")
    out = writable_dir(out, "--out")  # before the model runs, not after
    loaded, source = _load(checkpoint)
    if loaded.kind == "onnx":  # onnxruntime gives logits only: no gradients, no attention maps
        raise ConfigError(f"{source}: an export directory cannot be explained; explain the checkpoint it came from")
    if not loaded.labels or loaded.preprocessing is None:
        raise ConfigError(f"{source}: not a classifier checkpoint (no labels.json)")
    if method not in METHODS:
        raise ConfigError(f"method: expected {' | '.join(METHODS)}, got {method!r}")
    audio = loaded.audio if loaded.kind == "fusion" else None
    modalities = loaded.model.config.modalities if audio is not None else ("video",)
    (asked,) = asked_questions(source, modalities, [question] if question is not None else None)
    token_ids = encode(loaded.tokenizer, asked, field=QUESTION, source="--question") if asked is not None else None
    labels, pre = loaded.labels, loaded.preprocessing
    if seconds is not None:
        check_window(seconds, pre, flag="--seconds")
    model = loaded.model.to(resolve_device(device)).eval()

    interval, info = explained_window(path, pre, start=start, seconds=seconds)  # (start, end) seconds
    if "audio" in modalities and not info.has_audio and not audio.allow_missing_audio:
        raise DataError(f"{path}: {MISSING_AUDIO}")
    clip = decode_window(
        path, interval, pre=pre, modalities=modalities, audio_pre=audio, source_size=(info.height, info.width)
    )
    scale, origin = (1.0, 1.0), (0.0, 0.0)  # model pixels -> source pixels: y = origin + scale * y_model
    if clip.frames is not None:
        scale = (info.height / clip.frames.shape[1], info.width / clip.frames.shape[2])
    cropped = pre.crop is not None and clip.frames is not None
    if cropped:  # explain what the model saw: the window's motion crop (shown as the heatmap video's frames)
        scale, origin = _crop_geometry(clip.frames, pre.crop_side, scale)
        clip.frames = motion_crop(clip.frames, pre.crop_side)  # (T, S, S, 3)
        pre = replace(pre, crop=None)  # the frames are cut already
    particles = window_particles(clip, pre, modalities, audio, question=token_ids)
    probs = class_probs(model, [particles])[0]
    index = int(probs.argmax()) if target is None else _label_index(target, labels)
    baselines = {  # where gradient methods start audio and text from (`baseline_particles`)
        "audio_silence": audio.silence if audio is not None else None,
        "text_token": _pad_id(loaded.tokenizer, method) if token_ids is not None else None,
    }
    explanation = explain_particles(model, particles, index, method, window=tuple(window), steps=steps, **baselines)
    tokens = [loaded.tokenizer.id_to_token(i) for i in token_ids] if token_ids is not None else None

    rows = particle_rows(explanation, scale, interval[0], tokens=tokens, origin=origin)
    out.mkdir(parents=True, exist_ok=True)  # checked writable before the work; created once there is a result
    write_particles_csv(out / "particles.csv", rows)
    order = np.argsort([-r["score"] for r in rows], kind="stable")[:topk]
    ranked = np.argsort(-probs.numpy())[: min(5, len(labels))]
    result = {
        "path": str(path),
        **({"question": asked} if asked is not None else {}),
        "method": method,
        "target": labels[index],
        "target_score": round(float(probs[index]), 4),
        "prediction": {
            "label": labels[int(probs.argmax())],
            "score": round(float(probs.max()), 4),
            # as predict says it: a top score this close to 1 / classes is a guess, and so is what explains it
            **({"near_chance": round(1.0 / len(labels), 4)} if probs.max() < NEAR_CHANCE / len(labels) else {}),
        },
        "topk_classes": [{"label": labels[i], "score": round(float(probs[i]), 4)} for i in ranked],
        "window": {"start": round(interval[0], 3), "end": round(interval[1], 3)},
        "num_particles": len(particles),
        "top_particles": [rows[i] for i in order],
        "method_note": METHOD_NOTES[method],
        "meta": explanation.meta,
        "files": {"particles": str(out / "particles.csv")},
    }
    heard = explanation.of_modality("audio") if "audio" in modalities else None
    if audio is not None:  # a fusion model: the evidence per modality
        result["modalities"] = list(modalities)
        result["modality_share"] = {k: round(v, 4) for k, v in explanation.modality_share().items()}
        drops = modality_occlusion(model, particles, index)
        result["modality_occlusion"] = {k: round(v, 4) for k, v in drops.items()}
        if heard is not None:
            result["audio"] = audio_scores(heard, offset=interval[0], sample_rate=audio.sample_rate)
    if tokens is not None:  # the question's tokens in its order (text particles are in `ti` order)
        said = explanation.of_modality("text").scores.tolist()
        result["tokens"] = [{"token": token, "score": score} for token, score in zip(tokens, said)]
    if pictures:
        if "video" in modalities:
            top = [r for r in result["top_particles"] if r.get("modality", "video") == "video"]
            drawn = _video_pictures(out, path, clip, pre, explanation, labels[index], top, cropped=cropped)
            result["files"].update(drawn)
        if heard is not None:
            picture = plot_audio(
                out / "audio.png", heard, offset=interval[0], sample_rate=audio.sample_rate, hop=audio.hop,
                label=labels[index],
            )  # fmt: skip
            result["files"]["audio"] = str(picture)
        result["files"]["html"] = str(write_html(out / "report.html", result))
    (out / "explanation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _pad_id(tokenizer, method: str) -> int | None:
    """The tokenizer's [PAD] id: the gradient methods' baseline for question tokens (None for other methods).

    Raises:
        ConfigError: a gradient method with a tokenizer that has no [PAD] token.
    """
    if method not in ("ig", "gradxinput"):
        return None
    pad = tokenizer.token_to_id(PAD)
    if pad is None:
        raise ConfigError(
            f"--method {method}: the checkpoint's tokenizer has no {PAD} token, where gradients start the question "
            "from; use occlusion or rollout"
        )
    return pad


def _load(checkpoint: str | models.Loaded) -> tuple[models.Loaded, str]:
    """The loaded model (video encoder or fusion) and the name to put in error messages."""
    if isinstance(checkpoint, models.Loaded):
        return checkpoint, checkpoint.source or f"the {checkpoint.kind} model"
    return models.load(checkpoint), str(checkpoint)


def _crop_geometry(frames, side: int, scale: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, origin) from the pixels of a window's motion crop (`side` x `side`, `tubelet.data.crop`) of `frames`
    (T, H, W, 3) to source pixels, given `scale` from `frames`' pixels to the source's."""
    height, width = frames.shape[1:3]
    top, left, cut_h, cut_w = 0, 0, height, width  # nothing moves: the whole frame, squeezed to the square
    box = motion_box(frames)
    if box is not None:
        top, left, cut_h = box
        cut_w = cut_h
    return (scale[0] * cut_h / side, scale[1] * cut_w / side), (scale[0] * top, scale[1] * left)


def _video_pictures(
    out: Path,
    path: str | Path,
    clip: DecodedWindow,
    pre,
    explanation: Explanation,
    label: str,
    top: list[dict],
    *,
    cropped: bool = False,
) -> dict:
    """The heatmap video and timeline (`top`: the best video particles' rows) of the video particles' scores."""
    seen = explanation.of_modality("video")
    # The overlay goes on the source-resolution frames at the same times (the model saw them resized), or on the
    # window's motion crop as the model read it (`cropped`).
    start, end = clip.window
    source = decode(path, start=start, end=end, fps=pre.sample_fps) if not cropped else None
    shown = source.frames if source is not None and len(source.frames) == len(clip.frames) else clip.frames.numpy()
    files = write_heatmap_video(out, shown, clip.timestamps, seen)
    files["timeline"] = str(plot_timeline(out / "timeline.png", seen, clip.timestamps, label=label, top=top))
    return files


def explained_window(
    path: str | Path, pre, *, start: float | None = None, seconds: float | None = None
) -> tuple[tuple[float, float], VideoInfo]:
    """The window of `path` to explain, (start, end) seconds, and the file's probe.

    Args:
        start, seconds: the window; default the preprocessing's ``clip_seconds``, centred.

    Raises:
        ConfigError: a `start` outside the video.
    """
    info = probe(path)
    length = seconds or pre.clip_seconds
    if start is None:
        begin, end = clip_window(info.duration_s, length, None)
    else:
        if start < 0 or start >= info.duration_s:
            raise ConfigError(f"start: {start} s is outside {path} (duration {info.duration_s:.2f} s)")
        begin, end = start, min(start + length, info.duration_s)
    return (float(begin), float(end)), info


def window_particles(
    clip: DecodedWindow,
    pre,
    modalities: tuple[str, ...],
    audio: AudioPreprocessing | None,
    *,
    question: list[int] | None = None,
) -> Clip:
    """The decoded window's particles as the model reads them, times from the window's start (`clip_particles`).

    Args:
        question: the token ids of the question a VQA model (one that reads ``text``) is asked.

    Returns:
        The video `Particles` for a video encoder (`audio` None); for a fusion model, a `ModalClip` of its
        `modalities` in its order (the question's tokens at the window's centre).
    """
    particles = clip_particles(
        clip.window, pre=pre, modalities=modalities if audio is not None else None, frames=clip.frames,
        timestamps=clip.timestamps, audio=clip.audio, audio_pre=audio, question=question,
    )  # fmt: skip
    return particles if audio is None else ModalClip(particles)


def particle_rows(
    explanation: Explanation,
    scale: tuple[float, float],
    offset: float,
    *,
    tokens: list[str] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> list[dict]:
    """One dict per particle, in the explanation's order: seconds in the video, tubelet index, grid cell, score.

    Video particles also give their pixels in the source (`scale`: source / model pixels, rows and columns; `origin`:
    the source pixel (row, column) of the model's top left, not 0 for a motion crop); audio
    particles' ``row`` is their mel band and their pixels are None; text particles' ``ti`` is their position in the
    question, whose `tokens` (strings, in order) give their ``token``. A fusion clip's rows carry their ``modality``.
    """
    fused = isinstance(explanation.particles, ModalClip)
    rows = []
    for name in explanation.modalities:
        part = explanation.of_modality(name)
        particles = part.particles
        boxes = None
        if name == "video":
            shift = np.array([origin[1], origin[0], origin[1], origin[0]])  # x0, y0, x1, y1
            boxes = (particle_boxes(particles, scale) + shift).round().astype(int)
        for i in range(len(particles)):
            row = {
                "t": round(float(particles.t[i]) + offset, 4),
                "ti": int(particles.ti[i]),
                "row": int(particles.y[i]),
                "col": int(particles.x[i]),
                "span": int(particles.span[i]),
                "y_px": [int(boxes[i, 1]), int(boxes[i, 3])] if boxes is not None else None,
                "x_px": [int(boxes[i, 0]), int(boxes[i, 2])] if boxes is not None else None,
                "score": float(part.scores[i]),
            }
            if fused:
                row["modality"] = name
            if name == "text" and tokens is not None:
                row["token"] = tokens[int(particles.ti[i])]
            rows.append(row)
    return rows


def write_particles_csv(path: Path, rows: list[dict]) -> Path:
    """``particles.csv``: one line per particle; a ``modality`` column when the rows carry one (fusion), and a
    ``token`` column (empty but for text particles) when some carry a token (VQA)."""
    fused = bool(rows) and "modality" in rows[0]
    asked = any("token" in r for r in rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["t", "ti", "row", "col", "span", "y0", "y1", "x0", "x1", "score"]
        writer.writerow(header + ["modality"] * fused + ["token"] * asked)
        for r in rows:
            pixels = [*(r["y_px"] or ("", "")), *(r["x_px"] or ("", ""))]
            line = [r["t"], r["ti"], r["row"], r["col"], r["span"], *pixels, r["score"]]
            writer.writerow(line + ([r["modality"]] if fused else []) + ([r.get("token", "")] if asked else []))
    return path


def _label_index(target: str, labels: list[str]) -> int:
    if target not in labels:
        raise ConfigError(f"target: {target!r} is not a class of this checkpoint ({', '.join(labels)})")
    return labels.index(target)
