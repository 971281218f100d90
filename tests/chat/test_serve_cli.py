"""`zhiyin serve` as a user runs it: the address first, a clear error when the port is taken,
a clean exit on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def serve(workspace: Path, tmp_path: Path, *args: str, lang: str = "en",
          sigint_ignored: bool = False) -> subprocess.Popen:
    """`sigint_ignored`: started as a script's background job is (`zhiyin serve &`: the shell ignores
    SIGINT for it, and Python then leaves it ignored unless told otherwise)."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "ZHIYIN_LANG": lang, "PYTHONFAULTHANDLER": "1"}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "zhiyin.cli", "serve", "--no-embeddings", *args], cwd=workspace,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)


def interrupted(process: subprocess.Popen, sig: signal.Signals = signal.SIGINT) -> tuple[str, str]:
    """Ctrl-C (or `sig`), then the process's output once it has exited; one that hangs is aborted, and
    the failure shows where each of its threads was (faulthandler)."""
    process.send_signal(sig)
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _out, err = process.communicate(timeout=30)
        raise AssertionError(f"still running 60 s after Ctrl-C:\n{err[-8000:]}") from None


def test_a_taken_port_is_one_clear_line_in_the_users_language(workspace: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(workspace, tmp_path, "--port", str(port), lang="zh_CN")
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and out == ""
    assert f"端口 {port} 已被占用" in err and "--port 0" in err and "Traceback" not in err


@pytest.mark.parametrize(("sig", "sigint_ignored"), [(signal.SIGINT, False), (signal.SIGINT, True),
                                                     (signal.SIGTERM, False)],
                         ids=["ctrl-c", "ctrl-c-background-job", "sigterm"])
def test_it_prints_the_address_then_stops_cleanly_on_ctrl_c(workspace: Path, tmp_path: Path, sig,
                                                            sigint_ignored) -> None:
    """Ctrl-C stops it, also when started as a background job; so does SIGTERM."""
    process = serve(workspace, tmp_path, "--port", "0", sigint_ignored=sigint_ignored)
    line = process.stdout.readline()
    assert line.startswith(f"Zhiyin chat for {workspace}: open http://127.0.0.1:") and "/#token=" in line
    _out, err = interrupted(process, sig)
    assert process.returncode == 130 and "Traceback" not in err


def test_listening_beyond_loopback_warns(workspace: Path, tmp_path: Path) -> None:
    process = serve(workspace, tmp_path, "--host", "0.0.0.0", "--port", "0")
    line = process.stdout.readline()
    assert "http://0.0.0.0:" in line
    _out, err = interrupted(process)
    assert "other machines can reach this server" in err
