"""Board cycle counters: the wrap arithmetic of firmware/port/kan2mcu_counter.c driven with
simulated SysTick wraps (host gcc + ctypes), and the real-board port compiled for M0+, M4 and
RISC-V (GCC 12 without Zicsr in -march) against a stub Arduino.h."""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import require_tool
from kan2mcu.paths import firmware_dir

PORT = firmware_dir() / "port"
MHZ = 133  # RP2040 at 133 MHz


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    gcc = require_tool("gcc")
    lib = tmp_path_factory.mktemp("counter") / "libcounter.so"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-O2", "-fPIC", "-shared",
                    str(PORT / "kan2mcu_counter.c"), "-o", str(lib)], check=True)
    handle = ctypes.CDLL(str(lib))
    handle.kan2mcu_down_elapsed.argtypes = [ctypes.c_uint32] * 3
    handle.kan2mcu_down_elapsed.restype = ctypes.c_uint32
    handle.kan2mcu_compose_cycles.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint64]
    handle.kan2mcu_compose_cycles.restype = ctypes.c_uint32
    return handle


class SimulatedBoard:
    """SysTick counting down with period P from a random phase, micros() from another phase."""

    def __init__(self, counter, period: int, rng) -> None:
        self.c, self.period = counter, period
        self.systick_phase = int(rng.integers(0, period))
        self.us_phase = int(rng.integers(0, MHZ))
        self.origin_cvr = self.cvr(0)
        self.origin_us = self.micros(0)

    def cvr(self, t: int) -> int:
        return (self.systick_phase - t) % self.period

    def micros(self, t: int) -> int:
        return ((t + self.us_phase) // MHZ) % 2**32

    def port_cycles(self, t: int) -> int:
        """What kan2mcu_port_cycles() computes on ARMv6-M at true cycle t since init."""
        fine = self.c.kan2mcu_down_elapsed(self.origin_cvr, self.cvr(t), self.period)
        coarse = ((self.micros(t) - self.origin_us) % 2**32) * MHZ
        return self.c.kan2mcu_compose_cycles(fine, self.period, coarse)


@pytest.mark.parametrize("period", [2**24, 133_000], ids=["systick-24bit", "core-1ms-tick"])
def test_inferences_across_simulated_wraps_are_timed_exactly(counter, period):
    rng = np.random.default_rng(period)
    for _ in range(2000):
        board = SimulatedBoard(counter, period, rng)
        start = int(rng.integers(0, 50 * period))
        duration = int(rng.integers(0, 6 * 2**24))  # up to 100 M cycles: many wraps
        elapsed = (board.port_cycles(start + duration) - board.port_cycles(start)) % 2**32
        assert elapsed == duration, (period, start, duration)


def test_a_wrap_during_the_inference_broke_the_old_masking(counter):
    """The old port returned (0 - CVR) & 0xFFFFFF: one wrap mid-inference lost 2^24 cycles."""
    board = SimulatedBoard(counter, 2**24, np.random.default_rng(1))
    start, duration = 2**24 - 1000, 20_000_000  # crosses at least one reload
    old = ((-board.cvr(start + duration)) - (-board.cvr(start))) % 2**24
    assert old != duration
    assert (board.port_cycles(start + duration) - board.port_cycles(start)) % 2**32 == duration


def test_down_elapsed_and_compose_edges(counter):
    assert counter.kan2mcu_down_elapsed(10, 3, 2**24) == 7
    assert counter.kan2mcu_down_elapsed(3, 10, 2**24) == 2**24 - 7  # wrapped once
    assert counter.kan2mcu_down_elapsed(0, 0xFFFFFF, 2**24) == 1
    assert counter.kan2mcu_compose_cycles(5, 2**24, 0) == 5
    assert counter.kan2mcu_compose_cycles(5, 2**24, 3 * 2**24 + 5 + 100_000) == 3 * 2**24 + 5
    assert counter.kan2mcu_compose_cycles(2**24 - 1, 2**24, 2**24 + 50) == 2**24 - 1  # coarse ahead by 51


STUB_ARDUINO = """#pragma once
#include <stdint.h>
#ifndef F_CPU
#define F_CPU 133000000UL
#endif
struct StubSerial {
    void begin(unsigned long) {}
    void println(const char *) {}
    void print(const char *) {}
    void print(long) {}
    void print(unsigned long) {}
    void println(void) {}
    void flush(void) {}
    explicit operator bool() const { return true; }
};
extern StubSerial Serial;
unsigned long micros(void);
unsigned long millis(void);
void delay(unsigned long);
"""


@pytest.mark.parametrize("target", [
    ("arm-none-eabi-g++", ["-mcpu=cortex-m0plus", "-mthumb"]),
    ("arm-none-eabi-g++", ["-mcpu=cortex-m4", "-mthumb"]),
    ("riscv64-unknown-elf-g++", ["-march=rv32imac", "-mabi=ilp32"]),
], ids=["cortex-m0plus", "cortex-m4", "rv32imac-gcc12-no-zicsr"])
def test_real_board_port_compiles(target, tmp_path):
    compiler, flags = target
    require_tool(compiler)
    (tmp_path / "Arduino.h").write_text(STUB_ARDUINO)
    for source in ("port_arduino.cpp", "kan2mcu_counter.c"):
        cmd = [compiler.replace("g++", "gcc") if source.endswith(".c") else compiler, *flags, "-O2", "-Wall",
               "-Wextra", "-Werror", "-ffreestanding", f"-I{tmp_path}", f"-I{PORT}", "-c", str(PORT / source),
               "-o", str(tmp_path / (source + ".o"))]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    if "riscv" in compiler:
        dump = subprocess.run([compiler.replace("g++", "objdump"), "-d", str(tmp_path / "port_arduino.cpp.o")],
                              capture_output=True, text=True, check=True).stdout
        assert "b0002573" in dump or "b0002" in dump  # csrrs rd, mcycle (0xB00), x0
