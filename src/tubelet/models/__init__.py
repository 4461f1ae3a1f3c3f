"""Models over particles: the encoder and the other kinds, the registry of sizes, one `load` and `save` for every kind.

`load(spec)` reads a registered size, a checkpoint directory of any kind (`tubelet.models.kinds`) or a hub id into a
`Loaded`; `save(directory, model, ...)` writes any model back.
"""

from tubelet.models.decoder import DecoderConfig, MaskedDecoder
from tubelet.models.encoder import Encoder, EncoderConfig, mean_pool
from tubelet.models.fusion import FusionConfig, FusionModel
from tubelet.models.kinds import (
    DECODER_WEIGHTS,
    IMPORT_FIELDS,
    RUNTIME_FIELDS,
    Loaded,
    ModelKind,
    checkpoint_config,
    checkpoint_kind,
    get_kind,
    kind_names,
    kind_of_model,
    load,
    load_decoder,
    register_kind,
    save,
)
from tubelet.models.registry import create_model, model_config, model_names
from tubelet.models.retrieval import RetrievalConfig, RetrievalModel
from tubelet.models.videomae import VideoMAEImport, is_videomae_checkpoint, load_videomae

__all__ = [
    "DECODER_WEIGHTS",
    "IMPORT_FIELDS",
    "RUNTIME_FIELDS",
    "DecoderConfig",
    "Encoder",
    "EncoderConfig",
    "FusionConfig",
    "FusionModel",
    "Loaded",
    "MaskedDecoder",
    "ModelKind",
    "RetrievalConfig",
    "RetrievalModel",
    "VideoMAEImport",
    "checkpoint_config",
    "checkpoint_kind",
    "create_model",
    "get_kind",
    "is_videomae_checkpoint",
    "kind_names",
    "kind_of_model",
    "load",
    "load_decoder",
    "load_videomae",
    "mean_pool",
    "model_config",
    "model_names",
    "register_kind",
    "save",
]
