"""`load_config`: defaults < YAML file < ``key=value`` overrides < flags, and errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from tubelet.errors import ConfigError
from tubelet.train.config import load_config, to_dict


@dataclass(frozen=True)
class Run:
    data: str = "d"  # dataset
    epochs: int = 1  # passes over it
    lr: float = 0.1  # learning rate
    warmup: float = 0.5  # epochs of warmup
    flip: bool = False  # horizontal flips
    tubelet: tuple[int, int, int] = (2, 16, 16)  # frames, rows, columns
    fps: float | None = 4.0  # resampling rate; None keeps the file's
    tags: tuple[str, ...] = ()  # free labels
    freeze: str = "none"  # what to freeze


@pytest.fixture
def yaml_file(tmp_path):
    """``epochs: 3, lr: 0.01, warmup: 2, tubelet: [2, 8, 8], flip: true`` as a config file."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3, "lr": 0.01, "warmup": 2, "tubelet": [2, 8, 8], "flip": True}))
    return path


def test_defaults_alone():
    assert load_config(Run) == Run()


def test_each_layer_overrides_the_one_below(yaml_file):
    from_yaml = load_config(Run, path=yaml_file)
    assert from_yaml == Run(epochs=3, lr=0.01, warmup=2.0, tubelet=(2, 8, 8), flip=True)
    assert type(from_yaml.warmup) is float  # a YAML int in a float field is converted

    overridden = load_config(Run, path=yaml_file, overrides=["lr=0.5", "epochs=4", "fps=none", "tags=a,b"])
    assert overridden == Run(epochs=4, lr=0.5, warmup=2.0, tubelet=(2, 8, 8), flip=True, fps=None, tags=("a", "b"))

    flagged = load_config(Run, path=yaml_file, overrides=["lr=0.5", "epochs=4"], flags={"epochs": "7", "lr": None})
    assert (flagged.epochs, flagged.lr, flagged.warmup) == (7, 0.5, 2.0)  # a flag left unset (None) overrides nothing


def test_values_are_coerced_to_the_annotated_types():
    cfg = load_config(Run, overrides=["tubelet=4x8x8", "flip=yes", "epochs=2.0", "data=42", "fps=null"])
    assert (cfg.tubelet, cfg.flip, cfg.epochs, cfg.data, cfg.fps) == ((4, 8, 8), True, 2, "42", None)
    assert type(cfg.epochs) is int and type(cfg.data) is str
    assert load_config(Run, flags={"flip": "false", "freeze": "top:2"}) == Run(flip=False, freeze="top:2")


def test_an_unknown_field_is_named_with_the_known_ones(yaml_file):
    with pytest.raises(ConfigError) as error:
        load_config(Run, overrides=["epohcs=3"])
    known = "data, epochs, flip, fps, freeze, lr, tags, tubelet, warmup"
    assert str(error.value) == f"unknown config field(s): epohcs (known: {known})"
    yaml_file.write_text("lr: 0.1\nbatch_size: 8\n")
    with pytest.raises(ConfigError, match=r"^unknown config field\(s\): batch_size "):
        load_config(Run, path=yaml_file)


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=many", "epochs: expected int, got 'many'"),
        ("epochs=2.5", "epochs: expected an integer, got 2.5"),
        ("epochs=true", "epochs: expected a number, got True"),
        ("lr=fast", "lr: expected float, got 'fast'"),
        ("flip=maybe", "flip: expected true or false, got 'maybe'"),
        ("tubelet=2x16", "tubelet: expected 3 values, got ['2', '16']"),
        ("tubelet=5", "tubelet: expected a list, got 5"),
        ("fps=quick", "fps: expected float, got 'quick'"),
        ("data=[1, 2]", "data: expected text, got [1, 2]"),
    ],
)
def test_a_bad_value_names_the_field(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(Run, overrides=[override])
    assert str(error.value) == message


def test_bad_files_and_overrides_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such config file"):
        load_config(Run, path=tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of field: value"):
        load_config(Run, path=tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(Run, path=tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match=r"override 'lr': expected key=value"):
        load_config(Run, overrides=["lr"])


def test_dashes_in_keys_read_as_underscores_and_to_dict_round_trips(tmp_path):
    @dataclass(frozen=True)
    class Sampling:
        sample_fps: float = 4.0  # frames per second
        tubelet: tuple[int, int, int] = (2, 16, 16)  # frames, rows, columns

    path = tmp_path / "s.yaml"
    path.write_text("sample-fps: 2\n")
    cfg = load_config(Sampling, path=path, overrides=["tubelet=2,8,8"])
    assert cfg == Sampling(sample_fps=2.0, tubelet=(2, 8, 8))
    assert to_dict(cfg) == {"sample_fps": 2.0, "tubelet": [2, 8, 8]}
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(Sampling, path=path) == cfg


def test_prune_reference_is_a_run_config_field_that_reaches_the_checkpoints_preprocessing():
    from tubelet.data.transforms import Preprocessing
    from tubelet.train.config import make_config, run_config
    from tubelet.train.run import preprocessing_for
    from tubelet.typed import field_help

    for task in ("classification", "reconstruction"):  # a supervised run and pretraining
        assert run_config(task)().prune_reference == "anchor"  # the default of new runs
        assert "anchor" in field_help(run_config(task))["prune_reference"]
    with pytest.raises(ConfigError, match=r"^prune_reference: expected previous or anchor, got 'sideways'$"):
        make_config("classification", data="d", prune_reference="sideways").validate()

    cfg = make_config("classification", data="d", prune_reference="anchor")
    cfg.validate()
    saved = Preprocessing(tubelet=(2, 16, 16), prune_threshold=2.0)  # a checkpoint trained with "previous"
    assert preprocessing_for(cfg, (2, 16, 16), saved).prune_reference == "anchor"  # like prune_threshold, the run's
    assert preprocessing_for(cfg, (2, 16, 16), None).prune_reference == "anchor"


def test_crop_and_pixels_are_run_config_fields_that_reach_the_checkpoints_preprocessing():
    from tubelet.data.transforms import Preprocessing
    from tubelet.train.config import make_config
    from tubelet.train.run import DIFFERENCE_STD, preprocessing_for

    cfg = make_config("classification", data="d", size=128, crop="motion", crop_size=64, pixels="difference")
    pre = preprocessing_for(cfg, (2, 16, 16), None)
    assert (pre.crop, pre.crop_side, pre.pixels) == ("motion", 64, "difference")
    assert (pre.mean, pre.std) == ((0.0, 0.0, 0.0), DIFFERENCE_STD)  # a change of 0 is 0; a fresh model only
    assert preprocessing_for(cfg, (2, 16, 16), Preprocessing()).mean == Preprocessing().mean  # a checkpoint keeps its
    assert preprocessing_for(make_config("classification", data="d"), (2, 16, 16), pre).crop is None  # the run's
    with pytest.raises(ConfigError, match=r"^crop: expected one of None, motion, got 'person'$"):
        preprocessing_for(make_config("classification", data="d", crop="person"), (2, 16, 16), None)


def test_a_negative_steps_floor_is_refused_naming_the_field():
    from tubelet.train.config import make_config

    with pytest.raises(ConfigError, match=r"^min_steps_per_epoch: must be 0 \(off\) or more, got -3$"):
        make_config("classification", data="d", min_steps_per_epoch=-3).validate()
    make_config("classification", data="d", min_steps_per_epoch=0).validate()  # off is fine


@pytest.mark.parametrize("task", ["denoise", "interpolation", "vitals"])
@pytest.mark.parametrize(("field", "value"), [("crop", "motion"), ("pixels", "difference")])
def test_tasks_that_make_their_own_particles_refuse_crop_and_pixels_naming_the_field(task, field, value, tmp_path):
    from tubelet.tasks.base import get_task
    from tubelet.train.config import make_config

    cfg = make_config(task, data=str(tmp_path), **{field: value})
    with pytest.raises(ConfigError, match=f"^{field}: the {task} task reads"):
        get_task(task).prepare(cfg, tmp_path)
