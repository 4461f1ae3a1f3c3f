"""Audio-visual fusion: does one model over video AND audio particles beat either modality alone?

The AV sample data (`tubelet.data.sample_av.generate_av`) has six classes: two decided by sound only (a still
object with a low or a high tone), two by vision only (left or right motion, both beeping), two by both. Vision
alone can tell at most three motions apart and sound alone three sounds, so either alone should reach about 50%
(each narrows a clip to two classes) and both together about 100%.

Protocol: ``tubelet finetune --modalities video,audio --ablate`` (the task `tubelet.tasks.classification`) trains
three `FusionModel`s with the same data, seed, schedule and particle budget: video only, audio only, both. Each
is scored on the test split (the centred window of each clip). Repeated for each seed.

With ``--label-column sentiment`` the same three arms learn the sample data's made-up affect label instead
(`tubelet.data.sample_av.sentiment`: colour valence plus pitch valence), a second label set over the same clips
that needs both modalities; the section then also gives each modality's best possible accuracy on the test clips
(`sentiment_ceiling`), so an arm can be read against what it could reach at all.

Run: ``python -m benchmarks.bench_fusion [--clips-per-class N] [--epochs E] [--seeds 0 1] [--label-column sentiment]
[--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.common import AV_PREPROCESSING, cached_sample_data, machine_markdown, table, work_dir, write_section
from tubelet.data.sample_av import AV_CLASSES, generate_av, sentiment_ceiling
from tubelet.recipes.finetune import FinetuneConfig, finetune

ARMS = ("video", "audio", "video+audio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--batch-particles", type=int, default=512, help="particle budget per batch (512: ~7 clips, ~12 steps/epoch)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", default="micro")
    parser.add_argument("--label-column", default="label", help="label (the six classes) or sentiment")
    parser.add_argument("--quick", action="store_true", help="5 clips per class, 2 epochs, test model (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.clips_per_class, args.epochs, args.model = 5, 2, "test"
    logging.basicConfig(level=logging.WARNING)
    data = cached_sample_data(work_dir() / "fusion_data", args.clips_per_class, 0, generate_av)
    settings = dict(
        model=args.model,
        epochs=args.epochs,
        **AV_PREPROCESSING,
        batch_particles=args.batch_particles,
        lr=2e-3,
        warmup_epochs=1.0,
        eval_views=1,
        workers=2,
        modalities="video,audio",
        ablate=True,
        label_column=args.label_column,
    )
    results, seconds = {}, {}
    for seed in args.seeds:
        started = time.perf_counter()
        out = work_dir() / f"fusion_run_{args.label_column}_seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        finetune(FinetuneConfig(data=str(data), out=str(out), seed=seed, **settings))
        seconds[seed] = time.perf_counter() - started
        results[seed] = json.loads((out / "report" / "report.json").read_text())["ablation"]
        print(json.dumps({"seed": seed, **{arm: round(results[seed][arm]["accuracy"], 4) for arm in ARMS}}), flush=True)

    counts = _split_counts(data)
    if args.label_column == "sentiment":
        write_section("fusion-sentiment", _sentiment_body(args, data, settings, results, seconds, counts),
                      title="Audio-visual fusion on a second label set: sentiment (issue 7)")  # fmt: skip
        return
    rows = []
    for arm in ARMS:
        accs = [results[s][arm]["accuracy"] for s in args.seeds]
        f1s = [results[s][arm]["macro_f1"] for s in args.seeds]
        rows.append([arm, _mean_sd(accs), _mean_sd(f1s), " / ".join(f"{a:.3f}" for a in accs)])
    class_rows = []
    for label, (motion, sound, decided_by) in AV_CLASSES.items():
        recalls = [np.mean([results[s][arm]["per_class"][label]["recall"] for s in args.seeds]) for arm in ARMS]
        class_rows.append([label, decided_by, motion, sound, *(f"{r:.2f}" for r in recalls)])
    body = "\n\n".join(
        [
            "Six AV classes: two decided by sound alone, two by vision alone, two by both (see "
            "`tubelet.data.sample_av`). Three `FusionModel`s trained by one `tubelet finetune --modalities "
            "video,audio --ablate` run per seed, with the same data, seed, schedule and particle budget; "
            "scored on the test split (the centred window of each clip). Expected by construction: each modality "
            "alone about 50%, both about 100%.",
            f"Data: `generate_av(clips_per_class={args.clips_per_class}, seed=0)`: {counts}. Model `{args.model}`, "
            f"{args.epochs} epochs, seeds {args.seeds}; settings `{json.dumps(settings)}`; wall time per seed "
            + ", ".join(f"{s}: {t / 60:.1f} min" for s, t in seconds.items())
            + " (all three arms).",
            table(["arm", "test accuracy (mean ± sd)", "macro F1", "per seed"], rows),
            "Per-class test recall (mean over seeds): sound-decided classes should fail for video only, "
            "vision-decided ones for audio only.",
            table(["class", "decided by", "motion", "sound", *ARMS], class_rows),
            machine_markdown(),
        ]
    )
    write_section("fusion", body, title="Audio-visual fusion vs each modality alone (issue 7)")
    print(body)


def _sentiment_body(args, data: Path, settings: dict, results: dict, seconds: dict, counts: str) -> str:
    """The sentiment section: the three arms beside the best accuracy each modality alone could reach."""
    metadata = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    ceiling = sentiment_ceiling([r for r in metadata if r["split"] == "test"])
    ceiling["video+audio"] = 1.0
    rows = []
    for arm in ARMS:
        accs = [results[s][arm]["accuracy"] for s in args.seeds]
        f1s = [results[s][arm]["macro_f1"] for s in args.seeds]
        rows.append([arm, _mean_sd(accs), _mean_sd(f1s), " / ".join(f"{a:.3f}" for a in accs), f"{ceiling[arm]:.3f}"])
    labels = sorted(results[args.seeds[0]][ARMS[0]]["per_class"])
    recall = {
        (label, arm): np.mean([results[s][arm]["per_class"][label]["recall"] for s in args.seeds])
        for label in labels
        for arm in ARMS
    }
    class_rows = [[label, *(f"{recall[label, arm]:.2f}" for arm in ARMS)] for label in labels]
    return "\n\n".join(
        [
            "The same clips and the same three arms as above, trained on `--label-column sentiment`: a made-up affect "
            "label (`tubelet.data.sample_av.sentiment`): warm colours and a high tone push it positive, cool colours "
            "and a low tone negative, the beep is neutral; the sign of the sum is the label. Colour is seen and pitch "
            "heard, so neither modality alone decides it. The ceiling column is the best accuracy any model reading "
            "that modality alone could reach on these test clips (`sentiment_ceiling`: the majority sentiment of each "
            "group of test clips that look, or sound, the same); both together decide every clip.",
            f"Data: `generate_av(clips_per_class={args.clips_per_class}, seed=0)`: {counts}. Model `{args.model}`, "
            f"{args.epochs} epochs, seeds {args.seeds}; settings `{json.dumps(settings)}`; wall time per seed "
            + ", ".join(f"{s}: {t / 60:.1f} min" for s, t in seconds.items())
            + " (all three arms).",
            table(["arm", "test accuracy (mean ± sd)", "macro F1", "per seed", "ceiling"], rows),
            "Per-sentiment test recall (mean over seeds):",
            table(["sentiment", *ARMS], class_rows),
            machine_markdown(),
        ]
    )


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _split_counts(data: Path) -> str:
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    return (
        ", ".join(f"{split} {sum(r['split'] == split for r in rows)}" for split in ("train", "val", "test")) + " clips"
    )


if __name__ == "__main__":
    main()
