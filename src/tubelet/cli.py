"""``tubelet <command>``: a thin table of commands. Each parses its flags and calls one recipe; no logic here.

Bad input ends in one line on stderr naming the file or flag, and exit status 2; never a traceback. An output
that cannot be written (a read-only folder, a full disk) is bad input too. Output piped into a reader that stops
early (``tubelet probe X --json | head -c 10``) ends quietly with status 141, as a Unix tool killed by SIGPIPE does,
so ``set -o pipefail`` still sees that the output was cut.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable

from tubelet import __version__
from tubelet.defaults import DEFAULT_PRUNE_REFERENCE, DEFAULT_PRUNE_THRESHOLD, PRUNE_REFERENCES
from tubelet.errors import TubeletError
from tubelet.outputs import writable_dir


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def tubelet_size(text: str) -> tuple[int, int, int]:
    """Parse ``2x16x16`` (frames x rows x columns) for --tubelet."""
    try:
        parts = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH like 2x16x16, got {text!r}")
    return parts


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _print(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}")


# --- commands: each is (add_arguments, run) -------------------------------------------------------------


def _probe_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("file", help="video file (mp4, mkv, webm, avi, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _probe_run(args) -> None:
    from tubelet.recipes.describe import probe_report

    _print(probe_report(args.file), args.json)


def _tokenize_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("file", help="video file")
    p.add_argument("--tubelet", type=tubelet_size, default=(2, 16, 16), help="FRAMESxHEIGHTxWIDTH (default 2x16x16)")
    p.add_argument("--fps", type=positive_float, default=None, help="resample by time to this frame rate first")
    p.add_argument(
        "--prune-threshold",
        type=non_negative_float,
        default=DEFAULT_PRUNE_THRESHOLD,
        metavar="LEVELS",
        help=f"drop tubelets that differ from their reference (--prune-reference) by less than this many 0-255 "
        f"levels (default {DEFAULT_PRUNE_THRESHOLD:g}; 0 keeps all)",
    )
    p.add_argument(
        "--prune-reference",
        choices=PRUNE_REFERENCES,
        default=DEFAULT_PRUNE_REFERENCE,
        help="compare each tubelet with the previous one at its place, or with the anchor: the kept particle "
        f"that opened its run, so a slow pan's drift adds up (default {DEFAULT_PRUNE_REFERENCE})",
    )
    p.add_argument("--start", type=non_negative_float, default=None, help="window start, seconds")
    p.add_argument("--end", type=positive_float, default=None, help="window end, seconds")
    p.add_argument("--size", type=int, default=None, help="scale the short side to this many pixels first")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _tokenize_run(args) -> None:
    from tubelet.recipes.describe import tokenize_report

    report = tokenize_report(
        args.file,
        tubelet=args.tubelet,
        fps=args.fps,
        prune_threshold=args.prune_threshold,
        prune_reference=args.prune_reference,
        start=args.start,
        end=args.end,
        size=args.size,
    )
    _print(report, args.json)


def _sample_data_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed (same seed, same files; default 0)")
    p.add_argument("--clips-per-class", type=int, default=12, help="clips per class (at least 3; default 12)")
    p.add_argument("--workers", type=int, default=2, help="encoding processes (default 2)")
    p.add_argument(
        "--multimodal",
        action="store_true",
        help="write the audio-visual dataset instead: soundtracks, captions, question/answer pairs, and classes "
        "decided by sound, by vision or by both",
    )
    p.add_argument(
        "--surveillance",
        action="store_true",
        help="write the surveillance sample instead: long fixed-camera streams (320x240, 15 fps) with planted "
        "anomalies of known seconds (anomalies.csv) and short clips labelled normal or an anomaly kind",
    )
    p.add_argument(
        "--video2video",
        action="store_true",
        help="write the video-to-video sample instead: 3 s camera pans and zooms over photographs with a moving object "
        "at 24/30/60 fps and 320x240/256x256, clips with a hard cut, train and test on different photographs",
    )
    p.add_argument(
        "--stories",
        type=int,
        nargs="?",
        const=38,
        default=None,
        metavar="N",
        help="write the stories sample instead: N (default 38: 24 train, 6 val, 8 test) videos of 30-50 s with timed "
        "events, shots and sounds, and captions, per-second importance from several annotators, and dialogues",
    )
    p.add_argument(
        "--story-seconds", type=float, default=40.0, help="--stories: mean seconds per story (0.75-1.25x; default 40)"
    )
    p.add_argument(
        "--dialogues", type=int, default=2,
        help="--stories: dialogues per story (default 2: the events walked forward and backward; more start at a "
        "random event)",
    )  # fmt: skip
    p.add_argument(
        "--vitals",
        action="store_true",
        help="write the vital-signs sample instead: 20 s videos of a face and shoulders from a real photograph with a "
        "pulse (45-150 bpm) in the skin's colour and breathing (8-30/min) in the shoulders, head motion, lighting "
        "drift, noise and H.264 at 3 levels; truth per second (truth.csv), train and test splits",
    )
    p.add_argument(
        "--falls",
        action="store_true",
        help="write the falls sample instead: 2-4 s clips of a person who walks, sits down, bends over or falls "
        "(class folders walk/sit/bend/fall) and long streams with falls at known seconds (falls.csv)",
    )
    p.add_argument(
        "--streams", type=int, default=None, help="--surveillance/--falls: long streams to write (default 4 / 3)"
    )
    p.add_argument(
        "--stream-seconds", type=float, default=None,
        help="--surveillance/--falls: seconds per stream (default 90 / 75)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _sample_data_run(args) -> None:
    from tubelet.data.sample import generate
    from tubelet.data.sample_av import generate_av

    if args.clips_per_class < 3:
        raise TubeletError(f"--clips-per-class must be at least 3 (one per split), got {args.clips_per_class}")
    datasets = ("video2video", "surveillance", "falls", "vitals", "stories", "multimodal")
    chosen = [flag for flag in datasets if getattr(args, flag) not in (None, False)]
    if len(chosen) > 1:
        raise TubeletError(f"{', '.join('--' + f for f in chosen)} write different datasets; choose one")
    if args.streams is not None and args.streams < 0:
        raise TubeletError(f"--streams must not be negative, got {args.streams}")
    writable_dir(args.out, "out")
    if args.stories is not None:
        from tubelet.data.sample_stories import generate_stories

        if args.stories < 3 or args.story_seconds < 8:
            raise TubeletError(
                f"--stories must be at least 3 (one per split) and --story-seconds at least 8, got {args.stories} and "
                f"{args.story_seconds:g}"
            )
        if args.dialogues < 2:
            raise TubeletError(f"--dialogues must be at least 2 (the forward and backward walks), got {args.dialogues}")
        summary = generate_stories(
            args.out, seed=args.seed, stories=args.stories, story_seconds=args.story_seconds,
            dialogues=args.dialogues, workers=args.workers,
        )  # fmt: skip
        _print(summary, args.json)
        return
    if args.vitals:  # faces with a pulse and breathing, and the fall clips and streams beside them (OUT/falls)
        from tubelet.data.sample_falls import generate_falls
        from tubelet.data.sample_vitals import generate_vitals

        summary = generate_vitals(args.out, seed=args.seed, workers=args.workers)
        summary["falls"] = generate_falls(
            os.path.join(args.out, "falls"), seed=args.seed, clips_per_class=args.clips_per_class,
            streams=3 if args.streams is None else args.streams, stream_seconds=args.stream_seconds or 75.0,
            workers=args.workers,
        )  # fmt: skip
        _print(summary, args.json)
        return
    if args.video2video:
        from tubelet.data.sample_v2v import generate_v2v

        _print(generate_v2v(args.out, seed=args.seed, workers=args.workers), args.json)
        return
    if args.falls:
        from tubelet.data.sample_falls import generate_falls

        streams, seconds = 3 if args.streams is None else args.streams, args.stream_seconds or 75.0
        if streams and seconds < 30:
            raise TubeletError(f"--stream-seconds must be at least 30 (a fall, lying and getting up), got {seconds:g}")
        summary = generate_falls(
            args.out, seed=args.seed, clips_per_class=args.clips_per_class, streams=streams, stream_seconds=seconds,
            workers=args.workers,
        )  # fmt: skip
        _print(summary, args.json)
        return
    if args.surveillance:
        from tubelet.data.sample_surveillance import CALIBRATION_S, generate_surveillance

        args.streams = 4 if args.streams is None else args.streams
        args.stream_seconds = args.stream_seconds or 90.0
        if args.streams and args.stream_seconds <= CALIBRATION_S + 20:
            raise TubeletError(
                f"--stream-seconds must exceed {CALIBRATION_S + 20:g} (a normal calibration period, then an "
                f"anomaly), got {args.stream_seconds:g}"
            )
        summary = generate_surveillance(
            args.out, seed=args.seed, streams=args.streams, stream_seconds=args.stream_seconds,
            clips_per_class=args.clips_per_class, workers=args.workers,
        )  # fmt: skip
        _print(summary, args.json)
        return
    write = generate_av if args.multimodal else generate
    _print(write(args.out, seed=args.seed, clips_per_class=args.clips_per_class, workers=args.workers), args.json)


def _scan_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("data", help="class-folder directory, a directory with split manifests, or a CSV/JSONL manifest")
    p.add_argument("--split", default=None, help="split to read (train, val, test); default everything")
    p.add_argument(
        "--index",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="write or refresh the probe index (SQLite) that training and evaluation then read instead of probing "
        "every file; default path beside the manifest (train.csv.probe.sqlite) or DIR/.tubelet-probe.sqlite",
    )
    p.add_argument("--workers", type=positive_int, default=4, help="threads probing files in parallel (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _scan_run(args) -> None:
    from tubelet.recipes.describe import scan_report

    index = True if args.index == "" else args.index  # bare --index: the default path
    _print(scan_report(args.data, split=args.split, index=index, workers=args.workers), args.json)


def _config_flags(p: argparse.ArgumentParser, cls, *, hidden=()) -> None:
    """One --flag per field of a config dataclass, typed, with the field's documentation as its help.

    Flags default to None so that a YAML file (--config) and key=value overrides are only replaced by
    flags the user actually typed. `hidden` config classes (other tasks') get hidden flags, so that typing one
    is an error naming the field and the task rather than an unknown flag.
    """
    import dataclasses
    import typing

    from tubelet.typed import field_help

    seen = set()
    for config, show in ((cls, True), *((h, False) for h in hidden)):
        hints = typing.get_type_hints(config)
        helps = field_help(config)
        for f in dataclasses.fields(config):
            if f.name in seen:
                continue
            seen.add(f.name)
            flag = "--" + f.name.replace("_", "-")
            shown = f.default if not isinstance(f.default, tuple) else "x".join(map(str, f.default))
            given = "required" if f.default == "" else f"default: {shown}"  # an empty default must be given
            text = f"{helps.get(f.name, '')} ({given})" if show else argparse.SUPPRESS
            if hints[f.name] is bool:
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                p.add_argument(flag, type=str, default=None, metavar=f.name.upper(), help=text)
    p.add_argument("--config", default=None, metavar="YAML", help="read fields from a YAML file first")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="field overrides applied after --config")


def _config_from_args(cls, args):
    """The run config from --config, key=value overrides and the flags typed; a field that is not `cls`'s (another
    task's) is a ConfigError naming it and the task."""
    import dataclasses

    from tubelet.train.config import load_config

    known = {f.name for f in dataclasses.fields(cls)}
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in _NOT_FIELDS}
    stray = sorted(set(flags) - known)
    if stray:
        task = getattr(cls, "task_name", "")
        raise TubeletError(
            f"--{stray[0].replace('_', '-')}: not a field of task {task} (see tubelet finetune --task {task} --help)"
        )
    return load_config(cls, path=args.config, overrides=args.overrides, flags=flags)


# argparse attributes that are not config fields.
_NOT_FIELDS = ("config", "overrides", "command", "run", "verbose")


def _chosen_task(argv: list[str]) -> str:
    """The task a finetune command line asks for, by the precedence of config fields: ``--task X`` (or
    ``--task=X``) over a ``task=X`` override over the ``task`` of its ``--config`` YAML file; else classification."""
    import yaml

    flag = override = from_file = None
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            flag = argv[i + 1]
        elif arg.startswith("--task="):
            flag = arg.split("=", 1)[1]
        elif arg.startswith("task="):
            override = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            try:
                loaded = yaml.safe_load(open(argv[i + 1])) or {}
                from_file = loaded.get("task") if isinstance(loaded, dict) else None
            except (OSError, yaml.YAMLError):
                pass  # load_config reports a missing or broken file, naming it
    return flag or override or from_file or "classification"


def _finetune_args(p: argparse.ArgumentParser, argv: list[str], *, config=None) -> None:
    from tubelet.tasks.base import get_task, task_names
    from tubelet.train.config import run_config

    try:
        task = get_task(_chosen_task(argv)).name
    except TubeletError as exc:
        p.error(str(exc))
    if not get_task(task).supervised:
        p.error(f"--task {task}: it learns from unlabeled video; run it with tubelet pretrain")
    supervised = [name for name in task_names() if get_task(name).supervised]
    others = [get_task(name).Config for name in supervised if name != task]
    p.description = f"{p.description}\n\nTask {task}: {get_task(task).summary}; other tasks: --task " + ", ".join(
        n for n in supervised if n != task
    )
    _config_flags(p, (config or run_config)(task), hidden=others)


# What a linear probe changes of finetune's defaults: the encoder frozen, and a run directory of its own.
PROBE_DEFAULTS = {"freeze": "backbone", "out": "runs/probe-linear"}


def _probe_config(task: str):
    """finetune's config class of `task` with `PROBE_DEFAULTS` (so --help and an omitted flag both mean them)."""
    import dataclasses

    from tubelet.train.config import run_config

    base = run_config(task)
    fields = {f.name: f for f in dataclasses.fields(base)}
    changed = [
        (name, fields[name].type, dataclasses.field(default=value, metadata=fields[name].metadata))
        for name, value in PROBE_DEFAULTS.items()
    ]
    return dataclasses.make_dataclass(base.__name__, changed, bases=(base,), frozen=True)


def _probe_linear_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    _finetune_args(p, argv, config=_probe_config)


def _finetune_run(args) -> None:
    from tubelet.recipes.finetune import finetune
    from tubelet.train.config import run_config

    cfg = _config_from_args(run_config(args.task or _task_of_yaml(args)), args)
    _print_summary(finetune(cfg))


def _task_of_yaml(args) -> str:
    return _chosen_task([*(["--config", args.config] if args.config else []), *args.overrides])


def _probe_linear_run(args) -> None:
    """A linear probe is fine-tuning with the encoder frozen: only the head (and attention pooling) learn."""
    from tubelet.recipes.finetune import finetune

    cfg = _config_from_args(_probe_config(args.task or _task_of_yaml(args)), args)
    if cfg.freeze != "backbone":
        raise TubeletError(f"--freeze {cfg.freeze}: probe-linear trains the head only; use finetune to unfreeze blocks")
    _print_summary(finetune(cfg))


def _pretrain_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from tubelet.recipes.pretrain import PretrainConfig

    _config_flags(p, PretrainConfig)


def _pretrain_run(args) -> None:
    from tubelet.recipes.pretrain import PretrainConfig, pretrain

    cfg = _config_from_args(PretrainConfig, args)
    _print_summary(pretrain(cfg))


def _print_summary(summary: dict) -> None:
    """A training run's summary on stdout, once: by rank 0 under torchrun."""
    from tubelet.distributed import main_process

    if main_process():
        print(json.dumps(summary))


def _tasks_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per task")


def _tasks_run(args) -> None:
    from tubelet.recipes.describe import task_table

    for row in task_table():
        if args.json:
            print(json.dumps(row))
            continue
        metrics = ", ".join(f"{m} ({'higher' if up else 'lower'} is better)" for m, up in row["metrics"].items())
        fields = ", ".join(row["fields"]) or "none"
        print(f"{row['name']:<16} {row['summary']}\n{'':<16} metrics: {metrics}; own fields: {fields}")


def _inference_flags(p: argparse.ArgumentParser) -> None:
    """Flags every command that runs a model shares (with the defaults training has)."""
    p.add_argument("--batch-particles", type=int, default=8192, help="particle budget per batch (default 8192)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2; 0 decodes in this process)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")


def _evaluate_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint directory (e.g. RUN/best): classifier, retrieval, VQA"
    )
    p.add_argument(
        "--data",
        required=True,
        help="class folders, a folder with split manifests (captions for retrieval, qa_SPLIT.csv for VQA), "
        "or one manifest",
    )
    p.add_argument(
        "--split",
        default="test",
        help="split to evaluate (default test; all = every class folder; class folders without splits: all clips)",
    )
    p.add_argument("--out", required=True, help="directory for report.json, report.md (classifiers: confusion matrix)")
    p.add_argument("--baseline", default=None, metavar="CKPT2", help="compare with this checkpoint (classifier or VQA)")
    p.add_argument("--views", type=int, default=3, help="windows averaged per video (default 3)")
    p.add_argument("--sample-fps", type=positive_float, default=None, help="override the checkpoint's sampling rate")
    p.add_argument("--clip-seconds", type=positive_float, default=None, help="override the checkpoint's window")
    _inference_flags(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _evaluate_run(args) -> None:
    from tubelet.recipes.evaluate import evaluate

    report = evaluate(
        args.checkpoint,
        args.data,
        out=args.out,
        split=args.split,
        baseline=args.baseline,
        views=args.views,
        batch_particles=args.batch_particles,
        workers=args.workers,
        device=args.device,
        sample_fps=args.sample_fps,
        clip_seconds=args.clip_seconds,
    )
    if args.json:
        print(json.dumps(report))
        return
    from tubelet.tasks.base import get_task

    print(get_task(report["details"]["task"]).summary_line(report))
    print(f"report: {report['files']['markdown']}")


def _predict_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint directory (video, fusion or VQA), or a tubelet export directory"
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="videos, or directories of videos")
    p.add_argument(
        "--question", action="append", dest="questions", default=None, metavar="TEXT",
        help="question for a VQA checkpoint (required by one); repeat it to answer every file for each",
    )  # fmt: skip
    p.add_argument("--window-seconds", type=positive_float, default=None, help="window length (default: training's)")
    p.add_argument(
        "--stride-seconds", type=positive_float, default=None, help="step between windows (default: the window length)"
    )
    p.add_argument("--topk", type=positive_int, default=5, help="classes listed per file")
    p.add_argument("--plot", default=None, metavar="DIR", help="write a timeline PNG per file into DIR")
    _inference_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line (default: a readable line)")


def _predict_run(args) -> None:
    from tubelet.recipes.predict import predict

    failures = 0
    for result in predict(
        args.checkpoint,
        args.inputs,
        questions=args.questions,
        window_seconds=args.window_seconds,
        stride_seconds=args.stride_seconds,
        topk=args.topk,
        batch_particles=args.batch_particles,
        workers=args.workers,
        device=args.device,
        plot_dir=args.plot,
    ):
        failures += "error" in result
        if args.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{result['path']}: error: {result['error']}", flush=True)
        else:
            windows = f"  ({len(result['windows'])} windows)" if "windows" in result else ""
            asked = f" {result['question']!r} ->" if "question" in result else ""
            said = f"{result['label']} {result['score']:.3f}" if "label" in result else json.dumps(result.get("value"))
            if "near_chance" in result:
                said += f" (near chance: {result['near_chance']:.2f} for any class)"
            print(f"{result['path']}:{asked} {said}{windows}", flush=True)
    if failures:
        raise TubeletError(f"{failures} file(s) could not be read (see above)")


def _explain_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from tubelet.explain.methods import METHODS

    p.add_argument("--checkpoint", required=True, help="checkpoint directory: video, fusion or VQA (RUN/best)")
    p.add_argument("file", metavar="FILE", help="the video to explain")
    p.add_argument("--question", default=None, metavar="TEXT", help="question for a VQA checkpoint (required by one)")
    p.add_argument("--method", default="occlusion", choices=METHODS, help="attribution method (default occlusion)")
    p.add_argument(
        "--target", default=None, metavar="LABEL", help="class (VQA: answer) to explain (default: the predicted one)"
    )
    p.add_argument("--out", required=True, help="directory for report.html, heatmap.mp4/.gif, timeline.png, CSV")
    p.add_argument("--start", type=non_negative_float, default=None, help="window start in seconds (default: centred)")
    p.add_argument("--seconds", type=positive_float, default=None, help="window length (default: training's)")
    p.add_argument("--topk", type=positive_int, default=10, help="top particles listed (default 10)")
    p.add_argument(
        "--occlusion-window", type=tubelet_size, default=(1, 1, 1), metavar="TxHxW",
        help="tubelets removed together by occlusion: time x rows x cols (default 1x1x1); for audio particles "
        "time patches x mel bands x 1, for a question's tokens tokens x 1 x 1",
    )  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=32, help="integrated-gradients steps (default 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="print explanation.json")


def _explain_run(args) -> None:
    from tubelet.recipes.explain import explain

    result = explain(
        args.checkpoint,
        args.file,
        out=args.out,
        method=args.method,
        target=args.target,
        question=args.question,
        start=args.start,
        seconds=args.seconds,
        topk=args.topk,
        window=args.occlusion_window,
        steps=args.steps,
        device=args.device,
    )
    if args.json:
        print(json.dumps(result))
        return
    window = result["window"]
    print(
        f"{result['path']} [{window['start']:.2f}-{window['end']:.2f} s]: predicted {result['prediction']['label']} "
        f"{result['prediction']['score']:.3f}; explaining {result['target']} with {result['method']}"
    )
    if "tokens" in result:
        said = " ".join(f"{t['token']}({t['score']:+.3g})" for t in result["tokens"])
        print(f"  question {result['question']!r}: {said}")
    if "modality_share" in result:
        shares = ", ".join(f"{name} {share:.2f}" for name, share in result["modality_share"].items())
        print(f"  share of the positive evidence: {shares}")
    for rank, row in enumerate(result["top_particles"][:5], start=1):
        if row.get("modality") == "text":
            where = f"token {row.get('token', row['ti'])!r}"
        elif row.get("modality") == "audio":
            where = f"mel band {row['row']}"
        else:
            where = f"row {row['row']} col {row['col']}"
        print(f"  #{rank} t={row['t']:.2f}s {where} score {row['score']:.4g}")
    print(f"report: {result['files'].get('html', result['files']['particles'])}")


def _tokenizer_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    from tubelet.data.text import DEFAULT_VOCAB_SIZE

    p.add_argument("--data", required=True, help="a folder with split manifests (CSV/JSONL), or one manifest")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/tokenizer.json (finetune --tokenizer DIR)")
    p.add_argument("--split", default="train", help="split whose text is read (default train)")
    p.add_argument(
        "--column",
        default="caption",
        help="caption (default) or another column of the video manifests, as finetune --task retrieval reads it; "
        "question: the questions of qa_{split}.csv, as finetune --task vqa reads them",
    )
    vocab = DEFAULT_VOCAB_SIZE
    p.add_argument("--vocab-size", type=positive_int, default=vocab, help=f"most tokens (default {vocab})")
    p.add_argument("--min-frequency", type=positive_int, default=1, help="fewest sightings of a merged piece (1)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _tokenizer_run(args) -> None:
    from tubelet.recipes.tokenizer import tokenizer_from_data

    summary = tokenizer_from_data(
        args.data,
        args.out,
        split=args.split,
        column=args.column,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
    )
    _print(summary, args.json)


def _index_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, help="retrieval checkpoint (tubelet finetune --task retrieval)")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="videos, or directories of videos")
    p.add_argument("--out", required=True, metavar="INDEX", help="index directory to write")
    p.add_argument("--window-seconds", type=positive_float, default=None, help="window length (default: training's)")
    p.add_argument("--stride-seconds", type=positive_float, default=None, help="step between windows (default: half)")
    _inference_flags(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _index_run(args) -> None:
    from tubelet.recipes.search import build_index

    summary = build_index(
        args.checkpoint,
        args.inputs,
        args.out,
        window_seconds=args.window_seconds,
        stride_seconds=args.stride_seconds,
        batch_particles=args.batch_particles,
        workers=args.workers,
        device=args.device,
    )
    if args.json:
        print(json.dumps(summary))
        return
    for row in summary["skipped"]:
        print(f"{row['path']}: skipped: {row['reason']}")
    print(f"indexed {summary['windows']} windows of {summary['files']} files into {summary['index']}")


def _search_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("index", help="index directory (tubelet index)")
    p.add_argument("query", help='text query, e.g. "a red ball moves left"')
    p.add_argument("--topk", type=positive_int, default=10, help="windows listed (default 10)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="one JSON object per result line")


def _search_run(args) -> None:
    from tubelet.recipes.search import search

    for row in search(args.index, args.query, topk=args.topk, device=args.device):
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['path']} {row['start']:.2f}-{row['end']:.2f} {row['score']:.4f}")


def _serve_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint (or export) directory to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key-file", default=None, metavar="F", help="file holding the key /v1/* calls must bring")
    p.add_argument("--max-upload-mb", type=positive_float, default=200.0, help="largest upload, MiB (default 200)")
    p.add_argument("--max-seconds", type=positive_float, default=600.0, help="longest video, seconds (default 600)")
    p.add_argument("--index", default=None, metavar="INDEX", help="index directory (tubelet index) for /v1/search")
    p.add_argument(
        "--max-batch-ms", type=non_negative_float, default=5.0,
        help="wait this long for concurrent requests to share a forward (default 5; 0 turns micro-batching off)",
    )  # fmt: skip
    p.add_argument("--queue", type=positive_int, default=64, help="requests that may wait; more get 429 (default 64)")
    p.add_argument("--batch-particles", type=positive_int, default=8192, help="particle budget per forward (8192)")
    p.add_argument("--no-watch", action="store_true", help="do not reload when the checkpoint's files change")
    p.add_argument(
        "--decode-workers", type=non_negative_int, default=2,
        help="processes that probe and decode uploads, so a decoder crash costs one request (default 2; 0: none)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")


def _serve_run(args) -> None:
    from tubelet.serve import ServeConfig
    from tubelet.serve.limits import read_key
    from tubelet.serve.server import serve

    config = ServeConfig(
        checkpoint=args.checkpoint,
        api_key=read_key(args.api_key_file) if args.api_key_file else None,
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
        index=args.index,
        max_batch_ms=args.max_batch_ms,
        queue=args.queue,
        batch_particles=args.batch_particles,
        device=args.device,
        watch=not args.no_watch,
        decode_workers=args.decode_workers,
    )
    serve(config, host=args.host, port=args.port)


def _export_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, help="a video classifier checkpoint directory (e.g. RUN/best)")
    p.add_argument("--out", required=True, help="export directory: model.onnx, config.json, export_report.json")
    p.add_argument("--format", default="onnx", help="onnx (default); torch is not supported yet")
    p.add_argument(
        "--check", nargs="+", default=None, metavar="FILE",
        help="videos the parity check decodes (default: two generated clips, a pan and a fixed camera)",
    )  # fmt: skip
    p.add_argument(
        "--tolerance", type=float, default=1e-3, help="largest |logit difference| against PyTorch (default 1e-3)"
    )
    p.add_argument("--json", action="store_true", help="print export_report.json's content as one JSON object")


def _export_run(args) -> None:
    from tubelet.recipes.export import export

    report = export(args.checkpoint, args.out, format=args.format, check=args.check, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(report))
        return
    counts = report["particles"]
    print(
        f"exported {report['written'][0]} (opset {report['opset']}): max |logit difference| "
        f"{report['max_abs_diff']:.2g}, top-1 agreement {report['top1_agreement']:.2f} over {len(counts)} batches "
        f"of {min(counts)}-{max(counts)} particles"
    )


def _live_source_args(p: argparse.ArgumentParser) -> None:
    """The flags of a command that reads a live source (watch, vitals)."""
    p.add_argument("--realtime", action="store_true", help="read a file at its own speed, as a camera delivers it")
    p.add_argument(
        "--reconnect-tries", type=non_negative_int, default=None, metavar="N",
        help="a dropped stream counts as ended after N failed reopenings in a row (default: keep trying)",
    )  # fmt: skip


def _watch_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument(
        "source", metavar="SOURCE",
        help="a video file, a folder (its videos, then each new one), rtsp:// or http(s):// stream, or /dev/videoN",
    )  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="a classifier (for --alert) or any video encoder (--anomaly)")
    p.add_argument("--out", required=True, help="folder for events.sqlite and the event clips (out/clips)")
    p.add_argument(
        "--alert", action="append", dest="alerts", default=None, metavar="LABEL[:MIN_SCORE]",
        help="raise an event while the checkpoint predicts LABEL with at least MIN_SCORE (default 0.5); repeatable",
    )  # fmt: skip
    p.add_argument("--anomaly", action="store_true", help="raise events on windows unlike the calibration windows")
    p.add_argument(
        "--calibrate-seconds", type=positive_float, default=30.0, help="stream seconds that define normal (default 30)"
    )
    p.add_argument("--calibration", default=None, metavar="FILE", help="a video of normal scenes to calibrate on")
    p.add_argument(
        "--percentile", type=positive_float, default=99.0,
        help="anomaly threshold: this percentile of the calibration scores (default 99)",
    )  # fmt: skip
    p.add_argument("--window-seconds", type=positive_float, default=None, help="window length (default: training's)")
    p.add_argument("--stride-seconds", type=positive_float, default=None, help="step between windows (default: window)")
    p.add_argument(
        "--cooldown-seconds", type=non_negative_float, default=2.0,
        help="an event ends once its score stayed below the threshold this long (default 2)",
    )  # fmt: skip
    p.add_argument("--pre-roll", type=non_negative_float, default=2.0, help="seconds of clip before an event (2)")
    p.add_argument("--post-roll", type=non_negative_float, default=2.0, help="seconds of clip after an event (2)")
    p.add_argument("--webhook", default=None, metavar="URL", help="POST each event as JSON when it starts and ends")
    _live_source_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="events and the summary as JSON lines")


def _watch_run(args) -> None:
    from tubelet.recipes.watch import watch

    summary = watch(
        args.source, checkpoint=args.checkpoint, out=args.out, alerts=args.alerts, anomaly=args.anomaly,
        calibrate_seconds=args.calibrate_seconds, calibration=args.calibration, percentile=args.percentile,
        window_seconds=args.window_seconds, stride_seconds=args.stride_seconds, cooldown_seconds=args.cooldown_seconds,
        pre_roll=args.pre_roll, post_roll=args.post_roll, webhook=args.webhook, realtime=args.realtime,
        reconnect_tries=args.reconnect_tries, device=args.device, json_lines=args.json,
    )  # fmt: skip
    if args.json:
        print(json.dumps(summary))
        return
    cost = summary["cost_per_minute"]
    print(
        f"{summary['windows']} windows, {summary['events']} events ({summary['gaps']} gaps) over "
        f"{summary['stream_seconds']:.1f} s of stream; real-time factor {summary['realtime_factor']}; "
        f"{summary['mean_particles']} particles kept per window; processing seconds per stream minute: idle "
        f"{cost['idle']['seconds_per_minute']}, busy {cost['busy']['seconds_per_minute']}; "
        f"database {summary['database']}"
    )


def _video_in_out(file: str, out: str) -> None:
    """A readable input video and an output path whose folder can be written, checked before any work."""
    from pathlib import Path

    if not Path(file).is_file():
        raise TubeletError(f"FILE {file}: no such file")
    if Path(out).is_dir():
        raise TubeletError(f"--out {out}: is a directory; name the output video, e.g. {Path(out) / 'out.mp4'}")
    writable_dir(Path(out).parent, "--out")


def _interpolate_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("file", help="video file")
    p.add_argument("--fps", type=positive_float, required=True, help="output frame rate: frame i at i / FPS seconds")
    p.add_argument("--out", required=True, help="output video (.mp4, .mkv, ...)")
    p.add_argument(
        "--method", choices=("repeat", "blend", "flow"), default="flow",
        help="classical baseline: nearest frame, cross-fade, or DIS optical-flow warping (default flow)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint", default=None,
        help="an interpolation model (tubelet finetune --task interpolation): makes the frames instead of --method",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="where the model runs: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _interpolate_run(args) -> None:
    from tubelet.recipes.interpolate import interpolate_video

    _video_in_out(args.file, args.out)
    summary = interpolate_video(
        args.file, fps=args.fps, out=args.out, method=args.method, checkpoint=args.checkpoint, device=args.device
    )
    _print(summary, args.json)


def _denoise_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("file", help="video file")
    p.add_argument("--out", required=True, help="output video (.mp4, .mkv, ...); keeps the source's frame times")
    p.add_argument(
        "--method", choices=("median", "nlm"), default="nlm",
        help="classical baseline: temporal median, or OpenCV's multi-frame non-local means (default nlm)",
    )  # fmt: skip
    p.add_argument("--window", type=positive_int, default=5, help="frames each output frame reads, odd (default 5)")
    p.add_argument("--sigma", type=positive_float, default=25.0, help="noise level in 0-255 levels, for nlm (25)")
    p.add_argument(
        "--checkpoint", default=None,
        help="a denoise model (tubelet finetune --task denoise): restores the frames instead of --method",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="where the model runs: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _denoise_run(args) -> None:
    from tubelet.recipes.denoise import denoise_video

    _video_in_out(args.file, args.out)
    summary = denoise_video(
        args.file, out=args.out, method=args.method, window=args.window, sigma=args.sigma, checkpoint=args.checkpoint,
        device=args.device,
    )  # fmt: skip
    _print(summary, args.json)


def _summarize_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("file", help="video file")
    p.add_argument(
        "--checkpoint", required=True,
        help="an importance checkpoint (learned importance) or any video encoder (unsupervised: novelty + motion)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output folder: summary.mp4, summary.json, summary.md, importance.png")
    p.add_argument("--ratio", type=float, default=0.15, help="the summary's share of the length, in (0, 1] (0.15)")
    p.add_argument("--captioner", default=None, help="a caption checkpoint for the segments' captions (summary.md)")
    p.add_argument("--max-segment", type=positive_float, default=2.0, help="longest segment in seconds (default 2)")
    p.add_argument("--batch-particles", type=positive_int, default=8192, help="particle budget per forward (8192)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _summarize_run(args) -> None:
    from pathlib import Path

    from tubelet.recipes.summarize import summarize

    if not Path(args.file).is_file():
        raise TubeletError(f"FILE {args.file}: no such file")
    summary = summarize(
        args.file, checkpoint=args.checkpoint, out=args.out, ratio=args.ratio, captioner=args.captioner,
        max_segment=args.max_segment, batch_particles=args.batch_particles, device=args.device,
    )  # fmt: skip
    _print(summary, args.json)


def _vitals_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument(
        "source", metavar="FILE_OR_SOURCE",
        help="a video file, a folder (its videos, then each new one), rtsp:// or http(s):// stream, or /dev/videoN",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=("pos", "chrom", "green", "model"), default="pos",
        help="pulse from skin colour: POS (Wang 2017), CHROM (de Haan 2013) or GREEN; model: a learned vitals "
        "checkpoint (tubelet finetune --task vitals) (default pos)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a learned vitals model (RUN/best of tubelet finetune --task vitals), for --method model",
    )
    p.add_argument("--window-seconds", type=positive_float, default=10.0, help="seconds per reading (default 10)")
    p.add_argument("--stride-seconds", type=positive_float, default=1.0, help="seconds between readings (default 1)")
    p.add_argument("--out", default=None, help="folder for signals.png, regions.png, vitals.json and report.html")
    p.add_argument(
        "--alert-hr", default=None, metavar="MIN:MAX",
        help="raise an event when the heart rate stays outside MIN:MAX beats per minute for --alert-seconds",
    )  # fmt: skip
    p.add_argument(
        "--alert-br", default=None, metavar="MIN:MAX",
        help="raise an event when the breathing rate stays outside MIN:MAX per minute for --alert-seconds",
    )  # fmt: skip
    p.add_argument(
        "--alert-seconds", type=non_negative_float, default=10.0,
        help="how long a rate must stay out of range before an event (default 10)",
    )  # fmt: skip
    _live_source_args(p)
    p.add_argument(
        "--webhook", default=None, metavar="URL",
        help="POST each alert's start and end (JSON, as tubelet watch does); needs --out, where events.sqlite is kept",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object (a live source: one line per reading)")


def _vitals_run(args) -> None:
    from tubelet.recipes.vitals import vitals
    from tubelet.stream.source import source_kind

    live = source_kind(args.source) in ("network", "device", "folder")

    def emit(item: dict) -> None:
        if args.json:
            print(json.dumps(item), flush=True)
        elif "kind" in item:
            when = f"{item['start']} s" if item["phase"] == "start" else f"{item['start']}-{item['end']} s"
            print(f"event {item['label']} {item['phase']} {when} (value {item['value']})", flush=True)
        else:
            print(_reading_line(item), flush=True)

    summary = vitals(
        args.source, method=args.method, checkpoint=args.checkpoint, window_seconds=args.window_seconds,
        stride_seconds=args.stride_seconds, out=args.out, alert_hr=args.alert_hr, alert_br=args.alert_br,
        alert_seconds=args.alert_seconds, realtime=args.realtime, reconnect_tries=args.reconnect_tries,
        emit=emit if live else None, webhook=args.webhook,
    )  # fmt: skip
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if not (live and k == "windows")}))
        return
    if not live:
        for row in summary["windows"]:
            print(_reading_line(row))
        for event in summary["events"]:
            print(f"event {event['label']} {event['start']}-{event['end']} s (value {event['value']})")
    print(
        f"{len(summary['windows'])} windows over {summary['stream_seconds']:.1f} s: median heart rate "
        f"{summary['heart_rate_bpm']} bpm, breathing {summary['breathing_rate_bpm']}/min "
        f"({summary['confident_windows']} confident windows; {summary['realtime_factor']}x real time). "
        f"{summary['note']}" + (f" Report: {summary['outputs']['report']}" if "outputs" in summary else "")
    )


def _reading_line(row: dict) -> str:
    hr = "-" if row["heart_rate_bpm"] is None else f"{row['heart_rate_bpm']:.1f}"
    br = "-" if row["breathing_rate_bpm"] is None else f"{row['breathing_rate_bpm']:.1f}"
    text = f"{row['start']:8.2f}-{row['end']:.2f} s  heart {hr:>5} bpm  breathing {br:>4}/min  quality {row['quality']}"
    return text + (f"  ({row['reason']})" if row["reason"] else "")


def _decoding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decode", choices=("greedy", "beam", "sample"), default="greedy", help="decoding (default greedy)")
    p.add_argument("--beam", type=positive_int, default=4, help="beam width (--decode beam; default 4)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam: rank by log-prob / length ** this")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (--decode sample)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample among the k likeliest tokens (0: all)")
    p.add_argument("--max-tokens", type=positive_int, default=32, help="most tokens per caption or answer (32)")
    p.add_argument("--seed", type=int, default=0, help="seed of --decode sample")


def _decoding(args):
    from tubelet.tasks.generate import Decoding

    return Decoding(
        args.decode, beam=args.beam, length_penalty=args.length_penalty, temperature=args.temperature,
        top_k=args.top_k, max_tokens=args.max_tokens, seed=args.seed,
    )  # fmt: skip


def _caption_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, help="caption checkpoint (tubelet finetune --task caption)")
    p.add_argument("file", help="video file")
    p.add_argument("--window-seconds", type=positive_float, default=None, help="window length (default: training's)")
    p.add_argument(
        "--stride-seconds", type=positive_float, default=None, help="step between windows (default: the window length)"
    )
    _decoding_flags(p)
    _inference_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object (default: a line per window)")


def _caption_run(args) -> None:
    from tubelet.recipes.caption import caption_video

    result = caption_video(
        args.checkpoint, args.file, window_seconds=args.window_seconds, stride_seconds=args.stride_seconds,
        decoding=_decoding(args), batch_particles=args.batch_particles, workers=args.workers, device=args.device,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    for row in result["windows"]:
        print(f"{row['start']:8.2f}-{row['end']:8.2f}  {row['caption']}")


def _chat_args(p: argparse.ArgumentParser, argv: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, help="dialogue checkpoint (tubelet finetune --task dialogue)")
    p.add_argument("file", help="video file to talk about")
    p.add_argument(
        "--say", action="append", default=None, metavar="TEXT",
        help="a question; repeat it to script the turns (one JSON object per turn); none: read questions from stdin",
    )  # fmt: skip
    p.add_argument("--candidates", default=None, metavar="FILE", help="answers to rank each turn, one per line")
    _decoding_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="interactive turns as JSON objects too")


def _chat_run(args) -> None:
    from tubelet.recipes.chat import chat, read_candidates, terminal_questions

    candidates = read_candidates(args.candidates)
    scripted = args.say is not None
    questions = args.say if scripted else terminal_questions()
    for row in chat(args.checkpoint, args.file, questions, candidates=candidates, decoding=_decoding(args),
                    device=args.device):  # fmt: skip
        if scripted or args.json:
            print(json.dumps(row), flush=True)
        else:
            ranked = f"  (best candidate: {row['ranking'][0]['answer']})" if "ranking" in row else ""
            print(f"video> {row['answer']}{ranked}", flush=True)


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "probe": ("container facts of a video: duration, fps, size, frames, codec, audio", _probe_args, _probe_run),
    "tokenize": (
        "particles of a video: count, kept fraction after pruning, time span, grid",
        _tokenize_args,
        _tokenize_run,
    ),
    "sample-data": ("write a labeled sample dataset of real encoded videos", _sample_data_args, _sample_data_run),
    "scan": ("probe every file of a dataset once: classes, rates, sizes, unreadable files", _scan_args, _scan_run),
    "pretrain": (
        "masked video pretraining on unlabeled video; writes RUN/best, RUN/last, RUN/reconstructions",
        _pretrain_args,
        _pretrain_run,
    ),
    "finetune": (
        "supervised fine-tuning of any task (--task; see tubelet tasks); writes RUN/best and RUN/last",
        _finetune_args,
        _finetune_run,
    ),
    "probe-linear": (
        "linear probe: finetune with the encoder frozen (freeze=backbone)",
        _probe_linear_args,
        _probe_linear_run,
    ),
    "evaluate": (
        "held-out report of a classifier, retrieval or VQA checkpoint: report.json, report.md",
        _evaluate_args,
        _evaluate_run,
    ),
    "predict": (
        "labels and scores for new videos (or answers to --question), per window in seconds for long ones",
        _predict_args,
        _predict_run,
    ),
    "explain": (
        "which particles (where, when) drove a prediction: heatmap video, timeline, HTML report",
        _explain_args,
        _explain_run,
    ),
    "tokenizer": (
        "train a WordPiece tokenizer on a dataset's captions or questions; writes DIR/tokenizer.json",
        _tokenizer_args,
        _tokenizer_run,
    ),
    "tasks": (
        "the registered tasks, one line each: what they learn, their metrics, their own fields",
        _tasks_args,
        _tasks_run,
    ),
    "index": ("embed every window of a folder of videos for text search", _index_args, _index_run),
    "export": (
        "a classifier as an ONNX graph over packed particles, checked against PyTorch; predict runs it",
        _export_args,
        _export_run,
    ),
    "search": ("text query to ranked files and seconds, over an index", _search_args, _search_run),
    "watch": (
        "watch a camera, stream or file: alerts and anomalies as events, clips, a database, webhooks",
        _watch_args,
        _watch_run,
    ),
    "interpolate": (
        "a video at a new frame rate with real timestamps, never blending across a scene cut (a model or baselines)",
        _interpolate_args,
        _interpolate_run,
    ),
    "denoise": (
        "a video denoised from the frames around each one, within its shot (a model or classical baselines)",
        _denoise_args,
        _denoise_run,
    ),
    "summarize": (
        "a video's most important segments within a share of its length: summary.mp4, .json, .md, importance plot",
        _summarize_args,
        _summarize_run,
    ),
    "vitals": (
        "heart and breathing rate over seconds from a face on video or a camera, with signal quality and alerts "
        "(classical rPPG; not a medical device)",
        _vitals_args,
        _vitals_run,
    ),
    "caption": (
        "one caption per window of a video, with its seconds, from a caption checkpoint",
        _caption_args,
        _caption_run,
    ),
    "chat": (
        "talk about a video with a dialogue checkpoint: interactive, or scripted turns with --say (JSON per turn)",
        _chat_args,
        _chat_run,
    ),
    "serve": (
        "HTTP API and web page over a checkpoint: predict, explain, search; API key, limits, micro-batching, reload",
        _serve_args,
        _serve_run,
    ),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in `argv` gets its flags (some import torch to list them)."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = _Parser(prog="tubelet", description="Video foundation models over spacetime particles.")
    parser.add_argument("--version", action="version", version=f"tubelet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            add_arguments(p, argv)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from tubelet.distributed import launched, main_process

    level, fmt = logging.DEBUG if args.verbose else logging.INFO, "%(levelname)s %(message)s"
    if launched():  # under torchrun rank 0 tells the story (files that fail on any rank too); the others, errors
        fmt = f"[rank {os.environ.get('RANK', '0')}] {fmt}"
        level = level if main_process() else logging.ERROR
    logging.basicConfig(level=level, format=fmt)
    from tubelet.progress import quiet

    quiet(getattr(args, "json", False))  # output a program reads: no progress bars beside it
    try:
        args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
    except BrokenPipeError:
        # The reader stopped (`| head`). The Python docs' recipe: point stdout at devnull so the flush at exit
        # cannot raise again, and leave without a word.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE, as a Unix tool killed by it
    except TubeletError as exc:
        print(f"tubelet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _CANNOT_WRITE:
            raise
        where = exc.filename if exc.filename is not None else "output"
        print(f"tubelet {args.command}: error: {where}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tubelet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


# Failures to write an output: the user's folder or disk, not a bug. Anything else stays a traceback.
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


if __name__ == "__main__":
    sys.exit(main())
