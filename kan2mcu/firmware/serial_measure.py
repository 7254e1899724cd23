"""Real boards: flash with ``pio run -t upload`` and read the result line from the serial port.

Cannot run without a board; the line parsing is shared with the emulated path
(:func:`kan2mcu.firmware.resultline.parse_result_line`) and :func:`read_result_line` takes any
object with ``readline()`` so it is tested with a fake port. The firmware repeats its line every
second, so opening the port after the board's reset still catches it.
"""
from __future__ import annotations

import time
from pathlib import Path

from kan2mcu.errors import ToolchainError, VerificationError
from kan2mcu.firmware.boards import Board
from kan2mcu.firmware.pio import run_pio
from kan2mcu.firmware.project import MONITOR_SPEED
from kan2mcu.firmware.resultline import RESULT_TAG, parse_result_line
from kan2mcu.firmware.toolchain import require_python_module


def read_result_line(port, timeout: float = 30.0, clock=time.monotonic) -> dict:
    """Read lines from ``port`` until a result line arrives; VerificationError after ``timeout`` s."""
    deadline = clock() + timeout
    while clock() < deadline:
        raw = port.readline()
        if not raw:
            continue
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if RESULT_TAG in line:
            return parse_result_line(line)
    raise VerificationError(f"no {RESULT_TAG.strip()} line on the serial port within {timeout:.0f} s")


def flash_and_read(project_dir: Path, board: Board, port: str, timeout: float = 30.0) -> dict:
    """Upload the project's firmware for ``board`` through ``port`` and return its parsed result."""
    completed = run_pio(project_dir, board.name, ("upload",), extra_args=("--upload-port", port))
    if completed.returncode != 0:
        tail = [line for line in (completed.stdout or "").splitlines() if line.strip()][-4:]
        raise ToolchainError(f"pio upload to {board.name} on {port} failed: " + " | ".join(tail))
    require_python_module("serial", "pyserial>=3.5")
    import serial  # pylint: disable=import-outside-toplevel

    with serial.Serial(port, MONITOR_SPEED, timeout=1.0) as handle:
        return read_result_line(handle, timeout)
