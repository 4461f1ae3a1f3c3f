"""Claiming a run directory: an old run is never replaced unasked, and a resume continues the same run."""

import json

import pytest

from tubelet.errors import ConfigError
from tubelet.train.config import make_config, to_dict
from tubelet.train.run_dir import LEGACY_VALUES, MAY_CHANGE, RUN_OUTPUTS, claim


def _old_run(out, **values):
    cfg = make_config("retrieval", data="d", out=str(out), **values)
    (out / "best").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg)))
    return cfg


def test_an_empty_or_new_directory_is_free(tmp_path):
    cfg = make_config("classification", data="d", out=str(tmp_path / "new"))
    assert claim(cfg) == to_dict(cfg)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text("{}")  # a run that failed before training wrote nothing else
    assert claim(cfg) == to_dict(cfg)


def test_overwrite_deletes_every_output_and_nothing_else(tmp_path):
    cfg = _old_run(tmp_path)
    for name in RUN_OUTPUTS:
        if "." in name:
            (tmp_path / name).write_text("{}")
        else:
            (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--resume .* --overwrite"):
        claim(cfg)
    claim(make_config("retrieval", data="d", out=str(tmp_path), overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]


def test_a_resume_refuses_what_cannot_change_and_takes_what_may(tmp_path):
    _old_run(tmp_path, tokenizer="tok", lr=1e-3, epochs=2)
    resume = dict(data="d", out=str(tmp_path), resume=True)
    with pytest.raises(ConfigError, match=r"batch_particles 4096 -> 512, lr 0.001 -> 0.01\)"):
        claim(make_config("retrieval", **resume, tokenizer="tok", lr=1e-2, epochs=2, batch_particles=512))
    with pytest.raises(ConfigError, match="tokenizer 'tok' -> 'other'"):
        claim(make_config("retrieval", **resume, tokenizer="other", lr=1e-3, epochs=2))
    values = claim(make_config("retrieval", **resume, lr=1e-3, epochs=5, workers=0, max_steps=7))
    assert (values["tokenizer"], values["epochs"], values["workers"], values["max_steps"]) == ("tok", 5, 0, 7)
    assert {"epochs", "max_steps", "workers", "device"} <= MAY_CHANGE and not {"lr", "seed", "model"} & MAY_CHANGE


def test_a_resume_of_a_run_saved_before_a_field_existed_keeps_what_it_trained_with(tmp_path):
    out = tmp_path / "run"
    cfg = _old_run(out)
    saved = json.loads((out / "config.json").read_text())
    for field in LEGACY_VALUES:
        del saved[field]  # as a run written before the field existed
    (out / "config.json").write_text(json.dumps(saved))
    values = claim(make_config("retrieval", data="d", out=str(out), resume=True))
    assert {k: values[k] for k in LEGACY_VALUES} == LEGACY_VALUES  # not today's defaults
    assert (cfg.prune_reference, cfg.embed_init) == ("anchor", "motion")  # today's defaults differ
