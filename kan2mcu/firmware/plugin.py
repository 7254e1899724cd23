"""The instruction-counting QEMU TCG plugin: building it and reading what it writes.

The C source is ``firmware/qemu_plugin/insn_count.c``; it is compiled with the host's gcc into
``<cache>/qemu-plugin/insn_count-<sha256 of source, 16 hex>.so`` (cache: ``$KAN2MCU_CACHE_DIR`` or
``~/.cache/kan2mcu``), so a changed source is rebuilt and an unchanged one is reused.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kan2mcu.errors import ToolchainError
from kan2mcu.firmware.toolchain import find_tool
from kan2mcu.paths import firmware_dir


def cache_root() -> Path:
    """kan2mcu's cache folder."""
    configured = os.environ.get("KAN2MCU_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kan2mcu"


def plugin_source() -> Path:
    return firmware_dir() / "qemu_plugin" / "insn_count.c"


def build_plugin(cache_dir: Path | None = None) -> Path:
    """Path of the compiled plugin, building it with ``gcc -O2 -shared -fPIC`` when needed."""
    source = plugin_source()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "qemu-plugin"
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / f"insn_count-{digest}.so"
    if library.is_file():
        return library
    temporary = out_dir / f".insn_count-{digest}.{os.getpid()}.so"
    command = [find_tool("gcc"), "-O2", "-Wall", "-shared", "-fPIC", "-o", str(temporary), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"building the QEMU plugin failed: {result.stderr.strip().splitlines()[-1:]}")
    temporary.replace(library)
    return library


@dataclass
class ExecutedInsn:
    """One instruction address: how often it ran in the window and, if it ended a translation
    block, how often the next executed address was not the following instruction (taken)."""

    address: int
    size: int
    disassembly: str
    count: int = 0
    taken: int = 0


@dataclass
class Trace:
    """Aggregated plugin output: executed instructions by address."""

    insns: dict[int, ExecutedInsn] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(insn.count for insn in self.insns.values())


def parse_trace(text: str) -> Trace:
    """Aggregate the plugin's per-block lines into per-address counts."""
    trace = Trace()
    block_count = block_taken = 0
    remaining = 0
    last_address = None
    for line in text.splitlines():
        if line.startswith("T "):
            _, _, n_insns, count, taken = line.split()
            block_count, block_taken, remaining = int(count), int(taken), int(n_insns)
        elif line.startswith("I ") and remaining > 0:
            parts = line.split(" ", 3)
            address, size = int(parts[1], 16), int(parts[2])
            insn = trace.insns.get(address)
            if insn is None:
                insn = trace.insns[address] = ExecutedInsn(address, size, parts[3] if len(parts) > 3 else "")
            insn.count += block_count
            remaining -= 1
            last_address = address
            if remaining == 0:
                trace.insns[last_address].taken += block_taken
    return trace


def read_trace(path: Path) -> Trace:
    """Read the plugin's output file; ToolchainError when it is missing or truncated."""
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"the QEMU plugin wrote no output ({path})")
    text = path.read_text()
    if "# end" not in text:
        raise ToolchainError(f"the QEMU plugin output {path} is truncated")
    return parse_trace(text)
