"""Firmware project writing, board table, parsing and estimate logic: no cross toolchain needed."""
import json
import struct
from pathlib import Path

import jinja2
import pytest

from kan2mcu.errors import BoardError, OptionError, ToolchainError, VerificationError
from kan2mcu.firmware import cycles, toolchain
from kan2mcu.firmware.boards import BOARDS, QEMU_BOARDS, REAL_BOARDS, get_board, platform_board_json
from kan2mcu.firmware.measure import _overflow_error
from kan2mcu.firmware.plugin import ExecutedInsn, parse_trace
from kan2mcu.firmware.project import template_environment, write_project
from kan2mcu.firmware.resultline import parse_result_line
from kan2mcu.firmware.serial_measure import read_result_line
from kan2mcu.paths import firmware_dir

FIXTURES = Path(__file__).parent / "fixtures"
INT_MODEL = FIXTURES / "tiny_model"
FLOAT_MODEL = FIXTURES / "tiny_model_float"


def test_board_table_has_the_eight_emulated_and_seven_real_boards():
    assert QEMU_BOARDS == ("qemu-cortex-m0", "qemu-cortex-m3", "qemu-cortex-m4", "qemu-cortex-m7", "qemu-cortex-m33",
                           "qemu-cortex-m55", "qemu-rv32imac", "qemu-rv32ec")
    assert set(REAL_BOARDS) == {"pico", "nucleo_f446re", "nucleo_f746zg", "rpipico2", "esp32-c3-devkitm-1",
                                "sipeed-longan-nano", "ch32v003f4p6_evt_r0"}
    ec = get_board("qemu-rv32ec")
    assert (ec.flash_bytes, ec.ram_bytes, ec.has_multiplier) == (16 * 1024, 2 * 1024, False)
    assert "-mabi=ilp32e" in ec.cpu_flags and ec.qemu_command("fw.elf")[3:5] == ["-cpu", "rv32,m=false"]
    assert get_board("qemu-cortex-m55").qemu_machine == "mps3-an547" and "-mcpu=cortex-m55" in get_board(
        "qemu-cortex-m55").cpu_flags
    assert get_board("qemu-cortex-m33").qemu_machine == "mps2-an505" and get_board("rpipico2").core == "cortex-m33"
    assert get_board("ch32v003f4p6_evt_r0").core == "rv32ec" and get_board("ch32v003f4p6_evt_r0").counter == "micros"
    m0 = get_board("qemu-cortex-m0")
    assert (m0.qemu_machine, m0.flash_bytes, m0.ram_bytes) == ("microbit", 256 * 1024, 16 * 1024)
    assert "-mfloat-abi=soft" in m0.cpu_flags
    assert get_board("qemu-cortex-m4").has_fpu and "-mfpu=fpv4-sp-d16" in get_board("qemu-cortex-m4").cpu_flags
    assert get_board("qemu-cortex-m7").qemu_machine == "mps2-an500"
    assert get_board("nucleo_f446re").counter == "DWT_CYCCNT"
    assert get_board("pico").counter == "SysTick"
    assert get_board("sipeed-longan-nano").counter == "mcycle"


def test_board_json_files_match_the_board_table():
    for name in QEMU_BOARDS:
        on_disk = json.loads((firmware_dir() / "boards" / f"{name}.json").read_text())
        assert on_disk == platform_board_json(BOARDS[name]), f"regenerate with python -m kan2mcu.firmware.boards ({name})"


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError, match="unknown board 'stm8'.*qemu-cortex-m4.*nucleo_f446re"):
        get_board("stm8")


def test_qemu_command_is_deterministic_and_uses_semihosting():
    command = get_board("qemu-rv32imac").qemu_command("fw.elf")
    assert command[:5] == ["qemu-system-riscv32", "-M", "virt", "-bios", "none"]
    assert "-icount" in command and command[command.index("-icount") + 1] == "shift=0"
    assert "enable=on,target=native" in command


def test_platformio_ini_has_only_the_asked_environment_and_no_absolute_path(tmp_path):
    project = write_project(INT_MODEL, "qemu-cortex-m4", tmp_path / "p")
    ini = (project / "platformio.ini").read_text()
    assert "default_envs = qemu-cortex-m4" in ini
    assert "platform = kan2mcu-qemu" in ini and "symlink://" not in ini
    assert str(tmp_path) not in ini and str(firmware_dir()) not in ini
    assert [line for line in ini.splitlines() if line.startswith("[env:")] == ["[env:qemu-cortex-m4]"]
    assert "kan2mcu pio -- run -d . -e qemu-cortex-m4 -t upload" in ini
    for name, platform in [("pico", "raspberrypi"), ("nucleo_f446re", "ststm32"), ("nucleo_f746zg", "ststm32"),
                           ("esp32-c3-devkitm-1", "espressif32"), ("sipeed-longan-nano", "gd32v")]:
        real_ini = (write_project(INT_MODEL, name, tmp_path / name) / "platformio.ini").read_text()
        assert [line for line in real_ini.splitlines() if line.startswith("[env:")] == [f"[env:{name}]"]
        assert f"platform = {platform}" in real_ini
        assert f"board = {name}" in real_ini
        assert "framework = arduino" in real_ini
        assert "monitor_speed = 115200" in real_ini
        assert "build_unflags = -Os" in real_ini
        assert ("upload_protocol = dfu" in real_ini) == (name == "sipeed-longan-nano")
    assert "model_build_flags = -O2" in ini
    assert "-<port_arduino.cpp>" in ini
    for name in ("main.c", "kan2mcu_test_vectors.h", "kan2mcu_port.h", "port_arduino.cpp", "kan2mcu_counter.c",
                 "kan2mcu_counter.h", "tiny.c", "tiny.h"):
        assert (project / "src" / name).is_file()
    manifest = json.loads((project / "kan2mcu_project.json").read_text())
    assert manifest["board"] == "qemu-cortex-m4" and manifest["prefix"] == "tiny"


def test_real_board_project_uses_the_same_sources(tmp_path):
    emulated = write_project(INT_MODEL, "qemu-cortex-m0", tmp_path / "a")
    real = write_project(INT_MODEL, "pico", tmp_path / "b")
    assert "default_envs = pico" in (real / "platformio.ini").read_text()
    for name in ("main.c", "kan2mcu_test_vectors.h", "port_arduino.cpp"):
        assert (emulated / "src" / name).read_text() == (real / "src" / name).read_text()
    port = (real / "src" / "port_arduino.cpp").read_text()
    assert "0xE0001004" in port and "mcycle" in port and "getCycleCount" in port and "0xE000E018" in port


def test_int_vectors_are_embedded_exactly(tmp_path):
    project = write_project(INT_MODEL, "qemu-cortex-m3", tmp_path / "p")
    header = (project / "src" / "kan2mcu_test_vectors.h").read_text()
    vectors = json.loads((INT_MODEL / "test_vectors.json").read_text())
    assert "#define KAN2MCU_N_VECTORS 8" in header
    assert "{ " + ", ".join(str(v) for v in vectors["outputs"][1]) + " }" in header
    main_c = (project / "src" / "main.c").read_text()
    assert "tiny_infer(kan2mcu_input, kan2mcu_output)" in main_c and '#include "tiny.h"' in main_c


def test_float_vectors_are_embedded_as_binary32_bits(tmp_path):
    project = write_project(FLOAT_MODEL, "qemu-cortex-m4", tmp_path / "p")
    header = (project / "src" / "kan2mcu_test_vectors.h").read_text()
    vectors = json.loads((FLOAT_MODEL / "test_vectors.json").read_text())
    first = struct.unpack("<I", struct.pack("<f", vectors["outputs"][0][0]))[0]
    assert f"0x{first:08x}u" in header
    tolerance = struct.unpack("<I", struct.pack("<f", vectors["abs_tolerance"]))[0]
    assert f"#define KAN2MCU_ABS_TOLERANCE_BITS 0x{tolerance:08x}u" in header


def test_writing_twice_gives_identical_files(tmp_path):
    first = write_project(INT_MODEL, "qemu-cortex-m4", tmp_path / "a")
    second = write_project(INT_MODEL, "qemu-cortex-m4", tmp_path / "b")
    for path in sorted((first / "src").iterdir()):
        assert path.read_bytes() == (second / "src" / path.name).read_bytes()


def test_templates_are_strict():
    with pytest.raises(jinja2.UndefinedError):
        template_environment().get_template("main.c.j2").render({"model_name": "x"})


def test_bad_model_folder_and_bad_vectors(tmp_path):
    with pytest.raises(OptionError, match="no kan2mcu.json"):
        write_project(tmp_path, "qemu-cortex-m4", tmp_path / "p")
    with pytest.raises(OptionError, match="out of range for uint8_t"):
        write_project(INT_MODEL, "qemu-cortex-m4", tmp_path / "p",
                      vectors_override={"inputs": [[0, 0, 0, 256]], "outputs": [[0, 0, 0]], "abs_tolerance": 0})


def test_result_line_parsing_decodes_float_bits():
    text = ('noise\nKAN2MCU_RESULT {"format":1,"check":"FAIL","mismatches":2,"first_mismatch":'
            '{"vector":1,"index":2,"actual":"0x3f800000","expected":"0xbf000000"},"cycles":null}\n')
    result = parse_result_line(text)
    assert result["check"] == "FAIL"
    assert result["first_mismatch"]["actual_value"] == 1.0 and result["first_mismatch"]["expected_value"] == -0.5
    assert parse_result_line("nothing here") is None
    with pytest.raises(VerificationError):
        parse_result_line("KAN2MCU_RESULT {broken")


class FakePort:
    def __init__(self, lines):
        self.lines = list(lines)

    def readline(self):
        return self.lines.pop(0) if self.lines else b""


def test_serial_result_line_reading():
    port = FakePort([b"\x00garbage\r\n", b"", b'KAN2MCU_RESULT {"check":"PASS","cycles":1234,"counter":"DWT_CYCCNT"}\r\n'])
    assert read_result_line(port, timeout=5)["cycles"] == 1234
    ticks = iter(range(100))
    with pytest.raises(VerificationError, match="no KAN2MCU_RESULT"):
        read_result_line(FakePort([]), timeout=3, clock=lambda: next(ticks))


def test_trace_aggregates_overlapping_blocks_and_taken_branches():
    text = "\n".join([
        "# kan2mcu insn_count 1",
        "T 100 3 10 7", "I 100 2 movs r0, #1", "I 102 2 cmp r0, r1", "I 104 2 bne #0x100",
        "T 102 2 5 5", "I 102 2 cmp r0, r1", "I 104 2 bne #0x100",
        "# end",
    ])
    trace = parse_trace(text)
    assert trace.insns[0x100].count == 10 and trace.insns[0x102].count == 15
    assert trace.insns[0x104].count == 15 and trace.insns[0x104].taken == 12
    assert trace.total == 40


def test_cycle_estimate_counts_taken_and_not_taken_branches():
    insns = [ExecutedInsn(0x100, 2, "bne #0x100", count=10, taken=7), ExecutedInsn(0x102, 2, "adds r0, #1", count=10)]
    m0 = cycles.estimate_cycles(insns, "cortex-m0", "arm")
    assert m0["cycles_estimate"] == 7 * 3 + 3 * 1 + 10
    assert m0["branches"] == {"conditional_taken": 7, "conditional_not_taken": 3}
    assert "ESTIMATE" in m0["note"]


@pytest.mark.parametrize("text, core, expected", [
    ("pop {r4, r5, pc}", "cortex-m0", 1 + 3 + 3),
    ("push.w {r4, r5, r6, r7, r8, lr}", "cortex-m4", 1 + 6),
    ("smlal ip, r2, r3, r6", "cortex-m3", 5),
    ("smlal ip, r2, r3, r6", "cortex-m4", 1),
    ("vdiv.f32 s15, s14, s15", "cortex-m4", 14),
    ("bl #0x210", "cortex-m0", 4),
    ("ldr r3, [pc, #4]", "cortex-m7", 1),
])
def test_arm_costs(text, core, expected):
    assert cycles.estimate_cycles([ExecutedInsn(0, 2, text, count=1)], core, "arm")["cycles_estimate"] == expected


def test_m4_pipelined_loads_and_single_cycle_macs():
    """Cortex-M4 TRM 3.3: MLA and SMLAD take 1 cycle; neighbouring independent loads pipeline
    (N loads: N + 1 cycles); a load whose address is the previous load's result does not; LDRD 3."""
    seq = [ExecutedInsn(0x200, 2, "ldr r3, [r0]", count=4), ExecutedInsn(0x202, 2, "ldr r4, [r0, #4]", count=4),
           ExecutedInsn(0x204, 2, "ldr r5, [r1, #8]", count=4), ExecutedInsn(0x206, 4, "mla r2, r3, r4, r2", count=4),
           ExecutedInsn(0x20a, 4, "smlad r2, r3, r5, r2", count=4)]
    assert cycles.estimate_cycles(seq, "cortex-m4", "arm")["cycles_estimate"] == 4 * (2 + 1 + 1 + 1 + 1)
    assert cycles.estimate_cycles(seq, "cortex-m3", "arm")["cycles_estimate"] == 4 * (2 + 1 + 1 + 2 + 1)
    assert cycles.estimate_cycles(seq, "cortex-m0", "arm")["cycles_estimate"] == 4 * (2 + 2 + 2 + 1 + 1)
    dependent = [ExecutedInsn(0x300, 2, "ldr r3, [r0]", count=1), ExecutedInsn(0x302, 2, "ldr r4, [r3, #4]", count=1),
                 ExecutedInsn(0x304, 4, "ldrd r6, r7, [r1]", count=1)]
    assert cycles.estimate_cycles(dependent, "cortex-m4", "arm")["cycles_estimate"] == 2 + 2 + 3


def test_riscv_disassembly_and_costs():
    assert cycles.split_disassembly("02000693          addi   a3,zero,32") == ("addi", "a3,zero,32")
    insns = [ExecutedInsn(0, 4, "e80706e3  beqz  a4,-372", count=4, taken=1),
             ExecutedInsn(4, 4, "02f747b3  div  a5,a4,a5", count=1),
             ExecutedInsn(8, 2, "8082  ret", count=1)]
    assert cycles.estimate_cycles(insns, "rv32imac", "riscv")["cycles_estimate"] == 3 + 3 + 33 + 3


def test_missing_tool_names_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainError, match="arm-none-eabi-gcc not found; install it with: .*apt-get install .*gcc-arm-none-eabi"):
        toolchain.require_build_tools(get_board("qemu-cortex-m4"))
    with pytest.raises(ToolchainError, match="qemu-system-riscv32 not found.*qemu-system-misc"):
        toolchain.require_run_tools(get_board("qemu-rv32imac"))


def test_linker_overflow_becomes_numbers():
    output = "ld: firmware.elf section `.rodata' will not fit in region `FLASH'\nld: region `FLASH' overflowed by 45678 bytes\n"
    error = _overflow_error(output, get_board("qemu-cortex-m0"), "big")
    assert isinstance(error, BoardError)
    assert str(error) == "model big does not fit qemu-cortex-m0: flash needs 307822 bytes but has 262144 (over by 45678)"
    assert _overflow_error("all good", get_board("qemu-cortex-m0"), "big") is None


def test_fixture_vectors_come_from_the_python_mirrors():
    """The hand-written fixtures' expected outputs are the Python mirrors' (never the C's own output)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", FIXTURES / "make_vectors.py")
    make_vectors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_vectors)
    ints = json.loads((INT_MODEL / "test_vectors.json").read_text())
    assert ints["outputs"] == [make_vectors.tiny_reference(codes) for codes in ints["inputs"]]
    floats = json.loads((FLOAT_MODEL / "test_vectors.json").read_text())
    assert floats["outputs"] == [make_vectors.tinyf_reference(x) for x in floats["inputs"]]
    # the mirror knows the fixture's constants: they are the ones in tinyf.c
    source = (FLOAT_MODEL / "tinyf.c").read_text()
    for row in make_vectors.FLOAT_WEIGHTS:
        assert "{" + ", ".join(f"{w}f" for w in row) + "}" in source
