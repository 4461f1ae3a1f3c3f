"""Every command end to end through a real subprocess, at tiny size."""

import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tubelet.cli import COMMANDS, main
from tubelet.errors import ConfigError
from tubelet.io import write_video
from tubelet.outputs import writable_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory, tubelet_cli):
    out = tmp_path_factory.mktemp("cli") / "data"
    result = tubelet_cli("sample-data", out, "--clips-per-class", 3, "--seed", 1, "--json")
    summary = json.loads(result.stdout)
    assert summary["clips"] == 15
    return out


def assert_one_line_error(result, *needles):
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert str(needle) in lines[0]


def test_help_lists_every_command_with_its_summary(tubelet_cli):
    listed = " ".join(tubelet_cli("--help").stdout.split())  # argparse wraps long summaries: compare unwrapped
    for command, (summary, _, _) in COMMANDS.items():
        assert f" {command} {' '.join(summary.split())}" in listed, command


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_help_that_exits_0(command, capsys):
    # In this process: one import of torch for all, not one per command.
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tubelet {command} ")
    assert " ".join(COMMANDS[command][0].split()) in " ".join(out.split())  # the summary describes the command


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_defaults_that_apply(capsys):
    probe = _help("probe-linear", capsys)
    assert "(default: backbone)" in probe and "(default: runs/probe-linear)" in probe  # not finetune's
    finetune = _help("finetune", capsys)
    assert "(default: none)" in finetune and "(default: runs/finetune)" in finetune
    commands = ("evaluate", "predict", "index")
    workers = {c: re.search(r"--workers WORKERS ([^-]*)", _help(c, capsys)).group(1) for c in commands}
    assert len(set(workers.values())) == 1 and "default 2" in workers["predict"]  # one default for every command


def test_probe_json_keys(data, tubelet_cli):
    path = next((data / "grow").iterdir())
    report = json.loads(tubelet_cli("probe", path, "--json").stdout)
    for key in ("duration_s", "fps", "width", "height", "frames", "codec", "has_audio"):
        assert key in report
    assert report["codec"] == "h264" and report["frames"] > 10


def test_tokenize_json_keys_and_consistency(tmp_path, tubelet_cli):
    frames = np.zeros((12, 40, 56, 3), np.uint8)
    frames[6:, :16, :16] = 255  # one tubelet position changes halfway
    path = write_video(tmp_path / "step.mp4", frames, fps=12, crf=0)
    report = json.loads(tubelet_cli("tokenize", path, "--json", "--tubelet", "2x16x16").stdout)
    assert report["grid"] == [6, 3, 4]
    assert report["total"] == 6 * 3 * 4
    assert report["particles"] == 12 + 1  # first tubelet of each position + the one change
    assert report["kept_fraction"] == pytest.approx(13 / 72, abs=1e-3)
    assert report["t_min"] == pytest.approx(0.5 / 12, abs=1e-3)
    assert report["t_max"] == pytest.approx(6.5 / 12, abs=1e-3)
    assert report["prune_reference"] == "anchor"  # the default
    unpruned = json.loads(tubelet_cli("tokenize", path, "--json", "--prune-threshold", 0).stdout)
    assert unpruned["particles"] == unpruned["total"] == 72
    resampled = json.loads(tubelet_cli("tokenize", path, "--json", "--fps", 6).stdout)
    assert resampled["frames"] == 6 and resampled["grid"][0] == 3


def test_tokenize_prune_reference_anchor_keeps_a_slow_drift(tmp_path, tubelet_cli):
    levels = 60 + np.arange(12, dtype=np.uint8)  # a grey frame 1 level brighter per frame: 2 per tubelet
    frames = np.broadcast_to(levels[:, None, None, None], (12, 16, 16, 3)).copy()
    path = write_video(tmp_path / "drift.mp4", frames, fps=12, crf=0)
    compared = tubelet_cli("tokenize", path, "--json", "--prune-threshold", 5, "--prune-reference", "previous")
    previous = json.loads(compared.stdout)
    anchored = tubelet_cli("tokenize", path, "--json", "--prune-threshold", 5)  # the default reference
    anchor = json.loads(anchored.stdout)
    assert (previous["particles"], previous["total"]) == (1, 6)  # neighbours are ~2 levels apart
    assert (anchor["particles"], anchor["prune_reference"]) == (2, "anchor")  # tubelet 3 is ~6 levels from tubelet 0


def test_scan_reports_classes(data, tubelet_cli):
    report = json.loads(tubelet_cli("scan", data, "--split", "train", "--json").stdout)
    assert set(report["classes"]) == {"move_left", "move_right", "rotate", "grow", "static"}
    assert report["clips"] == sum(report["classes"].values()) == 5
    assert report["skipped"] == []


def test_human_readable_output(data, tubelet_cli):
    out = tubelet_cli("probe", next((data / "rotate").iterdir())).stdout
    assert "duration_s" in out and "{" not in out


@pytest.mark.parametrize(
    "args, needles",
    [
        (("probe", "missing.mp4"), ["missing.mp4", "no such file"]),
        (("tokenize", "missing.mp4"), ["missing.mp4"]),
        (("tokenize", "x.mp4", "--tubelet", "2x16"), ["--tubelet", "2x16"]),
        (("tokenize", "x.mp4", "--prune-threshold", "-1"), ["--prune-threshold"]),
        (("tokenize", "x.mp4", "--prune-reference", "sideways"), ["--prune-reference", "sideways"]),
        (("tokenize", "x.mp4", "--fps", "zero"), ["--fps"]),
        (("nonsense",), ["nonsense"]),
        (("scan", "no/such/dir"), ["no/such/dir"]),
    ],
)
def test_bad_input_is_one_line(args, needles, tubelet_cli):
    assert_one_line_error(tubelet_cli(*args, check=False), *needles)


def test_corrupt_and_tiny_videos_are_one_line_errors(tmp_path, tubelet_cli):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    assert_one_line_error(tubelet_cli("probe", corrupt, check=False), corrupt)
    assert_one_line_error(tubelet_cli("tokenize", corrupt, check=False), corrupt)
    tiny = write_video(tmp_path / "tiny.mp4", np.zeros((4, 8, 8, 3), np.uint8), fps=4)
    assert_one_line_error(tubelet_cli("tokenize", tiny, check=False), "tubelet 2x16x16 is larger", tiny)


def test_sample_data_rejects_too_few_clips(tmp_path, tubelet_cli):
    assert_one_line_error(
        tubelet_cli("sample-data", tmp_path, "--clips-per-class", 1, check=False), "--clips-per-class"
    )


# --- issue 13: output piped into a reader that stops, outputs that cannot be written, flags out of range ----------


@pytest.mark.parametrize("command", ["probe", "scan"])
def test_output_into_a_closed_pipe_ends_quietly_with_sigpipe_status(command, data):
    target = next((data / "grow").iterdir()) if command == "probe" else data
    proc = subprocess.Popen(
        [sys.executable, "-m", "tubelet", command, str(target), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first byte (`| head -c 0`): every write hits a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE, as `yes | head` reports under pipefail
    assert stderr == ""


@pytest.fixture
def not_a_dir(tmp_path):
    """An output path under a regular file: no one can create it, root included."""
    (tmp_path / "file").write_text("a file, not a folder")
    return tmp_path / "file" / "out"


@pytest.mark.parametrize(
    "args, flag",
    [
        (("sample-data", "{out}"), "out"),
        (("finetune", "--data", "{data}", "--out", "{out}", "model=test"), "--out"),
        (("pretrain", "--data", "{data}", "--out", "{out}", "model=test"), "--out"),
        (("evaluate", "--checkpoint", "no-ckpt", "--data", "{data}", "--out", "{out}"), "--out"),
        (("explain", "--checkpoint", "no-ckpt", "x.mp4", "--out", "{out}"), "--out"),
        (("predict", "--checkpoint", "no-ckpt", "x.mp4", "--plot", "{out}"), "--plot"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(args, flag, data, not_a_dir, tubelet_cli):
    # The checkpoint and video do not exist: the output is checked first, before anything is loaded or computed.
    args = [a.format(out=not_a_dir, data=data) for a in args]
    assert_one_line_error(tubelet_cli(*args, check=False), flag, not_a_dir, "cannot create")


def test_writable_dir_refuses_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a 0o555 folder is still writable")
        with pytest.raises(ConfigError, match="--out .*locked.*not writable"):
            writable_dir(locked, "--out")
    finally:
        locked.chmod(0o755)
    assert writable_dir(tmp_path / "new" / "deep", "--out").is_dir()  # created, parents included


def test_a_write_refused_late_is_one_line_naming_the_file(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/runs/report.json")

    monkeypatch.setattr("tubelet.recipes.describe.scan_report", refuse)
    assert main(["scan", "anything"]) == 2
    err = capsys.readouterr().err
    assert err == "tubelet scan: error: /srv/runs/report.json: Permission denied\n"


@pytest.mark.parametrize(
    "args, flag",
    [
        (("predict", "--checkpoint", "c", "x.mp4", "--topk", "0"), "--topk"),
        (("predict", "--checkpoint", "c", "x.mp4", "--topk", "-3"), "--topk"),
        (("explain", "--checkpoint", "c", "x.mp4", "--out", "o", "--method", "ig", "--steps", "0"), "--steps"),
        (("explain", "--checkpoint", "c", "x.mp4", "--out", "o", "--topk", "0"), "--topk"),
        (("search", "index", "a query", "--topk", "0"), "--topk"),
    ],
)
def test_counts_below_one_are_refused_by_the_parser(args, flag, tubelet_cli):
    assert_one_line_error(tubelet_cli(*args, check=False), flag, "must be at least 1")
