"""Generated files: determinism, report keys, compile flags (host and cross), float back end."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import require_tool
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import STRICT_FLAGS
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.check.verify import verify


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
    # the plan pinned at --coef-bits 8 (the planner may narrow coefficients to 4 bits within the error limit)
    result = generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(spline_bits=3), quiet=True,
                            plan=[LayerPlan("spline", 8)] * 2)
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
    # MACs and BitOps by hand (docs/report-keys.md) for [64, 16, 10], G=5, k=3 (8 B-splines, 12 knots),
    # spline 3 bit x coef 8 bit, SiLU 12 bit x base weight 12 bit:
    #   layer 0: 1024 edges: 4096 spline MACs x 24 + 1024 base MACs x 144 = 245,760 BitOps
    #   layer 1:  160 edges:  640 x 24 + 160 x 144 = 38,400
    #   float32: (edges x 9 MACs + inputs x 108 Cox-de Boor multiplies) x 1024:
    #   layer 0 (9216 + 6912) x 1024 = 16,515,072; layer 1 (1440 + 1728) x 1024 = 3,244,032
    assert [(l["edges"], l["macs"], l["bitops"], l["bitops_float32"]) for l in report["layers"]] == [
        (1024, 5120, 245760, 16515072), (160, 800, 38400, 3244032)]
    assert report["totals"]["bitops"] == 284160
    assert report["totals"]["bitops_reduction"] == round(19759104 / 284160, 2)  # 69.54
    # 3-bit cardinal tables: one row per position (P per distinct code step and basis shift), 4 values in the bytes
    # of one word (spline.c.j2 reads a row whole)
    assert [l["basis_mode"] for l in report["layers"]] == ["cardinal", "cardinal"]
    _, qmodel = load_bundle(tmp_path / "m")
    for index, qlayer in enumerate(qmodel.layers):
        shifts = qlayer.basis_shift if qlayer.basis_shift.size else [0] * qlayer.in_features
        # plus a shifted copy per (code step, basis shift) in use (finer coefficient steps)
        rows = sum(1 << lp for lp, _ in set(zip(qlayer.in_log2p.tolist(), list(shifts))))
        assert qlayer.card.shape == (rows, 4)
        # compact (byte/nibble) layouts read these rows in C; the halfword layout folds them into
        # per-position decode words (spline_layout.position_tables), checked in test_spline_kernel.py
        from kan2mcu.quant.strategies import spline as spline_strategy

        if spline_strategy.kernel_layout(qlayer).kind != "halfword":
            assert f"static const uint32_t kan_l{index}_card[{rows}]" in source
    assert result.report["accuracy"]["samples"] == 450


def test_coefficients_are_nibble_packed(digits_checkpoint, tmp_path):
    """4-bit coefficients in the compact layout: words of 8 nibbles per block of 8 outputs (layer 1's
    10 outputs take two blocks), half the bytes of 8-bit coefficients in layer 0."""
    generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(coef_bits=4), quiet=True,
                   plan=[LayerPlan("spline", 8, None, None, "compact")] * 2)  # pinned: the planner's choice
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    n_coef = 64 * 16 * 8 + 16 * 10 * 8
    assert report["totals"]["coef_bytes"] == 4 * (2 * 64 * 8 + 2 * 16 * 8)
    assert report["totals"]["coef_bytes"] < n_coef


@pytest.mark.parametrize("compiler,flags", [
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m0plus", "-mthumb", "-ffreestanding"]),
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding"]),
    ("riscv64-unknown-elf-gcc", ["-march=rv32imac", "-mabi=ilp32", "-ffreestanding"]),
], ids=["m0plus", "m4f", "rv32imac"])
@pytest.mark.parametrize("arith", ["int", "float"])
def test_cross_compiles_warning_free(digits_checkpoint, tmp_path, compiler, flags, arith):
    """Warning-free under the strict flags; the object defines kan_infer and needs nothing but
    compiler helpers (``__aeabi_*``, ``__mulsf3``...): no libc, no libm."""
    from elftools.elf.elffile import ELFFile

    tool = require_tool(compiler)
    generate_model(digits_checkpoint, tmp_path / "m", arith=arith, options=QuantOptions(coef_bits=5), quiet=True, strategy="spline")
    obj = tmp_path / "kan.o"
    run = subprocess.run([tool, *STRICT_FLAGS, *flags, "-c", str(tmp_path / "m" / "kan.c"), "-o", str(obj)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    with open(obj, "rb") as handle:
        symbols = list(ELFFile(handle).get_section_by_name(".symtab").iter_symbols())
    defined = {s.name for s in symbols if s["st_info"]["bind"] == "STB_GLOBAL" and s["st_shndx"] != "SHN_UNDEF"}
    undefined = {s.name for s in symbols if s["st_shndx"] == "SHN_UNDEF" and s.name}
    assert defined == ({"kan_infer", "kan_quantize_input_q", "kan_infer_q"} if arith == "int" else {"kan_infer"})
    assert all(name.startswith("__") for name in undefined), undefined


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
