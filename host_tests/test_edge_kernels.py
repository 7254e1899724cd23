"""The edge-table kernel's shapes (kan2mcu/quant/strategies/edge_table_kernel.py) on every emulated board,
and the rule that fewer code bits are never slower (by the cost model, and measured under QEMU)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_c_equals_reference, assert_compiles_strict, make_random_checkpoint, require_tool
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.quant.costmodel import CORES
from kan2mcu.firmware.boards import QEMU_BOARDS, get_board
from kan2mcu.firmware.measure import measure
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.strategies import edge_table, edge_table_kernel

MUL_BOARDS = [b for b in QEMU_BOARDS if get_board(b).has_multiplier]  # rv32ec: multiply-free models (test_cores.py)

# (widths, code bits): each exercises a kernel shape of byte entries
KERNEL_SHAPES = {
    # 67 inputs: the looped asm on DSP cores (4 rows per iteration and 3 tail rows); 16 -> 6: 2 words
    "looped-67x16x6-5bit": ((67, 16, 6), 5),
    # 20 outputs: 5-word rows (two passes; row bytes not a power of two: C rows on DSP cores, MULS on
    # Armv6-M); 12-byte rows in layer 1 (three times a power of two)
    "passes-8x20x9-4bit": ((8, 20, 9), 4),
    # 9-bit codes: uint16_t codes (LDRH), one row per step
    "wide-6x4x2-9bit": ((6, 4, 2), 9),
    # 3-bit codes: 8 rows per step of the table pointer
    "short-12x8x3-3bit": ((12, 8, 3), 3),
    # 32 outputs of 300 inputs (two chunks of lane sums): two passes of 4-word rows in the looped asm (12 registers) and a tail,
    # as in the 784-input benchmark model, where GCC's pre-allocation scheduling once ran out of registers
    "loop4-300x32x4-3bit": ((300, 32, 4), 3),
}


@pytest.fixture(scope="module")
def shape_dirs(tmp_path_factory):
    """One generated model per kernel shape, each checked bit for bit on the host first."""
    base = tmp_path_factory.mktemp("edge-shapes")
    dirs = {}
    for seed, (name, (widths, bits)) in enumerate(KERNEL_SHAPES.items()):
        checkpoint, calibration = make_random_checkpoint(base / f"{name}.pt", widths, 4, 3, seed=20 + seed)
        folder = base / name
        generate_model(checkpoint, folder, calibration=calibration, options=QuantOptions(act_bits=bits),
                       plan=[LayerPlan("edge-table", bits)] * (len(widths) - 1), quiet=True)
        _, qmodel = load_bundle(folder)
        codes = np.random.default_rng(seed).integers(0, 1 << min(bits + 1, 16), (300, widths[0]))
        assert_c_equals_reference(folder, codes.astype(np.int64), base / f"host-{name}")
        dirs[name] = folder
    return dirs


def test_kernel_shapes_take_the_intended_paths(shape_dirs):
    """The generated C holds the shapes the names promise (the asm loop, two passes, LDRH codes)."""
    looped = (shape_dirs["looped-67x16x6-5bit"] / "kan.c").read_text()
    assert "4 input(s) per iteration, the whole loop in asm" in looped
    assert "all 16 inputs straight-line in asm" in looped
    passes = (shape_dirs["passes-8x20x9-4bit"] / "kan.c").read_text()
    assert "e4_0" in passes and "muls %[row], %[x0], %[row]" in passes
    assert "ldrh %[row]" in (shape_dirs["wide-6x4x2-9bit"] / "kan.c").read_text()
    assert "t moves every 8 rows" in (shape_dirs["short-12x8x3-3bit"] / "kan.c").read_text()


@pytest.mark.parametrize("board", MUL_BOARDS)
def test_kernel_shapes_on_every_emulated_board(shape_dirs, board, tmp_path):
    """Firmware == Python integer reference (the firmware's own comparison) for every shape."""
    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    report = measure(list(shape_dirs.values()), board, tmp_path / "measure")
    for name, entry in zip(shape_dirs, report["models"]):
        assert entry["check"] == "PASS", (name, entry["firmware_result"])
        assert entry["firmware_result"]["mismatches"] == 0


@pytest.mark.parametrize("core", CORES)
def test_fewer_code_bits_never_slower_by_the_cost_model(core):
    """Predicted instructions never grow when a layer's codes get narrower (entries of any width),
    first layers included at every width (their kernels never clamp: 8-bit codes gain nothing)."""
    for n_in, n_out in ((64, 16), (16, 10), (80, 6), (8, 20), (300, 5), (32, 12)):
        for table_bits in (4, 8, 12):
            for first, last in ((True, False), (False, False), (False, True)):
                costs = []
                for bits in range(3, 13):
                    terms = edge_table.cost_terms(n_in, n_out, table_bits, bits, core, first, last)
                    costs.append(sum(edge_table.COSTS[core][k] * v for k, v in terms.items()))
                assert all(a <= b + 1e-9 for a, b in zip(costs, costs[1:])), (core, n_in, n_out, table_bits, costs)


def test_asm_rows_per_step_grow_with_fewer_code_bits():
    """The DSP loop's rows per step of the table pointer: never fewer for narrower codes."""
    for row_words in (1, 2, 3, 4, 6, 8):
        rows = [edge_table_kernel.asm_loop(64, row_words, bits) for bits in range(3, 13)]
        counts = [r["rows"] if r else 1 for r in rows]
        assert counts == sorted(counts, reverse=True), (row_words, counts)


@pytest.mark.parametrize("board", MUL_BOARDS)
def test_fewer_code_bits_never_slower_on_qemu(board, tmp_path):
    """The digits-shaped KAN [64, 16, 10] as edge tables at 3..8-bit codes (Armv6-M: [32, 16, 10], whose
    8-bit tables fit its 256 KiB of flash): QEMU's exact instruction counts of <prefix>_infer_q (a first
    layer's kernel never clamps, so 8-bit codes gain nothing over 7-bit ones) never grow with fewer
    code bits; every build PASSes (its self-check also runs <prefix>_infer on the codes)."""
    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    widths = (32, 16, 10) if info.core.startswith("cortex-m0") else (64, 16, 10)
    checkpoint, calibration = make_random_checkpoint(tmp_path / "d.pt", widths, 5, 3, seed=3)
    dirs = []
    for bits in range(3, 9):  # instructions only: the guard is not the subject
        generate_model(checkpoint, tmp_path / f"b{bits}", calibration=calibration, options=QuantOptions(act_bits=bits),
                       plan=[LayerPlan("edge-table", bits)] * 2, quiet=True, allow_saturation=True)
        dirs.append(tmp_path / f"b{bits}")
    report = measure(dirs, board, tmp_path / "measure")
    assert [m["check"] for m in report["models"]] == ["PASS"] * len(dirs)
    assert all(m["input_instructions"] for m in report["models"])  # the raw-input path: <prefix>_infer_q
    counts = [m["instructions"] for m in report["models"]]
    assert counts == sorted(counts), counts


@pytest.fixture(scope="module")
def clamped_codes_dir(tmp_path_factory):
    """A [12, 6, 3] KAN at 5-bit codes whose test vectors hold first-layer codes above the top code
    31 (vectors 1, 3, 5: a single code at 32, 63 or 255; the others in range), expected outputs
    from the Python integer reference (which clamps them)."""
    import json

    from kan2mcu.quant.reference import run_model

    base = tmp_path_factory.mktemp("clamped")
    checkpoint, calibration = make_random_checkpoint(base / "c.pt", (12, 6, 3), 4, 3, seed=11)
    folder = base / "model"
    generate_model(checkpoint, folder, calibration=calibration, options=QuantOptions(act_bits=5),
                   plan=[LayerPlan("edge-table", 5)] * 2, quiet=True)
    codes = np.random.default_rng(4).integers(0, 32, (8, 12))
    for vector, (index, code) in {1: (0, 32), 3: (11, 63), 5: (6, 255), 7: (3, 31)}.items():
        codes[vector, index] = code
    _, qmodel = load_bundle(folder)
    vectors = json.loads((folder / "test_vectors.json").read_text())
    vectors["inputs"], vectors["outputs"] = codes.tolist(), run_model(qmodel, codes).tolist()
    (folder / "test_vectors.json").write_text(json.dumps(vectors))
    return folder


@pytest.mark.parametrize("board", MUL_BOARDS)
def test_first_layer_codes_above_the_top_code_clamp_on_every_board(clamped_codes_dir, board, tmp_path):
    """Codes above a first layer's top code decode as the top code on every core (RV32: the codes'
    test sends them through the clamped copy; in-range vectors take the asm rows without clamps)."""
    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    entry = measure([clamped_codes_dir], board, tmp_path / "measure")["models"][0]
    assert entry["check"] == "PASS", entry["firmware_result"]


@pytest.mark.parametrize("board, bound", [("qemu-cortex-m4", 1250), ("qemu-rv32imac", 2050)])
def test_digits_default_plan_within_its_instruction_bound(digits_checkpoint, board, bound, tmp_path):
    """The digits KAN's default plan (edge tables 5/8 + 6/8) under QEMU: PASS, and at most the issue's
    M4 bound (1,250) / the RV32 kernel's measured count (2,045 for this M4-costed plan's 8-bit entries,
    5 RV32 instructions per word and row; the rv32imac board plan, narrower entries summed in byte-lane
    groups, meets the issue's 1,800: test_edge_rv32_lanes.py)."""
    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    generate_model(digits_checkpoint, tmp_path / "kan", quiet=True)
    entry = measure([tmp_path / "kan"], board, tmp_path / "measure")["models"][0]
    assert entry["check"] == "PASS", entry["firmware_result"]
    assert entry["instructions"] <= bound, entry["functions"]


STRICT_TARGETS = {  # cross compilers and flags of the cores whose asm kernels the shapes exercise
    "cortex-m0plus": ("arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb"),
    "cortex-m3": ("arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb"),
    "cortex-m4": ("arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb"),
    "cortex-m4f": ("arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m4-clang": ("clang", "--target=arm-none-eabi", "-mcpu=cortex-m4", "-mthumb"),
    "rv32imac": ("riscv64-unknown-elf-gcc", "-march=rv32imac", "-mabi=ilp32"),
    "rv32ec": ("riscv64-unknown-elf-gcc", "-march=rv32ec", "-mabi=ilp32e"),
}


@pytest.mark.parametrize("target", STRICT_TARGETS)
def test_kernel_shapes_compile_warning_free(shape_dirs, target, tmp_path):
    """Every shape's kan.c compiles for the core with -Wall -Wextra -Wconversion -Wcast-align
    -pedantic -Werror (users' builds, e.g. Arduino's, turn warnings into errors; table pointers that
    may pass a table's end once failed -Warray-bounds), at the levels users build at: -O0 (debug),
    -O2 and -Os (size), with the hard-float ABI (its pre-allocation scheduling once starved the asm
    rows of registers) and with Clang."""
    require_tool(STRICT_TARGETS[target][0])
    assert_compiles_strict(list(STRICT_TARGETS[target]), shape_dirs, tmp_path)
