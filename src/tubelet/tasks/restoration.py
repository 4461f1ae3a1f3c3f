"""Video restoration over particles: frame interpolation and denoising (``tubelet finetune --task interpolation``,
``--task denoise``), and the `Restorer` that ``tubelet interpolate`` / ``tubelet denoise --checkpoint`` run.

Both tasks are one model: an encoder reads the CONTEXT particles (the known frames around a missing one, or a run of
noisy frames) and the pixel decoder (`tubelet.models.decoder.MaskedDecoder` with ``estimate=True``) answers QUERY
particles placed at the seconds and grid cells to produce, each carrying a pixel estimate: for interpolation the
frame warped by optical flow (or blended) to the query's time, any real number of seconds between the two known
frames; for denoising the noisy pixels themselves. The decoder predicts each query's correction, added to its
estimate, so an untrained restorer returns the estimate and training can only start from there. Pixels come back to
frames through the one `unpatchify`.

Frames are restored in square TILES (``tile`` pixels, overlapping by a quarter, blended with feathered weights at
the overlaps): attention cost stays bounded whatever the resolution, training crops and inference tiles are the same
size, and a tile is one clip of a packed batch. Restoration models cut frames into tubelets of one frame (default
1x8x8), so a missing frame is exactly a set of particles at its own time; a pretrained encoder of t-frame tubelets
has its patch embedding folded over time (`fold_time`).

Data: any unlabeled videos (class folders or manifests; ``tubelet sample-data --video2video`` writes textured ones),
read at their native frame rate and size. Losses (`pixel_loss`): Charbonnier or L1 on 0-1 pixels, plus an optional
SSIM term over each patch.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tubelet.data.manifest import load_dataset
from tubelet.data.splits import has_split
from tubelet.errors import ConfigError
from tubelet.nn.device import autocast
from tubelet.particles import pack, tokenize, unpack
from tubelet.particles.patchify import to_grid, unpatchify
from tubelet.particles.structure import Particles
from tubelet.tasks.base import Arm, Built, Prepared, StepLoss, Task, refuse_frame_options, register
from tubelet.tasks.reconstruction import unnormalize
from tubelet.typed import opt
from tubelet.video2video.baselines import interpolate

log = logging.getLogger("tubelet.restoration")

RESTORATION_TUBELET = (1, 8, 8)  # a fresh restorer's tubelet: one frame, 8x8 pixels (192 values per particle)
LOSSES = ("charbonnier", "l1")
ESTIMATES = ("flow", "blend")
CHARBONNIER_EPS = 1e-3  # in 0-1 pixels: smooth near zero, L1 beyond a few levels
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # SSIM's stabilising constants for a 0-1 range (Wang et al. 2004)


# --- the fields ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorationFields:
    """The fields of a restoration run (interpolation, denoise) besides those every run shares."""

    loss: str = opt("charbonnier", "pixel loss on 0-1 pixels: charbonnier or l1")
    ssim_weight: float = opt(0.0, "weight of 1 - SSIM (per patch and channel) added to the pixel loss")
    tile: int = opt(64, "pixels per side of the square tiles restored at once (training crops, inference tiles)")
    tiles_per_clip: int = opt(8, "random tiles cut from each training clip per step")
    decoder_dim: int = opt(192, "pixel decoder width (at least a particle's values, 192 for 1x8x8, for full rank)")
    decoder_depth: int = opt(3, "pixel decoder blocks")
    decoder_heads: int = opt(4, "pixel decoder attention heads")

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: expected {' | '.join(LOSSES)}, got {self.loss!r}")
        if self.ssim_weight < 0:
            raise ConfigError(f"ssim_weight: must be 0 or more, got {self.ssim_weight}")
        for name in ("tile", "tiles_per_clip", "decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads or (self.decoder_dim // self.decoder_heads) % 2:
            raise ConfigError(f"decoder_dim: {self.decoder_dim} must split into {self.decoder_heads} even heads")


@dataclass(frozen=True)
class InterpolationFields(RestorationFields):
    """Frame interpolation: the frames between two known ones, at any time in between."""

    estimate: str = opt("flow", "what a missing frame starts from: flow (DIS optical flow warp) or blend")
    gaps: tuple[int, ...] = opt((2, 4), "frame steps between the two known frames of a training example")

    def validate(self) -> None:
        RestorationFields.validate(self)
        if self.estimate not in ESTIMATES:
            raise ConfigError(f"estimate: expected {' | '.join(ESTIMATES)}, got {self.estimate!r}")
        if not self.gaps or min(self.gaps) < 2:
            raise ConfigError(f"gaps: expected frame steps of 2 or more (a frame to rebuild between), got {self.gaps}")


@dataclass(frozen=True)
class DenoiseFields(RestorationFields):
    """Denoising: clean pixels of every particle of a run of noisy frames."""

    sigma_max: float = opt(50.0, "Gaussian noise of sigma U(0, sigma_max) in 0-255 levels, drawn per clip")
    frames: int = opt(5, "consecutive noisy frames read (and restored) together")
    compression: float = opt(0.0, "share of training clips also JPEG-compressed (quality 20-60) after the noise")

    def validate(self) -> None:
        RestorationFields.validate(self)
        if not 0.0 <= self.compression <= 1.0:
            raise ConfigError(f"compression: a share in [0, 1], got {self.compression}")
        if not 0 < self.sigma_max <= 255:
            raise ConfigError(f"sigma_max: must be in (0, 255], got {self.sigma_max}")
        if self.frames < 1:
            raise ConfigError(f"frames: must be at least 1, got {self.frames}")


# Video read as it is: native frame rate and size, nothing pruned (every particle is restored), no resized crops
# (a zoom would change the motion the model learns); short clips, as an example reads a few frames of one.
RESTORATION_DEFAULTS = {
    "sample_fps": None, "size": None, "max_long_side": None, "prune_threshold": 0.0, "clip_seconds": 0.4,
    "crop_scale_min": 1.0, "batch_particles": 65536, "lr": 5e-4, "epochs": 20, "val_split": "val",
}  # fmt: skip


# --- one example: context, queries, targets --------------------------------------------------------------------


@dataclass
class Example:
    """One tile to restore: what the encoder reads, what the decoder answers, and the truth (training only)."""

    context: Particles
    queries: Particles  # values: the estimates
    target: Particles | None = None  # values: the clean pixels of the queries


def frame_particles(frames: np.ndarray, times: np.ndarray, pre) -> Particles:
    """(T, h, w, 3) uint8 frames at `times` (T,) seconds -> their particles, normalized, nothing pruned."""
    return tokenize(
        torch.from_numpy(np.ascontiguousarray(frames)), tubelet=pre.tubelet, timestamps=times, mean=pre.mean,
        std=pre.std,
    )  # fmt: skip


def tile_origins(size: int, tile: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering `size`, overlapping by about a quarter tile; the last flush."""
    if size <= tile:
        return [0]
    stride = max(1, tile - tile // 4)
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def feather(height: int, width: int, ramp: int) -> np.ndarray:
    """(h, w) float32 weights rising linearly over `ramp` pixels from each edge (never zero): seamless blending."""

    def axis(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0
        return np.minimum(distance / (ramp + 1.0), 1.0).astype(np.float32)

    return np.outer(axis(height), axis(width))


def interpolation_example(
    a: np.ndarray, b: np.ndarray, span: float, fractions: list[float], pre, *, estimate: str,
    origin: tuple[int, int], tile: int, estimates: list[np.ndarray] | None = None, truth: np.ndarray | None = None,
) -> Example:  # fmt: skip
    """Frames at `fractions` (0-1) of the way from frame `a` (at 0 s) to `b` (at `span` s), in the tile at `origin`.

    Args:
        a, b: (H, W, 3) uint8 known frames.
        estimate: `ESTIMATES` (used when `estimates` are not given).
        estimates: the full-frame estimates at each fraction (computed once per pair and shared by its tiles).
        truth: (M, H, W, 3) uint8 true frames at the fractions (training).
    """
    if estimates is None:
        estimates = [interpolate(a, b, f, estimate) for f in fractions]
    y, x = origin
    crop = np.s_[:, y : y + tile, x : x + tile]
    times = np.asarray(fractions, np.float64) * span
    context = frame_particles(np.stack([a, b])[crop], np.array([0.0, span]), pre)
    queries = frame_particles(np.stack(estimates)[crop], times, pre)
    target = frame_particles(truth[crop], times, pre) if truth is not None else None
    return Example(context, queries, target)


def denoise_example(
    noisy: np.ndarray, times: np.ndarray, pre, *, origin: tuple[int, int], tile: int, clean: np.ndarray | None = None
) -> Example:
    """Every particle of the noisy frames (T, H, W, 3) uint8 at `times` (T,) s in the tile at `origin`."""
    y, x = origin
    crop = np.s_[:, y : y + tile, x : x + tile]
    context = frame_particles(noisy[crop], times, pre)
    target = frame_particles(clean[crop], times, pre) if clean is not None else None
    return Example(context, context, target)


def add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 with Gaussian noise of `sigma` levels, rounded and clipped as a camera would store it."""
    noisy = frames.astype(np.float32) + rng.normal(0.0, sigma, frames.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def compress(frames: np.ndarray, quality: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames through JPEG at `quality` (blocking and ringing, as a heavily coded stream shows)."""
    import cv2

    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out[i] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) if ok else frame
    return out


def clip_frames(particles: Particles, pre) -> tuple[np.ndarray, np.ndarray]:
    """One clip's particles (tubelets of one frame, nothing pruned) back to (T, H, W, 3) uint8 frames and (T,) s."""
    pixels = unnormalize(particles.values.float(), particles.channels, mean=pre.mean, std=pre.std)
    video = unpatchify(to_grid(particles, pixels), particles.tubelet, particles.frame_shape)  # (T, H, W, C) 0-1
    frames = (video.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    times = np.zeros(particles.grid[0], np.float64)
    times[particles.ti.numpy()] = particles.t.double().numpy()
    return frames, times


# --- the model: encode the context, decode the queries ----------------------------------------------------------


def run_examples(model, decoder, examples: list[Example], *, device, precision: str = "auto") -> torch.Tensor:
    """(Nq, patch_dim) restored values of every example's queries, example after example (each one a clip)."""
    context = pack([e.context for e in examples]).to(device)
    queries = pack([e.queries for e in examples]).to(device)
    with autocast(device, precision):
        features = model.forward_features(context)  # (Nc, D)
        return decoder(features, context, queries).float()


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, channels: int, pre, *, kind: str, ssim_weight: float):
    """Mean pixel loss of (N, t*p*q*C) predictions against targets (both normalized values), in 0-1 pixels."""
    p = unnormalize(pred, channels, mean=pre.mean, std=pre.std)
    t = unnormalize(target.float(), channels, mean=pre.mean, std=pre.std)
    diff = p - t
    loss = diff.abs().mean() if kind == "l1" else (diff.square() + CHARBONNIER_EPS**2).sqrt().mean()
    if ssim_weight:
        loss = loss + ssim_weight * (1.0 - patch_ssim(p, t, channels).mean())
    return loss


def patch_ssim(a: torch.Tensor, b: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C) SSIM of each particle's pixels per channel (one window per patch), from (N, t*p*q*C) 0-1 pixels."""
    a, b = a.reshape(a.shape[0], -1, channels), b.reshape(b.shape[0], -1, channels)  # (N, t*p*q, C)
    mu_a, mu_b = a.mean(1), b.mean(1)
    var_a, var_b = a.var(1, correction=0), b.var(1, correction=0)
    cov = ((a - mu_a[:, None]) * (b - mu_b[:, None])).mean(1)
    return ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a.square() + mu_b.square() + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )


def psnr_of(pred: torch.Tensor, target: torch.Tensor, channels: int, pre) -> float:
    """PSNR (dB) of normalized values against normalized values, over 0-1 pixels."""
    p = unnormalize(pred.float(), channels, mean=pre.mean, std=pre.std).clamp(0, 1)
    t = unnormalize(target.float(), channels, mean=pre.mean, std=pre.std)
    mse = float((p - t).square().mean())
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


# --- the tasks -----------------------------------------------------------------------------------------------------


class RestorationTask(Task):
    """What interpolation and denoising share: data, the encoder + pixel decoder, the loop over examples."""

    metrics = {"psnr": True}
    supervised = True  # train/val splits of unlabeled video (no labels are read)
    config_defaults = RESTORATION_DEFAULTS

    def examples(self, frames: np.ndarray, times: np.ndarray, cfg, pre, rng: np.random.Generator) -> list[Example]:
        """Training examples (tiles with targets) from one clip's clean frames (T, H, W, 3) at `times` (T,) s."""
        raise NotImplementedError

    def prepare(self, cfg, out: Path) -> Prepared:
        refuse_frame_options(cfg, self.name)
        train = load_dataset(cfg.data, split=cfg.train_split, require_labels=False)
        val = None
        if Path(cfg.data).is_dir() and cfg.val_split not in (None, "none") and has_split(cfg.data, cfg.val_split):
            val = load_dataset(cfg.data, split=cfg.val_split, require_labels=False)
        return Prepared(train, val)

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        from tubelet.models import DecoderConfig, MaskedDecoder, load, load_decoder, model_names

        runtime = {"drop_path": cfg.drop_path, "attention": cfg.attention}
        base = None
        if Path(cfg.model).is_dir() or cfg.model not in model_names():
            loaded = load(cfg.model, kind="encoder", **runtime)
            encoder, base = loaded.model, loaded.preprocessing
            encoder.reset_head(0)
            if encoder.config.tubelet[0] > 1:
                log.info("%s: patch embedding folded from %d-frame tubelets to 1", cfg.model, encoder.config.tubelet[0])
                fold_time(encoder)
                base = dataclasses.replace(base, tubelet=encoder.config.tubelet) if base is not None else None
        else:
            tubelet = tuple(cfg.tubelet) if cfg.tubelet is not None else RESTORATION_TUBELET
            try:
                encoder = load(cfg.model, num_classes=0, tubelet=tubelet, time_mode=cfg.time_mode, **runtime).model
            except ValueError as exc:
                raise ConfigError(f"model {cfg.model}: {exc}") from exc
        if encoder.config.tubelet[0] != 1:
            raise ConfigError(f"tubelet: a restorer reads one frame per tubelet, got {encoder.config.tubelet}")
        config = DecoderConfig(
            encoder_dim=encoder.config.dim, patch_dim=encoder.config.patch_dim, dim=cfg.decoder_dim,
            depth=cfg.decoder_depth, heads=cfg.decoder_heads, time_mode=encoder.config.time_mode,
            attention=cfg.attention, estimate=True,
        )  # fmt: skip
        decoder = MaskedDecoder(config)
        started = Path(cfg.model).is_dir() and _start_decoder(decoder, cfg.model, load_decoder)
        if not started:  # the correction's linear part starts at the least-squares filter of the training clips
            pre = _training_preprocessing(cfg, encoder.config.tubelet, base)
            fitted = fit_filter(decoder, self._sample_examples(prepared.train, cfg, pre))
            log.info("%s: linear correction fitted by least squares on %d particles", self.name, fitted)
        if config.dim < config.patch_dim:
            log.warning("decoder_dim %d < %d values per particle: corrections are rank-limited", config.dim,
                        config.patch_dim)  # fmt: skip
        prepared.extra["decoder"] = decoder  # what `validate` (called with the encoder alone) decodes with
        return Built(encoder, base, extra={"decoder": decoder})

    def _sample_examples(self, data, cfg, pre, clips: int = 8) -> list[Example]:
        """Training examples from the first `clips` videos that decode (their first ``clip_seconds``), seeded."""
        from tubelet.errors import TubeletError
        from tubelet.io import decode

        examples: list[Example] = []
        for k, sample in enumerate(data.samples[:clips]):
            try:
                clip = decode(sample.path, start=0.0, end=cfg.clip_seconds)
            except (TubeletError, ValueError, RuntimeError) as exc:
                log.warning("least-squares start: skipping %s: %s", sample.path, exc)
                continue
            times = clip.timestamps - clip.timestamps[0]
            examples += self.examples(clip.frames, times, cfg, pre, np.random.default_rng([cfg.seed, 11, k]))
        return examples

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        examples = []
        for b, clip in enumerate(unpack(batch.packed)):
            frames, times = clip_frames(clip, pre)
            examples += self.examples(frames, times, cfg, pre, np.random.default_rng([cfg.seed, epoch, index, b]))
        if not examples:
            return None
        pred = run_examples(module["model"], module["decoder"], examples, device=device, precision=cfg.precision)
        target = torch.cat([e.target.values for e in examples]).to(device)
        loss = pixel_loss(pred, target, batch.packed.channels, pre, kind=cfg.loss, ssim_weight=cfg.ssim_weight)
        estimate = torch.cat([e.queries.values for e in examples]).to(device)
        logs = {"estimate_loss": float(pixel_loss(estimate, target, batch.packed.channels, pre, kind=cfg.loss,
                                                   ssim_weight=0.0))}  # fmt: skip
        return StepLoss(loss, len(target), batch.packed.num_clips, logs)

    @torch.no_grad()
    def validate(self, model, prepared: Prepared, arm: Arm, pre, *, cfg, device):
        """PSNR of the restored tiles and of their estimates on the validation clips (the same examples each epoch)."""
        if prepared.val is None:
            return None
        decoder = prepared.extra["decoder"]
        dataset = self.dataset(prepared.val, pre, self.reads(prepared, arm))
        preds, targets, estimates, channels = [], [], [], 3
        was = model.training, decoder.training
        model.eval(), decoder.eval()
        for i in range(len(dataset)):
            item = dataset[i]
            if item.particles is None:
                continue
            frames, times = clip_frames(item.particles, pre)
            channels = item.particles.channels
            examples = self.examples(frames, times, cfg, pre, np.random.default_rng([cfg.seed, 7, i]))
            if examples:
                preds.append(run_examples(model, decoder, examples, device=device).cpu())
                targets.append(torch.cat([e.target.values for e in examples]))
                estimates.append(torch.cat([e.queries.values for e in examples]))
        model.train(was[0]), decoder.train(was[1])
        if not preds:
            return None
        target = torch.cat(targets)
        return {
            "psnr": psnr_of(torch.cat(preds), target, channels, pre),
            "estimate_psnr": psnr_of(torch.cat(estimates), target, channels, pre),
            "num_samples": len(preds),
        }

    def check_predict(self, loaded) -> None:
        command = "interpolate --fps F" if self.name == "interpolation" else "denoise"
        raise ConfigError(f"{loaded.source}: a {self.name} model writes video: tubelet {command} --checkpoint ... FILE")

    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        raise ConfigError(
            f"{loaded.source}: a {self.name} model is measured on video it writes: python -m "
            "benchmarks.bench_video2video --checkpoint ... (PSNR/SSIM beside the classical baselines)"
        )

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        out, summary = Path(cfg.out), summaries[arms[0].name]
        return {
            "out": str(out), "best": str(out / "best"), "last": str(out / "last"), "steps": summary["steps"],
            "epochs_run": summary["epochs_run"], "best_val_psnr": summary.get("best_val_psnr"),
            "skipped": [{"path": p, "reason": r} for p, r in prepared.train.skipped] + summary["skipped"],
        }  # fmt: skip


def _random_origin(height: int, width: int, tile: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, max(1, height - tile + 1))), int(rng.integers(0, max(1, width - tile + 1)))


@register
class InterpolationTask(RestorationTask):
    """Frame interpolation: two known frames in, the frames between them out, at any real time in between.

    A training example takes frames ``a`` and ``a + k`` of a clip (k from ``gaps``) as context and rebuilds every
    frame between them (k = 4 trains t = 0.25, 0.5 and 0.75 at once); each missing frame's estimate is the two known
    frames warped to its time by DIS optical flow (``estimate=flow``) or blended.
    """

    name = "interpolation"
    summary = "frame interpolation at any time between two frames: particle decoder over flow-warped estimates"
    Config = InterpolationFields
    # A flow-warped estimate is already within a few levels of the truth: a smaller step than denoising's, or the
    # first updates of the correction (which starts at zero) add more error than they remove.
    config_defaults = {**RESTORATION_DEFAULTS, "lr": 1e-4}

    def examples(self, frames, times, cfg, pre, rng) -> list[Example]:
        usable = [k for k in cfg.gaps if k < len(frames)]
        if not usable:
            return []
        k = int(rng.choice(usable))
        a = int(rng.integers(0, len(frames) - k))
        span = float(times[a + k] - times[a])
        if span <= 0:
            return []
        fractions = [float((times[a + j] - times[a]) / span) for j in range(1, k)]
        estimates = [interpolate(frames[a], frames[a + k], f, cfg.estimate) for f in fractions]
        truth = frames[a + 1 : a + k]
        H, W = frames.shape[1:3]
        return [
            interpolation_example(
                frames[a],
                frames[a + k],
                span,
                fractions,
                pre,
                estimate=cfg.estimate,
                origin=_random_origin(H, W, cfg.tile, rng),
                tile=cfg.tile,
                estimates=estimates,
                truth=truth,
            )  # fmt: skip
            for _ in range(cfg.tiles_per_clip)
        ]


@register
class DenoiseTask(RestorationTask):
    """Denoising: a run of ``frames`` noisy frames in, every one of them clean out.

    A training example adds Gaussian noise of a sigma drawn from U(0, sigma_max) per clip to ``frames`` consecutive
    frames (rounded and clipped to 8 bits; a ``compression`` share is JPEG-coded too); the noisy pixels are both what
    the encoder reads and each query's estimate, and the target is the clean frames.
    """

    name = "denoise"
    summary = "video denoising over a run of frames: particle decoder predicting each noisy particle's correction"
    Config = DenoiseFields

    def examples(self, frames, times, cfg, pre, rng) -> list[Example]:
        count = min(cfg.frames, len(frames))
        a = int(rng.integers(0, len(frames) - count + 1))
        clean, when = frames[a : a + count], times[a : a + count] - times[a]
        noisy = add_noise(clean, float(rng.uniform(0.0, cfg.sigma_max)), rng)
        if cfg.compression and rng.random() < cfg.compression:
            noisy = compress(noisy, int(rng.integers(20, 61)))
        H, W = frames.shape[1:3]
        return [
            denoise_example(noisy, when, pre, origin=_random_origin(H, W, cfg.tile, rng), tile=cfg.tile, clean=clean)
            for _ in range(cfg.tiles_per_clip)
        ]


# --- starting points -----------------------------------------------------------------------------------------------


@torch.no_grad()
def fold_time(encoder) -> None:
    """Make an encoder of t-frame tubelets read one frame per tubelet, in place.

    Its patch embedding's t temporal slices are summed, so a static picture (the same frame t times) embeds exactly
    as before; the rest of the encoder is unchanged (rotary time is in seconds, not tubelet indices).
    """
    t, p, q = encoder.config.tubelet
    channels, dim = encoder.config.channels, encoder.config.dim
    weight = encoder.patch_embed.weight.reshape(dim, t, p * q * channels).sum(1)  # (D, p*q*C)
    encoder.config = encoder.config.replace(tubelet=(1, p, q))
    embed = torch.nn.Linear(p * q * channels, dim).to(weight.device)
    embed.weight.copy_(weight)
    embed.bias.copy_(encoder.patch_embed.bias)
    encoder.patch_embed = embed


def _start_decoder(decoder, checkpoint: str, load_decoder) -> bool:
    """Start from the checkpoint's decoder when it has one of this shape: a restorer's whole (True), or a pretraining
    (MAE) decoder's blocks (its pixel head predicts norm-pix targets, not corrections: the head starts at zero)."""
    from tubelet.models.kinds import DECODER_WEIGHTS

    if not (Path(checkpoint) / DECODER_WEIGHTS).is_file():
        return False
    old = load_decoder(checkpoint)
    same = ("dim", "depth", "heads", "mlp_ratio", "encoder_dim")
    if any(getattr(old.config, k) != getattr(decoder.config, k) for k in same):
        log.info("%s: its decoder has another shape; the pixel decoder starts fresh", checkpoint)
        return False
    if old.config.estimate and old.config.patch_dim == decoder.config.patch_dim:
        decoder.load_state_dict(old.state_dict())
        return True
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("head.")}
    decoder.load_state_dict(state, strict=False)
    log.info("%s: pixel decoder blocks start from its pretraining decoder", checkpoint)
    return False


def _training_preprocessing(cfg, tubelet, base):
    """How the run will read its clips (its sampling, size and pruning; the checkpoint's normalization)."""
    from tubelet.data.transforms import Preprocessing

    return dataclasses.replace(
        base or Preprocessing(), tubelet=tuple(tubelet), sample_fps=cfg.sample_fps, clip_seconds=cfg.clip_seconds,
        size=cfg.size, max_long_side=cfg.max_long_side, prune_threshold=0.0,
    )  # fmt: skip


@torch.no_grad()
def fit_filter(decoder, examples: list[Example], ridge: float = 1e-3) -> int:
    """Set the decoder's linear correction (``estimate_filter``) to the ridge least-squares map from each query's
    estimate to its error, over `examples`: a classical linear MMSE (Wiener) patch filter, the start gradient
    training refines. Adam from zero learns it slowly: each step moves every weight by about lr whatever its
    gradient, so the consistent part (the filter) hides under the noise of the rest for hundreds of steps.

    Returns:
        The particles it was fitted on (0: no examples, the filter stays at zero).
    """
    if not examples:
        return 0
    x = torch.cat([e.queries.values for e in examples]).double()  # (N, P) estimates
    y = torch.cat([e.target.values for e in examples]).double() - x  # (N, P) what the correction must add
    ones = torch.ones(len(x), 1, dtype=x.dtype)
    xa = torch.cat([x, ones], 1)  # (N, P+1)
    gram = xa.T @ xa
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram, xa.T @ y) / decoder.correction_gain  # (P+1, P)
    decoder.estimate_filter.weight.copy_(solution[:-1].T.float())
    decoder.estimate_filter.bias.copy_(solution[-1].float())
    return len(x)


# --- inference -----------------------------------------------------------------------------------------------------


class Restorer:
    """A trained interpolation or denoise checkpoint, restoring whole frames tile by tile.

    Args:
        checkpoint: a run's ``best/`` or ``last/`` of task interpolation or denoise.
        device: where the model runs.
        batch_tiles: tiles per forward pass (memory).
    """

    def __init__(self, checkpoint: str | Path, *, task: str, device="cpu", batch_tiles: int = 64):
        from tubelet.checkpoint import load_training_args
        from tubelet.models import load, load_decoder

        loaded = load(checkpoint)
        if loaded.task != task:
            raise ConfigError(
                f"{checkpoint}: a {loaded.task or loaded.kind} checkpoint, not a {task} model "
                f"(tubelet finetune --task {task} trains one)"
            )
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.decoder = load_decoder(checkpoint).to(self.device).eval()
        self.pre = loaded.preprocessing
        args = load_training_args(checkpoint) or {}
        self.tile = int(args.get("tile", 64))
        self.estimate = args.get("estimate", "flow")
        self.frames = int(args.get("frames", 5))  # a denoiser's run of frames read together
        self.batch_tiles = batch_tiles

    @torch.no_grad()
    def interpolate(self, a: np.ndarray, b: np.ndarray, span: float, fractions: list[float]) -> np.ndarray:
        """(M, H, W, 3) uint8 frames at `fractions` of the way from `a` to `b` ((H, W, 3) uint8, `span` s apart)."""
        estimates = [interpolate(a, b, f, self.estimate) for f in fractions]
        H, W = a.shape[:2]
        return self._tiled(H, W, len(fractions), lambda origin: interpolation_example(
            a, b, span, fractions, self.pre, estimate=self.estimate, origin=origin, tile=self.tile,
            estimates=estimates))  # fmt: skip

    @torch.no_grad()
    def denoise(self, noisy: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 clean estimates of every noisy frame (T, H, W, 3) at `times` (T,) s."""
        H, W = noisy.shape[1:3]
        when = np.asarray(times, np.float64) - float(times[0])
        return self._tiled(H, W, len(noisy), lambda origin: denoise_example(
            noisy, when, self.pre, origin=origin, tile=self.tile))  # fmt: skip

    def denoise_sequence(self, noisy: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8: every frame of a shot denoised by runs of the model's `frames`, overlapping by about
        half a run and blended with weights that peak at each run's centre (the frames with context on both sides)."""
        count, run = len(noisy), min(self.frames, len(noisy))
        stride = max(1, run - run // 2)
        starts = list(range(0, count - run + 1, stride))
        if starts[-1] != count - run:
            starts.append(count - run)
        peak = np.minimum(np.arange(run) + 1, run - np.arange(run)).astype(np.float32)[:, None, None, None]
        total = np.zeros(noisy.shape, np.float32)
        weight = np.zeros((count, 1, 1, 1), np.float32)
        for start in starts:
            total[start : start + run] += self.denoise(noisy[start : start + run], times[start : start + run]) * peak
            weight[start : start + run] += peak
        return np.clip(np.rint(total / weight), 0, 255).astype(np.uint8)

    def _tiled(self, H: int, W: int, count: int, example_at) -> np.ndarray:
        """Frames (count, H, W, 3) uint8 from the tiles `example_at(origin)` gives, feather-blended at overlaps."""
        origins = [(y, x) for y in tile_origins(H, self.tile) for x in tile_origins(W, self.tile)]
        total = np.zeros((count, H, W, 3), np.float32)
        weight = np.zeros((H, W, 1), np.float32)
        for lo in range(0, len(origins), self.batch_tiles):
            part = origins[lo : lo + self.batch_tiles]
            examples = [example_at(origin) for origin in part]
            pred = run_examples(self.model, self.decoder, examples, device=self.device).cpu()
            rows = torch.split(pred, [len(e.queries) for e in examples])
            for (y, x), example, values in zip(part, examples, rows):
                q = example.queries
                pixels = unnormalize(values, q.channels, mean=self.pre.mean, std=self.pre.std).clamp(0, 1)
                tile = unpatchify(to_grid(q, pixels), q.tubelet, q.frame_shape).numpy()  # (count, h, w, 3) 0-1
                h, w = tile.shape[1:3]
                mask = feather(h, w, self.tile // 8)[..., None]
                total[:, y : y + h, x : x + w] += tile * 255.0 * mask
                weight[y : y + h, x : x + w] += mask
        return np.clip(np.rint(total / weight), 0, 255).astype(np.uint8)
