"""Hugging Face VideoMAE checkpoints as tubelet encoders: config mapping, an explicit weight mapping, preprocessing.

A checkpoint is a directory written by transformers' ``save_pretrained``: ``config.json`` with
``"model_type": "videomae"``, ``model.safetensors`` (or sharded, with ``model.safetensors.index.json``) and, when the
processor was saved too, ``preprocessor_config.json``. Pickled weights (``pytorch_model.bin``) are refused: loading a
pickle can run code. Everything is read directly (JSON and safetensors); transformers is not imported.

Every key is mapped by name and the import is strict: a key the architecture needs that the file lacks, or a key the
file has that the mapping does not use, is a `ConfigError` naming the directory and the keys. Nothing is left at
its initial value or zero-filled by accident (transformers 5 once loaded ``q_bias``/``v_bias`` as zeros silently).

Architectures (``config.json`` ``architectures``, or inferred from the keys when absent):

- ``VideoMAEModel``: the encoder; keys with or without the ``videomae.`` prefix. No classifier (``num_classes=0``).
- ``VideoMAEForVideoClassification``: encoder, ``fc_norm`` and ``classifier``; labels from ``id2label``.
- ``VideoMAEForPreTraining``: the encoder is imported; the MAE decoder (``decoder.*``, ``encoder_to_decoder.*``,
  ``mask_token``) is not an encoder part and is listed in `VideoMAEImport.ignored` (and logged), not reported as
  unexpected. Only those three names are ignored, and only for this architecture.

VideoMAE vs the encoder, and how each difference is carried over:

- positions: a fixed 1-D sin-cos table over the flattened (T' x H' x W') grid index, added to the patch embedding,
  instead of rotary positions: ``positions="videomae"`` (values computed on the fly, no stored table).
- attention: q/k/v without bias plus separate ``q_bias``/``v_bias`` (spelled ``query.bias``/``value.bias`` by some
  transformers versions): loaded into the qkv bias as ``[q_bias, zeros, v_bias]``; the zero key bias is VideoMAE's.
- norms: LayerNorm epsilon ``layer_norm_eps`` (1e-12 by default) -> ``norm_eps``. With ``use_mean_pooling`` the
  encoder has no final LayerNorm and the classifier applies ``fc_norm`` (epsilon 1e-5, PyTorch's default) to the mean
  -> ``final_norm="pooled"``; otherwise the encoder's ``layernorm`` -> ``final_norm="tokens"``. A VideoMAEModel with
  mean pooling has no ``fc_norm`` at all: it gets an identity-initialized one (weight 1, bias 0), as
  ``VideoMAEForVideoClassification.from_pretrained`` would create for it, so fine-tuning matches transformers.
- span: VideoMAE has no static pruning; the span embedding is set to zeros, which is exact for unpruned clips.
- a classifier without mean pooling reads the first patch token (VideoMAE has no CLS token); tubelet pools clips and
  cannot reproduce that, so such a checkpoint is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange

from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models.encoder import Encoder, EncoderConfig
from tubelet.tensor_files import read_safetensors

log = logging.getLogger("tubelet.models")

MODEL_TYPE = "videomae"
ARCHITECTURES = {
    "VideoMAEModel": "model",
    "VideoMAEForVideoClassification": "classifier",
    "VideoMAEForPreTraining": "pretraining",
}
PRETRAINING_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")  # MAE decoder keys, ignored on import
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.bin", "*.pt", "*.pth", "*.ckpt")
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
# VideoMAE was pretrained and fine-tuned with ImageNet's statistics (transformers' IMAGENET_DEFAULT_MEAN/STD).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FC_NORM_EPS = 1e-5  # VideoMAEForVideoClassification.fc_norm is nn.LayerNorm(hidden_size): PyTorch's default epsilon
SAMPLE_FPS = 8.0  # frames per second read for an imported checkpoint: num_frames / 8 seconds per clip (2 s for 16)
# transformers' VideoMAEConfig defaults, for keys an older config.json leaves out.
HF_DEFAULTS = {
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "num_frames": 16,
    "tubelet_size": 2,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "qv_bias": True,
    "use_mean_pooling": True,
}


@dataclass
class VideoMAEImport:
    """An imported VideoMAE checkpoint.

    Attributes:
        model: the encoder, with ``positions="videomae"``.
        preprocessing: the checkpoint's tubelet, size, frames and pixel normalization.
        labels: class names from ``id2label`` (classifiers), else None.
        architecture: the transformers class the checkpoint was saved from.
        ignored: checkpoint keys deliberately not imported (the pretraining decoder), sorted.
    """

    model: Encoder
    preprocessing: Preprocessing
    labels: list[str] | None
    architecture: str
    ignored: list[str]


def is_videomae_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` holds a config.json with ``"model_type": "videomae"`` (False for anything unreadable)."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == MODEL_TYPE


def load_videomae(directory: str | Path, **overrides) -> VideoMAEImport:
    """Import a transformers VideoMAE checkpoint directory.

    Args:
        directory: written by ``save_pretrained`` (config.json, model.safetensors, optional preprocessor_config.json).
        overrides: `EncoderConfig` fields to change that do not touch the weights (dropout, attention backend, ...).

    Raises:
        ConfigError: not a VideoMAE checkpoint, pickle-only weights, an unsupported setting, or weights that do not
            map exactly (the message names the directory and every missing or unexpected key).
    """
    directory = Path(directory)
    hf = read_config(directory)
    saved = read_weights(directory)
    architecture = architecture_of(hf, saved, directory)
    config = encoder_config(hf, architecture, directory).replace(**overrides)
    model = Encoder(config)
    state, ignored = convert_state_dict(saved, hf, architecture, directory)
    # VideoMAE has no static pruning, so no span embedding: zeros are exact for unpruned clips (span 1 everywhere).
    state["span_embed.embed.weight"] = torch.zeros_like(model.span_embed.embed.weight)
    _check_shapes(state, model, directory)
    model.load_state_dict(state, strict=True)  # both key sets were checked: this only copies
    if ignored:
        log.info("%s: left out %d pretraining-decoder key(s) of %s", directory, len(ignored), architecture)
    labels = _labels(hf, directory) if architecture == "VideoMAEForVideoClassification" else None
    return VideoMAEImport(model, preprocessing_of(directory, hf), labels, architecture, ignored)


# --- config -------------------------------------------------------------------------------------------------------


def read_config(directory: Path) -> dict:
    """config.json of a VideoMAE checkpoint, with VideoMAEConfig's defaults for keys it leaves out."""
    return with_defaults(_read_json(directory / "config.json"), directory / "config.json")


def with_defaults(data: dict, path: Path) -> dict:
    """A VideoMAE config.json's content (read from `path`) with VideoMAEConfig's defaults for keys it leaves out."""
    if data.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{path}: model_type {data.get('model_type')!r} is not a VideoMAE checkpoint")
    data = dict(data)
    if "qkv_bias" in data and "qv_bias" not in data:  # the name older configs used
        data["qv_bias"] = data["qkv_bias"]
    return {**HF_DEFAULTS, **data}


def architecture_of(hf: dict, saved: dict[str, torch.Tensor], directory: Path) -> str:
    """The transformers class named in config.json, or (when it names none) the one the weights' keys show."""
    declared = hf.get("architectures") or []
    if declared:
        name = declared[0]
        if name not in ARCHITECTURES:
            raise ConfigError(
                f"{directory}/config.json: architecture {name!r} is not supported; "
                f"expected one of {', '.join(ARCHITECTURES)}"
            )
        return name
    if any(key.startswith(PRETRAINING_PREFIXES) for key in saved):
        return "VideoMAEForPreTraining"
    if "classifier.weight" in saved or "fc_norm.weight" in saved:
        return "VideoMAEForVideoClassification"
    return "VideoMAEModel"


def encoder_config(hf: dict, architecture: str, directory: Path) -> EncoderConfig:
    """The `EncoderConfig` that reproduces a VideoMAE config (see the module docstring for each choice)."""
    where = f"{directory}/config.json"
    dim, heads, hidden = hf["hidden_size"], hf["num_attention_heads"], hf["intermediate_size"]
    if hf["hidden_act"] != "gelu":
        raise ConfigError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (tubelet's MLP uses exact GELU)")
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:
        raise ConfigError(f"{where}: intermediate_size {hidden} is not a whole multiple of hidden_size {dim}")
    classifier = architecture == "VideoMAEForVideoClassification"
    if classifier and not hf["use_mean_pooling"]:
        raise ConfigError(
            f"{where}: a VideoMAEForVideoClassification with use_mean_pooling=false classifies from the first patch "
            "token, which tubelet does not reproduce; import its encoder by saving model.videomae instead"
        )
    pooled = hf["use_mean_pooling"]
    try:
        config = EncoderConfig(
            dim=dim,
            depth=hf["num_hidden_layers"],
            heads=heads,
            mlp_ratio=mlp_ratio,
            tubelet=(hf["tubelet_size"], *_pair(hf["patch_size"], "patch_size", where)),
            channels=hf["num_channels"],
            num_classes=len(hf.get("id2label") or {}) if classifier else 0,
            pooling="mean",
            dropout=float(hf["hidden_dropout_prob"]),
            attn_dropout=float(hf["attention_probs_dropout_prob"]),
            norm_eps=float(hf["layer_norm_eps"]),
            positions="videomae",
            final_norm="pooled" if pooled else "tokens",
            final_norm_eps=FC_NORM_EPS if pooled else None,
        )
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return config


def preprocessing_of(directory: Path, hf: dict) -> Preprocessing:
    """How clips must be cut for this checkpoint: its tubelet, image size and frame count, and its normalization.

    The short side is resized to the trained image size and the long side capped at it, so a square video gets
    exactly the trained grid and no particle of any video indexes past the trained table. ``num_frames`` become
    ``num_frames / 8`` seconds at 8 fps. Pruning is off: VideoMAE saw every tubelet.
    """
    height, width = _pair(hf["image_size"], "image_size", f"{directory}/config.json")
    mean, std = _normalization(directory, hf["num_channels"])
    return Preprocessing(
        tubelet=(hf["tubelet_size"], *_pair(hf["patch_size"], "patch_size", f"{directory}/config.json")),
        sample_fps=SAMPLE_FPS,
        clip_seconds=hf["num_frames"] / SAMPLE_FPS,
        size=min(height, width),
        max_long_side=max(height, width),
        mean=mean,
        std=std,
        prune_threshold=0.0,
    )


def _normalization(directory: Path, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in 0-1 units equivalent to the saved processor's rescale and normalize.

    transformers computes ``(v * rescale_factor - image_mean) / image_std``; tubelet computes ``(v / 255 - mean) /
    std``, which is the same with ``mean = image_mean / (255 * rescale_factor)`` and likewise for std. Without a
    processor file, VideoMAE's ImageNet statistics.
    """
    for name in PROCESSOR_FILES:
        path = directory / name
        if not path.is_file():
            continue
        processor = _read_json(path)
        scale = 255.0 * float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 255.0
        mean, std = 0.0, 1.0
        if processor.get("do_normalize", True):
            mean, std = processor.get("image_mean", IMAGENET_MEAN), processor.get("image_std", IMAGENET_STD)
        mean, std = _per_channel(mean, channels, path), _per_channel(std, channels, path)
        return tuple(m / scale for m in mean), tuple(s / scale for s in std)
    if channels != len(IMAGENET_MEAN):
        raise ConfigError(f"{directory}: {channels} channels and no preprocessor_config.json to give their mean/std")
    return IMAGENET_MEAN, IMAGENET_STD


def _per_channel(value, channels: int, path: Path) -> tuple[float, ...]:
    """A processor's image_mean or image_std (one number, or one per channel) as `channels` floats."""
    values = [value] * channels if isinstance(value, (int, float)) else list(value)
    if len(values) != channels or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"{path}: image_mean and image_std need {channels} numbers each, got {value!r}")
    return tuple(float(v) for v in values)


def _labels(hf: dict, directory: Path) -> list[str]:
    id2label = hf.get("id2label") or {}
    try:
        ordered = sorted((int(k), str(v)) for k, v in id2label.items())
    except ValueError as exc:
        raise ConfigError(f"{directory}/config.json: id2label keys must be class indices ({exc})") from exc
    if [i for i, _ in ordered] != list(range(len(ordered))):
        raise ConfigError(f"{directory}/config.json: id2label must number the classes 0..{len(ordered) - 1}")
    return [label for _, label in ordered]


def _pair(value, name: str, where: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{where}: {name} must be an int or two ints, got {value!r}")


# --- weights ------------------------------------------------------------------------------------------------------


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or its shards). Never unpickles: pickle-only checkpoints are refused."""
    index = directory / WEIGHTS_INDEX
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        if not shards:
            raise ConfigError(f"{index}: no weight_map")
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(read_safetensors(directory / shard))
        return tensors
    if (directory / WEIGHTS).is_file():
        return read_safetensors(directory / WEIGHTS)
    pickles = sorted({p.name for pattern in PICKLES for p in directory.glob(pattern)})
    if pickles:
        raise ConfigError(
            f"{directory}: only pickled weights ({', '.join(pickles)}); tubelet loads safetensors only, because "
            "unpickling an untrusted file can run code. Convert it once where you trust it: "
            "VideoMAEModel.from_pretrained(DIR).save_pretrained(DIR) writes model.safetensors (use the class it was "
            "saved as)"
        )
    raise ConfigError(f"{directory}: no {WEIGHTS} (a VideoMAE checkpoint saved with save_pretrained has one)")


def convert_state_dict(
    saved: dict[str, torch.Tensor], hf: dict, architecture: str, directory: Path
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a VideoMAE state dict onto `Encoder`'s, key by key.

    Returns:
        (the encoder's state dict except ``span_embed`` (VideoMAE has none), the pretraining-decoder keys left out).

    Raises:
        ConfigError: a key the mapping needs is missing, a key is left over, or a bias is given under both spellings.
    """
    remaining = dict(saved)
    missing: list[str] = []
    doubled: list[str] = []

    def take(key: str) -> torch.Tensor | None:
        if key not in remaining:
            missing.append(key)
            return None
        return remaining.pop(key).float()

    def take_either(key: str, other: str) -> torch.Tensor | None:
        """`key`, also accepted under the name `other` (never both)."""
        if key in remaining and other in remaining:
            doubled.append(f"{key} and {other}")
        return take(other) if other in remaining and key not in remaining else take(key)

    classifier = architecture == "VideoMAEForVideoClassification"
    uses_prefix = architecture != "VideoMAEModel" or any(k.startswith("videomae.") for k in saved)
    src = "videomae." if uses_prefix else ""
    state: dict[str, torch.Tensor | None] = {}

    # Patch embedding: Conv3d over (C, t, p, q) with stride = kernel is a Linear over each tubelet's pixels, whose
    # input layout is ours: (t p q c), channels last.
    conv = take(f"{src}embeddings.patch_embeddings.projection.weight")  # (D, C, t, p, q)
    state["patch_embed.weight"] = None if conv is None else rearrange(conv, "D c t p q -> D (t p q c)")
    state["patch_embed.bias"] = take(f"{src}embeddings.patch_embeddings.projection.bias")
    dim = hf["hidden_size"]

    for i in range(hf["num_hidden_layers"]):
        layer = f"{src}encoder.layer.{i}."
        attn = f"{layer}attention.attention."
        state[f"blocks.{i}.norm1.weight"] = take(f"{layer}layernorm_before.weight")
        state[f"blocks.{i}.norm1.bias"] = take(f"{layer}layernorm_before.bias")
        q, k, v = (take(f"{attn}{name}.weight") for name in ("query", "key", "value"))
        state[f"blocks.{i}.attn.qkv.weight"] = None if None in (q, k, v) else torch.cat([q, k, v])  # (3D, D)
        if hf["qv_bias"]:  # saved as q_bias/v_bias; transformers 5 names the parameters query.bias/value.bias
            q_bias = take_either(f"{attn}q_bias", f"{attn}query.bias")
            v_bias = take_either(f"{attn}v_bias", f"{attn}value.bias")
        else:  # the model has no q/v bias at all: zeros are exact
            q_bias = v_bias = torch.zeros(dim)
        # VideoMAE's key projection has no bias: the middle third of our qkv bias is zero by construction.
        qkv_bias = None if q_bias is None or v_bias is None else torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        state[f"blocks.{i}.attn.qkv.bias"] = qkv_bias
        state[f"blocks.{i}.attn.proj.weight"] = take(f"{layer}attention.output.dense.weight")
        state[f"blocks.{i}.attn.proj.bias"] = take(f"{layer}attention.output.dense.bias")
        state[f"blocks.{i}.norm2.weight"] = take(f"{layer}layernorm_after.weight")
        state[f"blocks.{i}.norm2.bias"] = take(f"{layer}layernorm_after.bias")
        state[f"blocks.{i}.mlp.fc1.weight"] = take(f"{layer}intermediate.dense.weight")
        state[f"blocks.{i}.mlp.fc1.bias"] = take(f"{layer}intermediate.dense.bias")
        state[f"blocks.{i}.mlp.fc2.weight"] = take(f"{layer}output.dense.weight")
        state[f"blocks.{i}.mlp.fc2.bias"] = take(f"{layer}output.dense.bias")

    if not hf["use_mean_pooling"]:  # the encoder's own final LayerNorm, on every token
        state["norm.weight"], state["norm.bias"] = take(f"{src}layernorm.weight"), take(f"{src}layernorm.bias")
    elif classifier:  # fc_norm, on the mean of the tokens
        state["norm.weight"], state["norm.bias"] = take("fc_norm.weight"), take("fc_norm.bias")
    else:  # a mean-pooling encoder without a head: a fresh fc_norm, as transformers would create for fine-tuning
        state["norm.weight"], state["norm.bias"] = torch.ones(dim), torch.zeros(dim)
    if classifier:
        state["head.weight"], state["head.bias"] = take("classifier.weight"), take("classifier.bias")

    ignored = []
    if architecture == "VideoMAEForPreTraining":
        ignored = sorted(k for k in remaining if k.startswith(PRETRAINING_PREFIXES))
        for key in ignored:
            del remaining[key]
    if missing or remaining or doubled:
        problems = _describe(missing, sorted(remaining), doubled)
        raise ConfigError(f"{directory}: the {architecture} weights do not map onto the encoder: {problems}")
    return state, ignored  # every value is set: a missing key raised above


def _check_shapes(state: dict[str, torch.Tensor], model: Encoder, directory: Path) -> None:
    """Compare every mapped tensor's shape with the model's (config.json and the weights may disagree)."""
    expected = model.state_dict()
    if set(state) != set(expected):  # the mapping above and the Encoder disagree: a bug in this module, not the file
        raise AssertionError(f"VideoMAE mapping out of date: {sorted(set(state) ^ set(expected))}")
    wrong = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if value.shape != expected[key].shape
    ]
    if wrong:
        raise ConfigError(f"{directory}: VideoMAE weights disagree with config.json in shape: {'; '.join(wrong[:10])}")


def _describe(missing: list[str], unexpected: list[str], doubled: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} ({_names(missing)})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} ({_names(unexpected)})")
    if doubled:
        parts.append(f"given twice {len(doubled)} ({_names(doubled)})")
    return "; ".join(parts)


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data
