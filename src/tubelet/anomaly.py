"""How abnormal a window of video is, learned from a normal period: ``tubelet watch --anomaly`` scores with it.

Two scores from one checkpoint, chosen by what the checkpoint holds (`AnomalyScorer.for_checkpoint`):

* ``reconstruction``: a pretraining run (``tubelet pretrain``) keeps its MAE decoder beside the encoder. Each
  window is masked with FIXED seeded masks (the same draw for the same window, whatever it is batched with), the
  decoder fills the hidden particles in, and the score is the norm-pix error over them, averaged over a few mask
  draws. What the encoder never saw during pretraining (a normal scene) it reconstructs worse.
* ``features``: any other encoder (a registered size, a fine-tuned classifier): the window's pooled encoder features
  are compared with those of the calibration windows, by the mean distance to the k nearest of them.

Static particles are pruned before either, so an idle window costs little. The threshold an alert fires above is a
high percentile of the calibration windows' scores (`threshold`). `frame_difference_scores` is the classical
baseline the benchmark compares with: mean absolute frame difference, z-scored against the calibration period.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tubelet import checkpoint
from tubelet.data.pipeline import to_particles
from tubelet.data.transforms import Preprocessing
from tubelet.nn.device import autocast
from tubelet.particles import mask_particles, pack
from tubelet.particles.structure import Particles

METHODS = ("reconstruction", "features")
BUDGET = 16384  # particles per forward pass: windows are batched up to this many (a bigger window goes alone)


class AnomalyScorer:
    """Scores windows (one `Particles` each) by how unlike the calibration windows they are; higher = more abnormal.

    Attributes:
        method: ``reconstruction`` (masked-reconstruction error) or ``features`` (k-NN distance of pooled features).
        preprocessing: how a window's frames become particles (`particles` applies it).
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        preprocessing: Preprocessing,
        *,
        decoder: torch.nn.Module | None = None,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        mask_ratio: float = 0.75,
        mask_mode: str = "tube",
        norm_pix: bool = True,
        draws: int = 3,
        neighbours: int = 3,
        seed: int = 0,
        budget: int = BUDGET,
    ) -> None:
        """Args:
        encoder: an `Encoder` (its head is never used).
        decoder: a `MaskedDecoder` trained with `encoder`; None scores by features.
        mask_ratio, mask_mode, norm_pix: how the reconstruction hides particles and what it predicts (a pretraining
            run's own settings, read by `for_checkpoint`).
        draws: mask draws averaged per window (reconstruction).
        neighbours: k of the k-NN distance (features).
        seed: of the fixed masks.
        budget: particles per forward pass.
        """
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.decoder = decoder.to(self.device).eval() if decoder is not None else None
        self.method = "reconstruction" if decoder is not None else "features"
        self.preprocessing = preprocessing
        self.precision = precision
        self.mask_ratio, self.mask_mode, self.norm_pix = mask_ratio, mask_mode, norm_pix
        self.draws, self.neighbours, self.seed, self.budget = draws, neighbours, seed, budget
        self.calibration: np.ndarray | None = None  # (n, D) pooled features of the calibration windows (features)

    @classmethod
    def for_checkpoint(cls, loaded, *, device, precision: str = "auto", **options) -> AnomalyScorer:
        """Masked-reconstruction error when `loaded` (``tubelet.models.load(...)``) is a pretraining run with its
        decoder saved beside the encoder; else distance of pooled encoder features to the calibration features.

        Args:
            loaded: a `tubelet.models.Loaded` whose model is an `Encoder` (a registered size, a pretraining run, a
                fine-tuned classifier, an imported VideoMAE).
            options: `AnomalyScorer` keyword arguments (draws, neighbours, seed, budget, mask_ratio ...).

        Raises:
            ValueError: the model is not a video encoder (a fusion or retrieval model, an export).
        """
        from tubelet.models import Encoder, load_decoder
        from tubelet.models.kinds import DECODER_WEIGHTS

        if not isinstance(loaded.model, Encoder):
            raise ValueError(f"{loaded.source}: anomaly scores need a video encoder, not a {loaded.kind} model")
        pre = loaded.preprocessing or Preprocessing()
        source = Path(loaded.source) if loaded.source else None
        decoder = None
        if source is not None and source.is_dir() and (source / DECODER_WEIGHTS).is_file():
            decoder = load_decoder(source)
            args = checkpoint.load_training_args(source) or {}  # the run's own mask and target, when it says
            for key, field in (("mask_ratio", "mask_ratio"), ("mask", "mask_mode"), ("norm_pix", "norm_pix")):
                if key in args and field not in options:
                    options[field] = args[key]
        return cls(loaded.model, pre, decoder=decoder, device=device, precision=precision, **options)

    def particles(self, frames: torch.Tensor | np.ndarray, timestamps: Sequence[float] | np.ndarray) -> Particles:
        """One window's particles: frames (T, H, W, 3) uint8 resized as the preprocessing says, at (T,) seconds from
        the window's start."""
        return to_particles(frames, np.asarray(timestamps, dtype=np.float64), self.preprocessing)

    def fit(self, clips: list[Particles]) -> np.ndarray:
        """Learn normal from calibration windows.

        Returns:
            (len(clips),) their scores: LEAVE-ONE-OUT for ``features`` (each window's distance to the OTHER
            calibration windows, so a percentile of them is a fair threshold); for ``reconstruction`` the error
            needs nothing learned, so the scores are the same as `score` gives (in-sample and unbiased alike).
        """
        if not clips:
            raise ValueError("calibration needs at least one window")
        if self.method == "reconstruction":
            return self._reconstruction_errors(clips)
        features = self._pooled(clips)
        if len(features) < 2:
            raise ValueError("feature scores need at least two calibration windows (one to compare each with)")
        self.calibration = features
        distances = _distances(features, features)
        np.fill_diagonal(distances, np.inf)  # leave one out: a window is not its own neighbour
        return _knn(distances, min(self.neighbours, len(features) - 1))

    def score(self, clips: list[Particles]) -> np.ndarray:
        """(len(clips),) float64 scores, higher = more abnormal."""
        if not clips:
            return np.zeros(0)
        if self.method == "reconstruction":
            return self._reconstruction_errors(clips)
        if self.calibration is None:
            raise ValueError("call fit(calibration windows) before score: feature scores are distances to them")
        distances = _distances(self._pooled(clips), self.calibration)
        return _knn(distances, min(self.neighbours, len(self.calibration)))

    # --- the two scores ---------------------------------------------------------------------------------------

    def _batches(self, clips: list[Particles]) -> list[list[int]]:
        """Clip indices grouped so that each group holds at most `budget` particles (a bigger clip goes alone)."""
        groups, current, size = [], [], 0
        for i, clip in enumerate(clips):
            if current and size + len(clip) > self.budget:
                groups.append(current)
                current, size = [], 0
            current.append(i)
            size += len(clip)
        return groups + ([current] if current else [])

    @torch.no_grad()
    def _pooled(self, clips: list[Particles]) -> np.ndarray:
        """(len(clips), D) float64 pooled encoder features."""
        out = []
        for group in self._batches(clips):
            packed = pack([clips[i] for i in group]).to(self.device)
            with autocast(self.device, self.precision):
                pooled = self.encoder.pool(self.encoder.forward_features(packed), packed)  # (B, D)
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    @torch.no_grad()
    def _reconstruction_errors(self, clips: list[Particles]) -> np.ndarray:
        """(len(clips),) mean norm-pix squared error over each window's hidden particles, averaged over the draws."""
        from tubelet.tasks.reconstruction import reconstruction_targets

        pre, channels = self.preprocessing, clips[0].channels
        total = np.zeros(len(clips))
        for draw in range(self.draws):
            for group in self._batches(clips):
                visible, queries, targets = [], [], []
                for i in group:
                    # Each window gets its own generator: its mask depends on the draw, never on its batch mates.
                    generator = torch.Generator().manual_seed(self.seed * 1000 + draw)
                    shown, _, hidden = mask_particles(
                        clips[i], self.mask_ratio, mode=self.mask_mode, generator=generator
                    )
                    visible.append(shown)
                    queries.append(clips[i].select(hidden).with_values(clips[i].values.new_zeros(len(hidden), 0)))
                    targets.append(clips[i].values[hidden])
                seen, asked = pack(visible).to(self.device), pack(queries).to(self.device)
                with autocast(self.device, self.precision):
                    pred = self.decoder(self.encoder.forward_features(seen), seen, asked)  # (M, t*p*q*C)
                target = reconstruction_targets(
                    torch.cat(targets).to(self.device), channels, mean=pre.mean, std=pre.std, norm_pix=self.norm_pix
                )
                error = (pred.float() - target).pow(2).mean(dim=1)  # (M,) per hidden particle
                counts = asked.lengths.to(self.device)
                per_clip = torch.zeros(len(group), device=self.device).index_add_(0, asked.seq, error)
                per_clip = per_clip / counts.clamp(min=1)
                total[group] += per_clip.cpu().numpy()
        return total / self.draws


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _knn(distances: np.ndarray, k: int) -> np.ndarray:
    """Mean distance to the k nearest columns of each row.

    k-NN rather than one Gaussian (Mahalanobis): normal footage is several kinds of window (an empty scene, a walker
    at the left, at the right ...), a calibration period gives tens of windows for features of 128-384 dimensions
    (a covariance even with shrinkage is mostly the prior there), and the distance to the nearest normal windows
    needs no assumption on the shape of normal. k > 1 so that one odd calibration window does not vouch for a test
    window that resembles it.
    """
    k = max(1, k)
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)


def threshold(calibration_scores: np.ndarray, percentile: float = 99.0) -> float:
    """The score above which a window is abnormal: the `percentile` of the calibration windows' scores.

    Raises:
        ValueError: no calibration scores, or a percentile outside [0, 100].
    """
    scores = np.asarray(calibration_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("a threshold needs calibration scores; calibrate on at least one window")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return float(np.percentile(scores, percentile))


def frame_difference(frames: np.ndarray) -> float:
    """Mean absolute difference between consecutive grey frames of one window, in 0-255 levels.

    Args:
        frames: (T, H, W, 3) or (T, H, W) uint8.
    """
    grey = np.asarray(frames, dtype=np.float32)
    if grey.ndim == 4:
        grey = grey.mean(axis=3)  # (T, H, W)
    if len(grey) < 2:
        return 0.0
    return float(np.abs(np.diff(grey, axis=0)).mean())


def frame_difference_scores(
    frames_per_window: list[np.ndarray], calibration: list[np.ndarray] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The classical baseline: each window's mean absolute frame difference, z-scored against the calibration period.

    Args:
        frames_per_window: the windows to score, each (T, H, W, 3) uint8 frames.
        calibration: the calibration windows' frames (a list like `frames_per_window`), or their raw
            `frame_difference` values as an array.

    Returns:
        scores: (len(frames_per_window),) z-scores, higher = more motion than normal.
        calibration_scores: the calibration windows' own z-scores (for `threshold`).
    """
    if isinstance(calibration, np.ndarray) and calibration.ndim == 1:
        reference = calibration.astype(np.float64)
    else:
        reference = np.array([frame_difference(f) for f in calibration], dtype=np.float64)
    if reference.size == 0:
        raise ValueError("the frame-difference baseline needs at least one calibration window")
    mean, std = reference.mean(), max(reference.std(), 1e-6)
    raw = np.array([frame_difference(f) for f in frames_per_window], dtype=np.float64)
    return (raw - mean) / std, (reference - mean) / std
