"""Finding the external tools firmware builds and runs need.

A missing tool raises :class:`kan2mcu.errors.ToolchainError` naming the Debian/Ubuntu package
that provides it, e.g. ``arm-none-eabi-gcc not found; install it with: sudo apt-get install -y
--no-install-recommends gcc-arm-none-eabi``.
"""
from __future__ import annotations

import importlib.util
import shutil

from kan2mcu.errors import ToolchainError
from kan2mcu.firmware.boards import Board

PLATFORMIO_SPEC = "platformio>=6.1,<7"

APT_PACKAGES = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf",
    "riscv64-unknown-elf-size": "binutils-riscv64-unknown-elf",
    "qemu-system-arm": "qemu-system-arm",
    "qemu-system-riscv32": "qemu-system-misc",
    "gcc": "gcc",
}


def install_hint(tool: str) -> str:
    """The command that installs ``tool``."""
    package = APT_PACKAGES.get(tool, tool)
    return f"sudo apt-get install -y --no-install-recommends {package}"


def find_tool(tool: str) -> str:
    """Absolute path of executable ``tool``; ToolchainError with the install command if absent."""
    path = shutil.which(tool)
    if path is None:
        raise ToolchainError(f"{tool} not found; install it with: {install_hint(tool)}")
    return path


def require_python_module(module: str, pip_spec: str) -> None:
    """ToolchainError unless ``module`` can be imported (``pip install pip_spec`` fixes it)."""
    if importlib.util.find_spec(module) is None:
        raise ToolchainError(f"Python package {module} not found; install it with: pip install '{pip_spec}'")


def require_build_tools(board: Board) -> None:
    """Everything ``pio run`` needs for an emulated board: cross gcc, size, PlatformIO, SCons."""
    require_python_module("platformio", PLATFORMIO_SPEC)
    require_python_module("SCons", "scons==4.11.1")
    if board.is_qemu:
        find_tool(board.gcc_prefix + "gcc")
        find_tool(board.gcc_prefix + "size")


def require_run_tools(board: Board) -> None:
    """What running an emulated board needs: QEMU and host gcc (for the counting plugin)."""
    find_tool(board.qemu_system)
    find_tool("gcc")
