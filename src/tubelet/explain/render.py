"""Pictures of an explanation: heatmap video (mp4 + GIF), timeline over seconds, and a self-contained HTML page.

A fusion explanation is drawn per modality: the heatmap and timeline from its video particles only
(`Explanation.of_modality`), and ``audio.png`` from its audio particles: the log-mel spectrogram the model heard
above each particle's score on its seconds x mel band cell (`plot_audio`, numbers in `audio_scores`). A VQA
explanation's question is written out in the HTML page with each token shaded by its score (`question_html`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import torch

from tubelet.explain.methods import Explanation
from tubelet.io import write_gif, write_video
from tubelet.particles.audio import mel_centres
from tubelet.particles.patchify import to_grid, unpatchify

DISPLAY_SHORT_SIDE = 224  # small model frames are enlarged (nearest) to about this for viewing


def score_volume(explanation: Explanation) -> np.ndarray:
    """(T, H, W) float32: each particle's score on every pixel of its tubelet (its whole run when pruned).

    Built through the one `unpatchify`: the scores are placed on the tubelet grid, repeated over each tubelet's
    t*p*q pixels as a one-channel "patch", and unpatchified like pixels are. For audio particles the volume is
    (STFT frames, mel bins, 1).
    """
    particles = explanation.particles
    grid = to_grid(particles, explanation.scores[:, None].float())  # (T', H', W', 1)
    t, p, q = particles.tubelet
    patches = grid.expand(*grid.shape[:3], t * p * q)  # one channel: (t p q 1)
    return unpatchify(patches, particles.tubelet, particles.frame_shape)[..., 0].numpy()


def saturation(volume: np.ndarray) -> float:
    """The score at which the heat colour saturates: the 99.5th percentile of the positive scores (0 when none)."""
    positive = volume[volume > 0]
    return float(np.percentile(positive, 99.5)) if positive.size else 0.0


def normalise(volume: np.ndarray) -> np.ndarray:
    """Positive evidence in [0, 1]: scores divided by `saturation`, clipped."""
    top = saturation(volume)
    return np.clip(volume / top, 0.0, 1.0) if top > 0 else np.zeros_like(volume)


def overlay(frames: np.ndarray, heat: np.ndarray, *, colormap: str = "inferno", strength: float = 0.9) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with (T, H, W) heat in [0, 1] blended on top (opacity grows with the heat).

    The frames underneath are greyed and dimmed first, so that on a busy, colourful background every colour in the
    picture is heat; the plain frames are shown beside it (`write_heatmap_video`).
    """
    from matplotlib import colormaps

    colours = colormaps[colormap](heat)[..., :3]  # (T, H, W, 3) in [0, 1]
    rgb = frames.astype(np.float32) / 255
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
    muted = 0.15 * rgb + 0.45 * grey[..., None]
    alpha = (strength * heat)[..., None]
    blended = muted * (1 - alpha) + colours * alpha
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
        "png": plot_heatmap_sheet(folder / "heatmap.png", shown, times, explanation),
    }
    return {name: str(path) for name, path in files.items()}


# The heatmap picture: at most this many frames (evenly spread), this many per row, each this many inches wide.
SHEET_FRAMES, SHEET_COLUMNS, SHEET_CELL_INCHES = 12, 4, 2.6
# What a score means, per method, for the pictures' captions.
SCORE_MEANING = {
    "occlusion": "drop of the target's probability when the particle is removed",
    "ig": "integrated gradients: the particle's share of the target's logit change from the baseline clip",
    "gradxinput": "gradient x input: a local estimate of the particle's effect on the target's logit",
    "rollout": "attention rollout: how much the particle flows into the pooled feature",
}


def plot_heatmap_sheet(path: Path, shown: np.ndarray, times: np.ndarray, explanation: Explanation) -> Path:
    """``heatmap.png``: up to `SHEET_FRAMES` overlaid frames, `SHEET_COLUMNS` a row, each titled with its seconds,
    with a colour bar of what the colour means and a caption of what a score is.

    Args:
        shown: (T, H, W, 3) uint8 frames with the heat already blended on (`heatmap_frames`).
        times: (T,) their seconds in the video.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    picked = np.unique(np.linspace(0, len(shown) - 1, min(SHEET_FRAMES, len(shown))).round().astype(int))
    columns = min(SHEET_COLUMNS, len(picked))
    rows = -(-len(picked) // columns)
    height, width = shown.shape[1:3]
    cell_h = SHEET_CELL_INCHES * height / width
    fig = Figure(figsize=(SHEET_CELL_INCHES * columns + 1.2, cell_h * rows + 1.1), dpi=110, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        ax.imshow(shown[i])
        ax.set_title(f"{times[i]:.2f} s", fontsize=10)
    top = saturation(score_volume(explanation))  # the score the overlay's colour saturates at
    bar = ScalarMappable(norm=Normalize(0.0, top or 1.0), cmap=colormaps["inferno"])
    fig.colorbar(bar, ax=axes, shrink=0.9, label="score")
    meaning = SCORE_MEANING.get(explanation.method, explanation.method)
    fig.suptitle(
        f"Where the evidence is: {explanation.method}; score = {meaning}\n"
        "(grey: no evidence; the colour saturates at the top 0.5% of scores)",
        fontsize=10,
    )
    fig.savefig(path)
    return path


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
    # The top particles as marks under the plot's top edge; ranks at the same second share one label, and labels
    # of nearby seconds step down so that none overlaps another or the title.
    marks: dict[float, list[int]] = {}
    for rank, row in enumerate(top[:5], start=1):
        marks.setdefault(round(float(row["t"]), 3), []).append(rank)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.3 * (high - low))  # headroom: the marks' labels sit above the curve
    span = float(times[-1] - times[0]) if len(times) > 1 else 1.0
    previous, level = None, 0
    for t, ranks in sorted(marks.items()):
        level = level + 1 if previous is not None and t - previous < 0.08 * span else 0
        previous = t
        ax.axvline(t, color="tab:blue", alpha=0.35, linewidth=1)
        ax.text(
            t, 0.97 - 0.09 * (level % 4), ",".join(f"#{r}" for r in ranks), transform=ax.get_xaxis_transform(),
            fontsize=8, ha="center", va="top", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )  # fmt: skip
    ax.set_xlabel("seconds in the video")
    meaning = SCORE_MEANING.get(explanation.method, "score")
    ax.set_ylabel("summed score per frame")
    ax.set_title(f"{explanation.method}: evidence over time for '{label}' (#k: the k-th strongest particle)")
    fig.text(0.01, 0.01, f"score = {meaning}", fontsize=8, color="0.35")
    fig.savefig(path)
    return path


def band_edges_hz(particles, sample_rate: int) -> list[list[float]]:
    """[low, high] Hz per mel band of audio particles: the peaks of the band's first and last mel filter."""
    n_mels, bins = particles.frame_shape[1], particles.tubelet[1]
    centres = mel_centres(n_mels, sample_rate).tolist()
    return [[round(centres[b * bins]), round(centres[(b + 1) * bins - 1])] for b in range(n_mels // bins)]


def audio_scores(explanation: Explanation, *, offset: float, sample_rate: int) -> dict:
    """The audio particles' scores on their grid of time patches x mel bands.

    Args:
        explanation: an explanation of audio particles (``of_modality("audio")``).
        offset: seconds of the window's start in the video (particle times are from it).

    Returns:
        ``times`` (T',) seconds in the video of each time patch's centre, ``bands_hz`` [low, high] per band
        (lowest first), ``scores`` (T', bands) nested lists, and ``over_time`` (T',) the sum over bands.
    """
    particles = explanation.particles
    grid = to_grid(particles, explanation.scores[:, None].float())[:, :, 0, 0]  # (T', bands)
    times = torch.zeros(grid.shape[0], dtype=torch.float64)
    times[particles.ti] = particles.t.double()
    return {
        "times": [round(float(t) + offset, 4) for t in times],
        "bands_hz": band_edges_hz(particles, sample_rate),
        "scores": [[round(float(v), 6) for v in row] for row in grid],
        "over_time": [round(float(v), 6) for v in grid.sum(1)],
    }


def plot_audio(path: Path, explanation: Explanation, *, offset: float, sample_rate: int, hop: int, label: str) -> Path:
    """``audio.png``: the log-mel spectrogram of the window, and each audio particle's score over seconds x mel band.

    Args:
        explanation: an explanation of audio particles (``of_modality("audio")``); their values are the
            normalized log-mel patches.
        offset: seconds of the window's start in the video; hop: samples between STFT frames.
    """
    from matplotlib.figure import Figure

    particles = explanation.particles
    spectrogram = unpatchify(to_grid(particles), particles.tubelet, particles.frame_shape)[:, :, 0, 0]  # (F, mels)
    scores = score_volume(explanation)[:, :, 0]  # (F, mels)
    seconds = offset + np.array([0.0, spectrogram.shape[0] * hop / sample_rate])
    bands = band_edges_hz(particles, sample_rate)
    bins = particles.tubelet[1]
    fig = Figure(figsize=(9, 5), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    extent = (seconds[0], seconds[1], 0, spectrogram.shape[1])
    top.imshow(spectrogram.T.numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma")
    top.set_title("log-mel spectrogram the model heard")
    limit = float(np.abs(scores).max()) or 1.0
    shown = bottom.imshow(
        scores.T, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-limit, vmax=limit
    )  # red: evidence for the target, blue: against
    fig.colorbar(shown, ax=bottom, label="score")
    bottom.set_title(f"{explanation.method}: audio evidence for '{label}' per particle (seconds x mel band)")
    bottom.set_xlabel("seconds in the video")
    for ax in (top, bottom):
        ax.set_yticks([(b + 0.5) * bins for b in range(len(bands))], [f"{lo}-{hi} Hz" for lo, hi in bands])
        for b in range(1, len(bands)):
            ax.axhline(b * bins, color="white", linewidth=0.4, alpha=0.6)
    fig.savefig(path)
    return path


def _data_uri(path: str | Path) -> str:
    kind = {".png": "image/png", ".gif": "image/gif"}[Path(path).suffix]
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _pixels(r: dict, key: str) -> str:
    return f"{r[key][0]}-{r[key][1]}" if r.get(key) is not None else "&ndash;"  # audio, text: no pixels


def question_html(tokens: list[dict]) -> str:
    """The question's tokens ([{token, score}], in order) as HTML spans shaded by score: red for the target, blue
    against, opacity |score| / the largest |score| (the score itself in each span's tooltip)."""
    largest = max((abs(t["score"]) for t in tokens), default=0.0) or 1.0
    spans = []
    for t in tokens:
        red, green, blue = (214, 39, 40) if t["score"] >= 0 else (31, 119, 180)
        shade = f"rgba({red},{green},{blue},{abs(t['score']) / largest:.3f})"
        spans.append(
            f'<span class="token" style="background:{shade}" title="{t["score"]:.4g}">{html.escape(t["token"])}</span>'
        )
    return " ".join(spans)


def _modality_cell(r: dict) -> str:
    """The top-particles table's modality cell; a text particle shows its token."""
    token = f" {html.escape(repr(r['token']))}" if "token" in r else ""
    return f"<td>{html.escape(r['modality'])}{token}</td>"


def write_html(path: Path, result: dict) -> Path:
    """One page with every picture inlined (base64), so it opens anywhere without the files beside it.

    Sections follow what `result` has: the video heatmap and timeline (``files`` ``gif``, ``png``, ``timeline``),
    for a fusion model the evidence per modality (``modality_share``) and the audio picture (``audio``), and for a
    VQA model the question with its tokens shaded by score (``question``, ``tokens``).
    """
    e = html.escape
    files = result["files"]
    fused = "modality_share" in result
    classes = "".join(
        f"<tr><td>{e(c['label'])}</td><td>{c['score']:.3f}</td></tr>" for c in result["topk_classes"]
    )  # fmt: skip
    particles = "".join(
        f"<tr><td>{i}</td>" + (_modality_cell(r) if fused else "")
        + f"<td>{r['t']:.3f}</td><td>{r['row']}</td><td>{r['col']}</td>"
        f"<td>{_pixels(r, 'y_px')}</td><td>{_pixels(r, 'x_px')}</td><td>{r['span']}</td><td>{r['score']:.4g}</td></tr>"
        for i, r in enumerate(result["top_particles"], start=1)
    )  # fmt: skip
    sections = []
    if "tokens" in result:
        sections.append(
            '<h2>Question</h2><p class="note">Each token shaded by its score: red for the answer, blue against '
            "(hover for the number).</p>"
            f'<p class="question">{question_html(result["tokens"])}</p>'
        )
    if fused:
        shares = "".join(
            f"<tr><td>{e(name)}</td><td>{share:.3f}</td><td>{result['modality_occlusion'].get(name, 0.0):.4f}</td></tr>"
            for name, share in result["modality_share"].items()
        )  # fmt: skip
        sections.append(
            '<h2>Evidence per modality</h2><p class="note">share: the modality\'s part of all positive particle '
            "scores; without it: how much the target's probability falls when every particle of that modality "
            "is removed.</p><table><tr><th>modality</th><th>share</th><th>drop without it</th></tr>"
            f"{shares}</table>"
        )
    if "gif" in files:
        sections.append(
            '<h2>Frames and heatmap</h2><p class="note">Left: the frames the model saw; right: positive evidence '
            "for the target (brighter = more). Times are seconds in the video.</p>\n"
            f'<img src="{_data_uri(files["gif"])}" alt="heatmap animation">\n'
            f'<img src="{_data_uri(files["png"])}" alt="heatmap frames">'
        )
    if "timeline" in files:
        sections.append(f'<h2>Importance over time</h2><img src="{_data_uri(files["timeline"])}" alt="timeline">')
    if "audio" in files:
        sections.append(
            '<h2>Sound</h2><p class="note">Top: the log-mel spectrogram of the window; bottom: each audio '
            "particle's score (red for the target, blue against) on its seconds and mel band.</p>\n"
            f'<img src="{_data_uri(files["audio"])}" alt="audio evidence">'
        )
    modality_head = "<th>modality</th>" if fused else ""
    # Only the modalities the model reads are explained on the page.
    shares = result.get("modality_share", {})
    notes = [note for name, note in (("audio", "audio: mel band, 0"), ("text", "text: 0, 0")) if name in shares]
    cells = f" ({'; '.join(notes)})" if notes else ""
    asked = f"\n<p>Asked: <b>{e(result['question'])}</b></p>" if "question" in result else ""
    window = result["window"]
    chance = ""
    if "near_chance" in result["prediction"]:
        chance = (
            f'\n<p class="warn">Close to chance: {result["prediction"]["score"]:.2f} where a guess scores '
            f"{result['prediction']['near_chance']:.2f} for any class. The model has not decided, and the evidence "
            "below explains a guess.</p>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tubelet explain: {e(Path(result["path"]).name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
img{{max-width:100%;image-rendering:pixelated}}.note{{color:#666;font-size:90%}}
.warn{{background:#fff3cd;padding:4px 8px}}
.question{{font-size:130%;line-height:1.8}}.token{{padding:1px 3px;border-radius:3px}}</style></head><body>
<h1>Why '{e(result["prediction"]["label"])}'?</h1>{asked}{chance}
<p><b>{e(result["path"])}</b>, seconds {window["start"]:.2f} to {window["end"]:.2f}.
Method <b>{e(result["method"])}</b>, explaining class <b>{e(result["target"])}</b>
(probability {result["target_score"]:.3f}).</p>
<h2>Prediction</h2><table><tr><th>class</th><th>probability</th></tr>{classes}</table>
{chr(10).join(sections)}
<h2>Top particles</h2><p class="note">row/col: grid cell{cells}; pixel ranges in the source
video; span: tubelets one particle stands for after static pruning.</p>
<table><tr><th>#</th>{modality_head}<th>t (s)</th><th>row</th><th>col</th><th>y px</th><th>x px</th><th>span</th>
<th>score</th></tr>
{particles}</table>
<p class="note">{e(result["method_note"])}</p>
</body></html>
"""
    path.write_text(page)
    return path
