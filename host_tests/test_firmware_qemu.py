"""Firmware built by PlatformIO (offline, fresh core folder) and run under QEMU.

Needs arm-none-eabi-gcc, riscv64-unknown-elf-gcc, qemu-system-arm, qemu-system-riscv32 and host
gcc; skipped when one is missing, unless CI=true or KAN2MCU_REQUIRE_TOOLCHAINS=1 (then it fails).
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kan2mcu.errors import BoardError
from kan2mcu.firmware import cli
from kan2mcu.firmware.boards import QEMU_BOARDS, get_board
from kan2mcu.firmware.elfinfo import read_elf
from kan2mcu.firmware.measure import build_firmware, firmware_elf, measure
from kan2mcu.firmware.pio import run_pio
from kan2mcu.firmware.project import write_project

FIXTURES = Path(__file__).parent / "fixtures"
INT_MODEL = FIXTURES / "tiny_model"
FLOAT_MODEL = FIXTURES / "tiny_model_float"
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "riscv64-unknown-elf-gcc", "riscv64-unknown-elf-size",
         "qemu-system-arm", "qemu-system-riscv32", "gcc")
TOOLCHAINS_REQUIRED = os.environ.get("CI") == "true" or os.environ.get("KAN2MCU_REQUIRE_TOOLCHAINS") == "1"


def _missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [m for m in ("platformio", "SCons") if importlib.util.find_spec(m) is None]
    return missing


@pytest.fixture(scope="module", autouse=True)
def offline_environment(tmp_path_factory):
    """Fresh PlatformIO core and plugin cache; a dead proxy proves no registry is reached."""
    missing = _missing_tools()
    if missing:
        message = f"missing toolchain parts: {', '.join(missing)}"
        if TOOLCHAINS_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("offline")
    saved = dict(os.environ)
    os.environ.update({
        "KAN2MCU_PLATFORMIO_CORE_DIR": str(base / "platformio-core"),
        "KAN2MCU_CACHE_DIR": str(base / "cache"),
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    })
    yield base
    os.environ.clear()
    os.environ.update(saved)


class _Projects:
    """One project per fixture model and board (a project holds only its board's environment)."""

    def __init__(self, base):
        self.base, self.made = base, {}

    def __call__(self, arith, board):
        if (arith, board) not in self.made:
            model = INT_MODEL if arith == "int" else FLOAT_MODEL
            self.made[arith, board] = write_project(model, board, self.base / f"{arith}-{board}")
        return self.made[arith, board]


@pytest.fixture(scope="module")
def projects(offline_environment):
    return _Projects(offline_environment)


def _result(output: str) -> dict:
    match = re.search(r"KAN2MCU_RESULT (\{.*\})", output)
    assert match, output[-2000:]
    return json.loads(match.group(1))


@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("arith", ["int", "float"])
def test_pio_builds_and_runs_every_emulated_board_offline(projects, arith, board):
    completed = run_pio(projects(arith, board), board, ("upload",))
    assert completed.returncode == 0, completed.stdout[-3000:]
    result = _result(completed.stdout)
    assert result["check"] == "PASS" and result["mismatches"] == 0
    assert result["stack_bytes"] > 0
    assert (result["cycles"] is not None) == (get_board(board).arch == "riscv")  # mcycle; DWT is not modelled


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_flash_and_ram_equal_the_size_tool(projects, board):
    completed = run_pio(projects("int", board), board)
    assert completed.returncode == 0, completed.stdout[-3000:]
    elf = firmware_elf(projects("int", board), get_board(board))
    size = subprocess.run([get_board(board).gcc_prefix + "size", "-B", "-d", str(elf)],
                          capture_output=True, text=True, check=True).stdout.splitlines()[1].split()
    text, data, bss = int(size[0]), int(size[1]), int(size[2])
    info = read_elf(elf)
    assert (info.flash_bytes, info.ram_bytes) == (text + data, data + bss)


@pytest.mark.parametrize("model, board, change", [
    (INT_MODEL, "qemu-cortex-m0", 1), (FLOAT_MODEL, "qemu-rv32imac", 0.5)])
def test_wrong_expected_vector_fails_the_upload(offline_environment, model, board, change, tmp_path):
    vectors = json.loads((model / "test_vectors.json").read_text())
    correct = vectors["outputs"][3][1]
    vectors["outputs"][3][1] = correct + change
    project = write_project(model, board, tmp_path / "wrong", vectors_override=vectors)
    completed = run_pio(project, board, ("upload",))
    assert completed.returncode != 0
    result = _result(completed.stdout)
    assert result["check"] == "FAIL" and result["mismatches"] == 1
    mismatch = result["first_mismatch"]
    assert (mismatch["vector"], mismatch["index"]) == (3, 1)
    if model == INT_MODEL:
        assert (mismatch["actual"], mismatch["expected"]) == (correct, correct + change)


def test_measure_cli_exits_non_zero_on_fail(offline_environment, tmp_path, capsys):
    wrong = shutil.copytree(INT_MODEL, tmp_path / "wrong_model")
    vectors = json.loads((wrong / "test_vectors.json").read_text())
    vectors["outputs"][0][0] += 7
    (wrong / "test_vectors.json").write_text(json.dumps(vectors))
    assert cli.main(["measure", str(wrong), "--board", "qemu-cortex-m3", "-o", str(tmp_path / "out")]) == 1
    report = json.loads((tmp_path / "out" / "measure.json").read_text())
    assert report["models"][0]["check"] == "FAIL"
    assert report["models"][0]["firmware_result"]["first_mismatch"]["vector"] == 0


def test_measure_is_repeatable_and_reports_both_back_ends(offline_environment, tmp_path):
    first = measure([INT_MODEL, FLOAT_MODEL], "qemu-cortex-m4", tmp_path / "one")
    second = measure([INT_MODEL, FLOAT_MODEL], "qemu-cortex-m4", None)
    for a, b in zip(first["models"], second["models"]):
        for key in ("check", "instructions", "cycles_estimate", "flash_bytes", "ram_bytes", "stack_bytes", "functions"):
            assert a[key] == b[key], key
    int_entry, float_entry = first["models"]
    assert int_entry["check"] == float_entry["check"] == "PASS"
    assert int_entry["functions"] == {"tiny_infer": int_entry["instructions"]}
    assert 50 < int_entry["instructions"] < 1000 and int_entry["cycles_estimate"] > int_entry["instructions"]
    assert int_entry["memory"]["flash"]["model_tables"] == 24  # weights (12) + bias (12); multiplier folded into code
    assert int_entry["memory"]["ram"]["model_ram"] == 12
    table = (tmp_path / "one" / "measure.md").read_text()
    assert "| | tiny (int) | tinyf (float) |" in table and "ESTIMATE" in table


def test_soft_float_and_64_bit_helpers_come_from_libgcc(offline_environment):
    report = measure([INT_MODEL, FLOAT_MODEL], "qemu-cortex-m0")
    int_entry, float_entry = report["models"]
    assert any(name.startswith("__") for name in int_entry["functions"]), int_entry["functions"]
    assert any("fmul" in name or "mulsf3" in name for name in float_entry["functions"])
    m4 = measure([FLOAT_MODEL], "qemu-cortex-m4")["models"][0]
    assert list(m4["functions"]) == ["tinyf_infer"]


def test_rv32_mcycle_agrees_with_the_plugin_count(offline_environment):
    entry = measure([FLOAT_MODEL], "qemu-rv32imac")["models"][0]
    assert entry["check"] == "PASS"
    # mcycle = instructions under -icount; the difference is the marker calls and csrr reads.
    assert 0 <= entry["cycles_measured"] - entry["instructions"] <= 24


def _model_with(tmp_path, extra_c: str, use: str) -> Path:
    model = shutil.copytree(INT_MODEL, tmp_path / "big_model")
    source = (model / "tiny.c").read_text()
    source = source.replace("int tiny_infer(", extra_c + "\nint tiny_infer(", 1)
    source = source.replace("    return TINY_OK;", f"    {use}\n    return TINY_OK;")
    (model / "tiny.c").write_text(source)
    return model


def test_too_large_for_flash_gives_the_numbers(offline_environment, tmp_path):
    model = _model_with(tmp_path, "const uint8_t tiny_big_table[300000] = {1};",
                        "output[0] += tiny_big_table[input[0] * 1000];")
    with pytest.raises(BoardError, match=r"model tiny does not fit qemu-cortex-m0: flash needs \d+ bytes but has 262144"):
        build_firmware(model, "qemu-cortex-m0", tmp_path / "p")


def test_too_large_for_ram_gives_the_numbers(offline_environment, tmp_path):
    model = _model_with(tmp_path, "int32_t tiny_big_ram[3500];",
                        "tiny_big_ram[input[0]] = output[0]; output[1] += tiny_big_ram[input[1]];")
    with pytest.raises(BoardError, match=r"RAM needs \d+ bytes \(\d+ static \+ 2048 minimum stack\) but has 16384"):
        build_firmware(model, "qemu-cortex-m0", tmp_path / "p")


def test_cli_build_writes_and_compiles(offline_environment, tmp_path, capsys):
    assert cli.main(["build", str(INT_MODEL), "--board", "qemu-rv32imac", "-o", str(tmp_path / "proj")]) == 0
    assert firmware_elf(tmp_path / "proj", get_board("qemu-rv32imac")).is_file()
    assert "flash" in capsys.readouterr().out
    assert cli.main(["build", str(INT_MODEL), "--board", "nucleo_f446re", "-o", str(tmp_path / "real")]) == 0
    assert (tmp_path / "real" / "platformio.ini").is_file()
    assert cli.main(["build", str(INT_MODEL), "--board", "nope"]) == 2
