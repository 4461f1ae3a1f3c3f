"""Models over particles: the encoder, its registry of sizes, checkpoint import."""

from tubelet.models.encoder import Encoder, EncoderConfig, mean_pool
from tubelet.models.registry import create_model, model_config, model_names
from tubelet.models.videomae import VideoMAEImport, is_videomae_checkpoint, load_videomae

__all__ = [
    "Encoder",
    "EncoderConfig",
    "VideoMAEImport",
    "create_model",
    "is_videomae_checkpoint",
    "load_videomae",
    "mean_pool",
    "model_config",
    "model_names",
]
