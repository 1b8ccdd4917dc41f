"""Run a command on a pseudo-terminal, as a user at a terminal would, and read back what it drew."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time


def run_in_terminal(
    cmd: list[str], env: dict[str, str], *, cols: int = 160, rows: int = 40, timeout: float = 120
) -> tuple[int, bytes, str]:
    """``cmd`` with stdin/stdout on a pty of ``cols`` x ``rows`` (stderr piped): its exit code, every byte it
    drew, and its stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**env, "TERM": "xterm", "COLUMNS": str(cols), "LINES": str(rows)}
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM_PROGRAM"):
        env.pop(name, None)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    raw = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            elif proc.poll() is not None:
                break
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, raw, err


def plain_text(raw: bytes) -> str:
    """What was drawn, without control sequences; carriage returns as line breaks."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode(errors="replace")).replace("\r", "\n")
