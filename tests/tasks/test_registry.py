"""The task registry and the run configs composed from it: shared fields once, each task's own, nothing ignored."""

from __future__ import annotations

import dataclasses

import pytest

from tubelet.errors import ConfigError
from tubelet.models import Loaded, load
from tubelet.models.fusion import FusionConfig, FusionModel
from tubelet.recipes.finetune import FinetuneConfig
from tubelet.recipes.pretrain import PretrainConfig
from tubelet.tasks.base import Task, get_task, register, task_names, task_of
from tubelet.train.config import SUPERVISED, run_config
from tubelet.typed import field_help


def test_the_built_in_tasks_are_registered_with_metrics_that_say_their_direction():
    assert {"classification", "retrieval", "vqa", "reconstruction"} <= set(task_names())
    assert get_task("classification").metrics == {"accuracy": True, "macro_f1": True}
    assert get_task("reconstruction").metrics == {"loss": False}
    with pytest.raises(ConfigError, match="task: expected one of .*classification.*got 'nope'"):
        get_task("nope")


def test_a_name_is_registered_once():
    class First(Task):
        name = "registry-test-once"

    class Second(Task):
        name = "registry-test-once"

    register(First)
    register(First)  # the same class again (a module imported twice) is fine
    with pytest.raises(ValueError, match="already registered"):
        register(Second)


def test_shared_fields_exist_once_and_each_task_adds_only_its_own():
    shared = {f.name for group in SUPERVISED for f in dataclasses.fields(group)}
    own = {name: {f.name for f in dataclasses.fields(get_task(name).Config)} for name in ("classification", "vqa")}
    assert {f.name for f in dataclasses.fields(run_config("classification"))} == shared | own["classification"]
    assert {f.name for f in dataclasses.fields(run_config("retrieval"))} == shared | {"tokenizer"}
    assert "label_column" not in own["vqa"] and "tokenizer" not in own["classification"]
    with pytest.raises(ConfigError, match="unknown config field.*label_column.*fields of task retrieval"):
        FinetuneConfig(task="retrieval", data="d", label_column="sentiment")
    with pytest.raises(ConfigError, match="unknown config field.*mask_ratio"):
        FinetuneConfig(data="d", mask_ratio=0.5)  # pretraining's, not a classifier's
    assert not {"dropout", "freeze", "peft", "label_column"} & {f.name for f in dataclasses.fields(PretrainConfig)}


def test_every_field_documents_itself_and_the_metric_is_the_tasks():
    for name in ("classification", "retrieval", "vqa", "reconstruction"):
        helps = field_help(run_config(name))
        assert all(text for text in helps.values()), [k for k, v in helps.items() if not v]
    assert field_help(run_config("classification"))["label_smoothing"] == "cross-entropy label smoothing"
    with pytest.raises(ConfigError, match="metric: task retrieval measures mean_recall, not 'accuracy'"):
        FinetuneConfig(task="retrieval", data="d", metric="accuracy").validate()
    with pytest.raises(ConfigError, match="pooling"):  # a fusion model's pooling is not a video encoder's
        from types import SimpleNamespace

        from tubelet.models.fusion_from_encoder import build_fusion

        build_fusion(SimpleNamespace(pooling="attention", time_mode="seconds", model="test"), ("audio",), ["a"])


def test_a_checkpoint_names_its_task_or_its_kind_implies_one(tmp_path):
    encoder = load("test", num_classes=2)
    assert task_of(encoder).name == "classification"
    reads_text = FusionModel(FusionConfig(modalities=("video", "text"), dim=32, depth=1, heads=2, vocab_size=10))
    assert task_of(Loaded(reads_text)).name == "vqa"
    assert task_of(Loaded(encoder.model, task="reconstruction")).name == "reconstruction"
    with pytest.raises(ConfigError, match="trained for task 'gone', which is not registered"):
        task_of(Loaded(encoder.model, source="RUN/best", task="gone"))
