"""The real ``tubelet`` command line in a fresh child process, without paying Python's and PyTorch's start-up on each.

``python -m tubelet ...`` in a subprocess spends 2-3 s importing torch, PyAV and numpy before the command begins; the
suite runs commands about a hundred times. `run` starts each command instead in a child forked from a multiprocessing
*forkserver* that imported those modules once: a separate, single-threaded process that has run nothing, so each child
starts as clean as a new interpreter (its own module state, logging, signal handlers, exit code), only sooner. The
child gets the caller's environment and working directory, writes to files in place of its stdout and stderr, and
exits with the command's code; what a test sees is what `subprocess.run` would give it.

Commands that need a terminal or stdin, and torchrun, still start real subprocesses in their tests.

This module must be importable by name in the forkserver (multiprocessing sends the child's target by reference), so
conftest.py puts its folder on ``sys.path`` and imports it as ``forked_cli``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback

# Imported once in the forkserver; every command child inherits them.
PRELOAD = ["numpy", "torch", "av", "tubelet.cli", "tubelet.recipes.finetune", "tubelet.io"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _child(args: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str) -> None:
    for fd, path in ((1, out_path), (2, err_path)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["tubelet", *args]
    code: object = 1
    try:
        from tubelet.cli import main

        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:  # what an uncaught exception does to `python -m tubelet`: a traceback and exit code 1
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, exit code 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def run(args: list[str]) -> subprocess.CompletedProcess:
    """``tubelet *args`` in a forked child: a `subprocess.CompletedProcess` with text stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix="tubelet-cli-") as scratch:
        out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        child = _context.Process(target=_child, args=(args, dict(os.environ), os.getcwd(), out_path, err_path))
        child.start()
        child.join()
        with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err:
            stdout, stderr = out.read(), err.read()
    code = child.exitcode if child.exitcode is not None else 1
    return subprocess.CompletedProcess(["tubelet", *args], code, stdout, stderr)
