"""Video to text: captions of timed events and dialogue about whole stories, each against its baselines.

Data: the stories sample (``tubelet sample-data OUT --stories``, `tubelet.data.sample_stories`): 30-50 s videos of
timed events (an object of a colour crosses, collides, drops; sounds) over photographs, a caption per event with its
seconds and attributes, and dialogues whose questions sometimes need the turns before ("what colour was it?").

Captioning: ``finetune --task caption`` (a clip encoder and a causal text decoder over its particles) trains on the
train events; on the test events (centred window of each) it is scored by BLEU-4 (sacrebleu) and attribute match
(the share of (event, attribute) pairs whose caption names the object, colour, direction or sound values as the
reference does, in the same order, the true one among them), against the nearest-neighbour baseline: the caption of
the training event whose window's pooled features (the same trained encoder) are closest by cosine.

Dialogue: ``finetune --task dialogue --ablate`` trains, with the same data, seed and budget, the clip + history
model, a history-blind model (clip + question) and a question-only model (question + history, no clip); each ranks
the test turns' candidates by length-normalised likelihood (MRR, R@1, R@5) and generates an answer (exact match),
split by ``needs_history``.

Each follow-up about colour, direction or sound is also scored apart (``by_question``): its answer is in the caption
the dialogue's previous answer gave, so a model that reads the history can copy it and a history-blind one can only
guess among the answers of its type.

Run: ``python -m benchmarks.bench_caption [--data STORIES_DIR] [--caption-data STORIES_DIR] [--dialogues N]
[--epochs E] [--dialogue-epochs E] [--model M] [--quick] [--reuse] [--only caption|dialogue]``. Without ``--data``
the stories sample is generated with ``--dialogues`` (10) dialogues per story; ``--only`` trains one part and writes
nothing, so the two parts can train side by side and a later ``--reuse`` run scores both.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_markdown, table, work_dir, write_section
from tubelet.data.events import caption_manifest, dialogue_manifest, load_captions, load_dialogues
from tubelet.models import load
from tubelet.nn.device import resolve_device
from tubelet.recipes.finetune import FinetuneConfig, finetune
from tubelet.tasks.caption import attribute_scores, bleu4, caption_windows, evaluate_captions
from tubelet.tasks.dialogue import evaluate_dialogue
from tubelet.tasks.generate import Decoding
from tubelet.tasks.inference import view_windows

ATTRS = ("object", "colour", "direction", "sound")


def stories_data(given: str | None, quick: bool, dialogues: int) -> Path:
    if given:
        return Path(given)
    root = work_dir() / (f"stories_quick_{dialogues}" if quick else f"stories_{dialogues}")
    if not (root / "captions_test.jsonl").is_file():
        from tubelet.data.sample_stories import generate_stories  # the stories sample generator (issue 19)

        shutil.rmtree(root, ignore_errors=True)
        generate_stories(root, seed=0, dialogues=dialogues, **({"stories": 6, "story_seconds": 20} if quick else {}))
    return root


def nearest_neighbour(best: Path, data: Path) -> dict:
    """BLEU-4 and attribute match of the caption of the closest train event (pooled features of the same encoder)."""
    loaded = load(best)
    device = resolve_device("auto")
    model, pre = loaded.model.to(device), loaded.preprocessing
    once = Decoding(max_tokens=1)  # the features are what counts here; one token is the cheapest decode

    def pooled(captions):
        windows = view_windows(captions.data, pre.clip_seconds, 1)
        out = caption_windows(model, captions.data, windows, pre, loaded.tokenizer, decoding=once, device=device,
                              pooled=True)  # fmt: skip
        vectors = out["pooled"]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    train = load_captions(caption_manifest(data, "train", required=True))
    test = load_captions(caption_manifest(data, "test", required=True))
    a, b = pooled(train), pooled(test)
    nearest = np.nan_to_num(b @ a.T, nan=-2.0).argmax(axis=1)
    hyps = [train.captions[j] for j in nearest]
    return {"bleu4": bleu4(hyps, test.captions), **attribute_scores(hyps, test.captions, test.attributes)}


def random_caption(data: Path) -> dict:
    """BLEU-4 and attribute match expected of a uniformly random training caption per test event (exact: each test
    event scored against every training caption, averaged)."""
    train = load_captions(caption_manifest(data, "train", required=True))
    test = load_captions(caption_manifest(data, "test", required=True))
    per = {name: [] for name in ATTRS}
    for caption in train.captions:
        scores = attribute_scores([caption] * len(test.captions), test.captions, test.attributes)
        for name, row in scores["per_attribute"].items():
            per[name].append(row)
    rows = {n: {"match": float(np.mean([r["match"] for r in v])), "count": v[0]["count"]} for n, v in per.items() if v}
    total = sum(r["count"] for r in rows.values())
    match = sum(r["match"] * r["count"] for r in rows.values()) / total
    bleu = float(np.mean([bleu4([c] * len(test.captions), test.captions) for c in train.captions]))
    return {"bleu4": bleu, "attribute_match": match, "per_attribute": rows}


def by_question(dout: Path, data: Path, report: dict) -> None:
    """Fill each arm's ``by_question`` numbers (the test turns of each question that needs the history) where a
    report written before they existed lacks them: the arm's checkpoint scored again on the test turns."""
    test = None
    for arm, numbers in report["arms"].items():
        if "by_question" in numbers:
            continue
        test = test or load_dialogues(dialogue_manifest(data, "test", required=True))
        best = dout / "best" if arm == report["arm"] else dout / "ablation" / arm / "best"
        loaded = load(best, kind="captioner")
        scores = evaluate_dialogue(loaded.model, test, loaded.preprocessing, loaded.tokenizer, audio=loaded.audio,
                                   device=resolve_device("auto"), workers=2)  # fmt: skip
        numbers["by_question"] = scores["by_question"]


def run_minutes(out: Path) -> float:
    """Training wall time of a run (every arm), from its metrics.jsonl timestamps (first step to last line)."""
    times = []
    for log in out.rglob("metrics.jsonl"):
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        times += [r["time"] for r in rows if "time" in r]
    return (max(times) - min(times)) / 60 if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="a stories dataset (default: generate one)")
    parser.add_argument("--caption-data", default=None, help="another stories dataset for captioning (default: --data)")
    parser.add_argument("--epochs", type=int, default=14, help="captioning epochs")
    parser.add_argument("--dialogue-epochs", type=int, default=4)
    parser.add_argument("--dialogues", type=int, default=10, help="dialogues per story of the generated data")
    parser.add_argument("--only", choices=("caption", "dialogue"), default=None,
                        help="train that part only and write nothing (a later --reuse run scores both)")  # fmt: skip
    parser.add_argument("--model", default="micro")
    parser.add_argument("--quick", action="store_true", help="6 short stories, 1 epoch each, test model (smoke run)")
    parser.add_argument("--reuse", action="store_true", help="score the runs already in benchmarks/_work again")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.dialogue_epochs, args.model = 1, 1, "test"
    logging.basicConfig(level=logging.WARNING)
    data = stories_data(args.data, args.quick, args.dialogues)
    cdata = Path(args.caption_data) if args.caption_data else data
    caption_settings = dict(
        task="caption", model=args.model, epochs=args.epochs, size=96, max_long_side=128, sample_fps=4.0,
        clip_seconds=2.0, batch_particles=1024, lr=2e-3, warmup_epochs=1.0, workers=2, crop_scale_min=0.8,
        min_steps_per_epoch=10,
    )  # fmt: skip
    dialogue_settings = dict(
        task="dialogue", model=args.model, epochs=args.dialogue_epochs, size=48, max_long_side=64, sample_fps=0.5,
        clip_seconds=120.0, batch_particles=2048, lr=2e-3, warmup_epochs=1.0, workers=2, ablate=True,
        min_steps_per_epoch=10,
    )  # fmt: skip

    tail = "_quick" if args.quick else ""  # a smoke run leaves the real runs alone
    out, dout = work_dir() / f"caption_run{tail}", work_dir() / f"dialogue_run{tail}"
    if args.only:  # one part's training, alone (two parts can then train side by side)
        chosen, settings, source = (
            (out, caption_settings, cdata) if args.only == "caption" else (dout, dialogue_settings, data)
        )
        shutil.rmtree(chosen, ignore_errors=True)
        finetune(FinetuneConfig(data=str(source), out=str(chosen), seed=0, **settings))
        return
    if not (args.reuse and (out / "best").is_dir()):
        shutil.rmtree(out, ignore_errors=True)
        finetune(FinetuneConfig(data=str(cdata), out=str(out), seed=0, **caption_settings))
    caption_minutes = run_minutes(out)
    loaded = load(out / "best")
    model = evaluate_captions(
        loaded.model, load_captions(caption_manifest(cdata, "test", required=True)), loaded.preprocessing,
        loaded.tokenizer, device=resolve_device("auto"), workers=2,
    )  # fmt: skip
    started = time.perf_counter()
    baseline = nearest_neighbour(out / "best", cdata)
    nn_minutes = (time.perf_counter() - started) / 60
    print(json.dumps({"caption": {k: model[k] for k in ("bleu4", "attribute_match")}, "nearest": baseline}))

    if not (args.reuse and (dout / "report" / "report.json").is_file()):
        shutil.rmtree(dout, ignore_errors=True)
        finetune(FinetuneConfig(data=str(data), out=str(dout), seed=0, **dialogue_settings))
    dialogue_minutes = run_minutes(dout)
    dialogue = json.loads((dout / "report" / "report.json").read_text())
    by_question(dout, data, dialogue)
    print(json.dumps({arm: {k: m[k] for k in ("mrr", "r@1", "answer_match")} for arm, m in dialogue["arms"].items()}))

    def cap_row(name, m):
        per = m["per_attribute"]
        return [name, f"{m['bleu4']:.2f}", f"{m['attribute_match']:.3f}",
                *(f"{per[a]['match']:.3f}" if a in per else "-" for a in ATTRS)]  # fmt: skip

    chance = random_caption(cdata)
    caption_rows = [
        cap_row("caption model (greedy)", model),
        cap_row("nearest train caption", baseline),
        cap_row("a random train caption (expected)", chance),
    ]
    dialogue_rows = []
    for arm, m in dialogue["arms"].items():
        for part, row in (("all", {**m, "turns": m["num_turns"]}), *m["by_needs_history"].items()):
            cells = [f"{row[k]:.3f}" if k in row else "-" for k in ("mrr", "r@1", "r@5", "answer_match")]
            dialogue_rows.append([arm, part.replace("_", " "), row.get("turns", 0), *cells])
    questions = sorted({q for m in dialogue["arms"].values() for q in m["by_question"]})
    question_rows = [
        [q, m["by_question"][q]["turns"], *(f"{dialogue['arms'][a]['by_question'][q][k]:.3f}" for a in dialogue["arms"]
                                             for k in ("mrr", "r@1"))]
        for q in questions for m in [next(iter(dialogue["arms"].values()))]
    ]  # fmt: skip
    candidates = dialogue["by_needs_history"]["needs_history"].get("candidates", float("nan"))
    test_events = model["num_captions"]
    train_events = len(load_captions(caption_manifest(cdata, "train", required=True)).captions)
    body = "\n\n".join(
        [
            f"Data: stories samples, `{cdata.name}` for captions ({train_events} train and {test_events} test "
            f"events), `{data.name}` for dialogue ({dialogue['num_turns']} test turns, about {candidates:.0f} "
            f"candidates each). Model `{args.model}` encoder, a "
            "2-block causal text decoder of its width over its particle features; tokenizer trained on the train "
            "text. See the module docstring for the protocol.",
            f"**Captioning** ({args.epochs} epochs, training {caption_minutes:.1f} min; baseline {nn_minutes:.1f} min) "
            f"Settings `{json.dumps(caption_settings)}`. Test events, centred window; BLEU-4 is sacrebleu's corpus "
            "score (0-100); attribute match counts an attribute right when the caption names its values as the "
            "reference does (same values, same order; a collision names two colours, an entry two directions). The "
            "last row is what a uniformly random training caption scores, averaged exactly over the training captions.",
            table(["captions", "BLEU-4", "attribute match", *ATTRS], caption_rows),
            f"**Dialogue** ({args.dialogue_epochs} epochs, three arms, training {dialogue_minutes:.1f} min). Settings "
            f"`{json.dumps(dialogue_settings)}`. Candidates ranked by mean log-prob per token; answer match is the "
            "greedy answer equal to the true one (case and punctuation aside).",
            table(["arm", "questions", "turns", "MRR", "R@1", "R@5", "answer match"], dialogue_rows),
            "Each question that needs the history, MRR and R@1 of every arm. The follow-ups about colour, direction "
            "and sound are answered by the caption the dialogue's last answer gave (it is in the prompt); a model "
            "blind to the history can only guess among the answers of that type (4 colours, 3 directions, 5 sounds).",
            table(
                ["question", "turns", *(f"{a} {k}" for a in dialogue["arms"] for k in ("MRR", "R@1"))], question_rows
            ),
            machine_markdown(),
        ]
    )
    write_section("caption", body, title="Video to text: captions and dialogue (issue 19)")
    print(body)


if __name__ == "__main__":
    main()
