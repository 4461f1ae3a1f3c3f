"""The registry of named encoder sizes: real widths from the config alone, overrides, clear errors."""

import pytest

from tubelet.errors import ConfigError
from tubelet.models import Encoder, EncoderConfig, create_model, model_config, model_names, registry

# name: (dim, depth, heads), the published shapes the names promise.
SIZES = {
    "test": (32, 2, 2),
    "micro": (128, 4, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),  # VideoMAE-B
    "large": (1024, 24, 16),
}


def test_names_are_the_registered_sizes_in_order():
    assert model_names() == list(SIZES)


@pytest.mark.parametrize("name", list(SIZES))
def test_registered_width_depth_heads(name):
    config = model_config(name)

    assert isinstance(config, EncoderConfig)
    assert (config.dim, config.depth, config.heads) == SIZES[name]
    assert config.tubelet == (2, 16, 16)
    assert config.patch_dim == 2 * 16 * 16 * 3
    assert config.num_classes == 0
    config.validate()  # every size is buildable: head dim even, dim divisible by heads


@pytest.mark.parametrize("name", model_names())
def test_every_size_says_what_it_is_for(name):
    assert registry._REGISTRY[name].__doc__


@pytest.mark.parametrize("name", model_names())
def test_overrides_of_other_fields_pass_through(name):
    config = model_config(name, num_classes=7, pooling="attention", time_mode="index", drop_path=0.1)

    assert (config.num_classes, config.pooling, config.time_mode, config.drop_path) == (7, "attention", "index", 0.1)
    assert (config.dim, config.depth, config.heads) == SIZES[name]


@pytest.mark.parametrize("field, value", [("depth", 1), ("dim", 96), ("heads", 4)])
def test_overrides_of_shape_fields(field, value):
    config = model_config("base", **{field: value})
    assert getattr(config, field) == value


def test_unknown_name_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'huge'") as err:
        model_config("huge")
    for name in SIZES:
        assert name in str(err.value)
    with pytest.raises(ConfigError):
        create_model("Base")


def test_create_model_builds_the_named_size():
    model = create_model("test", num_classes=3)

    assert isinstance(model, Encoder)
    assert model.config == model_config("test", num_classes=3)
    assert len(model.blocks) == 2
    assert model.head.out_features == 3


def test_impossible_override_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="model test: pooling"):
        create_model("test", pooling="max")


def test_an_impossible_shape_is_a_config_error_naming_the_model():
    with pytest.raises(ConfigError, match="model base: .*divisible"):
        model_config("base", heads=5)
