"""``finetune --task caption|dialogue``, ``tubelet caption`` and ``tubelet chat`` end to end on real encoded files."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tubelet.cli import main
from tubelet.models import load
from tubelet.recipes.chat import Conversation
from tubelet.tasks.base import task_of
from tubelet.tasks.caption import caption_segments
from tubelet.tasks.generate import Decoding, dialogue_prompt, generate, special_ids

FAST = [
    "--model", "test", "--size", "32", "--max-long-side", "48", "--sample-fps", "4", "--clip-seconds", "1",
    "--batch-particles", "400", "--workers", "0", "--epochs", "1", "--min-steps-per-epoch", "3",
]  # fmt: skip


def _story_data(av_data, root):
    """The AV sample's clips as the stories format: an event per clip (0.2-1.8 s) and a 2-turn dialogue per clip."""
    root.mkdir()
    for split in ("train", "val", "test"):
        rows = list(csv.DictReader(open(av_data / f"{split}.csv")))[: 4 if split == "train" else 2]
        with open(root / f"captions_{split}.jsonl", "w") as f:
            for r in rows:
                event = {"path": str(av_data / r["path"]), "start": 0.2, "end": 1.8, "caption": r["caption"]}
                event.update(object=r["shape"], colour=r["colour"], direction=r["motion"], sound=r["sound"])
                f.write(json.dumps(event) + "\n")
        with open(root / f"dialogues_{split}.jsonl", "w") as f:
            for k, r in enumerate(rows):
                first = ["what shape is it?", r["shape"]]
                turns = [
                    {"history": [], "question": first[0], "answer": first[1], "needs_history": False},
                    {"history": [first], "question": "and its colour?", "answer": r["colour"], "needs_history": True},
                ]
                for t, turn in enumerate(turns):
                    cands = sorted({"red", "green", "blue", "yellow", "disc", "square", turn["answer"]})
                    row = {"path": str(av_data / r["path"]), "dialogue": f"d{k}", "turn": t, "candidates": cands}
                    f.write(json.dumps({**row, **turn}) + "\n")
    return root


@pytest.fixture(scope="module")
def stories(av_data, tmp_path_factory):
    return _story_data(av_data, tmp_path_factory.mktemp("stories") / "data")


@pytest.fixture(scope="module")
def caption_run(stories, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption") / "run"
    assert main(["finetune", "--task", "caption", "--data", str(stories), "--out", str(out), *FAST]) == 0
    return out


def test_caption_run_reports_and_the_caption_command_matches_the_library(caption_run, stories, capsys):
    report = json.loads((caption_run / "report/report.json").read_text())
    assert report["num_captions"] == 2 and set(report["per_attribute"]) == {"object", "colour", "direction", "sound"}
    assert report["perplexity"] == pytest.approx(2.718281828 ** report["loss"], rel=1e-6)
    assert load(caption_run / "best").kind == "captioner"
    clip = json.loads(open(stories / "captions_test.jsonl").readline())["path"]
    capsys.readouterr()
    assert main(["caption", "--checkpoint", str(caption_run / "best"), clip, "--window-seconds", "1", "--json",
                 "--workers", "0", "--max-tokens", "6"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    starts = [(w["start"], w["end"]) for w in result["windows"]]
    assert starts[0] == (0.0, 1.0) and starts[-1][1] == pytest.approx(result["duration_s"], abs=1e-3)
    again = caption_segments(caption_run / "best", clip, starts, decoding=Decoding(max_tokens=6))
    assert [w["caption"] for w in result["windows"]] == again
    # What tubelet summarize calls on the checkpoint's task: the same captions.
    loaded = load(caption_run / "best")
    assert task_of(loaded).caption_windows(loaded, clip, starts) == caption_segments(loaded, clip, starts)
    assert all(len(c.split()) <= 6 for c in again)
    # tubelet evaluate reads a caption checkpoint: the same numbers as the run's test report.
    evaluated = caption_run / "evaluated"
    assert main(["evaluate", "--checkpoint", str(caption_run / "best"), "--data", str(stories), "--out",
                 str(evaluated), "--workers", "0"]) == 0  # fmt: skip
    again_report = json.loads((evaluated / "report.json").read_text())
    assert again_report["details"]["captions"] == again_report["num_captions"] == 2
    assert again_report["bleu4"] == pytest.approx(report["bleu4"]) and (evaluated / "report.md").is_file()


def test_chat_scripted_turns_carry_the_history(stories, tmp_path, capsys):
    out = tmp_path / "dialogue"
    assert main(["finetune", "--task", "dialogue", "--data", str(stories), "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report/report.json").read_text())
    assert report["by_needs_history"]["needs_history"]["turns"] == 2 and 0 <= report["mrr"] <= 1
    assert report["by_question"]["and its colour?"] == report["by_needs_history"]["needs_history"]  # the only one
    clip = json.loads(open(stories / "dialogues_test.jsonl").readline())["path"]
    cands = tmp_path / "cands.txt"
    cands.write_text("red\ngreen\n\nblue\n")
    capsys.readouterr()
    code = main(["chat", "--checkpoint", str(out / "best"), clip, "--say", "what shape is it?", "--say",
                 "and its colour?", "--candidates", str(cands), "--max-tokens", "4"])  # fmt: skip
    assert code == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["question"] for t in turns] == ["what shape is it?", "and its colour?"]
    assert all({"answer", "score", "ranking"} <= set(t) for t in turns)
    assert sorted(r["answer"] for r in turns[1]["ranking"]) == ["blue", "green", "red"]
    assert main(["evaluate", "--checkpoint", str(out / "best"), "--data", str(stories), "--out",
                 str(tmp_path / "evaluated"), "--workers", "0"]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "evaluated" / "report.json").read_text())
    assert evaluated["details"]["turns"] == evaluated["num_turns"] == 4
    assert evaluated["mrr"] == pytest.approx(report["mrr"])
    capsys.readouterr()
    # The second turn is what the model says after the first question and ITS answer.
    chat = Conversation(str(out / "best"), clip, decoding=Decoding(max_tokens=4))
    ids = special_ids(chat.tokenizer)
    history = [("what shape is it?", turns[0]["answer"])]
    prompt = dialogue_prompt(chat.tokenizer, history, "and its colour?", ids, max_history=8)
    second = generate(chat.model, chat.memory, [prompt], Decoding(max_tokens=4))[0]
    assert chat.tokenizer.decode(second.ids, skip_special_tokens=True).strip() == turns[1]["answer"]
    # An empty question is refused in one line; a dialogue checkpoint does not caption.
    for argv, words in (
        (["chat", "--checkpoint", str(out / "best"), clip, "--say", "  "], "question: empty"),
        (["caption", "--checkpoint", str(out / "best"), clip], "a dialogue model"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err


def test_one_line_errors(caption_run, stories, av_data, tmp_path, capsys):
    clip = str(av_data / next(csv.DictReader(open(av_data / "test.csv")))["path"])
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "train.csv").write_text(f"path,label\n{clip},a\n")
    cases = [
        (["finetune", "--task", "caption", "--data", str(bare), "--out", str(tmp_path / "r"), *FAST], "no 'caption'"),
        (["chat", "--checkpoint", str(caption_run / "best"), clip, "--say", "hi"], "a caption model"),
        (["caption", "--checkpoint", str(stories), clip], "not a caption/dialogue model"),
        (["caption", "--checkpoint", str(caption_run / "best"), str(tmp_path / "missing.mp4")], "missing"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err


def _tiny_lm(directory, texts: list[str]):
    """A random 2-layer Llama (hidden 32) and a word-level tokenizer of `texts`, saved in `directory`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_lm_bridge_trains_a_projector_and_lora_and_saves_no_lm_weights(stories, tmp_path, capsys):
    from safetensors import safe_open

    captions = [json.loads(line)["caption"] for line in open(stories / "captions_train.jsonl")]
    lm = _tiny_lm(tmp_path / "lm", captions)
    out = tmp_path / "bridge"
    argv = ["finetune", "--task", "caption", "--data", str(stories), "--out", str(out), "--lm", str(lm), "--lora"]
    assert main([*argv, *FAST]) == 0
    loaded = load(out / "best")
    assert loaded.kind == "lm-captioner" and loaded.model.config.lm == str(lm) and loaded.model.config.lora
    with safe_open(str(out / "best/model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("projector.") for k in keys) and any("lora_" in k for k in keys)
    assert all(k.startswith(("encoder.", "projector.")) or "lora_" in k for k in keys)  # no LM weight is copied
    report = json.loads((out / "report/report.json").read_text())
    assert report["num_captions"] == 2 and report["loss"] > 0
    clip = json.loads(open(stories / "captions_test.jsonl").readline())["path"]
    first = caption_segments(loaded, clip, [(0.0, 1.0), (1.0, 2.0)], decoding=Decoding(max_tokens=5))
    assert first == caption_segments(out / "best", clip, [(0.0, 1.0), (1.0, 2.0)], decoding=Decoding(max_tokens=5))
    assert all(set(c.split()) <= set(" ".join(captions).lower().split()) for c in first)  # the LM's own words


def test_caption_manifests_of_events_and_of_whole_clips(av_data, stories):
    from tubelet.data.events import caption_manifest, load_captions

    whole = load_captions(caption_manifest(av_data, "train"))  # the --multimodal sample's train.csv
    rows = list(csv.DictReader(open(av_data / "train.csv")))
    assert whole.captions == [r["caption"] for r in rows]
    first = rows[0]
    want = {"object": first["shape"], "colour": first["colour"], "direction": first["motion"], "sound": first["sound"]}
    assert whole.attributes[0] == want
    assert all(s.start is None and s.end is None for s in whole.data.samples)
    events = load_captions(caption_manifest(stories, "train"))  # the stories format: seconds per event
    assert [(s.start, s.end) for s in events.data.samples] == [(0.2, 1.8)] * 4
