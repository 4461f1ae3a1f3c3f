"""``tubelet tokenizer``: a tokenizer trained on a dataset's captions or questions, used by retrieval and VQA."""

import csv
import json
import re
from dataclasses import replace

import pytest

import tubelet.data.text as text_module
from tubelet.cli import main
from tubelet.data.qa import load_qa, qa_manifest
from tubelet.data.text import UNK, encode, load_tokenizer
from tubelet.recipes.finetune import FinetuneConfig, finetune

TINY = [
    "--model", "test", "--size", "32", "--max-long-side", "48", "--sample-fps", "4", "--clip-seconds", "1",
    "--workers", "0", "--epochs", "1", "--max-steps", "1",
]  # fmt: skip


def run_json(args, capsys) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_captions_tokenizer_reports_its_vocabulary_and_serves_retrieval(av_data, tmp_path, capsys):
    tok = tmp_path / "tok"
    summary = run_json(["tokenizer", "--data", str(av_data), "--out", str(tok), "--json"], capsys)
    tokenizer = load_tokenizer(tok)
    assert summary["tokenizer"] == str(tok / "tokenizer.json") and summary["vocab_size"] == tokenizer.get_vocab_size()
    assert summary["texts"] == 6 and summary["column"] == "caption" and summary["unknown_rate"] == 0.0
    assert set(summary["held_out"]) == {"val", "test"} and summary["held_out"]["val"]["texts"] == 6
    assert json.loads((tok / "summary.json").read_text()) == summary
    caption = next(csv.DictReader(open(av_data / "train.csv")))["caption"]
    assert tokenizer.token_to_id(UNK) not in encode(tokenizer, caption)

    run = tmp_path / "run"
    args = ["finetune", "--task", "retrieval", "--data", str(av_data / "train.csv"), "--out", str(run), *TINY]
    assert main([*args, "--tokenizer", str(tok)]) == 0
    assert load_tokenizer(run / "best").get_vocab() == tokenizer.get_vocab()  # the command's, not a new one


def test_questions_tokenizer_serves_vqa_and_a_resumed_vqa_run_keeps_its_vocabulary(
    av_data, tmp_path, capsys, monkeypatch
):
    tok = tmp_path / "tok"
    args = ["tokenizer", "--data", str(av_data), "--out", str(tok), "--column", "question", "--json"]
    summary = run_json(args, capsys)
    questions = load_qa(qa_manifest(av_data, "train")).questions  # what --task vqa trains its tokenizer on
    assert summary["texts"] == len(questions) == 24 and summary["manifest"].endswith("qa_train.csv")
    vocabulary = load_tokenizer(tok).get_vocab()

    # VQA with that tokenizer, cut after one step; resumed without --tokenizer, it must take last/'s (training a
    # new one is not deterministic, so its ids could differ from those the model learned).
    cfg = FinetuneConfig(
        data=str(av_data / "qa_train.csv"), out=str(tmp_path / "run"), task="vqa", tokenizer=str(tok), model="test",
        size=32, max_long_side=48, sample_fps=4.0, clip_seconds=1.0, batch_particles=300, workers=0, epochs=1,
        ablate=False, max_steps=1,
    )  # fmt: skip
    assert finetune(cfg)["arms"]["video+text"]["steps"] == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must keep its saved tokenizer")

    monkeypatch.setattr(text_module, "train_tokenizer", no_training)  # what run_tokenizer calls
    resumed = finetune(replace(cfg, tokenizer=None, max_steps=None, resume=True))
    assert resumed["arms"]["video+text"]["steps"] > 1
    assert load_tokenizer(tmp_path / "run/best").get_vocab() == vocabulary


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.mark.parametrize(
    "header, rows, column, expected",
    [
        (["path", "label"], "clips", "caption", "train.csv: manifest has no 'caption' column"),
        (["path", "caption"], "one empty", "caption", r"train.csv:3: field 'caption' is empty"),
        (["path", "caption"], [], "caption", "train.csv: no rows, so no 'caption' text"),
        (["path", "caption"], "clips", "question", "no qa_train.csv or .jsonl with a 'question' column"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_field(av_data, tmp_path, capsys, header, rows, column, expected):
    clips = [str(p) for p in sorted((av_data / "left_beep").glob("*.mp4"))[:2]]
    if rows == "clips":
        rows = [[c, "a disc"] for c in clips]
    elif rows == "one empty":
        rows = [[clips[0], "a disc"], [clips[1], " "]]
    _write(tmp_path / "train.csv", header, rows)
    assert main(["tokenizer", "--data", str(tmp_path), "--out", str(tmp_path / "tok"), "--column", column]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tubelet tokenizer: error: ")
    assert re.search(expected, err), err
    assert not (tmp_path / "tok").exists()
