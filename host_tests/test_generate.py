"""Generated files: determinism, report keys, compile flags (host and cross), float back end."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import require_tool
from kan2mcu.generate import generate_model
from kan2mcu.hostcc import STRICT_FLAGS, compile_check
from kan2mcu.quantize import QuantOptions
from kan2mcu.verify import verify


def _read_all(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_byte_identical_output(digits_checkpoint, tmp_path):
    generate_model(digits_checkpoint, tmp_path / "a", quiet=True)
    generate_model(digits_checkpoint, tmp_path / "b", quiet=True)
    a, b = _read_all(tmp_path / "a"), _read_all(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


def test_header_and_report(digits_checkpoint, tmp_path):
    result = generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(spline_bits=3), strategy="spline", quiet=True)
    header = (tmp_path / "m" / "kan.h").read_text()
    for needle in ("#ifndef KAN_H", 'extern "C"', "KAN_INPUT_SIZE 64u", "KAN_OUTPUT_SIZE 10u",
                   "kan2mcu 0.1.0", "model sha256:", "--spline-bits 3", "KAN_WORKSPACE_BYTES"):
        assert needle in header, needle
    source = (tmp_path / "m" / "kan.c").read_text()
    integer_path = re.sub(r"/\*.*?\*/", "", source.split("#ifdef KAN_WITH_FLOAT_API")[0], flags=re.S)
    assert not re.search(r"\b(float|double)\b", integer_path), "float on the integer path"
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    for banned in ("malloc", "#include <math.h>", "#include <stdlib.h>", "#include <string.h>"):
        assert banned not in code
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert set(report) >= {"kan2mcu_version", "arith", "model", "options", "layers", "totals", "accuracy"}
    assert set(report["accuracy"]) >= {"float", "quantized"}
    layer = report["layers"][0]
    assert set(layer) >= {"edges", "table_bytes", "coef_bytes", "flash_bytes", "macs", "bitops", "bitops_float32"}
    assert layer["edges"] == 64 * 16
    # 3-bit cardinal table: 32 positions x 4 values x 3 bits = 48 bytes + guard
    assert report["totals"]["bitops_reduction"] > 10
    assert result.report == report


def test_coefficients_are_bit_packed(digits_checkpoint, tmp_path):
    generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(coef_bits=4), strategy="spline", quiet=True)
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    n_coef = 64 * 16 * 8 + 16 * 10 * 8
    assert report["totals"]["coef_bytes"] == (64 * 16 * 8 * 4 + 7) // 8 + 1 + (16 * 10 * 8 * 4 + 7) // 8 + 1
    assert report["totals"]["coef_bytes"] < n_coef


@pytest.mark.parametrize("compiler,flags", [
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m0plus", "-mthumb", "-ffreestanding"]),
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding"]),
    ("riscv64-unknown-elf-gcc", ["-march=rv32imac", "-mabi=ilp32", "-ffreestanding"]),
], ids=["m0plus", "m4f", "rv32imac"])
@pytest.mark.parametrize("arith", ["int", "float"])
def test_cross_compiles_warning_free(digits_checkpoint, tmp_path, compiler, flags, arith):
    tool = require_tool(compiler)
    generate_model(digits_checkpoint, tmp_path / "m", arith=arith, options=QuantOptions(coef_bits=5), strategy="spline", quiet=True)
    compile_check(tmp_path / "m", tool, [*STRICT_FLAGS, *flags])


def test_float_back_end_matches_float_model(digits_checkpoint, tmp_path):
    generate_model(digits_checkpoint, tmp_path / "f", arith="float", quiet=True)
    result = verify(tmp_path / "f", build_dir=tmp_path / "build", quiet=True)
    assert result.max_abs_error_vs_float < 1e-3
    assert result.accuracy["c"] == pytest.approx(result.accuracy["float"], abs=1 / 450)


def test_cli_generate_and_verify(digits_checkpoint, tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "kan2mcu", "generate", str(digits_checkpoint), "-o", str(out), "--spline-bits", "3"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "BitOps" in run.stdout
    run = subprocess.run([sys.executable, "-m", "kan2mcu", "verify", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "bit-exact" in run.stdout
