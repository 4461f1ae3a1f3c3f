"""Model kinds: what a checkpoint holds, registered by its config.json ``model_type``; one `load`, one `save`.

A checkpoint is a directory (`tubelet.checkpoint`): ``config.json``, ``model.safetensors``, and when they apply
``labels.json``, ``tokenizer.json``, ``training_args.json``. Its ``model_type`` names its kind:

| kind        | model_type          | model            | config.json                                              |
|-------------|---------------------|------------------|----------------------------------------------------------|
| `encoder`   | `tubelet-encoder`   | `Encoder`        | encoder, preprocessing (pretraining, restoration: + decoder) |
| `fusion`    | `tubelet-fusion`    | `FusionModel`    | fusion, preprocessing, audio                             |
| `retrieval` | `tubelet-retrieval` | `RetrievalModel` | encoder (the video tower), retrieval, preprocessing      |
| `videomae`  | `videomae`          | `Encoder`        | a Hugging Face VideoMAEConfig (`tubelet.models.videomae`) |
| `decoder`   | (its encoder's)     | `MaskedDecoder`  | a pretraining or restoration run's decoder (+ .safetensors) |
| `onnx`      | `tubelet-onnx`      | `OnnxModel`      | an export: model.onnx; encoder, preprocessing, labels, task |

A kind builds its model from config.json (fresh weights, `ModelKind.build`) and writes a model's config.json
(`ModelKind.config`); `load` reads a checkpoint of any kind, a registered size or a hub id into one `Loaded`, and
`save` writes any model back. An imported VideoMAE is an `Encoder`, so it is saved as a ``tubelet-encoder``
checkpoint (and loads back as one); a decoder is saved beside its encoder (``save(dir, encoder, decoder=...)``) and
read back with ``load(dir, kind="decoder")`` (`load_decoder`). An export directory (`tubelet.models.onnx_model`) loads
into a model that runs onnxruntime for ``predict`` and ``evaluate``; it is written by ``tubelet export``, never saved.

Every kind's model has the same interface (after timm): ``forward_features(inputs) -> (N, D)``, ``pool(features,
inputs) -> (B, D)``, ``forward_head(pooled)`` and ``reset_head(num_classes)`` (a retrieval model and a decoder raise
there: neither has classes). The decoder alone reads encoder features beside its particles (see
`tubelet.models.decoder`).

The checkpoint files themselves are read and written by `tubelet.checkpoint` (a leaf module every layer may use).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer
from torch import nn

from tubelet import __version__, checkpoint
from tubelet.data.av_dataset import AudioPreprocessing
from tubelet.data.text import TOKENIZER_FILE, load_tokenizer, save_tokenizer
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models import videomae
from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.models.encoder import Encoder, EncoderConfig, interleaved_to_half
from tubelet.models.fusion import FusionConfig, FusionModel
from tubelet.models.hub import hub_snapshot, is_hub_id
from tubelet.models.onnx_model import GRAPH_FILE, OnnxModel
from tubelet.models.registry import model_config, model_names
from tubelet.models.retrieval import RetrievalConfig, RetrievalModel

log = logging.getLogger("tubelet.models")

# Fields that may differ from a checkpoint's without changing its weights.
RUNTIME_FIELDS = ("dropout", "attn_dropout", "drop_path", "attention")
# What an import of a Hugging Face VideoMAE checkpoint may also choose: positions="rope" drops its fixed sin-cos table
# for rotary positions over seconds and grid cells (the weights load the same; the model needs fine-tuning after).
IMPORT_FIELDS = ("positions",)
DECODER_WEIGHTS = "decoder.safetensors"  # a pretraining checkpoint's decoder, beside the encoder's model.safetensors


@dataclass
class Loaded:
    """A model and what came with it.

    Attributes:
        model: the model (`Encoder`, `FusionModel`, `RetrievalModel` or `MaskedDecoder`).
        preprocessing: how its clips are cut (the checkpoint's), or None for a fresh registry model.
        labels: the checkpoint's class names, or None.
        source: the spec it came from (a size name, a directory, a hub id).
        kind: its kind's name (`kind_names`); when not given, that of the model's class.
        audio: how a fusion model's soundtrack becomes particles, else None.
        tokenizer: the tokenizer of a model that reads text (retrieval, VQA), else None.
        task: the task it was trained for (config.json's or training_args.json's ``task``), or None.
        extras: what else a kind carries (an imported VideoMAE's ``architecture`` and ``ignored`` keys).
    """

    model: nn.Module
    preprocessing: Preprocessing | None = None
    labels: list[str] | None = None
    source: str = ""
    kind: str = ""
    audio: AudioPreprocessing | None = None
    tokenizer: Tokenizer | None = None
    task: str | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = kind_of_model(self.model).name


@contextmanager
def _fields(where: str, block: str = "") -> Iterator[None]:
    """A config.json field that is missing or invalid becomes a ConfigError naming the file and the field.

    Args:
        block: the config.json block the fields are read from: it prefixes the field a message starts with
            (``preprocessing.sample_fps: expected ...``).
    """
    try:
        yield
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc}") from None
    except (ValueError, TypeError) as exc:
        message = " ".join(str(exc).split())  # one line
        raise ConfigError(f"{where}: {block}.{message}" if block else f"{where}: {message}") from exc


def _block(config: dict, name: str, cls, *, where: str, **changes):
    """config.json's block `name` as a `cls` (its ``from_dict``, checked once here), with `changes` replaced.

    Raises:
        ConfigError: the block is missing, or one of its fields unknown or invalid (naming `where` and the field).
    """
    if name not in config:
        raise ConfigError(f"{where}: missing {name!r}")
    if not isinstance(config[name], dict):
        raise ConfigError(f"{where}: {name}: expected an object of fields, got {config[name]!r}")
    with _fields(where, name):
        block = cls.from_dict(config[name])
        return block.replace(**changes) if changes else block


def _check_labels(loaded: Loaded, directory: Path) -> None:
    """A checkpoint's labels.json names each output of its head (else predict and explain would index past it)."""
    outputs = getattr(getattr(loaded.model, "config", None), "num_classes", 0)
    if loaded.labels is not None and outputs and len(loaded.labels) != outputs:
        raise ConfigError(
            f"{directory / checkpoint.LABELS}: {len(loaded.labels)} labels, but the model's head has {outputs} "
            "outputs; give one name per class"
        )


def _check_runtime(directory: Path, runtime: dict, allowed: tuple[str, ...]) -> None:
    bad = sorted(set(runtime) - set(allowed))
    if bad:
        raise ConfigError(f"{directory}: cannot change {', '.join(bad)} of a trained model")


class ModelKind:
    """One kind of model: its config.json ``model_type``, how it is built from that config and written back."""

    name: str = ""  # `Loaded.kind`
    model_type: str | None = None  # config.json's "model_type" (None: not a checkpoint of its own)
    model_class: type[nn.Module] = nn.Module
    runtime: tuple[str, ...] = RUNTIME_FIELDS  # fields a load may change without touching the weights
    hint: str = ""  # how to get a checkpoint of this kind, for errors

    def build(self, config: dict, *, where: str, **runtime) -> nn.Module:
        """A model of this kind with fresh weights from a checkpoint's config.json content (read from `where`).

        Raises:
            ConfigError: a missing or invalid field (naming `where` and the field).
        """
        raise NotImplementedError

    def config(self, loaded: Loaded) -> dict:
        """The config.json of a model of this kind, with what came with it (preprocessing, audio)."""
        raise NotImplementedError

    def _config(self, **blocks) -> dict:
        """config.json: the model type and version, then each block (a config or preprocessing) as a dict."""
        return {
            "model_type": self.model_type,
            "tubelet_version": __version__,
            **{name: block.to_dict() for name, block in blocks.items()},
        }

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        """A checkpoint directory of this kind, `config` its config.json content."""
        _check_runtime(directory, runtime, self.runtime)
        where = f"{directory}/config.json"
        model = self.build(config, where=where, **runtime)
        preprocessing = _block(config, "preprocessing", Preprocessing, where=where)
        self.load_weights(model, directory)
        labels, task = checkpoint.load_labels(directory), _task(directory, config)
        loaded = Loaded(model, preprocessing, labels, str(directory), self.name, task=task)
        _check_labels(loaded, directory)
        return loaded

    def load_weights(self, model: nn.Module, directory: Path) -> None:
        """Fill `model` with the checkpoint's weights (strict: a ConfigError naming the file and the keys)."""
        checkpoint.load_weights(model, directory)


class EncoderKind(ModelKind):
    name, model_type, model_class = "encoder", "tubelet-encoder", Encoder
    hint = "a registered size, tubelet pretrain or tubelet finetune gives one"

    def build(self, config: dict, *, where: str, **runtime) -> Encoder:
        encoder = _block(config, "encoder", EncoderConfig, where=where, **runtime)
        if "decoder" in config:  # a pretraining checkpoint's decoder: checked with the rest of config.json
            _block(config, "decoder", DecoderConfig, where=where)
        # A checkpoint written before the rotate-half change is converted after its weights load (`load`).
        return Encoder(encoder.replace(rope_layout="half"))

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        loaded = super().load(directory, config, **runtime)
        if config["encoder"].get("rope_layout") == "interleaved":  # written before rotate-half: move q/k rows
            interleaved_to_half(loaded.model)
        return loaded

    def config(self, loaded: Loaded) -> dict:
        return self._config(encoder=loaded.model.config, preprocessing=_required(loaded, "preprocessing"))


class FusionKind(ModelKind):
    name, model_type, model_class = "fusion", "tubelet-fusion", FusionModel
    hint = "train one with tubelet finetune --modalities video,audio or --task vqa"

    def build(self, config: dict, *, where: str, **runtime) -> FusionModel:
        return FusionModel(_block(config, "fusion", FusionConfig, where=where, **runtime))

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        loaded = super().load(directory, config, **runtime)
        loaded.audio = _block(config, "audio", AudioPreprocessing, where=f"{directory}/config.json")
        if (directory / TOKENIZER_FILE).is_file():
            loaded.tokenizer = load_tokenizer(directory)
        elif "text" in loaded.model.config.modalities:
            raise ConfigError(f"{directory}: the model reads text but the checkpoint has no {TOKENIZER_FILE}")
        return loaded

    def config(self, loaded: Loaded) -> dict:
        pre, audio = _required(loaded, "preprocessing"), _required(loaded, "audio")
        return self._config(fusion=loaded.model.config, preprocessing=pre, audio=audio)


class RetrievalKind(ModelKind):
    name, model_type, model_class = "retrieval", "tubelet-retrieval", RetrievalModel
    hint = "train one with tubelet finetune --task retrieval"

    def build(self, config: dict, *, where: str, **runtime) -> RetrievalModel:
        video = _block(config, "encoder", EncoderConfig, where=where, **runtime)
        text = _block(config, "retrieval", RetrievalConfig, where=where)
        if "attention" in runtime:  # the text tower runs on the same backend
            text = dataclasses.replace(text, attention=runtime["attention"])
        return RetrievalModel(video, text)

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        loaded = super().load(directory, config, **runtime)
        loaded.tokenizer = load_tokenizer(directory)  # queries are encoded as training did: it must be there
        return loaded

    def config(self, loaded: Loaded) -> dict:
        pre = _required(loaded, "preprocessing")
        return self._config(encoder=loaded.model.video_config, retrieval=loaded.model.config, preprocessing=pre)


class DecoderKind(ModelKind):
    """A pretraining run's MAE decoder (or a restorer's pixel decoder), kept beside its encoder: ``decoder`` in
    config.json, decoder.safetensors."""

    name, model_type, model_class = "decoder", None, MaskedDecoder
    runtime = ("attention",)
    hint = "tubelet pretrain writes one beside its encoder"

    def build(self, config: dict, *, where: str, **runtime) -> MaskedDecoder:
        if "decoder" not in config:
            raise ConfigError(f"{where}: no 'decoder' block; only a pretraining checkpoint has one ({self.hint})")
        return MaskedDecoder(_block(config, "decoder", DecoderConfig, where=where, **runtime))

    def load_weights(self, model: nn.Module, directory: Path) -> None:
        weights = checkpoint.load_state_dict(directory, DECODER_WEIGHTS)  # strict, as model.safetensors
        checkpoint.load_state(model, weights, source=str(directory / DECODER_WEIGHTS))

    def config(self, loaded: Loaded) -> dict:
        raise ValueError("a decoder is saved beside its encoder: save(directory, encoder, decoder=decoder)")


class VideoMAEKind(ModelKind):
    """A Hugging Face VideoMAE checkpoint imported as an `Encoder` (`tubelet.models.videomae`); saved as an encoder."""

    name, model_type, model_class = "videomae", videomae.MODEL_TYPE, Encoder
    runtime = RUNTIME_FIELDS + IMPORT_FIELDS
    hint = "transformers' save_pretrained writes one"

    def build(self, config: dict, *, where: str, **runtime) -> Encoder:
        directory = Path(where).parent
        hf = videomae.with_defaults(config, Path(where))
        architecture = videomae.architecture_of(hf, {}, directory)
        try:
            return Encoder(videomae.encoder_config(hf, architecture, directory).replace(**runtime))
        except ValueError as exc:  # a runtime value EncoderConfig rejects
            raise ConfigError(f"{directory}: {exc}") from exc

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        _check_runtime(directory, runtime, self.runtime)
        try:
            imported = videomae.load_videomae(directory, **runtime)
        except ValueError as exc:  # a runtime value EncoderConfig rejects
            raise ConfigError(f"{directory}: {exc}") from exc
        extras = {"architecture": imported.architecture, "ignored": imported.ignored}
        return Loaded(imported.model, imported.preprocessing, imported.labels, str(directory), self.name, extras=extras)

    def config(self, loaded: Loaded) -> dict:
        return ENCODER.config(loaded)


class OnnxKind(ModelKind):
    """An export directory (``tubelet export``): model.onnx run by onnxruntime, everything else in config.json."""

    name, model_type, model_class = "onnx", "tubelet-onnx", OnnxModel
    runtime = ()  # the graph is fixed: nothing about it can change at load time
    hint = "tubelet export --checkpoint C --out DIR writes one"

    def build(self, config: dict, *, where: str, **runtime) -> OnnxModel:
        graph = Path(where).parent / GRAPH_FILE
        if not graph.is_file():
            raise ConfigError(f"{graph}: missing; an export directory holds its graph beside config.json")
        encoder = _block(config, "encoder", EncoderConfig, where=where)
        try:
            return OnnxModel(graph, encoder)
        except Exception as exc:  # onnxruntime's own errors (a truncated or foreign file) as one line
            message = " ".join(str(exc).split())
            raise ConfigError(f"{graph}: onnxruntime cannot load it: {message}") from exc

    def load(self, directory: Path, config: dict, **runtime) -> Loaded:
        _check_runtime(directory, runtime, self.runtime)
        where = f"{directory}/config.json"
        model = self.build(config, where=where)
        preprocessing = _block(config, "preprocessing", Preprocessing, where=where)
        labels = config.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise ConfigError(f"{where}: labels: expected a list of class names, got {labels!r}")
        loaded = Loaded(model, preprocessing, labels, str(directory), self.name, task=config.get("task"))
        _check_labels(loaded, directory)
        return loaded

    def config(self, loaded: Loaded) -> dict:
        raise ValueError("an export directory is written by tubelet export, not saved as a checkpoint")


def _required(loaded: Loaded, name: str):
    value = getattr(loaded, name)
    if value is None:
        raise ValueError(f"a {loaded.kind} checkpoint needs the model's {name}: give it to save")
    return value


def _task(directory: Path, config: dict) -> str | None:
    """config.json's ``task``, else training_args.json's (None when neither says; a corrupt file is only logged)."""
    if config.get("task"):
        return str(config["task"])
    try:
        args = checkpoint.load_training_args(directory) or {}
    except ConfigError as exc:
        log.warning("%s; the checkpoint's task is unknown", exc)
        return None
    return str(args["task"]) if args.get("task") else None


# --- the registry ---------------------------------------------------------------------------------------------

ENCODER, FUSION, RETRIEVAL = EncoderKind(), FusionKind(), RetrievalKind()
DECODER, VIDEOMAE, ONNX = DecoderKind(), VideoMAEKind(), OnnxKind()
_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Add a kind (after timm's model registry); its `model_type` makes `load` read checkpoints of it."""
    _KINDS[kind.name] = kind
    return kind


for _kind in (ENCODER, FUSION, RETRIEVAL, DECODER, VIDEOMAE, ONNX):  # the first whose class fits names a bare model
    register_kind(_kind)


def kind_names() -> list[str]:
    return list(_KINDS)


def get_kind(name: str) -> ModelKind:
    """The registered kind `name`.

    Raises:
        ConfigError: unknown name (listing the known ones).
    """
    if name not in _KINDS:
        raise ConfigError(f"unknown model kind {name!r}; choose one of {', '.join(_KINDS)}")
    return _KINDS[name]


def kind_of_model(model: nn.Module) -> ModelKind:
    """The kind of a model object (an `Encoder` is an encoder, whether or not it was imported from VideoMAE)."""
    for kind in _KINDS.values():
        if isinstance(model, kind.model_class):
            return kind
    raise TypeError(f"{type(model).__name__} is not a model of any registered kind ({', '.join(_KINDS)})")


def _kind_of_type(model_type) -> ModelKind | None:
    return next((k for k in _KINDS.values() if k.model_type is not None and k.model_type == model_type), None)


def checkpoint_kind(directory: str | Path) -> str | None:
    """The kind of the checkpoint in `directory`, or None when it holds no config.json of a registered kind.

    Raises:
        ConfigError: a config.json that is not valid JSON.
    """
    path = Path(directory)
    if not (path / "config.json").is_file():
        return None
    kind = _kind_of_type(checkpoint.load_config(path).get("model_type"))
    return kind.name if kind is not None else None


# --- load -----------------------------------------------------------------------------------------------------


def load(spec: str | Path, *, kind: str | None = None, **runtime) -> Loaded:
    """A registered size (fresh weights), or a checkpoint of any kind with its preprocessing, labels and tokenizer.

    Args:
        spec: a name from the registry (a fresh `Encoder`); a checkpoint directory (tubelet's of any kind, or a
            Hugging Face VideoMAE one written by ``save_pretrained``); or a hub id ``owner/name`` of one, downloaded
            only when no such directory exists.
        kind: the kind wanted: a checkpoint of another kind is a ConfigError naming its config.json (``encoder``
            also takes an imported VideoMAE: both are `Encoder`); ``decoder`` reads a pretraining checkpoint's
            decoder. None takes whatever the checkpoint holds.
        runtime: overrides of `RUNTIME_FIELDS` (for a registry size, any `EncoderConfig` field; for a VideoMAE
            checkpoint, also `IMPORT_FIELDS`; for a decoder, ``attention``).

    Raises:
        ConfigError: unknown name, a directory that is not a checkpoint (of the `kind` wanted), a field the
            checkpoint cannot change, or weights that do not fit.
    """
    wanted = get_kind(kind) if kind is not None else None
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        return _load_directory(path, wanted, runtime)
    if spec in model_names():
        if wanted not in (None, ENCODER):
            raise ConfigError(f"--model {spec}: a registered size is a fresh encoder, not a {wanted.name} model")
        return Loaded(Encoder(model_config(spec, **runtime)), source=spec)
    if is_hub_id(spec):
        loaded = _load_directory(hub_snapshot(spec), wanted, runtime)
        loaded.source = spec
        return loaded
    if "/" in spec or path.suffix:
        raise ConfigError(f"--model {spec}: no such checkpoint directory")
    model_config(spec)  # raises the unknown-name error listing the registry
    raise AssertionError("unreachable")


def load_decoder(directory: str | Path, **runtime) -> MaskedDecoder:
    """The MAE decoder of a pretraining checkpoint (``tubelet pretrain``'s ``RUN/best`` or ``RUN/last``)."""
    return load(directory, kind="decoder", **runtime).model


def _load_directory(directory: Path, wanted: ModelKind | None, runtime: dict) -> Loaded:
    config = checkpoint.load_config(directory)
    where = f"{directory}/config.json"
    model_type = config.get("model_type")
    found = _kind_of_type(model_type)
    if found is None:
        known = ", ".join(k.model_type for k in _KINDS.values() if k.model_type)
        raise ConfigError(f"{where}: model_type {model_type!r} is not a tubelet checkpoint (one of {known})")
    if wanted is DECODER:
        if found is not ENCODER:
            raise ConfigError(f"{where}: model_type {model_type!r} holds no decoder ({DECODER.hint})")
        return DECODER.load(directory, config, **runtime)
    if wanted is not None and wanted.model_class is not found.model_class:
        article = "an" if wanted.name[0] in "aeiou" else "a"
        raise ConfigError(f"{where}: model_type {model_type!r} is not {article} {wanted.name} model ({wanted.hint})")
    return found.load(directory, config, **runtime)


# --- save -----------------------------------------------------------------------------------------------------


def checkpoint_config(
    model: Loaded | nn.Module,
    *,
    preprocessing: Preprocessing | None = None,
    audio: AudioPreprocessing | None = None,
    decoder: MaskedDecoder | None = None,
) -> dict:
    """The ``config.json`` `save` writes for `model` (a `Loaded`, or a bare model with what goes with it).

    Args:
        decoder: a pretraining run's decoder, saved beside its encoder (its config under ``decoder``).

    Raises:
        ValueError: something the kind needs is missing (preprocessing; a fusion model's audio), or a decoder
            beside anything but an encoder.
    """
    loaded = _as_loaded(model, preprocessing=preprocessing, audio=audio)
    kind = kind_of_model(loaded.model)
    config = kind.config(loaded)
    if decoder is not None:
        if kind is not ENCODER:
            raise ValueError(f"a decoder is saved beside an encoder, not a {kind.name} model")
        config["decoder"] = decoder.config.to_dict()
    return config


def save(
    directory: str | Path,
    model: Loaded | nn.Module,
    *,
    preprocessing: Preprocessing | None = None,
    labels: list[str] | None = None,
    audio: AudioPreprocessing | None = None,
    tokenizer: Tokenizer | None = None,
    decoder: MaskedDecoder | None = None,
    training_args: dict | None = None,
    trainer: dict | None = None,
    extra_weights: dict | None = None,
) -> Path:
    """Write a checkpoint directory of `model`'s kind (atomically: `tubelet.checkpoint.save_checkpoint`).

    Args:
        directory: the checkpoint directory (replaced if it holds one).
        model: a `Loaded`, or a bare model; the keyword arguments give what goes with it (or replace a `Loaded`'s).
        preprocessing: how its clips are cut (every kind needs it).
        labels: class names, for ``labels.json``.
        audio: a fusion model's audio preprocessing.
        tokenizer: written as ``tokenizer.json`` (a retrieval model, or a fusion model that reads text, needs it).
        decoder: a pretraining run's decoder, written beside the encoder (``decoder.safetensors``).
        training_args, trainer, extra_weights: as `tubelet.checkpoint.save_checkpoint`.

    Returns:
        The checkpoint directory.
    """
    loaded = _as_loaded(model, preprocessing=preprocessing, labels=labels, audio=audio, tokenizer=tokenizer)
    config = checkpoint_config(loaded, decoder=decoder)
    extra = dict(extra_weights or {})
    if decoder is not None:
        extra[DECODER_WEIGHTS] = decoder.state_dict()
    directory = checkpoint.save_checkpoint(
        directory,
        model=loaded.model,
        config=config,
        labels=loaded.labels,
        training_args=training_args,
        trainer=trainer,
        extra_weights=extra or None,
    )
    if loaded.tokenizer is not None:
        save_tokenizer(loaded.tokenizer, directory)
    return directory


def _as_loaded(model: Loaded | nn.Module, **fields) -> Loaded:
    """`model` as a `Loaded`, with the given (not None) fields set."""
    given = {name: value for name, value in fields.items() if value is not None}
    if isinstance(model, Loaded):
        return dataclasses.replace(model, **given)
    return Loaded(model, **given)
