"""Masked video modeling: reconstruction targets, the norm-pix loss, predictions back in pixel space, and the
``reconstruction`` task that pretrains an encoder with them (``tubelet pretrain``).

Targets are the particles' own values (the pixels `patchify` cut and the preprocessing normalized), gathered at
the hidden particles; the video is never cut twice. As VideoMAE does, targets are first un-normalized to 0-1
pixels with the preprocessing mean/std and then normalized per patch ("norm-pix"):

* per patch and per colour channel (VideoMAE's grouping: the t*p*q values of one channel of one tubelet),
* ``(v - mean) / sqrt(var + eps)`` with the unbiased variance and eps = 1e-6 in 0-1 pixel units (MAE's placement
  of eps; VideoMAE adds 1e-6 to the standard deviation instead, which differs only on near-flat patches).

Un-normalizing first makes eps mean the same thing whatever the preprocessing std is. (With per-channel groups
the dataset normalization is an affine map per channel, so it would otherwise cancel except for that eps.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tubelet.data.manifest import load_dataset
from tubelet.data.pipeline import to_particles
from tubelet.data.transforms import clip_window
from tubelet.distributed import world
from tubelet.errors import ConfigError, TubeletError
from tubelet.io import decode, write_contact_sheet, write_gif
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.nn.device import autocast
from tubelet.particles import MASK_MODES, mask_batch, pack
from tubelet.particles.patchify import to_grid, unpatchify
from tubelet.particles.structure import Particles
from tubelet.tasks.base import Arm, Built, Prepared, StepLoss, Task, register
from tubelet.typed import opt

log = logging.getLogger("tubelet.pretrain")

EPS = 1e-6


def unnormalize(
    values: torch.Tensor, channels: int, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """Particle pixels back to 0-1 units: the inverse of `tubelet.particles.normalize`.

    Args:
        values: (N, t*p*q*C) channels last, normalized with `mean`/`std` (both None: 0-255 levels).
        channels: C.

    Returns:
        (N, t*p*q*C) in 0-1 units.
    """
    if mean is None and std is None:
        return values / 255.0
    mean_t = values.new_tensor(mean if mean is not None else [0.0] * channels)
    std_t = values.new_tensor(std if std is not None else [1.0] * channels)
    shaped = values.reshape(values.shape[0], -1, channels)  # (N, t*p*q, C)
    return (shaped * std_t + mean_t).reshape(values.shape)


def patch_stats(pixels: torch.Tensor, channels: int, *, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch, per channel mean and scale ``sqrt(var + eps)`` of (N, t*p*q*C) pixels -> two (N, 1, C)."""
    shaped = pixels.reshape(pixels.shape[0], -1, channels)  # (N, t*p*q, C)
    mean = shaped.mean(dim=1, keepdim=True)  # (N, 1, C)
    correction = 1 if shaped.shape[1] > 1 else 0  # unbiased, as MAE and VideoMAE (a 1-pixel patch has var 0)
    scale = (shaped.var(dim=1, keepdim=True, correction=correction) + eps).sqrt()
    return mean, scale


def reconstruction_targets(
    values: torch.Tensor,
    channels: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
    eps: float = EPS,
) -> torch.Tensor:
    """What the decoder learns to predict for particles with these values.

    Args:
        values: (M, t*p*q*C) the hidden particles' values, as the preprocessing normalized them.
        channels: C.
        mean, std: the preprocessing's per-channel normalization (0-1 units).
        norm_pix: per-patch normalized 0-1 pixels (see the module docstring); False predicts `values` as they are.

    Returns:
        (M, t*p*q*C) float32.
    """
    values = values.float()
    if not norm_pix:
        return values
    pixels = unnormalize(values, channels, mean=mean, std=std)
    loc, scale = patch_stats(pixels, channels, eps=eps)
    shaped = pixels.reshape(pixels.shape[0], -1, channels)  # (M, t*p*q, C)
    return ((shaped - loc) / scale).reshape(values.shape)


def reconstruction_loss(
    pred: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    *,
    channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
) -> torch.Tensor:
    """Mean squared error over the hidden particles only.

    Args:
        pred: (M, t*p*q*C) decoder predictions, one row per hidden particle in `index` order.
        values: (N, t*p*q*C) values of all particles of the batch (visible ones are never read).
        index: (M,) int64 rows of `values` that were hidden (`MaskedBatch.target_index`).
        channels, mean, std, norm_pix: as in `reconstruction_targets`.

    Returns:
        () float32: the mean over every hidden particle of the batch and every value of it (each particle weighs
        the same, whichever clip it belongs to).
    """
    if pred.shape[0] != index.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions for {index.shape[0]} hidden particles")
    target = reconstruction_targets(values[index], channels, mean=mean, std=std, norm_pix=norm_pix)
    return F.mse_loss(pred.float(), target)


def predicted_pixels(
    pred: torch.Tensor,
    values: torch.Tensor,
    channels: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
) -> torch.Tensor:
    """Predictions in 0-1 pixels, for showing a reconstruction.

    A norm-pix prediction has no brightness or contrast of its own: it is put back with the mean and scale of
    the TRUE patch (as MAE's and VideoMAE's visualizations do), so a picture shows the predicted structure, not
    the predicted colour.

    Args:
        pred: (M, t*p*q*C) predictions.
        values: (M, t*p*q*C) the same particles' true values (normalized as the preprocessing did).

    Returns:
        (M, t*p*q*C) float32 in 0-1 units, clamped.
    """
    pred = pred.float()
    if norm_pix:
        loc, scale = patch_stats(unnormalize(values.float(), channels, mean=mean, std=std), channels)
        shaped = pred.reshape(pred.shape[0], -1, channels)  # (M, t*p*q, C)
        pixels = (shaped * scale + loc).reshape(pred.shape)
    else:
        pixels = unnormalize(pred, channels, mean=mean, std=std)
    return pixels.clamp(0.0, 1.0)


def reconstruction_frames(
    particles: Particles,
    hidden: torch.Tensor,
    pred: torch.Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    norm_pix: bool = True,
    fill: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as the encoder saw it and as the decoder filled it in, scattered back to frames.

    Args:
        particles: one clip, values normalized as the preprocessing did.
        hidden: (M,) int64 indices of its hidden particles.
        pred: (M, t*p*q*C) predictions for them.
        fill: grey level (0-1) of hidden places.

    Returns:
        masked: (T, H, W, C) uint8 frames of the visible particles, hidden places grey.
        reconstructed: (T, H, W, C) uint8 frames of the visible particles with the predictions pasted in the hidden
        places (`predicted_pixels`). A pruned particle fills its whole static run in both.
    """
    channels = particles.channels
    pixels = unnormalize(particles.values.float(), channels, mean=mean, std=std).clamp(0.0, 1.0)  # (N, D)
    shown = torch.ones(len(particles), dtype=torch.bool, device=pixels.device)
    shown[hidden] = False
    filled = pixels.clone()
    filled[hidden] = predicted_pixels(pred, particles.values[hidden], channels, mean=mean, std=std, norm_pix=norm_pix)

    def frames(parts: Particles, values: torch.Tensor) -> torch.Tensor:
        grid = to_grid(parts, values, fill=fill)  # (T', H', W', t*p*q*C)
        video = unpatchify(grid, particles.tubelet, particles.frame_shape)  # (T, H, W, C) in 0-1
        return (video * 255).round().to(torch.uint8)

    return frames(particles.select(shown), pixels[shown]), frames(particles, filled)


# --- the task: masked video pretraining -------------------------------------------------------------------------

DECODER = "decoder.safetensors"  # the decoder's weights, beside the encoder's model.safetensors


@dataclass(frozen=True)
class ReconstructionFields:
    """The fields of ``tubelet pretrain`` (masked video modeling) besides those every run shares."""

    split: str | None = opt(None, "read only this split (train.csv, train/ ...); none reads every video")
    mask_ratio: float = opt(0.9, "fraction of each clip's tubes / particles / times hidden from the encoder")
    mask: str = opt("tube", "tube (the same places at every time), random (particles) or frame (whole times)")
    decoder_mask_ratio: float = opt(0.0, "fraction of hidden particles NOT reconstructed (VideoMAE V2); 0 = all")
    norm_pix: bool = opt(True, "predict per-patch normalized pixels (VideoMAE); false: the normalized values")
    decoder_dim: int = opt(128, "decoder width")
    decoder_depth: int = opt(4, "decoder blocks")
    decoder_heads: int = opt(4, "decoder attention heads")

    def validate(self) -> None:
        for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.mask not in MASK_MODES:
            raise ConfigError(f"mask: expected {' | '.join(MASK_MODES)}, got {self.mask!r}")
        for name in ("mask_ratio", "decoder_mask_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads or (self.decoder_dim // self.decoder_heads) % 2:
            raise ConfigError(f"decoder_dim: {self.decoder_dim} must split into {self.decoder_heads} even heads")


@register
class ReconstructionTask(Task):
    """Masked video pretraining (VideoMAE over particles) on unlabeled video: ``tubelet pretrain``.

    Each clip is masked BEFORE the encoder (tube masking of 90% by default), so the encoder costs what the visible
    particles cost; a light decoder predicts the hidden particles' pixels and the norm-pix loss is taken over the
    hidden particles only. Masks are seeded per (seed, epoch, batch), so a resumed run hides the same particles.
    ``best/`` is the lowest epoch-mean training loss (pretraining has no held-out set); its ``model.safetensors``
    holds the ENCODER alone, without a head, so ``tubelet finetune --model RUN/best`` starts from it, and the decoder
    lies beside it in ``decoder.safetensors``. Each epoch draws a fixed clip, masked and reconstructed, to
    ``reconstructions/epoch_NNN.png`` and ``.gif``.
    """

    name = "reconstruction"
    summary = "masked video pretraining on unlabeled video (tubelet pretrain); norm-pix loss on hidden particles"
    Config = ReconstructionFields
    metrics = {"loss": False}
    supervised = False
    judged_on_train_loss = True

    def prepare(self, cfg, out: Path) -> Prepared:
        return Prepared(load_dataset(cfg.data, split=cfg.split, require_labels=False))

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        from tubelet.models import load, model_names

        runtime = {"drop_path": cfg.drop_path, "attention": cfg.attention}
        if Path(cfg.model).is_dir() or cfg.model not in model_names():
            loaded = load(cfg.model, kind="encoder", **runtime)
            loaded.model.reset_head(0)  # features are what pretraining learns; a classifier would be dead weight
            encoder, base = loaded.model, loaded.preprocessing
        else:
            tubelet = {"tubelet": tuple(cfg.tubelet)} if cfg.tubelet is not None else {}
            encoder, base = (
                load(
                    cfg.model, num_classes=0, time_mode=cfg.time_mode, embed_init=cfg.embed_init, **tubelet, **runtime
                ).model,
                None,
            )
        decoder = MaskedDecoder(
            DecoderConfig(
                encoder_dim=encoder.config.dim, patch_dim=encoder.config.patch_dim, dim=cfg.decoder_dim,
                depth=cfg.decoder_depth, heads=cfg.decoder_heads, time_mode=encoder.config.time_mode,
                attention=cfg.attention,
            )
        )  # fmt: skip
        return Built(encoder, base, extra={"decoder": decoder})

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        masks = _generator(cfg.seed, epoch, index)
        plan = mask_batch(
            batch.packed, cfg.mask_ratio, mode=cfg.mask, decoder_ratio=cfg.decoder_mask_ratio, generator=masks
        )
        if len(plan.target_index) == 0:  # clips of one tube each: nothing hidden, nothing to learn
            return None
        encoder = module["model"]
        pred = _reconstruct(module, plan.visible, plan.queries, device, cfg.precision)
        loss = reconstruction_loss(
            pred, batch.packed.values.to(device), plan.target_index.to(device), channels=encoder.config.channels,
            mean=pre.mean, std=pre.std, norm_pix=cfg.norm_pix,
        )  # fmt: skip
        hidden = len(plan.target_index)
        visible = len(plan.visible) / len(batch.packed)
        return StepLoss(loss, hidden, batch.packed.num_clips, {"visible_fraction": visible})

    def on_epoch_end(self, module, prepared: Prepared, arm: Arm, pre, *, cfg, device, epoch: int) -> dict:
        if "shown" not in prepared.extra:  # one clip, the same every epoch, for the reconstruction pictures
            prepared.extra["shown"] = _fixed_clip(prepared.train, pre)
        pictures = write_reconstruction(
            module, prepared.extra["shown"], pre, cfg, arm.out / "reconstructions", epoch, device
        )
        return {"pictures": pictures}

    def check_predict(self, loaded) -> None:
        raise ConfigError(
            f"{loaded.source}: the checkpoint has no labels.json (not a classifier): a pretrained encoder predicts "
            f"after fine-tuning (tubelet finetune --model {loaded.source})"
        )

    def check_evaluation(self, *, split, whole, baseline, loaded) -> None:
        self.check_predict(loaded)

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        out, summary = Path(cfg.out), summaries[arms[0].name]
        skipped = [{"path": p, "reason": r} for p, r in prepared.train.skipped] + summary["skipped"]
        return {
            "out": str(out), "best": str(out / "best"), "last": str(out / "last"), "steps": summary["steps"],
            "epochs_run": summary["epochs_run"], "best_loss": summary["best_val_loss"], "skipped": skipped,
        }  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------------------------


def _generator(*seeds: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.default_rng(list(seeds)).integers(2**62)))


def _reconstruct(model: torch.nn.ModuleDict, visible, queries, device, precision: str) -> torch.Tensor:
    """Encode the visible particles and decode the queries: (Nq, t*p*q*C) predictions (`model` holds the encoder as
    ``model`` and the decoder as ``decoder``)."""
    visible, queries = visible.to(device), queries.to(device)
    with autocast(device, precision):
        features = model["model"].forward_features(visible)  # (Nv, D): the encoder sees visible particles only
        return model["decoder"](features, visible, queries)


def _fixed_clip(data, pre):
    """(frames (T, H, W, 3) uint8, timestamps (T,) s, particles) of the first video that decodes (centre window)."""
    for sample, info in zip(data.samples, data.infos):
        start, end = clip_window(info.duration_s, pre.clip_seconds, None)
        try:
            clip = decode(
                sample.path, start=start, end=end, fps=pre.sample_fps, size=pre.output_size(info.height, info.width)
            )
            times = clip.timestamps - start
            return clip.frames, times, to_particles(torch.from_numpy(clip.frames), times, pre)
        except (TubeletError, ValueError, RuntimeError) as exc:
            log.warning("reconstruction pictures: skipping %s: %s", sample.path, exc)
    return None


@torch.no_grad()
def write_reconstruction(model, shown, pre, cfg, folder: Path, epoch: int, device) -> list[str]:
    """PNG grid and GIF of original / masked / reconstructed frames of the fixed clip, with a fixed mask."""
    if shown is None:
        return []
    frames, times, particles = shown
    model.eval()
    # The same mask every epoch, and every hidden particle reconstructed (whatever decoder_mask_ratio is).
    plan = mask_batch(pack([particles]), cfg.mask_ratio, mode=cfg.mask, generator=_generator(cfg.seed))
    pred = _reconstruct(model, plan.visible, plan.queries, device, cfg.precision).float().cpu()
    masked, filled = reconstruction_frames(
        particles, plan.target_index, pred, mean=pre.mean, std=pre.std, norm_pix=cfg.norm_pix
    )
    model.train()
    if not world().main:  # under FSDP every rank ran the forward pass (it gathers shards); rank 0 writes
        return []
    zoom = max(1, 128 // frames.shape[2])  # small frames are enlarged (nearest) to be seen
    rows = [np.asarray(f).repeat(zoom, 1).repeat(zoom, 2) for f in (frames, masked, filled)]  # (T, H, W, 3) uint8
    T = len(frames)
    png = write_contact_sheet(
        folder / f"epoch_{epoch:03d}.png",
        np.concatenate(rows),
        np.tile(times, 3),
        columns=T,
        titles=[name for name in ("original", "masked", "recon") for _ in range(T)],
    )
    gap = np.full((*rows[0].shape[:2], 4, 3), 255, dtype=np.uint8)  # white bar between the three panels
    gif = write_gif(
        folder / f"epoch_{epoch:03d}.gif",
        np.concatenate([rows[0], gap, rows[1], gap, rows[2]], axis=2),
        timestamps=times,
    )
    return [str(png), str(gif)]
