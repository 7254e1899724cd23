"""The boards kan2mcu builds firmware for.

Two kinds:

* ``qemu-*``: emulated boards, built offline by the PlatformIO development platform in
  ``firmware/`` with Debian's cross toolchains, run under QEMU with semihosting. Memory sizes are
  those of the QEMU machine's memory map (flash at 0 / RAM at 0x20000000 on Cortex-M; the
  RISC-V ``virt`` machine has no flash, so its 128 MiB of DRAM at 0x80000000 is split into a
  64 MiB "flash" half for code and constants and a 64 MiB RAM half).
* real boards, by their PlatformIO board names, with their standard PlatformIO platform and the
  Arduino framework (one serial port layer for all of them). Sizes are the chip's flash and SRAM.

``BOARDS`` is the single source of truth; ``firmware/boards/*.json`` are written from it by
:func:`write_platform_boards` (a test checks they agree).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kan2mcu.errors import BoardError

KIB = 1024
MIB = 1024 * 1024
NO_MULTIPLIER_CORES = ("rv32ec",)  # models for them are multiply-free (kan2mcu.quant.strategies.mulfree)


@dataclass(frozen=True)
class Board:
    """One target board.

    ``core`` selects the cycle cost table in :mod:`kan2mcu.firmware.cycles`; ``counter`` names the
    cycle counter the firmware reads ("none" under QEMU on Cortex-M: DWT is not modelled).
    """

    name: str
    kind: str  # "qemu" or "real"
    arch: str  # "arm" or "riscv"
    core: str  # cortex-m0, cortex-m0plus, cortex-m3, cortex-m4, cortex-m7, cortex-m33, cortex-m55, rv32imac, rv32ec
    flash_bytes: int
    ram_bytes: int
    cpu_flags: tuple[str, ...]
    counter: str
    f_cpu_hz: int
    min_stack_bytes: int = 2 * KIB
    flash_origin: int = 0
    ram_origin: int = 0x20000000
    qemu_system: str = ""
    qemu_machine: str = ""
    qemu_cpu: str = ""  # -cpu option when the machine's default core is not the target's
    pio_platform: str = ""
    pio_board: str = ""
    pio_framework: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_qemu(self) -> bool:
        return self.kind == "qemu"

    @property
    def has_multiplier(self) -> bool:
        return self.core not in NO_MULTIPLIER_CORES

    @property
    def has_fpu(self) -> bool:
        return "-mfloat-abi=hard" in self.cpu_flags

    @property
    def gcc_prefix(self) -> str:
        return "arm-none-eabi-" if self.arch == "arm" else "riscv64-unknown-elf-"

    def qemu_command(self, elf: Path | str) -> list[str]:
        """QEMU command line that runs ``elf`` with semihosting, deterministic (-icount shift=0)."""
        if not self.is_qemu:
            raise BoardError(f"board {self.name} is a real board, not an emulated one")
        command = [self.qemu_system, "-M", self.qemu_machine]
        if self.qemu_cpu:
            command += ["-cpu", self.qemu_cpu]
        if self.arch == "riscv":
            command += ["-bios", "none"]
        command += ["-nographic", "-monitor", "none", "-serial", "none",
                    "-semihosting-config", "enable=on,target=native",
                    "-icount", "shift=0", "-kernel", str(elf)]
        return command


_ARM_M0 = ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft")
_ARM_M3 = ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft")
_ARM_M4F = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
_ARM_M7F = ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")
_ARM_M33F = ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16")  # Armv8-M main + DSP
_ARM_M55 = ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard")  # Armv8.1-M + Helium (MVE) + FPU; MVE needs hard
_RV32IMAC = ("-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2")  # 2.2: Zicsr is part of I; picks the rv32 libgcc
_RV32EC = ("-march=rv32ec", "-mabi=ilp32e", "-misa-spec=2.2")  # 16 registers, no multiplier (CH32V003 class)

_BOARD_LIST = [
    Board("qemu-cortex-m0", "qemu", "arm", "cortex-m0", 256 * KIB, 16 * KIB, _ARM_M0, "none",
          16_000_000, min_stack_bytes=2 * KIB, qemu_system="qemu-system-arm", qemu_machine="microbit",
          description="BBC micro:bit (nRF51822, Cortex-M0, soft float) under QEMU"),
    Board("qemu-cortex-m3", "qemu", "arm", "cortex-m3", 4 * MIB, 4 * MIB, _ARM_M3, "none",
          25_000_000, min_stack_bytes=8 * KIB, qemu_system="qemu-system-arm", qemu_machine="mps2-an385",
          description="Arm MPS2 AN385 (Cortex-M3, soft float) under QEMU"),
    Board("qemu-cortex-m4", "qemu", "arm", "cortex-m4", 4 * MIB, 4 * MIB, _ARM_M4F, "none",
          25_000_000, min_stack_bytes=8 * KIB, qemu_system="qemu-system-arm", qemu_machine="mps2-an386",
          description="Arm MPS2 AN386 (Cortex-M4F, FPv4-SP, hard float) under QEMU"),
    Board("qemu-cortex-m7", "qemu", "arm", "cortex-m7", 4 * MIB, 4 * MIB, _ARM_M7F, "none",
          25_000_000, min_stack_bytes=8 * KIB, qemu_system="qemu-system-arm", qemu_machine="mps2-an500",
          description="Arm MPS2 AN500 (Cortex-M7, FPv5, hard float) under QEMU"),
    # AN505 boots in the secure state with its vector table at 0x10000000: code in the secure alias
    # of SSRAM1, data in the secure alias of SSRAM3.
    Board("qemu-cortex-m33", "qemu", "arm", "cortex-m33", 4 * MIB, 2 * MIB, _ARM_M33F, "none",
          25_000_000, min_stack_bytes=8 * KIB, flash_origin=0x10000000, ram_origin=0x38000000,
          qemu_system="qemu-system-arm", qemu_machine="mps2-an505",
          description="Arm MPS2 AN505 (Cortex-M33 with DSP, FPv5-SP, hard float, secure state) under QEMU"),
    Board("qemu-cortex-m55", "qemu", "arm", "cortex-m55", 512 * KIB, 512 * KIB, _ARM_M55, "none",
          32_000_000, min_stack_bytes=8 * KIB, qemu_system="qemu-system-arm", qemu_machine="mps3-an547",
          description="Arm MPS3 AN547 (Cortex-M55 with Helium/MVE, hard float; ITCM as flash, DTCM as RAM) under QEMU"),
    Board("qemu-rv32imac", "qemu", "riscv", "rv32imac", 64 * MIB, 64 * MIB, _RV32IMAC, "mcycle",
          10_000_000, min_stack_bytes=8 * KIB, flash_origin=0x80000000, ram_origin=0x84000000,
          qemu_system="qemu-system-riscv32", qemu_machine="virt",
          description="QEMU RISC-V virt (rv32imac, ilp32, soft float)"),
    Board("qemu-rv32ec", "qemu", "riscv", "rv32ec", 16 * KIB, 2 * KIB, _RV32EC, "mcycle",
          48_000_000, min_stack_bytes=1 * KIB, flash_origin=0x80000000, ram_origin=0x84000000,
          qemu_system="qemu-system-riscv32", qemu_machine="virt", qemu_cpu="rv32,m=false",
          description="QEMU RISC-V virt running rv32ec code (ilp32e, no multiplier) in a CH32V003 budget: "
                      "16 KiB flash, 2 KiB RAM"),
    Board("pico", "real", "arm", "cortex-m0plus", 2 * MIB, 264 * KIB,
          ("-mcpu=cortex-m0plus", "-mthumb"), "SysTick", 133_000_000,
          pio_platform="raspberrypi", pio_board="pico", pio_framework="arduino",
          description="Raspberry Pi Pico (RP2040, Cortex-M0+)"),
    Board("nucleo_f446re", "real", "arm", "cortex-m4", 512 * KIB, 128 * KIB,
          ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), "DWT_CYCCNT",
          180_000_000, pio_platform="ststm32", pio_board="nucleo_f446re", pio_framework="arduino",
          description="ST Nucleo-F446RE (STM32F446, Cortex-M4F)"),
    Board("nucleo_f746zg", "real", "arm", "cortex-m7", 1 * MIB, 320 * KIB,
          ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), "DWT_CYCCNT",
          216_000_000, pio_platform="ststm32", pio_board="nucleo_f746zg", pio_framework="arduino",
          description="ST Nucleo-F746ZG (STM32F746, Cortex-M7)"),
    # Pico 2 (RP2350): raspberrypi's registry platform has no RP2350; the community platform has it.
    # Not installed here: built only where that platform is installed.
    Board("rpipico2", "real", "arm", "cortex-m33", 4 * MIB, 520 * KIB,
          ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), "DWT_CYCCNT", 150_000_000,
          pio_platform="https://github.com/maxgerhardt/platform-raspberrypi.git", pio_board="rpipico2",
          pio_framework="arduino", extra={"platformio_ini": {"board_build.core": "earlephilhower"}},
          description="Raspberry Pi Pico 2 (RP2350, Cortex-M33 with DSP and FPU)"),
    Board("esp32-c3-devkitm-1", "real", "riscv", "rv32imac", 4 * MIB, 400 * KIB,
          ("-march=rv32imc",), "esp_cpu_cycle_count", 160_000_000,
          pio_platform="espressif32", pio_board="esp32-c3-devkitm-1", pio_framework="arduino",
          description="Espressif ESP32-C3-DevKitM-1 (RISC-V rv32imc)"),
    Board("sipeed-longan-nano", "real", "riscv", "rv32imac", 128 * KIB, 32 * KIB,
          ("-march=rv32imac",), "mcycle", 108_000_000,
          pio_platform="gd32v", pio_board="sipeed-longan-nano", pio_framework="arduino",
          extra={"platformio_ini": {"upload_protocol": "dfu"}},  # USB DFU: the board's bootloader, no probe
          description="Sipeed Longan Nano (GD32VF103, RISC-V Bumblebee rv32imac)"),
    # CH32V003 (QingKe V2A, rv32ec, no mcycle CSR): the community ch32v platform, not installed here.
    # Counter: micros() x F_CPU / 10^6 (1 us resolution).
    Board("ch32v003f4p6_evt_r0", "real", "riscv", "rv32ec", 16 * KIB, 2 * KIB,
          ("-march=rv32ec", "-mabi=ilp32e"), "micros", 48_000_000, min_stack_bytes=1 * KIB,
          pio_platform="https://github.com/Community-PIO-CH32V/platform-ch32v.git",
          pio_board="ch32v003f4p6_evt_r0", pio_framework="arduino",
          description="WCH CH32V003F4P6 EVT board (RV32EC, 16 KiB flash, 2 KiB SRAM, no multiplier)"),
]

BOARDS: dict[str, Board] = {board.name: board for board in _BOARD_LIST}
QEMU_BOARDS: tuple[str, ...] = tuple(b.name for b in _BOARD_LIST if b.is_qemu)
REAL_BOARDS: tuple[str, ...] = tuple(b.name for b in _BOARD_LIST if not b.is_qemu)


def get_board(name: str) -> Board:
    """The board called ``name``; BoardError listing the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


def platform_board_json(board: Board) -> dict:
    """The PlatformIO board definition (``firmware/boards/<name>.json``) of an emulated board."""
    return {
        "build": {
            "arch": board.arch,
            "core": board.core,
            "cpu": board.core,
            "cpu_flags": " ".join(board.cpu_flags),
            "f_cpu": f"{board.f_cpu_hz}L",
            "flash_origin": hex(board.flash_origin),
            "ram_origin": hex(board.ram_origin),
            "ldscript": "cortexm.ld" if board.arch == "arm" else "riscv.ld",
            "min_stack_bytes": board.min_stack_bytes,
        },
        "frameworks": [],
        "name": board.description,
        "upload": {
            "maximum_size": board.flash_bytes,
            "maximum_ram_size": board.ram_bytes,
            "protocol": "qemu",
            "protocols": ["qemu"],
            "qemu_system": board.qemu_system,
            "qemu_machine": board.qemu_machine,
            **({"qemu_cpu": board.qemu_cpu} if board.qemu_cpu else {}),
        },
        "url": "https://www.qemu.org/docs/master/system/target-arm.html"
        if board.arch == "arm" else "https://www.qemu.org/docs/master/system/riscv/virt.html",
        "vendor": "QEMU",
    }


def write_platform_boards(boards_dir: Path) -> list[Path]:
    """Write ``<name>.json`` for every emulated board into ``boards_dir`` (firmware/boards)."""
    written = []
    for name in QEMU_BOARDS:
        path = Path(boards_dir) / f"{name}.json"
        path.write_text(json.dumps(platform_board_json(BOARDS[name]), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance helper
    from kan2mcu.paths import firmware_dir

    for written_path in write_platform_boards(firmware_dir() / "boards"):
        print(written_path)
