"""Pictures of an explanation: heatmap video (mp4 + GIF), timeline over seconds, and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import torch

from tubelet.explain.methods import Explanation
from tubelet.io import write_contact_sheet, write_gif, write_video
from tubelet.particles.patchify import to_grid, unpatchify

DISPLAY_SHORT_SIDE = 224  # small model frames are enlarged (nearest) to about this for viewing


def score_volume(explanation: Explanation) -> np.ndarray:
    """(T, H, W) float32: each particle's score on every pixel of its tubelet (its whole run when pruned).

    Built through the one `unpatchify`: the scores are placed on the tubelet grid, repeated over each tubelet's
    t*p*q pixels as a one-channel "patch", and unpatchified like pixels are.
    """
    particles = explanation.particles
    grid = to_grid(particles, explanation.scores[:, None].float())  # (T', H', W', 1)
    t, p, q = particles.tubelet
    patches = grid.expand(*grid.shape[:3], t * p * q)  # one channel: (t p q 1)
    return unpatchify(patches, particles.tubelet, particles.frame_shape)[..., 0].numpy()


def normalise(volume: np.ndarray) -> np.ndarray:
    """Positive evidence in [0, 1]: scores divided by the 99.5th percentile of the positive ones, clipped."""
    positive = volume[volume > 0]
    top = np.percentile(positive, 99.5) if positive.size else 0.0
    return np.clip(volume / top, 0.0, 1.0) if top > 0 else np.zeros_like(volume)


def overlay(frames: np.ndarray, heat: np.ndarray, *, colormap: str = "inferno", strength: float = 0.65) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with (T, H, W) heat in [0, 1] blended on top (opacity grows with the heat)."""
    from matplotlib import colormaps

    colours = colormaps[colormap](heat)[..., :3]  # (T, H, W, 3) in [0, 1]
    alpha = (strength * heat)[..., None]
    blended = frames.astype(np.float32) / 255 * (1 - alpha) + colours * alpha
    return (blended * 255).round().astype(np.uint8)


def enlarge(frames: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement of small frames to a viewable size, with even height and width for H.264."""
    zoom = max(1, DISPLAY_SHORT_SIDE // min(frames.shape[1:3]))
    frames = frames.repeat(zoom, 1).repeat(zoom, 2)
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    return np.pad(frames, pad, mode="edge")


def heatmap_frames(frames: np.ndarray, explanation: Explanation) -> np.ndarray:
    """(T, H, W, 3) uint8 overlay of the normalised positive scores on `frames`, enlarged when small.

    `frames` are the model's frames or the same frames at the source resolution: the heat is scaled to their size
    (nearest, so each particle's cell stays a sharp rectangle).
    """
    heat = normalise(score_volume(explanation))  # (T, h, w) at the model's resolution
    if heat.shape[1:] != frames.shape[1:3]:
        scaled = torch.nn.functional.interpolate(torch.from_numpy(heat)[:, None], size=frames.shape[1:3])
        heat = scaled[:, 0].numpy()
    return enlarge(overlay(frames, heat))


def write_heatmap_video(folder: Path, frames: np.ndarray, times: np.ndarray, explanation: Explanation) -> dict:
    """``heatmap.mp4``, ``heatmap.gif`` and a ``heatmap.png`` contact sheet; times are the frames' seconds.

    `frames`: (T, H, W, 3) uint8, the frames the model saw, at the model's or at the source resolution.
    """
    shown = heatmap_frames(frames, explanation)
    side = np.concatenate([enlarge(frames), np.full((*shown.shape[:2], 4, 3), 255, np.uint8), shown], axis=2)
    side = enlarge(side) if side.shape[2] % 2 else side
    files = {
        "mp4": write_video(folder / "heatmap.mp4", side, timestamps=times, crf=18),
        "gif": write_gif(folder / "heatmap.gif", side, timestamps=times),
        "png": write_contact_sheet(folder / "heatmap.png", shown, times, columns=min(8, len(shown))),
    }
    return {name: str(path) for name, path in files.items()}


def importance_over_time(explanation: Explanation, times: np.ndarray) -> np.ndarray:
    """(T,) per frame: the sum of the scores of the particles covering it (each pixel counted once)."""
    volume = score_volume(explanation)  # (T, H, W)
    _, p, q = explanation.particles.tubelet
    return volume.sum(axis=(1, 2)) / (p * q)  # back to particle units: one tubelet row/column cell per particle


def plot_timeline(path: Path, explanation: Explanation, times: np.ndarray, *, label: str, top: list[dict]) -> Path:
    """Importance over seconds, with the top particles marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    curve = importance_over_time(explanation, times)
    ax.plot(times, curve, marker="o", markersize=3, color="tab:red")
    ax.axhline(0, color="grey", linewidth=0.5)
    for rank, row in enumerate(top[:5], start=1):
        ax.axvline(row["t"], color="tab:blue", alpha=0.35, linewidth=1)
        ax.annotate(f"#{rank}", (row["t"], ax.get_ylim()[1]), fontsize=7, ha="center", va="top")
    ax.set_xlabel("seconds in the video")
    ax.set_ylabel("summed score per frame")
    ax.set_title(f"{explanation.method}: importance over time for '{label}'")
    fig.savefig(path)
    return path


def _data_uri(path: str | Path) -> str:
    kind = {".png": "image/png", ".gif": "image/gif"}[Path(path).suffix]
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_html(path: Path, result: dict) -> Path:
    """One page with every picture inlined (base64), so it opens anywhere without the files beside it."""
    e = html.escape
    files = result["files"]
    classes = "".join(
        f"<tr><td>{e(c['label'])}</td><td>{c['score']:.3f}</td></tr>" for c in result["topk_classes"]
    )  # fmt: skip
    particles = "".join(
        f"<tr><td>{i}</td><td>{r['t']:.3f}</td><td>{r['row']}</td><td>{r['col']}</td>"
        f"<td>{r['y_px'][0]}-{r['y_px'][1]}</td><td>{r['x_px'][0]}-{r['x_px'][1]}</td><td>{r['span']}</td>"
        f"<td>{r['score']:.4g}</td></tr>"
        for i, r in enumerate(result["top_particles"], start=1)
    )
    window = result["window"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tubelet explain: {e(Path(result["path"]).name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
img{{max-width:100%;image-rendering:pixelated}}.note{{color:#666;font-size:90%}}</style></head><body>
<h1>Why '{e(result["prediction"]["label"])}'?</h1>
<p><b>{e(result["path"])}</b>, seconds {window["start"]:.2f} to {window["end"]:.2f}.
Method <b>{e(result["method"])}</b>, explaining class <b>{e(result["target"])}</b>
(probability {result["target_score"]:.3f}).</p>
<h2>Prediction</h2><table><tr><th>class</th><th>probability</th></tr>{classes}</table>
<h2>Frames and heatmap</h2><p class="note">Left: the frames the model saw; right: positive evidence for the target
(brighter = more). Times are seconds in the video.</p>
<img src="{_data_uri(files["gif"])}" alt="heatmap animation">
<img src="{_data_uri(files["png"])}" alt="heatmap frames">
<h2>Importance over time</h2><img src="{_data_uri(files["timeline"])}" alt="timeline">
<h2>Top particles</h2><p class="note">row/col: grid cell; pixel ranges in the source video; span: tubelets one
particle stands for after static pruning.</p>
<table><tr><th>#</th><th>t (s)</th><th>row</th><th>col</th><th>y px</th><th>x px</th><th>span</th><th>score</th></tr>
{particles}</table>
<p class="note">{e(result["method_note"])}</p>
</body></html>
"""
    path.write_text(page)
    return path
