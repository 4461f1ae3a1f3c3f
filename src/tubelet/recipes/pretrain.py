"""Self-supervised pretraining by masked video modeling (VideoMAE over particles) on unlabeled video.

Read top to bottom: config -> data -> encoder + decoder -> optimizer -> (resume) -> loop -> checkpoints and
pictures. Each clip is masked BEFORE the encoder (tube masking of 90% by default), so the encoder costs what the
visible particles cost; a light decoder predicts the hidden particles' pixels and the norm-pix loss of
`tasks.reconstruction` is taken over the hidden particles only.

RUN/last (with trainer state for --resume) and RUN/best (the lowest epoch-mean training loss: pretraining has no
held-out set) are tubelet checkpoints whose model.safetensors holds the ENCODER alone, without a head, so
``tubelet finetune --model RUN/best`` starts from it. The decoder lies beside it in decoder.safetensors.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tubelet.data.dataset import ClipDataset, budget_batches
from tubelet.data.manifest import load_dataset
from tubelet.data.pipeline import to_particles
from tubelet.data.transforms import Augment, clip_window
from tubelet.errors import ConfigError, DataError, TubeletError
from tubelet.io import decode, write_contact_sheet, write_gif
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.models.registry import model_names
from tubelet.particles import MASK_MODES, mask_batch, pack
from tubelet.recipes.common import LoadedModel, checkpoint_config, load_model
from tubelet.recipes.finetune import preprocessing_for
from tubelet.tasks.reconstruction import reconstruction_frames, reconstruction_loss
from tubelet.train import checkpoint
from tubelet.train.config import to_dict
from tubelet.train.loader import iterate_batches
from tubelet.train.loop import autocast, optimizer_step, resolve_device, seed_everything
from tubelet.train.metrics_log import MetricsLog
from tubelet.train.optim import build_optimizer, param_groups, warmup_cosine

log = logging.getLogger("tubelet.pretrain")
DECODER = "decoder.safetensors"  # the decoder's weights, beside the encoder's model.safetensors


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run needs. Saved as ``RUN/config.json`` and in every checkpoint."""

    data: str = ""  # a folder of videos (class folders are fine: labels are ignored) or a manifest
    split: str | None = None  # read only this split (train.csv, train/ ...); none reads every video
    model: str = "micro"  # encoder: a registered size (micro, tiny, small, base, large, test) or a checkpoint
    out: str = "runs/pretrain"  # run directory: best/, last/, reconstructions/, metrics.jsonl, config.json
    epochs: int = 20  # passes over the videos
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.01  # final LR as a fraction of the peak (cosine)
    warmup_epochs: float = 1.0  # linear warmup length
    weight_decay: float = 0.05  # decoupled weight decay (not on biases, norms, mask token, position parameters)
    grad_clip: float | None = 1.0  # max global gradient norm; none disables
    mask_ratio: float = 0.9  # fraction of each clip's tubes / particles / times hidden from the encoder
    mask: str = "tube"  # tube (the same places at every time), random (particles) or frame (whole times)
    decoder_mask_ratio: float = 0.0  # fraction of hidden particles NOT reconstructed (VideoMAE V2); 0 = all
    norm_pix: bool = True  # predict per-patch normalized pixels (VideoMAE); false: the normalized values
    decoder_dim: int = 128  # decoder width
    decoder_depth: int = 4  # decoder blocks
    decoder_heads: int = 4  # decoder attention heads
    batch_particles: int = 16384  # particle budget per batch BEFORE masking (the encoder sees 1 - mask_ratio)
    max_clips_per_batch: int | None = None  # optional cap on clips per batch
    drop_path: float = 0.0  # stochastic depth of the encoder's last block
    time_mode: str = "seconds"  # time positions for a fresh encoder: seconds or index (ablation)
    tubelet: tuple[int, int, int] | None = None  # frames x rows x cols; none takes the model's
    sample_fps: float | None = 8.0  # frames per second read; none reads native frames
    clip_seconds: float = 2.0  # seconds per clip
    size: int | None = 112  # short side after resizing; none keeps the source size
    max_long_side: int | None = 224  # cap on the long side after resizing
    prune_threshold: float = 4.0  # static pruning in 0-255 levels: a pruned particle is neither encoded nor a target
    crop_scale_min: float = 0.6  # random resized crop keeps at least this area fraction (1 disables)
    flip: bool = False  # random horizontal flips
    workers: int = 2  # DataLoader decoding processes (0 decodes in the main process)
    seed: int = 0  # seed of initialisation, sampling, augmentation and masks
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    precision: str = "auto"  # auto (bf16 autocast on CUDA), bf16 or fp32
    attention: str = "auto"  # attention backend (auto, sdpa, dense, varlen, flash, flex)
    save_every_steps: int = 0  # also save last/ every this many optimizer steps (0: each epoch only)
    resume: bool = False  # continue from out/last if it holds trainer state
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data: give a folder of videos or a manifest (--data)")
        for name in ("epochs", "batch_particles", "decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.clip_seconds <= 0:
            raise ConfigError(f"lr and clip_seconds: must be positive, got {self.lr} and {self.clip_seconds}")
        if self.mask not in MASK_MODES:
            raise ConfigError(f"mask: expected {' | '.join(MASK_MODES)}, got {self.mask!r}")
        for name in ("mask_ratio", "decoder_mask_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads or (self.decoder_dim // self.decoder_heads) % 2:
            raise ConfigError(f"decoder_dim: {self.decoder_dim} must split into {self.decoder_heads} even heads")


def pretrain(cfg: PretrainConfig) -> dict:
    """Run masked video pretraining; returns a summary with the best loss and the checkpoint paths."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)

    # --- data: any videos, labels ignored; unreadable files are reported and skipped ---------------------------
    data = load_dataset(cfg.data, split=cfg.split, require_labels=False)

    # --- model: an encoder without a head, and the decoder ------------------------------------------------------
    loaded = _build_encoder(cfg)
    encoder = loaded.model
    pre = preprocessing_for(cfg, loaded)
    decoder_config = DecoderConfig(
        encoder_dim=encoder.config.dim,
        patch_dim=encoder.config.patch_dim,
        dim=cfg.decoder_dim,
        depth=cfg.decoder_depth,
        heads=cfg.decoder_heads,
        time_mode=encoder.config.time_mode,
        attention=cfg.attention,
    )
    decoder = MaskedDecoder(decoder_config)
    model = nn.ModuleDict({"encoder": encoder, "decoder": decoder}).to(device)
    optimizer = build_optimizer(param_groups(model, weight_decay=cfg.weight_decay), name="adamw", lr=cfg.lr)

    augment = Augment(crop_scale=(cfg.crop_scale_min, 1.0), flip=cfg.flip)
    train_set = ClipDataset(data, pre, augment=augment, seed=cfg.seed)
    estimates = train_set.estimates()
    quarantine: set[int] = set()
    total_steps = sum(len(_epoch_batches(cfg, estimates, e, quarantine)) for e in range(cfg.epochs))
    total_steps = min(total_steps, cfg.max_steps or total_steps)
    warmup = round(cfg.warmup_epochs * len(_epoch_batches(cfg, estimates, 0, quarantine)))
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total_steps, min_ratio=cfg.min_lr_ratio)

    # --- state, resume ---------------------------------------------------------------------------------------
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "skipped": []}
    if cfg.resume and checkpoint.has_trainer(out / "last"):
        restored = checkpoint.load_trainer(out / "last", optimizer=optimizer, scheduler=scheduler)
        checkpoint.load_weights(encoder, out / "last")  # strict: a ConfigError naming the keys if it does not fit
        decoder.load_state_dict(restored.pop("module_state", None) or checkpoint.load_state_dict(out / "last", DECODER))
        state.update(restored)
        for path, _ in state["skipped"]:
            quarantine.update(train_set.item_indices_of(path))
        log.info("resumed from %s at step %d (epoch %d)", out / "last", state["step"], state["epoch"])
    elif cfg.resume:
        log.warning("--resume: %s holds no trainer state; starting fresh", out / "last")
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    metrics_log = MetricsLog(out)
    shown = _fixed_clip(data, pre)  # one clip, the same every epoch, for the reconstruction pictures
    sizes = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (encoder, decoder)]
    log.info(
        "pretraining %s (%.2fM + decoder %.2fM) on %d videos; %d steps on %s",
        cfg.model,
        *sizes,
        len(data),
        total_steps,
        device,
    )

    def save(name: str, with_trainer: bool) -> None:
        trainer = None
        if with_trainer:
            trainer = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "rng": True,
                "module": decoder.state_dict(),  # the encoder's weights are model.safetensors
            }
        checkpoint.save_checkpoint(
            out / name,
            model=encoder,
            config={**checkpoint_config(encoder, pre), "decoder": decoder_config.to_dict()},
            training_args=to_dict(cfg),
            trainer=trainer,
            extra_weights={DECODER: decoder.state_dict()},
        )

    def on_crash(path: str, reason: str) -> None:
        state["skipped"].append((path, reason))
        quarantine.update(train_set.item_indices_of(path))

    # --- loop ------------------------------------------------------------------------------------------------
    for epoch in range(state["epoch"], cfg.epochs):
        if state["step"] >= total_steps:
            break
        train_set.set_epoch(epoch)
        batches = _epoch_batches(cfg, estimates, epoch, quarantine)
        skip = state["batch_in_epoch"]
        model.train()
        progress = tqdm(
            total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=None
        )
        clips, loss_sum, hidden_sum, started = 0, 0.0, 0, time.perf_counter()
        for i, batch in enumerate(
            iterate_batches(train_set, batches[skip:], workers=cfg.workers, on_crash=on_crash), start=skip
        ):
            progress.update(1)
            for item in batch.failed:
                log.warning("skipping %s: %s", item.path, item.error)
                on_crash(item.path, item.error)
            if batch.packed is None:
                continue
            clips += batch.packed.num_clips
            # Masks are seeded per (seed, epoch, batch), so a resumed run hides the same particles.
            masks = _generator(cfg.seed, epoch, i)
            plan = mask_batch(
                batch.packed, cfg.mask_ratio, mode=cfg.mask, decoder_ratio=cfg.decoder_mask_ratio, generator=masks
            )
            if len(plan.target_index) == 0:  # clips of one tube each: nothing hidden, nothing to learn
                continue
            pred = _reconstruct(model, plan.visible, plan.queries, device, cfg.precision)
            loss = reconstruction_loss(
                pred,
                batch.packed.values.to(device),
                plan.target_index.to(device),
                channels=encoder.config.channels,
                mean=pre.mean,
                std=pre.std,
                norm_pix=cfg.norm_pix,
            )
            loss.backward()
            grad_norm = optimizer_step(model, optimizer, scheduler, cfg.grad_clip)
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            loss_sum += loss.item() * len(plan.target_index)
            hidden_sum += len(plan.target_index)
            rate = clips / max(time.perf_counter() - started, 1e-9)
            progress.set_postfix(loss=f"{loss_sum / hidden_sum:.4f}", clips_s=f"{rate:.1f}")
            metrics_log.write(
                "train",
                state["step"],
                loss=loss.item(),
                lr=scheduler.get_last_lr()[0],
                grad_norm=grad_norm,
                clips_per_s=rate,
                visible_fraction=len(plan.visible) / len(batch.packed),
                epoch=epoch,
            )
            if cfg.save_every_steps and state["step"] % cfg.save_every_steps == 0:
                save("last", with_trainer=True)
            if state["step"] >= total_steps:
                break
        progress.close()
        if clips == 0 and skip < len(batches):
            raise DataError(f"{cfg.data}: no clip could be decoded in epoch {epoch + 1} (see warnings)")
        epoch_loss = loss_sum / max(hidden_sum, 1)
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        if hidden_sum and (state["best"] is None or epoch_loss < state["best"]):
            state["best"] = epoch_loss
            save("best", with_trainer=False)
        save("last", with_trainer=True)
        pictures = _write_reconstruction(model, shown, pre, cfg, out / "reconstructions", epoch + 1, device)
        metrics_log.write("epoch", state["step"], loss=epoch_loss, epoch=epoch + 1)
        print(json.dumps({"epoch": epoch + 1, "loss": round(epoch_loss, 5), "pictures": pictures}), flush=True)

    if not (out / "best").exists() and (out / "last").exists():  # no epoch learned anything: best is last
        save("best", with_trainer=False)
    metrics_log.close()
    skipped = [{"path": p, "reason": r} for p, r in [*data.skipped, *state["skipped"]]]
    result = {
        "out": str(out),
        "best": str(out / "best"),
        "last": str(out / "last"),
        "steps": state["step"],
        "epochs_run": state["epoch"],
        "best_loss": state["best"],
        "skipped": skipped,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- helpers (plain functions; the loop above is the recipe) -----------------------------------------------


def _build_encoder(cfg: PretrainConfig) -> LoadedModel:
    """A fresh registered size, or a checkpoint's encoder (a directory or a hub id), with no classifier head."""
    runtime = {"drop_path": cfg.drop_path, "attention": cfg.attention}
    if Path(cfg.model).is_dir() or cfg.model not in model_names():
        loaded = load_model(cfg.model, **runtime)
        loaded.model.reset_head(0)  # features are what pretraining learns; a classifier would be dead weight
        return loaded
    tubelet = {"tubelet": tuple(cfg.tubelet)} if cfg.tubelet is not None else {}
    return load_model(cfg.model, num_classes=0, time_mode=cfg.time_mode, **tubelet, **runtime)


def _generator(*seeds: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.default_rng(list(seeds)).integers(2**62)))


def _reconstruct(model: nn.ModuleDict, visible, queries, device, precision: str) -> torch.Tensor:
    """Encode the visible particles and decode the queries: (Nq, t*p*q*C) predictions."""
    visible, queries = visible.to(device), queries.to(device)
    with autocast(device, precision):
        features = model["encoder"].forward_features(visible)  # (Nv, D): the encoder sees visible particles only
        return model["decoder"](features, visible, queries)


def _epoch_batches(cfg: PretrainConfig, estimates, epoch: int, quarantine) -> list[list[int]]:
    return budget_batches(
        estimates,
        cfg.batch_particles,
        shuffle=True,
        seed=cfg.seed,
        epoch=epoch,
        max_clips=cfg.max_clips_per_batch,
        exclude=quarantine,
    )


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
def _write_reconstruction(model, shown, pre, cfg: PretrainConfig, folder: Path, epoch: int, device) -> list[str]:
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
