"""Progress bars: on a terminal for long work, never under --json, never when stderr is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios


def _run_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``tubelet ARGS`` with stderr on a pseudo-terminal (as a person's shell has it); (code, stdout, stderr)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size (else 0x0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tubelet", *args], stdout=subprocess.PIPE, stderr=child, stdin=subprocess.DEVNULL
    )
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode()
    code = proc.wait()
    os.close(main)
    return code, out, seen.decode(errors="replace")


def test_sample_data_shows_a_bar_on_a_terminal_and_none_under_json(tmp_path):
    code, _, err = _run_on_a_terminal(["sample-data", str(tmp_path / "a"), "--clips-per-class", "3", "--workers", "1"])
    assert code == 0 and "sample-data" in err and "15/15" in err and "clip" in err  # 5 classes x 3 clips
    code, out, err = _run_on_a_terminal(
        ["sample-data", str(tmp_path / "b"), "--clips-per-class", "3", "--workers", "1", "--json"]
    )
    assert code == 0 and out.strip().startswith("{") and "sample-data" not in err and "15/15" not in err


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, tubelet_cli):
    result = tubelet_cli("sample-data", tmp_path / "c", "--clips-per-class", "3", "--workers", "1")
    assert "15/15" not in result.stderr and "%|" not in result.stderr
