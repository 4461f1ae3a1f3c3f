"""Named encoder sizes, each a two-line registered function (after timm's registry)."""

from __future__ import annotations

from collections.abc import Callable

from tubelet.errors import ConfigError
from tubelet.models.encoder import Encoder, EncoderConfig

_REGISTRY: dict[str, Callable[..., EncoderConfig]] = {}


def register(fn: Callable[..., EncoderConfig]) -> Callable[..., EncoderConfig]:
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def test(**kw) -> EncoderConfig:
    """For unit tests: runs in milliseconds."""
    return _config(dict(dim=32, depth=2, heads=2), kw)


@register
def micro(**kw) -> EncoderConfig:
    """Trains from scratch on the CPU in minutes (the demo's model)."""
    return _config(dict(dim=128, depth=4, heads=4), kw)


@register
def tiny(**kw) -> EncoderConfig:
    """ViT-Ti shape."""
    return _config(dict(dim=192, depth=12, heads=3), kw)


@register
def small(**kw) -> EncoderConfig:
    """ViT-S shape."""
    return _config(dict(dim=384, depth=12, heads=6), kw)


@register
def base(**kw) -> EncoderConfig:
    """ViT-B shape, as VideoMAE-B (768 wide, 12 blocks, 12 heads)."""
    return _config(dict(dim=768, depth=12, heads=12), kw)


@register
def large(**kw) -> EncoderConfig:
    """ViT-L shape."""
    return _config(dict(dim=1024, depth=24, heads=16), kw)


def _config(shape: dict, overrides: dict) -> EncoderConfig:
    """A size's shape with any field overridden (dim, depth and heads included)."""
    return EncoderConfig(**{**shape, **overrides})


def model_names() -> list[str]:
    return list(_REGISTRY)


def model_config(name: str, **overrides) -> EncoderConfig:
    """The config of a registered size with field overrides.

    Raises:
        ConfigError: unknown name (listing the known ones).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)} or a checkpoint directory")
    try:
        config = _REGISTRY[name](**overrides)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name}: {exc}") from exc
    return config


def create_model(name: str, **overrides) -> Encoder:
    return Encoder(model_config(name, **overrides))
