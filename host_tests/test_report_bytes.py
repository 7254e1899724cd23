"""report.json's byte figures against the compiled object: symbol sizes read with pyelftools.

The report counts bytes from the tables it renders; the compiler counts what it emits. Each
layer's read-only symbols (``<prefix>_l<N>_*``) are grouped the way docs/report-keys.md defines the
figures (``_coef`` -> coef_bytes, ``_weight`` -> base_weight_bytes, ``_mult_spline``,
``_mult_base``, ``_rounding``, ``_shift`` -> requant_bytes, everything else -> table_bytes) and
compared one for one; the header's size macros against all read-only / zero-initialised symbols.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import require_tool
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import STRICT_FLAGS, host_compiler
from kan2mcu.quant.input_rule import RULE_BYTES
from kan2mcu.quant.quantize import QuantOptions

REQUANT = ("_mult_spline", "_mult_base", "_rounding", "_shift")


def _object_symbols(obj: Path) -> dict[str, tuple[str, int]]:
    """name -> (section name, size) of every data object the object file defines."""
    with open(obj, "rb") as handle:
        elf = ELFFile(handle)
        symtab = elf.get_section_by_name(".symtab")
        out = {}
        for symbol in symtab.iter_symbols():
            if symbol["st_info"]["type"] != "STT_OBJECT" or not isinstance(symbol["st_shndx"], int):
                continue
            out[symbol.name] = (elf.get_section(symbol["st_shndx"]).name, symbol["st_size"])
        return out


def _compile(folder: Path, compiler: str, flags: list[str], out: Path) -> dict[str, tuple[str, int]]:
    subprocess.run([compiler, *flags, "-c", str(folder / "kan.c"), "-o", str(out)], check=True)
    return _object_symbols(out)


def _check_report(folder: Path, symbols: dict[str, tuple[str, int]], optimized: bool = False) -> None:
    """Report and header byte figures == the object's symbol sizes. ``optimized`` (-O2): GCC may
    fold the input API's one-entry tables (``kan_raw_top``, or the one ``kan_raw_rules`` rule of
    inputs that all share a row) into code, so that table may be absent."""
    report = json.loads((folder / "report.json").read_text())
    header = (folder / "kan.h").read_text()
    readonly = {name: size for name, (section, size) in symbols.items() if section.startswith(".rodata")}
    zeroed = {name: size for name, (section, size) in symbols.items() if section.startswith(".bss")}
    assert set(readonly) | set(zeroed) == set(symbols), symbols  # nothing in .data
    total_flash = 0
    for layer in report["layers"]:
        mine = {name: size for name, size in readonly.items() if name.startswith(f"kan_l{layer['index']}_")}
        assert mine, f"no symbols for layer {layer['index']}"
        assert layer["flash_bytes"] == sum(mine.values())
        coef = sum(size for name, size in mine.items() if name.endswith("_coef"))
        assert layer["coef_bytes"] == coef
        if report["arith"] == "int":
            weight = sum(size for name, size in mine.items() if name.endswith("_weight"))
            requant = sum(size for name, size in mine.items() if name.endswith(REQUANT))
            assert (layer["base_weight_bytes"], layer["requant_bytes"]) == (weight, requant)
            assert layer["table_bytes"] == sum(mine.values()) - coef - weight - requant
        total_flash += sum(mine.values())
    if report["arith"] == "int":  # the integer input API's tables (kan_raw_*) are linked with every model
        api = {name: size for name, size in readonly.items() if name.startswith("kan_raw_")}
        folded = report["totals"]["input_api_bytes"] - sum(api.values())
        one_entry = "kan_raw_rules" if "kan_raw_rules[1]" in (folder / "kan.c").read_text() else "kan_raw_top"
        assert folded == 0 or optimized and one_entry not in api and 0 < folded <= max(RULE_BYTES, 255), (api, folded)
        assert api or folded == RULE_BYTES, api
        readonly[one_entry] = readonly.get(one_entry, 0) + folded
        total_flash += sum(api.values()) + folded
    assert report["totals"]["flash_bytes"] == total_flash == sum(readonly.values())
    assert f"KAN_TABLE_BYTES {sum(readonly.values())}u" in header
    workspace = report["totals"]["workspace_bytes"]
    assert f"KAN_WORKSPACE_BYTES {workspace}u" in header
    entries = [size for name, size in zeroed.items() if name.endswith("_ws_in")]
    pairs = [size for name, size in zeroed.items() if name.endswith("_ws_pair")]
    if pairs:  # the pair spline kernel's per-input entries: two pointers, 8 (32-bit) or 16 (64-bit host) bytes
        n = max(4 * -(-layer["in_features"] // 4) for layer in report["layers"] if layer.get("strategy") == "spline")
        assert not entries and pairs[0] in (8 * n, 16 * n), pairs  # bytes each, counted at the largest
        assert workspace == sum(zeroed.values()) - pairs[0] + 16 * n
    elif entries:  # the halfword spline kernel's per-input entries: 12 (DSP), 20 (32-bit) or 24 (64-bit host)
        n = max(4 * -(-layer["in_features"] // 4) for layer in report["layers"] if layer.get("strategy") == "spline")
        assert entries[0] in (12 * n, 20 * n, 24 * n), entries  # bytes each, counted at the largest
        assert workspace == sum(zeroed.values()) - entries[0] + 24 * n
    else:
        assert workspace == sum(zeroed.values())


CASES = {
    "digits-8-3-4": ("digits", "int", QuantOptions(spline_bits=3, coef_bits=4)),  # packed cardinal table, coefs
    "digits-8-8-8": ("digits", "int", QuantOptions()),
    "digits-8-8-8-rv32": ("digits", "int", QuantOptions(), "qemu-rv32imac"),  # the pair layout
    "digits-float": ("digits", "float", None),
    "small-6-5-6": ("6x4x4x2-G3-k2", "int", QuantOptions(6, 5, 6)),
    "nonuniform-8-3-8": ("nonuniform", "int", QuantOptions(spline_bits=3)),  # per-input tables
}


@pytest.fixture(scope="module")
def generated(digits_checkpoint, small_checkpoints, nonuniform_checkpoint, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("bytes")
    sources = {"digits": (digits_checkpoint, None), "nonuniform": nonuniform_checkpoint, **small_checkpoints}
    out = {}
    for key, (source, arith, options, *board) in CASES.items():
        checkpoint, calibration = sources[source]
        generate_model(checkpoint, base / key, arith=arith, options=options, calibration=calibration, quiet=True,
                       strategy="spline", **({"board": board[0]} if board else {}))
        out[key] = base / key
    return out


@pytest.mark.parametrize("key", sorted(CASES))
def test_report_bytes_equal_host_object_symbols(generated, key, tmp_path):
    symbols = _compile(generated[key], host_compiler(), [*STRICT_FLAGS, "-O0"], tmp_path / "kan.o")
    _check_report(generated[key], symbols)


@pytest.mark.parametrize("key", ["digits-8-3-4", "digits-8-8-8", "nonuniform-8-3-8"])
def test_report_bytes_equal_cortex_m4_object_symbols(generated, key, tmp_path):
    compiler = require_tool("arm-none-eabi-gcc")
    symbols = _compile(generated[key], compiler, [*STRICT_FLAGS, "-mcpu=cortex-m4", "-mthumb", "-ffreestanding"],
                       tmp_path / "kan.o")
    _check_report(generated[key], symbols, optimized=True)
