"""Models over particles: the encoder, its registry of sizes, checkpoint import."""

from tubelet.models.encoder import Encoder, EncoderConfig, mean_pool
from tubelet.models.registry import create_model, model_config, model_names

__all__ = ["Encoder", "EncoderConfig", "create_model", "mean_pool", "model_config", "model_names"]
