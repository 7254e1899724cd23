"""Running a firmware ELF under QEMU: semihosting for output and exit status, ``-icount shift=0``
for determinism, optionally the instruction-counting plugin (counting between the firmware's
``kan2mcu_measure_begin`` and ``kan2mcu_measure_end`` markers)."""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kan2mcu.errors import ToolchainError
from kan2mcu.firmware.boards import Board
from kan2mcu.firmware.elfinfo import read_elf
from kan2mcu.firmware.plugin import Trace, build_plugin, read_trace
from kan2mcu.firmware.resultline import FAULT_TAG, parse_result_line
from kan2mcu.firmware.toolchain import find_tool

DEFAULT_TIMEOUT_S = 120.0


@dataclass
class QemuRun:
    """What one QEMU run produced."""

    command: list[str]
    returncode: int
    output: str
    result: dict | None
    trace: Trace | None

    @property
    def faulted(self) -> bool:
        return FAULT_TAG in self.output


def run_elf(board: Board, elf: Path, *, count_instructions: bool = False,
            timeout: float = DEFAULT_TIMEOUT_S) -> QemuRun:
    """Run ``elf`` on the emulated ``board``; with ``count_instructions`` the plugin counts the
    instructions executed between the marker functions. Raises ToolchainError on a timeout or a
    missing QEMU; a failing firmware is reported through ``returncode`` / ``result``."""
    find_tool(board.qemu_system)
    elf = Path(elf).resolve()
    command = board.qemu_command(elf)
    with tempfile.TemporaryDirectory(prefix="kan2mcu-qemu-") as tmp:
        trace_path = Path(tmp) / "trace.txt"
        if count_instructions:
            info = read_elf(elf)
            begin, end = info.symbol("kan2mcu_measure_begin"), info.symbol("kan2mcu_measure_end")
            if begin is None or end is None:
                raise ToolchainError(f"{elf} has no kan2mcu_measure_begin/_end markers")
            plugin = build_plugin()
            command = command[:-2] + ["-plugin", f"{plugin},out={trace_path},begin={begin.address:#x},"
                                      f"end={end.address:#x}"] + command[-2:]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ToolchainError(f"QEMU ({board.qemu_machine}) did not finish {elf.name} within {timeout:.0f} s") from exc
        output = completed.stdout + completed.stderr
        trace = read_trace(trace_path) if count_instructions and completed.returncode in (0, 1) else None
    return QemuRun(command, completed.returncode, output, parse_result_line(output), trace)
