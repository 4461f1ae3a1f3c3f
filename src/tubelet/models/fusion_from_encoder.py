"""The fusion model a run starts from (`build_fusion`): a fusion checkpoint, a fresh registered size, or a fusion
model built from a pretrained video encoder (``tubelet finetune --modalities ... --model ENCODER``).

Users pretrain an encoder on their own footage (``tubelet pretrain`` -> ``RUN/best``). A `FusionModel` names its
video embedding, blocks and final norm as the encoder does, so `fusion_from_encoder` builds one of the encoder's
shape (`tubelet.models.fusion.config_from_encoder`) and loads those weights by name; what a video encoder has no
counterpart for (audio and text embeddings, modality tags, the head) starts fresh. The load report says which is
which, and why any encoder weight was left out, so a run shows that its pretrained weights are in use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tubelet import checkpoint
from tubelet.data.av_dataset import AudioPreprocessing
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models.fusion import FusionConfig, FusionModel, config_from_encoder
from tubelet.models.kinds import Loaded, checkpoint_kind, load
from tubelet.models.registry import model_config, model_names
from tubelet.particles.structure import VIDEO

# Why a fusion model's parameter has no counterpart in a video encoder, and why an encoder's is left out.
NEW_BECAUSE = {
    "audio_embed.": "audio patch embedding: the encoder read video only",
    "band_embed.": "mel band embedding: the encoder read video only",
    "token_embed.": "text token embedding: the encoder read video only",
    "modality_embed.": "modality tags; the video row starts at zero, so video enters the blocks as in pretraining",
    "head.": "the classifier over this run's labels",
}
UNUSED_BECAUSE = {
    "head.": "the encoder's classifier: the fusion model's head is new, over this run's labels",
    "attn_pool.": "the encoder's attention pooling: a fusion model pools by mean",
    "patch_embed.": "video embedding: this model reads no video",
    "span_embed.": "video embedding: this model reads no video",
}


def fusion_from_encoder(encoder: Loaded, **fields) -> tuple[FusionModel, dict]:
    """A `FusionModel` of a pretrained encoder's shape holding its weights, and a report of what loaded.

    The encoder's video embedding (``patch_embed``, ``span_embed``), blocks and final norm load by name. What a
    video encoder does not have starts fresh: the audio and text embeddings, the head, and the modality embedding,
    whose video row starts at zero so that a video-only fusion model computes exactly the encoder's features. The
    encoder's head and attention pooling are not used.

    Args:
        encoder: the loaded encoder checkpoint.
        fields: the fusion-only `FusionConfig` fields (see `tubelet.models.fusion.config_from_encoder`).

    Returns:
        The model, and the report: ``encoder`` (its source), ``loaded`` (keys), ``loaded_parameters``, ``new``
        (fusion key -> why it has no pretrained value) and ``unused`` (encoder key -> why it was left out).

    Raises:
        ConfigError: the encoder's positions or normalization differ from a fusion model's (one line, naming
            --model and the field).
    """
    try:
        config = config_from_encoder(encoder.model.config, **fields)
    except ValueError as exc:
        raise ConfigError(f"--model {encoder.source}: cannot start a fusion model from this encoder: {exc}") from None
    model = FusionModel(config)
    with torch.no_grad():
        model.modality_embed.weight[VIDEO].zero_()
    weights = {k: v for k, v in encoder.model.state_dict().items() if not k.startswith("head.")}
    fit = checkpoint.load_state(model, weights, strict=False, source=f"--model {encoder.source}")
    if fit.mismatched:  # the shape was copied from the encoder: a mismatch is a bug, not bad input
        raise AssertionError(f"fusion model of the encoder's shape does not fit it: {fit.mismatched}")
    loaded = [k for k in weights if k not in fit.unexpected]
    encoder_keys = encoder.model.state_dict()
    report = {
        "encoder": encoder.source,
        "loaded": loaded,
        "loaded_parameters": sum(weights[k].numel() for k in loaded),
        "new": {k: _because(k, NEW_BECAUSE, "not in a video encoder") for k in fit.missing},
        "unused": {
            k: _because(k, UNUSED_BECAUSE, "no counterpart in a fusion model") for k in encoder_keys if k not in loaded
        },
    }
    return model, report


def _because(key: str, reasons: dict[str, str], default: str) -> str:
    return next((why for prefix, why in reasons.items() if key.startswith(prefix)), default)


def describe_load(report: dict) -> str:
    """One log line of a load report: what loaded, what is new, what was left out (by module)."""

    def modules(keys) -> str:
        names = sorted({k.split(".")[0] for k in keys})
        return ", ".join(names) if names else "none"

    return (
        f"started from encoder {report['encoder']}: loaded {len(report['loaded'])} tensors "
        f"({report['loaded_parameters'] / 1e6:.2f}M parameters: {modules(report['loaded'])}); "
        f"new: {modules(report['new'])}; unused: {modules(report['unused'])}"
    )


def build_fusion(
    cfg, modalities: tuple[str, ...], labels: list[str], *, vocab_size: int = 0
) -> tuple[FusionModel, Preprocessing | None, dict | None]:
    """The model an arm starts from, the preprocessing of the checkpoint it came from, and its load report.

    ``cfg.model`` is one of:

    - a fusion checkpoint: continued as it is (its head reset when the labels differ);
    - a registered size: fresh weights of that shape;
    - a tubelet encoder checkpoint (``tubelet pretrain``'s ``RUN/best``, a video fine-tune's) or hub id: a fusion
      model of the encoder's shape with its weights (`fusion_from_encoder`); the third value is then the load
      report, None otherwise.

    Args:
        vocab_size: the tokenizer's, for a model that reads text.

    Raises:
        ConfigError: a fusion checkpoint reading other modalities, or an encoder whose weights cannot serve.
    """
    # A fusion model pools by mean (by modality when it reads text) and rotates every particle by its seconds: the
    # options of a fresh video encoder are refused rather than ignored.
    if cfg.pooling != "mean":
        raise ConfigError(f"pooling: {cfg.pooling} is for video-only models; a fusion model pools by mean")
    if cfg.time_mode != "seconds":
        raise ConfigError(f"time_mode: {cfg.time_mode} is for video-only models; a fusion model's time is seconds")
    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    fields = dict(
        modalities=modalities,
        num_classes=len(labels),
        audio_bands=AudioPreprocessing().bands,
        vocab_size=vocab_size,
        pooling="modality" if "text" in modalities else "mean",  # a question's few tokens must count (vqa)
        **runtime,
    )
    if checkpoint_kind(cfg.model) == "fusion":
        loaded = load(cfg.model, **runtime)
        if loaded.model.config.modalities != modalities:
            raise ConfigError(
                f"--model {cfg.model}: reads {','.join(loaded.model.config.modalities)}, not {','.join(modalities)}"
            )
        if loaded.labels != labels:
            loaded.model.reset_head(len(labels))
        return loaded.model, loaded.preprocessing, None
    if cfg.model in model_names() and not Path(cfg.model).is_dir():
        shape = model_config(cfg.model)
        tubelet = tuple(cfg.tubelet) if cfg.tubelet is not None else shape.tubelet
        dims = dict(dim=shape.dim, depth=shape.depth, heads=shape.heads, mlp_ratio=shape.mlp_ratio, tubelet=tubelet)
        return FusionModel(FusionConfig(**dims, **fields)), None, None
    encoder = load(cfg.model, kind="encoder", **runtime)  # a ConfigError naming --model when it is no checkpoint
    model, report = fusion_from_encoder(encoder, **fields)
    return model, encoder.preprocessing, report
