"""`tubelet evaluate` on retrieval and VQA checkpoints: the same numbers as their training runs' test reports.

The runs are the session fixtures of conftest (`retrieval_run`, `vqa_run`), trained once on the AV sample data.
"""

import csv
import json

import pytest

from tubelet.cli import main


def _evaluate(tubelet_cli, checkpoint, data, out, *flags):
    return tubelet_cli("evaluate", "--checkpoint", checkpoint, "--data", data, "--out", out, "--workers", 0, *flags)


def test_retrieval_checkpoint_gets_its_training_report_back(retrieval_run, av_data, tmp_path, tubelet_cli):
    trained = json.loads((retrieval_run / "report/report.json").read_text())
    # the training report scored one centred window per clip, in batches of 2000 particles
    result = _evaluate(tubelet_cli, retrieval_run / "best", av_data, tmp_path, "--views", 1, "--batch-particles", 2000)
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("text_to_video", "video_to_text", "instance", "chance", "num_pairs", "num_captions", "mean_recall"):
        assert report[key] == trained[key], key
    assert set(report["text_to_video"]) == set(report["video_to_text"]) == {"R@1", "R@5", "R@10"}
    assert report["num_pairs"] == 6 and report["split"] == "test" and report["skipped"] == []
    assert report["details"]["task"] == "retrieval" and report["details"]["views"] == 1
    markdown = (tmp_path / "report.md").read_text()
    assert "| text -> video |" in markdown and "| chance (random ranking) |" in markdown
    lines = result.stdout.splitlines()
    t2v = next(line for line in lines if line.startswith("text->video")).split()[1:]
    assert [float(v) for v in t2v] == pytest.approx(
        [trained["text_to_video"][k] for k in ("R@1", "R@5", "R@10")], abs=5e-4
    )
    assert lines[-1] == f"report: {tmp_path / 'report.md'}"


def test_vqa_checkpoint_and_its_question_only_arm_get_the_training_report_back(vqa_run, av_data, tmp_path, tubelet_cli):
    trained = json.loads((vqa_run / "report/report.json").read_text())
    baseline = vqa_run / "ablation/question-only/best"
    flags = ["--views", 1, "--batch-particles", 600, "--baseline", baseline]  # as training scored its test split
    result = _evaluate(tubelet_cli, vqa_run / "best", av_data, tmp_path, *flags)
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("accuracy", "macro_f1", "per_question_type", "unknown_answers", "num_questions", "predictions"):
        assert report[key] == trained[key], key
    assert report["arms"] == trained["arms"]  # video+text and question-only, row for row
    assert report["modalities"] == "video+text" and report["details"]["task"] == "vqa"
    assert report["details"]["manifest"] == str(av_data / "qa_test.csv")
    markdown = (tmp_path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| arm |"))
    assert all(f"| {qtype} |" in header + " |" for qtype in trained["per_question_type"])
    assert "| video+text |" in markdown and "| question-only |" in markdown and "| views | 1 |" in markdown
    out = result.stdout
    assert f"accuracy {trained['accuracy']:.4f}" in out
    for qtype, row in trained["per_question_type"].items():
        assert any(
            line.split() == [qtype, f"{row['accuracy']:.3f}", str(row["num_questions"])] for line in out.splitlines()
        )


def test_json_summary_and_views_of_a_retrieval_checkpoint(retrieval_run, av_data, tmp_path, capsys):
    args = ["evaluate", "--checkpoint", str(retrieval_run / "best"), "--data", str(av_data), "--workers", "0"]
    assert main([*args, "--out", str(tmp_path), "--split", "val", "--views", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["split"] == "val" and printed["details"]["views"] == 2 and printed["num_pairs"] == 6
    assert printed["files"] == {"json": str(tmp_path / "report.json"), "markdown": str(tmp_path / "report.md")}
    assert {k: v for k, v in printed.items() if k != "files"} == json.loads((tmp_path / "report.json").read_text())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_flags_and_data_a_checkpoint_kind_cannot_use_are_one_line_errors(
    retrieval_run, vqa_run, av_data, tmp_path, capsys
):
    retrieval = ["evaluate", "--checkpoint", str(retrieval_run / "best"), "--out", str(tmp_path / "r")]
    vqa = ["evaluate", "--checkpoint", str(vqa_run / "best"), "--out", str(tmp_path / "q")]
    assert main([*retrieval, "--data", str(av_data), "--baseline", str(retrieval_run / "last")]) == 2
    assert "--baseline" in _one_line_error(capsys)
    assert main([*vqa, "--data", str(av_data), "--split", "all"]) == 2
    assert "--split all" in _one_line_error(capsys)
    assert main([*vqa, "--data", str(av_data), "--baseline", str(retrieval_run / "best")]) == 2
    assert "not a VQA checkpoint" in _one_line_error(capsys)

    # a copy of the test manifest: without its caption column, then with an empty caption, then no qa manifest
    rows = list(csv.DictReader(open(av_data / "test.csv")))
    copy = tmp_path / "copy"
    copy.mkdir()

    def write(fields, change=lambda i, row: row):
        with open(copy / "test.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(change(i, {**r, "path": str(av_data / r["path"])}) for i, r in enumerate(rows))

    write(["path", "label"])
    assert main([*retrieval, "--data", str(copy)]) == 2
    assert "test.csv: no 'caption' column" in _one_line_error(capsys)
    write(["path", "label", "caption"], lambda i, row: {**row, "caption": " " if i == 2 else row["caption"]})
    assert main([*retrieval, "--data", str(copy)]) == 2
    assert "test.csv:4: field 'caption' is empty" in _one_line_error(capsys)
    assert main([*vqa, "--data", str(copy)]) == 2
    assert f"{copy}: no qa_test.csv or .jsonl" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path / "q").exists()  # nothing written on bad input


def test_a_pretraining_checkpoint_is_neither_evaluated_nor_asked_to_predict(
    pretrained_encoder, av_data, tmp_path, capsys
):
    args = ["--checkpoint", str(pretrained_encoder)]
    assert main(["evaluate", *args, "--data", str(av_data), "--out", str(tmp_path / "eval")]) == 2
    assert "no labels.json (not a classifier)" in _one_line_error(capsys)
    clip = next((av_data / "test").rglob("*.mp4")) if (av_data / "test").is_dir() else next(av_data.rglob("*.mp4"))
    assert main(["predict", *args, str(clip)]) == 2
    err = _one_line_error(capsys)
    assert "not a classifier" in err and f"tubelet finetune --model {pretrained_encoder}" in err
    assert not (tmp_path / "eval").exists()
