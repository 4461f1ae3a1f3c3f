"""A summary of a video: the importance of every second, its shots, and the segments worth keeping within a share of
its length (``tubelet summarize FILE --checkpoint C --out DIR [--ratio 0.15]``).

1. Frames at up to `MOTION_FPS`, small, in chunks of `CHUNK_S` seconds (bounded memory on long files): hard cuts
   (`tubelet.video2video.baselines.cuts`) and camera-compensated motion energy per second.
2. Importance per second: LEARNED when the checkpoint was trained for the ``importance`` task (its scores); otherwise
   UNSUPERVISED from the checkpoint's encoder: novelty of its features pooled per second against a running mean in
   the shot, combined with the motion energy (`tubelet.summary.importance`).
3. Shots cut into segments of at most ``--max-segment`` seconds; the knapsack keeps those of the most summed
   importance within ``--ratio`` of the length (`tubelet.summary.select`, the TVSum/SumMe protocol).
4. Written to DIR: ``summary.mp4`` (the segments in order, with their sound), ``summary.json`` (segments with start,
   end, score and caption; ratio; importance per second; shots), ``summary.md`` (the segments' captions in order, or
   their times and scores and "no caption model") and ``importance.png`` (importance over time, shots, the selection).

Captions come from a checkpoint whose task captions (`captions_for`): ``--captioner C2``, or the checkpoint itself.
Without one, no caption is ever made up.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from tubelet.data.manifest import Sample, VideoDataset, try_probe
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError, DataError, TubeletError
from tubelet.io.audio import decode_audio
from tubelet.io.decode import decode
from tubelet.io.write import VideoWriter
from tubelet.models import Encoder, load
from tubelet.nn.device import resolve_device
from tubelet.outputs import writable_dir
from tubelet.progress import bar
from tubelet.summary.importance import combine, motion_energy, novelty
from tubelet.summary.select import MAX_SEGMENT_S, Segment, select, shot_bounds
from tubelet.tasks.base import task_of
from tubelet.tasks.importance import per_second, second_pool, tiles
from tubelet.video2video.baselines import cuts

log = logging.getLogger("tubelet.summarize")

CHUNK_S = 60  # seconds of frames held at once for cuts and motion
MOTION_FPS = 15.0  # frames per second read for cuts and motion (fewer when the file has fewer)
MOTION_SIZE = 72  # short side of those frames
AUDIO_RATE = 16000


def summarize(
    file: str, *, checkpoint: str, out: str, ratio: float = 0.15, captioner: str | None = None,
    max_segment: float = MAX_SEGMENT_S, batch_particles: int = 8192, workers: int = 0, device: str = "auto",
) -> dict:  # fmt: skip
    """Summarize `file` into `out` (see the module docstring); returns what was done and the files written."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"--ratio: must be in (0, 1], got {ratio:g}")
    if not max_segment > 0:
        raise ConfigError(f"--max-segment: must be positive, got {max_segment:g}")
    info, reason = try_probe(file)
    if info is None:
        raise DataError(reason)
    if Path(checkpoint).is_dir() and not (Path(checkpoint) / "config.json").is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: not a model checkpoint (no config.json)")
    loaded = load(checkpoint)
    if not isinstance(loaded.model, Encoder):
        raise ConfigError(
            f"--checkpoint {checkpoint}: a {loaded.kind} model; summarize reads a video encoder (a pretrain, finetune "
            f"or importance checkpoint)"
        )
    if captioner is not None and _caption_method(load(captioner)) is None:  # before any work is done
        raise ConfigError(f"--captioner {captioner}: not a caption model (tubelet finetune --task caption trains one)")
    writable_dir(out, "--out")
    duration = float(info.duration_s)
    seconds = max(1, math.ceil(duration - 0.05))  # a last second shorter than a twentieth is dropped

    cut_times, motion = cuts_and_motion(file, duration, seconds, fps=min(MOTION_FPS, info.fps or MOTION_FPS))
    shots = shot_bounds(cut_times, duration)
    importance, _ = video_importance(
        loaded, file, info, seconds=seconds, shots=shots, motion=motion, batch_particles=batch_particles,
        workers=workers, device=resolve_device(device),
    )  # fmt: skip
    segments = select(importance, shots, ratio=ratio, duration=duration, max_seconds=max_segment)
    captions = captions_for(captioner, file, segments, device=device) if captioner else None
    if captions is None and not captioner:
        captions = captions_for(checkpoint, file, segments, device=device)

    out_dir = Path(out)
    video = _write_summary_video(file, info, segments, out_dir / "summary.mp4")
    report = {
        "file": str(file),
        "checkpoint": str(checkpoint),
        "importance_kind": "learned" if loaded.task == "importance" else "unsupervised",
        "ratio": ratio,
        "duration": round(duration, 3),
        "summary_seconds": round(sum(s.length for s in segments), 3),
        "captioner": captioner or (checkpoint if captions is not None else None),
        "segments": [
            {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "score": round(s.score, 4),
                "caption": captions[i] if captions is not None else None,
            }
            for i, s in enumerate(segments)
        ],  # fmt: skip
        "shots": [[round(a, 3), round(b, 3)] for a, b in shots],
        "importance": [round(float(v), 4) for v in importance],
    }
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(report))
    plot = _plot(out_dir / "importance.png", importance, shots, segments, Path(file).name, report["importance_kind"])
    files = {"video": str(video), "json": str(out_dir / "summary.json"), "markdown": str(out_dir / "summary.md"),
             "plot": str(plot)}  # fmt: skip
    return {
        "file": str(file),
        "importance": report["importance_kind"],
        "ratio": ratio,
        "duration": report["duration"],
        "summary_seconds": report["summary_seconds"],
        "shots": len(shots),
        "segments": len(segments),
        "captions": "yes" if captions is not None else "no caption model",
        "files": files,
    }


def video_importance(
    loaded, file: str, info, *, seconds: int, shots: list[tuple[float, float]], motion: np.ndarray,
    batch_particles: int = 8192, workers: int = 0, device=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """(seconds,) importance of every second of `file`, and its parts: the scores of an ``importance`` checkpoint
    (``{"learned": ...}``), or the `novelty` of the encoder's features pooled per second combined with `motion`
    (``{"novelty": ..., "motion": ...}``).

    Args:
        loaded: a loaded checkpoint whose model is an `Encoder`.
        shots: (start, end) seconds of every shot (novelty starts afresh in each).
        motion: (seconds,) motion energy (`cuts_and_motion`).
    """
    device = device if device is not None else resolve_device("cpu")
    model = loaded.model.to(device)
    pre = loaded.preprocessing or Preprocessing()
    if loaded.task == "importance":
        width = model.num_classes
        scores = _per_second(model, file, info, seconds, pre, width, task_of(loaded).forward, batch_particles, workers,
                             device)  # fmt: skip
        learned = _filled(scores[:, 0])
        return learned, {"learned": learned}
    width = max(1, round(pre.clip_seconds))

    def features(m, packed):  # (B, K * D): the encoder's features pooled per second of each window
        return second_pool(m.forward_features(packed), packed, width).flatten(1)

    pooled = _per_second(model, file, info, seconds, pre, width, features, batch_particles, workers, device)
    starts = sorted({int(math.floor(a)) for a, _ in shots})
    new = _filled(novelty(_filled_rows(pooled), shot_starts=starts))
    return combine(new, motion), {"novelty": new, "motion": motion}


def captions_for(checkpoint: str | None, file: str, segments: list[Segment], *, device: str = "auto"):
    """One caption per segment from `checkpoint`, or None when it cannot caption.

    A checkpoint captions when its task has ``caption_windows(loaded, path, windows, *, device) -> list[str]`` (one
    caption per (start, end) window in seconds); the ``caption`` task provides it. Asking a checkpoint that cannot
    caption for captions through ``--captioner`` is an error, so none is made up in silence.
    """
    if checkpoint is None:
        return None
    loaded = load(checkpoint)
    method = _caption_method(loaded)
    if method is None:
        return None
    captions = list(method(loaded, str(file), [(s.start, s.end) for s in segments], device=device))
    if len(captions) != len(segments):
        raise ConfigError(f"{checkpoint}: {len(captions)} captions for {len(segments)} segments")
    return captions


def _caption_method(loaded):
    """The ``caption_windows`` of a loaded checkpoint's task, or None when it cannot caption."""
    try:
        return getattr(task_of(loaded), "caption_windows", None)
    except TubeletError:
        return None


def summary_markdown(report: dict) -> str:
    """The text summary: the segments' captions in order, each with its times and score; without a caption model,
    the times and scores alone and a line saying so."""
    lines = [f"# Summary of {Path(report['file']).name}", ""]
    lines.append(
        f"{len(report['segments'])} segments, {report['summary_seconds']:.1f} s of {report['duration']:.1f} s "
        f"(ratio {report['ratio']:g}); importance {report['importance_kind']}; {len(report['shots'])} shots."
    )
    lines.append("")
    captioned = [s["caption"] for s in report["segments"] if s["caption"]]
    if captioned:
        lines += ["## What happens", "", " ".join(_sentence(c) for c in dict.fromkeys(captioned)), ""]
    else:
        lines += ["No caption model: the segments below have times and scores only (pass --captioner C2, a caption "
                  "checkpoint, for text).", ""]  # fmt: skip
    lines += ["| start (s) | end (s) | score | caption |", "|---:|---:|---:|---|"]
    for s in report["segments"]:
        lines.append(f"| {s['start']:.1f} | {s['end']:.1f} | {s['score']:.3f} | {s['caption'] or '-'} |")
    return "\n".join(lines) + "\n"


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def cuts_and_motion(file: str, duration: float, seconds: int, *, fps: float) -> tuple[list[float], np.ndarray]:
    """Cut times (seconds) and motion energy per second, from small frames read chunk by chunk."""
    cut_times: list[float] = []
    motion = np.full(seconds, np.nan)
    previous = None  # the last frame of the chunk before, so a cut between chunks is seen
    starts = list(range(0, math.ceil(duration), CHUNK_S))
    for a in bar(starts, desc="summarize: frames", unit="chunk", disable=len(starts) < 2):
        clip = decode(file, start=a, end=min(a + CHUNK_S, duration), fps=fps, size=MOTION_SIZE)
        frames, times = clip.frames, clip.timestamps
        if previous is not None:
            frames, times = np.concatenate([previous[0][None], frames]), np.concatenate([[previous[1]], times])
        found = cuts(frames)
        cut_times += [float(times[i]) for i in found]
        here = motion_energy(frames, times, seconds, cut_indices=found, fill=False)
        motion = np.where(np.isnan(motion), here, motion)
        previous = (clip.frames[-1], float(clip.timestamps[-1]))
    return cut_times, _filled(motion)


def _per_second(model, file, info, seconds: int, pre, width: int, forward, budget: int, workers: int, device):
    """(seconds, C): `forward`'s outputs over windows of `width` s tiling the file, per second."""
    videos = VideoDataset(samples=[Sample(path=Path(file))], infos=[info], labels=[])
    windows = [(0, float(s), float(s + width)) for s in tiles(seconds, width, width)]
    return per_second(
        model, videos, windows, [seconds], pre, forward=forward, width=width, budget=budget, device=device,
        workers=workers,
    )[0]  # fmt: skip


def _filled(values: np.ndarray) -> np.ndarray:
    """(N,) with every NaN replaced by the nearest known value (0 when none is known)."""
    values = np.asarray(values, dtype=np.float64).copy()
    known = np.flatnonzero(~np.isnan(values))
    if len(known) == 0:
        return np.zeros_like(values)
    for k in np.flatnonzero(np.isnan(values)):
        values[k] = values[known[np.argmin(np.abs(known - k))]]
    return values


def _filled_rows(rows: np.ndarray) -> np.ndarray:
    """(N, D) with every NaN row replaced by the nearest known row."""
    known = np.flatnonzero(~np.isnan(rows).any(axis=1))
    if len(known) == 0:
        raise DataError("no window of the video could be decoded")
    out = rows.copy()
    for k in np.flatnonzero(np.isnan(rows).any(axis=1)):
        out[k] = rows[known[np.argmin(np.abs(known - k))]]
    return out


def _write_summary_video(file: str, info, segments: list[Segment], target: Path) -> Path:
    """The segments one after another (frames at their own rate, and their sound) in `target`."""
    width, height = info.width, info.height
    writer = VideoWriter(target, width=width, height=height, fps=info.fps, audio=info.has_audio, audio_rate=AUDIO_RATE)
    sound = []
    try:
        offset = 0.0
        for seg in bar(segments, desc="summarize: video", unit="segment", disable=len(segments) < 20):
            clip = decode(file, start=seg.start, end=seg.end)
            for frame, t in zip(clip.frames, clip.timestamps):
                writer.write(frame, offset + (t - seg.start))
            if info.has_audio:
                wanted = round(seg.length * AUDIO_RATE)
                samples = decode_audio(file, sample_rate=AUDIO_RATE, start=seg.start, end=seg.end).samples[:wanted]
                sound.append(np.pad(samples, (0, wanted - len(samples))))  # the segment's length exactly
            offset += seg.length
        if sound:
            writer.write_audio(np.concatenate(sound), 0.0)
    except BaseException:
        writer.discard()
        raise
    writer.__exit__(None, None, None)
    return target


def _plot(target: Path, importance, shots, segments, name: str, kind: str) -> Path:
    """Importance over seconds, shots as alternating bands, the selection shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for i, (a, b) in enumerate(shots):
        ax.axvspan(a, b, color="0.93" if i % 2 else "1.0", zorder=0)
        if i:
            ax.axvline(a, color="0.5", lw=0.8, ls="--", zorder=1)
    for j, seg in enumerate(segments):
        ax.axvspan(seg.start, seg.end, color="tab:orange", alpha=0.35, zorder=1, label="selected" if j == 0 else None)
    centres = np.arange(len(importance)) + 0.5
    ax.plot(centres, importance, marker=".", color="tab:blue", zorder=2, label=f"importance ({kind})")
    ax.set_xlim(0, max(b for _, b in shots))
    ax.set_xlabel("seconds (dashed: cuts)")
    ax.set_ylabel("importance")
    ax.set_title(name)
    ax.legend(fontsize=8, loc="upper right")
    fig.savefig(target)
    return target
