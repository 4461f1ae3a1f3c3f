"""``tubelet <command>``: a thin table of commands. Each parses its flags and calls one recipe; no logic here.

Bad input ends in one line on stderr naming the file or flag, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from tubelet import __version__
from tubelet.defaults import DEFAULT_PRUNE_THRESHOLD
from tubelet.errors import TubeletError


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


def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="video file (mp4, mkv, webm, avi, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _probe_run(args) -> None:
    from tubelet.recipes.inspect import probe_report

    _print(probe_report(args.file), args.json)


def _tokenize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="video file")
    p.add_argument("--tubelet", type=tubelet_size, default=(2, 16, 16), help="FRAMESxHEIGHTxWIDTH (default 2x16x16)")
    p.add_argument("--fps", type=positive_float, default=None, help="resample by time to this frame rate first")
    p.add_argument(
        "--prune-threshold",
        type=non_negative_float,
        default=DEFAULT_PRUNE_THRESHOLD,
        metavar="LEVELS",
        help=f"drop tubelets that differ from the previous one by less than this many 0-255 levels "
        f"(default {DEFAULT_PRUNE_THRESHOLD:g}; 0 keeps all)",
    )
    p.add_argument("--start", type=non_negative_float, default=None, help="window start, seconds")
    p.add_argument("--end", type=positive_float, default=None, help="window end, seconds")
    p.add_argument("--size", type=int, default=None, help="scale the short side to this many pixels first")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _tokenize_run(args) -> None:
    from tubelet.recipes.inspect import tokenize_report

    report = tokenize_report(
        args.file,
        tubelet=args.tubelet,
        fps=args.fps,
        prune_threshold=args.prune_threshold,
        start=args.start,
        end=args.end,
        size=args.size,
    )
    _print(report, args.json)


def _sample_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed (same seed, same files)")
    p.add_argument("--clips-per-class", type=int, default=12, help="clips per class (at least 3)")
    p.add_argument("--workers", type=int, default=2, help="encoding processes")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _sample_data_run(args) -> None:
    from tubelet.data.sample import generate

    if args.clips_per_class < 3:
        raise TubeletError(f"--clips-per-class must be at least 3 (one per split), got {args.clips_per_class}")
    _print(generate(args.out, seed=args.seed, clips_per_class=args.clips_per_class, workers=args.workers), args.json)


def _scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="class-folder directory, a directory with split manifests, or a CSV/JSONL manifest")
    p.add_argument("--split", default=None, help="split to read (train, val, test); default everything")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _scan_run(args) -> None:
    from tubelet.recipes.inspect import scan_report

    _print(scan_report(args.data, split=args.split), args.json)


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "probe": ("container facts of a video: duration, fps, size, frames, codec, audio", _probe_args, _probe_run),
    "tokenize": (
        "particles of a video: count, kept fraction after pruning, time span, grid",
        _tokenize_args,
        _tokenize_run,
    ),
    "sample-data": ("write a labeled sample dataset of real encoded videos", _sample_data_args, _sample_data_run),
    "scan": ("probe every file of a dataset once: classes, rates, sizes, unreadable files", _scan_args, _scan_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tubelet", description="Video foundation models over spacetime particles.")
    parser.add_argument("--version", action="version", version=f"tubelet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        args.run(args)
    except TubeletError as exc:
        print(f"tubelet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tubelet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
