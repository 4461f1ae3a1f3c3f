"""Training under torchrun on the CPU: 2 processes, gloo, real encoded files, the real command line.

Each run is a real ``torchrun --standalone --nproc_per_node=2 -m tubelet ...`` in a subprocess, under a timeout, and
with tubelet's collective timeout cut to a minute: a run that hangs fails the test instead of the suite.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch

from tubelet import checkpoint
from tubelet.cli import main
from tubelet.io.write import write_video
from tubelet.models import load

# The `test` encoder on 64-px frames, 1 s clips at 4 fps (tests/recipes/conftest.py's CLASSIFIER), with a constant
# learning rate, so that a run cut by --max-steps and resumed steps as one that was not.
FAST = [
    "--model", "test", "--size", "64", "--max-long-side", "96", "--sample-fps", "4", "--clip-seconds", "1",
    "--batch-particles", "400", "--workers", "0", "--lr", "3e-3", "--warmup-epochs", "0", "min_lr_ratio=1",
]  # fmt: skip
PRETRAIN = ["decoder_dim=32", "decoder_depth=1", "decoder_heads=2"]


def torchrun(*args, nproc: int = 2, timeout: float = 240, wait: bool = True):
    """``torchrun --standalone --nproc_per_node=nproc -m tubelet ARGS``: the finished process (stdout, stderr), or
    the running one (`wait` False)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "tubelet", *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUBELET_DIST_TIMEOUT_S": "60"}
    if not wait:
        pipe = subprocess.PIPE
        return subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def weights(run) -> dict[str, torch.Tensor]:
    return checkpoint.load_state_dict(run / "last")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def records(run, kind: str) -> list[dict]:
    return [r for r in map(json.loads, open(run / "metrics.jsonl")) if r["kind"] == kind]


def summary_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"out"')]


@pytest.fixture(scope="module")
def one_process(tiny_data, tmp_path_factory):
    """Fine-tuning and pretraining on one process with 2 accumulation steps: the global batch of 2 processes."""
    root = tmp_path_factory.mktemp("one-process")
    runs = {}
    for command, extra in (("finetune", []), ("pretrain", PRETRAIN)):
        runs[command] = root / command
        args = [command, "--data", tiny_data, *FAST, *extra, "--epochs", "2", "--accum-steps", "2"]
        assert main([*map(str, args), "--out", str(runs[command])]) == 0
    return runs


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(command, one_process, tiny_data, tmp_path):
    extra = PRETRAIN if command == "pretrain" else []
    out = tmp_path / "two"
    result = torchrun(command, "--data", tiny_data, *FAST, *extra, "--epochs", "2", "--out", out)
    reference = one_process[command]
    assert max_difference(weights(out), weights(reference)) < 1e-5
    # The same batches in the same steps (an odd number of batches an epoch: the last step has a zero-weighted repeat).
    ours, theirs = records(out, "train"), records(reference, "train")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == list(range(1, len(theirs) + 1))
    assert np.allclose([r["loss"] for r in ours], [r["loss"] for r in theirs], atol=1e-5)
    assert all(r["data_s"] >= 0 and r["step_s"] >= r["data_s"] for r in ours)
    if command == "finetune":  # validation ran in shards on both ranks and was gathered: the same scores
        assert [r["accuracy"] for r in records(out, "val")] == [r["accuracy"] for r in records(reference, "val")]
    # Rank 0 alone speaks: one summary on stdout, one line per epoch, log lines from rank 0 only.
    assert len(summary_lines(result.stdout)) == 1
    assert sum(line.startswith('{"epoch"') for line in result.stdout.splitlines()) == 2
    assert "[rank 1]" not in result.stderr and "[rank 0] INFO" in result.stderr
    assert json.loads((out / "last" / "trainer" / "state.json").read_text())["state"]["ranks"] == 2


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_fsdp_trains_the_same_weights_and_saves_one_file_any_command_reads(command, one_process, tiny_data, tmp_path):
    out = tmp_path / "fsdp"
    extra = PRETRAIN if command == "pretrain" else []
    args = [command, "--data", tiny_data, *FAST, *extra, "--epochs", "2", "--parallel", "fsdp", "--out", out]
    if command == "finetune":  # cut after 4 steps and resumed: the gathered optimizer state goes back into shards
        torchrun(*args, "--max-steps", "4")
        args.append("--resume")
    torchrun(*args)
    assert max_difference(weights(out), weights(one_process[command])) < 1e-5
    if command == "pretrain":  # the decoder is gathered and saved beside the encoder, and pictures were drawn
        decoder = checkpoint.load_state_dict(out / "last", "decoder.safetensors")
        reference = checkpoint.load_state_dict(one_process[command] / "last", "decoder.safetensors")
        assert max_difference(decoder, reference) < 1e-5
        assert sorted(p.name for p in (out / "reconstructions").iterdir())[:2] == ["epoch_001.gif", "epoch_001.png"]
        return
    loaded = load(out / "best")  # gathered on rank 0: full tensors, no shards, read like any checkpoint
    assert loaded.labels == load(one_process["finetune"] / "best").labels
    evaluation = ["evaluate", "--checkpoint", out / "best", "--data", tiny_data, "--out", tmp_path / "evaluation"]
    assert main(list(map(str, evaluation))) == 0


def _trainer_step(run) -> int:
    try:
        return json.loads((run / "last" / "trainer" / "state.json").read_text())["state"]["step"]
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or caught mid-swap


def test_a_run_killed_with_sigkill_resumes_on_two_processes_to_its_step_count(tiny_data, tmp_path, capsys):
    out = tmp_path / "killed"
    args = ["finetune", "--data", tiny_data, *FAST, "--epochs", "8", "--save-every-steps", "1", "--out", out]
    job = torchrun(*args, wait=False)
    deadline = time.monotonic() + 180
    while _trainer_step(out) < 4 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # torchrun and both ranks at once, with no chance to clean up (torchrun puts its workers in sessions of their own)
    ranks = psutil.Process(job.pid).children(recursive=True)
    for process in [psutil.Process(job.pid), *ranks]:
        process.kill()
    job.wait()
    psutil.wait_procs(ranks, timeout=30)
    assert job.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = _trainer_step(out)
    assert 4 <= killed_at < 24

    result = torchrun(*args, "--resume")
    summary = summary_lines(result.stdout)[0]
    assert summary["steps"] == 24 and summary["epochs_run"] == 8  # 5 batches an epoch: 3 steps of 2
    steps = [r["step"] for r in records(out, "train")]
    assert steps == list(range(1, 25))  # each step once: what followed the last save was dropped
    assert load(out / "last").model is not None and load(out / "best").labels
    assert f"resumed from {out / 'last'} at step {killed_at}" in result.stderr

    # One process cannot continue it: the batches of every step would change. Said, not silently done.
    capsys.readouterr()
    code = main(["finetune", "--data", str(tiny_data), *FAST, "--epochs", "9", "--out", str(out), "--resume"])
    assert code == 2
    assert "was trained on 2 processes, this is 1" in capsys.readouterr().err


def test_uneven_shards_and_a_clip_that_fails_on_one_rank_finish_without_hanging(tiny_data, tmp_path):
    # A manifest whose clips differ tenfold in particles (one 256x192 clip kept at its size beside 64-px ones) and
    # a clip that probes but cannot be decoded (one frame: an empty window), so that in some steps one rank has
    # much more to do, one rank's only batch fails, and the epoch's last step has fewer batches than ranks.
    rows = list(csv.DictReader(open(tiny_data / "train.csv")))
    noise = np.random.default_rng(0).integers(0, 255, (12, 192, 256, 3), np.uint8)
    big = write_video(tmp_path / "big.mp4", noise, fps=8)
    one_frame = write_video(tmp_path / "one_frame.mp4", np.zeros((1, 64, 64, 3), np.uint8), fps=8)
    manifest = tmp_path / "uneven.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([[str(tiny_data / r["path"]), r["label"]] for r in rows])
        writer.writerows([[str(big), rows[0]["label"]], [str(one_frame), rows[1]["label"]]])
    out = tmp_path / "run"
    flags = [*FAST, "--size", "none", "--max-long-side", "none", "--batch-particles", "100"]
    result = torchrun("finetune", "--data", manifest, *flags, "--epochs", "2", "--out", out, timeout=240)
    summary = summary_lines(result.stdout)[0]
    assert [s["path"] for s in summary["skipped"]] == [str(one_frame)]  # once, though a rank repeats batches
    # 7 clips, a batch each: 4 steps in the first epoch, and 3 once the clip that failed is out on both ranks.
    assert summary["steps"] == 7 and summary["epochs_run"] == 2
    assert result.stderr.count(f"skipping {one_frame}") == 1


AV_FAST = [
    "--model", "test", "--size", "48", "--max-long-side", "64", "--sample-fps", "4", "--clip-seconds", "1",
    "--batch-particles", "600", "--workers", "0", "--epochs", "2", "--max-steps", "2",
]  # fmt: skip


@pytest.mark.parametrize(
    "task", [["--task", "retrieval"], ["--task", "vqa"], ["--modalities", "video,audio"]], ids=lambda t: t[-1]
)
def test_every_kind_of_task_trains_on_two_processes(task, av_data, tmp_path):
    out = tmp_path / "run"
    result = torchrun("finetune", "--data", av_data, *task, *AV_FAST, "--out", out)
    summary = summary_lines(result.stdout)[0]
    assert summary.get("steps", 2) == 2 and all(arm["steps"] == 2 for arm in summary.get("arms", {}).values())
    assert load(out / "best").model is not None
    if "report" in summary:  # the test split, evaluated in shards and written once by rank 0
        assert json.loads(open(summary["report"]).read())


def test_two_machines_meet_at_a_rendezvous_endpoint(one_process, tiny_data, tmp_path):
    # The README's multi-node command, as two torchrun agents of one process each on this machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "nodes"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=tubelet-test", "-m", "tubelet", "finetune",
        "--data", str(tiny_data), *FAST, "--epochs", "2", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUBELET_DIST_TIMEOUT_S": "60"}
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert sum(len(summary_lines(stdout.decode())) for stdout, _ in outputs) == 1  # rank 0, on one of the nodes
    assert max_difference(weights(out), weights(one_process["finetune"])) < 1e-5
