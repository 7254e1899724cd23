"""Real boards: flash with ``pio run -t upload`` and read the result line from the serial port.

Cannot run without a board; the line parsing is shared with the emulated path
(:func:`kan2mcu.firmware.resultline.parse_result_line`) and :func:`read_result_line` takes any
object with ``readline()`` so it is tested with a fake port. The firmware repeats its line every
second, so opening the port after the board's reset still catches it.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from kan2mcu.errors import BoardError, ToolchainError, VerificationError
from kan2mcu.firmware.boards import Board
from kan2mcu.firmware.pio import prepare_core_dir, run_pio
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


def serial_ports() -> list[str]:
    """Device names of the serial ports pyserial sees."""
    from serial.tools import list_ports  # pylint: disable=import-outside-toplevel

    return sorted(p.device for p in list_ports.comports())


def check_port(port: str | None, board: Board, ports=serial_ports) -> None:
    """BoardError unless ``port`` is given and exists (URLs such as rfc2217:// are taken as given)."""
    if port is None:
        raise BoardError(f"board {board.name} is a real board: give --port PORT to flash and measure it "
                         f"(serial ports here: {', '.join(ports()) or 'none'})")
    if "://" in port or os.path.exists(port):
        return
    found = ports()
    if port not in found:
        raise BoardError(f"serial port {port} not found (serial ports here: {', '.join(found) or 'none'})")


def registry_reachable(timeout: float = 3.0) -> bool:
    """Whether a PlatformIO registry host answers on port 443 (hosts from PlatformIO itself)."""
    try:
        from platformio import __registry_mirror_hosts__ as hosts  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    for host in hosts:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def missing_packages(core_dir: Path, board: Board) -> list[str]:
    """The board's PlatformIO platform, or its non-optional toolchain, if not installed in ``core_dir``."""
    platform_dir = Path(core_dir) / "platforms" / board.pio_platform
    manifest = platform_dir / "platform.json"
    if not manifest.is_file():
        return [f"platform {board.pio_platform}"]
    packages = json.loads(manifest.read_text()).get("packages", {})
    return [f"toolchain {name}" for name, spec in sorted(packages.items())
            if spec.get("type") == "toolchain" and not spec.get("optional", False)
            and not (Path(core_dir) / "packages" / name).is_dir()]


def require_real_board(board: Board, port: str | None, *, core_dir: Path | None = None, ports=serial_ports,
                       online=registry_reachable) -> None:
    """Everything a real-board measurement needs, checked before building: the serial port, and the
    board's platform and toolchain installed or downloadable (BoardError / ToolchainError)."""
    check_port(port, board, ports)
    core = prepare_core_dir(core_dir)
    missing = missing_packages(core, board)
    if missing and not online():
        raise ToolchainError(f"{', '.join(missing)} of {board.name} not installed in {core} and the PlatformIO "
                             f"registry cannot be reached (offline?); on a machine with a network run once: "
                             f"kan2mcu pio -- pkg install -g -p {board.pio_platform}")


def flash_and_read(project_dir: Path, board: Board, port: str, timeout: float = 30.0) -> dict:
    """Upload the project's firmware for ``board`` through ``port`` (pio's output streamed to
    stderr) and return its parsed result."""
    completed = run_pio(project_dir, board.name, ("upload",), extra_args=("--upload-port", port), stream=sys.stderr)
    if completed.returncode != 0:
        tail = [line for line in (completed.stdout or "").splitlines() if line.strip()][-4:]
        raise ToolchainError(f"pio upload to {board.name} on {port} failed: " + " | ".join(tail))
    require_python_module("serial", "pyserial>=3.5")
    import serial  # pylint: disable=import-outside-toplevel

    with serial.Serial(port, MONITOR_SPEED, timeout=1.0) as handle:
        return read_result_line(handle, timeout)
