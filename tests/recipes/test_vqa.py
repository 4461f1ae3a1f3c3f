import csv
import json
import os

import pytest
import torch

from tubelet import checkpoint
from tubelet.cli import main
from tubelet.data.qa import QAClipDataset, load_qa, qa_manifest, tokenize_questions
from tubelet.data.text import save_tokenizer, train_tokenizer
from tubelet.errors import DataError
from tubelet.models import checkpoint_config, load
from tubelet.particles.modalities import pack_modalities
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.vqa import evaluate_vqa

FAST = [
    "--model", "test", "--size", "48", "--max-long-side", "64", "--sample-fps", "4", "--clip-seconds", "1",
    "--batch-particles", "600", "--workers", "0", "--epochs", "1",
]  # fmt: skip


def test_cli_writes_checkpoints_and_a_report_per_question_type(vqa_run, av_data):
    for ckpt in (vqa_run / "best", vqa_run / "last", vqa_run / "ablation/question-only/best"):
        assert {"config.json", "model.safetensors", "labels.json", "tokenizer.json"} <= set(os.listdir(ckpt))
    assert load(vqa_run / "best").model.config.modalities == ("video", "text")
    assert load(vqa_run / "ablation/question-only/best").model.config.modalities == ("text",)
    with open(av_data / "qa_train.csv") as f:
        train_answers = sorted({row["answer"] for row in csv.DictReader(f)})
    assert json.loads((vqa_run / "best/labels.json").read_text()) == train_answers
    report = json.loads((vqa_run / "report/report.json").read_text())
    assert report["num_questions"] == 24  # 6 test clips x 4 questions
    assert set(report["per_question_type"]) == {"motion", "colour", "shape", "sound"}
    assert set(report["arms"]) == {"video+text", "question-only"}
    for arm in report["arms"].values():
        assert set(arm["per_question_type"]) == {"motion", "colour", "shape", "sound"}
        per_type = arm["per_question_type"].values()
        assert arm["accuracy"] == pytest.approx(sum(t["accuracy"] * t["num_questions"] for t in per_type) / 24)
    markdown = (vqa_run / "report/report.md").read_text()
    assert "| question-only |" in markdown and "| motion |" in markdown.splitlines()[4]  # a column per type


def test_reloaded_checkpoint_gives_identical_logits_and_reproduces_the_report(vqa_run, av_data, tmp_path):
    loaded = load(vqa_run / "best")
    qa = tokenize_questions(load_qa(qa_manifest(av_data, "test"), answers=loaded.labels), loaded.tokenizer)
    dataset = QAClipDataset(qa, loaded.preprocessing, loaded.audio, modalities=("video", "text"))
    batch = pack_modalities([dataset[i].particles for i in range(4)])
    loaded.model.eval()
    with torch.no_grad():
        before = loaded.model(batch)
    copy = tmp_path / "copy"
    config = checkpoint_config(loaded.model, preprocessing=loaded.preprocessing, audio=loaded.audio)
    checkpoint.save_checkpoint(copy, model=loaded.model, config=config, labels=loaded.labels)
    save_tokenizer(loaded.tokenizer, copy)
    again = load(copy)
    again.model.eval()
    with torch.no_grad():
        assert torch.equal(again.model(batch), before)
    report = json.loads((vqa_run / "report/report.json").read_text())
    metrics = evaluate_vqa(again, qa, device=torch.device("cpu"))
    assert metrics["accuracy"] == report["accuracy"] and metrics["predictions"] == report["predictions"]


def test_an_answer_only_in_test_is_scored_wrong_not_a_crash(vqa_run, av_data, tmp_path):
    loaded = load(vqa_run / "ablation/question-only/best")
    rows = list(csv.DictReader(open(av_data / "qa_test.csv")))
    rows[0]["answer"] = "purple"  # never a train answer
    manifest = tmp_path / "qa_test.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(av_data / r["path"])} for r in rows)
    qa = load_qa(manifest, answers=loaded.labels)
    assert "purple" not in loaded.labels
    metrics = evaluate_vqa(loaded, qa, device=torch.device("cpu"))
    assert metrics["unknown_answers"] == 1 and metrics["num_questions"] == len(rows)
    assert metrics["predictions"][0] != "purple"


def test_question_time_is_the_window_centre_and_unknown_tokens_are_unk(av_data):
    qa = load_qa(qa_manifest(av_data, "train"))
    tokenizer = train_tokenizer(qa.questions)
    qa.questions[0] = "which way does the zebra ☃ move?"  # unseen word and character
    tokenize_questions(qa, tokenizer)
    assert tokenizer.token_to_id("[UNK]") in qa.token_ids[0]
    assert all(tokenizer.id_to_token(i) is not None for i in qa.token_ids[0])
    from tubelet.data.av_dataset import AudioPreprocessing
    from tubelet.data.transforms import Preprocessing

    pre = Preprocessing(size=48, sample_fps=4.0, clip_seconds=1.0, tubelet=(2, 16, 16))
    dataset = QAClipDataset(qa, pre, AudioPreprocessing(), modalities=("video", "text"), windows=[(0, 0.5, 1.5)])
    item = dataset[0]
    assert list(item.particles) == ["video", "text"]
    assert torch.all(item.particles["text"].t == 0.5)  # centre of the 1 s window, from its start
    assert dataset.estimates()[0] >= len(item.particles["video"]) + len(qa.token_ids[0])


def _write_qa(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_bad_question_manifests_are_one_line_errors(av_data, tmp_path, capsys):
    clip = str(next((av_data / "left_beep").glob("*.mp4")))
    root = tmp_path / "data"
    root.mkdir()
    _write_qa(root / "qa_train.csv", ["path", "question_type", "question"], [[clip, "motion", "which way?"]])
    assert main(["finetune", "--data", str(root), "--out", str(tmp_path / "run"), "--task", "vqa", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "qa_train.csv" in err and "'answer'" in err
    _write_qa(root / "qa_train.csv", ["path", "question", "answer"], [[clip, "which way?", "left"], [clip, " ", "x"]])
    with pytest.raises(DataError, match=r"qa_train.csv:3: field 'question' is empty"):
        load_qa(root / "qa_train.csv")
    (root / "qa_train.csv").unlink()
    with pytest.raises(DataError, match="no qa_train.csv"):
        finetune(FinetuneConfig(data=str(root), out=str(tmp_path / "r2"), task="vqa"))


def test_label_column_trains_a_fused_classifier_on_any_column(av_data, tmp_path):
    """The AV sample data's second label set, ``sentiment``, trains the same fused classifier."""
    cfg = FinetuneConfig(
        data=str(av_data), out=str(tmp_path / "run"), model="test", size=48, max_long_side=64, sample_fps=4.0,
        clip_seconds=1.0, batch_particles=600, workers=0, epochs=1, modalities="video,audio", ablate=False,
        label_column="sentiment",
    )  # fmt: skip
    summary = finetune(cfg)
    train = sorted({row["sentiment"] for row in csv.DictReader(open(av_data / "train.csv"))})
    assert set(train) <= {"negative", "neutral", "positive"} and len(train) >= 2
    assert json.loads((tmp_path / "run/best/labels.json").read_text()) == train
    report = json.loads(open(summary["report"]).read())
    assert set(report["per_class"]) == set(train) and report["num_samples"] == 6


def test_missing_label_column_names_the_file_and_field(av_data, tmp_path, capsys):
    args = ["finetune", "--data", str(av_data), "--out", str(tmp_path / "run"), "--modalities", "video,audio"]
    assert main([*args, "--label-column", "emotion", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.csv" in err and "'emotion'" in err


def test_lora_vqa_runs_end_to_end_from_a_pretrained_encoder(pretrained_encoder, av_data, tmp_path):
    run = tmp_path / "run"
    args = ["finetune", "--task", "vqa", "--data", str(av_data), "--out", str(run), "--no-ablate"]
    lora = ["--model", str(pretrained_encoder), "--peft", "lora", "--lora-rank", "2"]
    assert main([*args, *lora, *FAST[2:]]) == 0  # FAST without its --model
    encoder = checkpoint.load_state_dict(pretrained_encoder)
    merged = checkpoint.load_state_dict(run / "best")
    assert not any("lora" in k for k in merged)  # adapters merged: a plain VQA checkpoint
    assert torch.equal(merged["patch_embed.weight"], encoder["patch_embed.weight"])  # frozen beside the adapters
    assert not torch.equal(merged["blocks.0.attn.qkv.weight"], encoder["blocks.0.attn.qkv.weight"])
    loaded = load(run / "best")
    assert loaded.model.config.modalities == ("video", "text")
    report = json.loads((run / "report/report.json").read_text())
    assert report["num_questions"] == 24 and set(report["arms"]) == {"video+text"}
    # validation read the model with its adapters; the merged checkpoint scores the same
    val = tokenize_questions(load_qa(qa_manifest(av_data, "val"), answers=loaded.labels), loaded.tokenizer)
    validated = json.loads((run / "best/val_metrics.json").read_text())
    assert evaluate_vqa(loaded, val, device=torch.device("cpu"))["predictions"] == validated["predictions"]
