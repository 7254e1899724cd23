"""RV32 byte-entry rows summed in byte lanes (kan2mcu.quant.strategies.edge_table_kernel.rv32_lane_group):
the words of up to 255 // (2^table_bits - 1) rows added whole before one widening. Bit-exact on
qemu-rv32imac at every group size and code width 3..8, at group boundaries and odd tails, and with
every entry at its largest value (byte lanes filled to the brim); the cost model counts the saving
and never makes fewer entry bits slower."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_c_equals_reference, assert_compiles_strict, make_random_checkpoint, require_tool
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.firmware.boards import get_board
from kan2mcu.firmware.measure import measure
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.reference import run_model
from kan2mcu.quant.strategies import edge_table, edge_table_kernel

BOARD = "qemu-rv32imac"

# name: (widths, code bits per layer, entry bits per layer); groups of 8 (5-bit), 4 (6-bit), 2 (7-bit) rows
SHAPES = {
    # 40 inputs: five whole groups of 8; 16 outputs (4 words); layer 1: 16 inputs, 2 groups, last word 2 entries
    "g8-40x16x6-3bit": ((40, 16, 6), (3, 4), (5, 5)),
    # 37 inputs: nine groups of 4 and a tail of 1; 12-byte rows (MUL); layer 1: a word of three entries
    "g4-37x12x3-6bit": ((37, 12, 3), (6, 7), (6, 6)),
    # 21 inputs: ten groups of 2 and a tail; last word of two entries; layer 1: a last word of one entry
    "g2-21x10x5-8bit": ((21, 10, 5), (8, 5), (7, 7)),
    # 9 inputs, fewer than a group of 8 (one partial group); one word
    "g8-9x4x2-7bit": ((9, 4, 2), (7, 3), (5, 5)),
    # nibbles (8 per word): 35 inputs = 17 + 17 + 1 (4-bit entries, groups of 17); two words in one pass
    "n17-35x16x4-4bit": ((35, 16, 4), (4, 5), (4, 4)),
    # 3-bit nibbles (groups of 36): 40 inputs = 36 + 4; 24 outputs: 3 words in two passes, 12-byte rows (MUL)
    "n36-40x24x3-8bit": ((40, 24, 3), (8, 3), (3, 3)),
    # 2-bit nibbles (groups of 85): one partial group; a last word of one entry in layer 1
    "n85-20x8x1-3bit": ((20, 8, 1), (3, 6), (2, 2)),
    # 24 outputs of 5-bit entries: 6-word rows of 24 bytes (MUL) in two passes (4 + 2 words)
    "g8-12x24x3-5bit": ((12, 24, 3), (5, 4), (5, 6)),
    # 32 outputs of 7-bit entries: two passes of 4 words, sums in acc[] (over 16 outputs)
    "g2-11x32x2-4bit": ((11, 32, 2), (4, 5), (7, 7)),
}


def _generate(checkpoint, calibration, folder, code_bits, table_bits):
    generate_model(checkpoint, folder, calibration=calibration, options=QuantOptions(act_bits=max(code_bits)),
                   plan=[LayerPlan("edge-table", b, t) for b, t in zip(code_bits, table_bits)], quiet=True,
                   allow_saturation=True)


def _set_vectors(folder, codes):
    """Replace the folder's test vectors by ``codes`` and the Python integer reference's outputs."""
    _, qmodel = load_bundle(folder)
    vectors = json.loads((folder / "test_vectors.json").read_text())
    vectors["inputs"], vectors["outputs"] = codes.tolist(), run_model(qmodel, codes).tolist()
    (folder / "test_vectors.json").write_text(json.dumps(vectors))


@pytest.fixture(scope="module")
def shape_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("rv32-lanes")
    dirs = {}
    for seed, (name, (widths, code_bits, table_bits)) in enumerate(SHAPES.items()):
        checkpoint, calibration = make_random_checkpoint(base / f"{name}.pt", widths, 4, 3, seed=40 + seed)
        folder = base / name
        _generate(checkpoint, calibration, folder, code_bits, table_bits)
        codes = np.random.default_rng(seed).integers(0, 1 << code_bits[0], (24, widths[0]))
        assert_c_equals_reference(folder, codes.astype(np.int64), base / f"host-{name}")
        dirs[name] = folder
    return dirs


def _brimful_checkpoint(path, widths):
    """A KAN whose first layer's edges are all one function, over inputs of one range: every entry of
    a code is the same, and one code holds the largest entry (2^table_bits - 1) of every edge."""
    import torch

    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    torch.manual_seed(5)
    model = KAN(list(widths), grid_size=4, spline_order=3)
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.normal_(0.0, 0.5)
        first = model.layers[0]
        first.spline_weight.copy_(first.spline_weight[:1, :1].expand_as(first.spline_weight))
        first.base_weight.fill_(0.3)
        first.spline_scaler.fill_(1.0)
    save_checkpoint(model, path, dataset=None, input_transform=None)
    calibration = path.with_suffix(".npy")
    grid = np.linspace(-1.0, 1.0, 64)
    np.save(calibration, np.repeat(grid[:, None], widths[0], axis=1))  # every input over the same range
    return path, calibration


@pytest.fixture(scope="module", params=[3, 4, 5, 6, 7])
def brimful_dir(request, tmp_path_factory):
    """Entries of ``param`` bits (3, 4: nibbles), every first-layer entry at the top code the largest
    one: test vectors with all inputs at that code fill every byte lane of every group (40 inputs:
    more than one group at every width) to group * (2^bits - 1)."""
    bits = request.param
    base = tmp_path_factory.mktemp(f"brimful{bits}")
    checkpoint, calibration = _brimful_checkpoint(base / "b.pt", (40, 8, 3))
    folder = base / "model"
    _generate(checkpoint, calibration, folder, (4, 4), (bits, 8))
    _, qmodel = load_bundle(folder)
    table = qmodel.layers[0].table[:, :, :8].astype(np.int64)
    top = (1 << bits) - 1
    peak = [int(np.flatnonzero(table[0, :, 0] == top)[0])] if (table[0, :, 0] == top).any() else []
    assert peak and np.all(table[:, peak[0], :] == top), "no code holds the largest entry of every edge"
    codes = np.random.default_rng(bits).integers(0, 16, (6, 40))
    codes[:3] = peak[0]  # byte lanes at their brim in every group
    _set_vectors(folder, codes)
    return folder


def test_lane_groups_grow_with_fewer_entry_bits():
    groups = [edge_table_kernel.rv32_lane_group(b) for b in range(8, 4, -1)]
    assert groups == [1, 2, 4, 8]
    assert [edge_table_kernel.rv32_lane_group(b) for b in (4, 3, 2)] == [17, 36, 85]  # nibbles
    assert all(g * ((1 << b) - 1) <= 255 < (g + 1) * ((1 << b) - 1) for g, b in zip(groups, range(8, 4, -1)))
    with pytest.raises(ValueError):
        edge_table_kernel.rv32_lane_group(6, largest=64)


def test_kernel_takes_the_groups(shape_dirs):
    text = (shape_dirs["g8-40x16x6-3bit"] / "kan.c").read_text()
    assert "the words of 8 rows summed whole first" in text
    assert "the words of 4 rows summed whole first" in (shape_dirs["g4-37x12x3-6bit"] / "kan.c").read_text()
    assert "the words of 2 rows summed whole first" in (shape_dirs["g2-21x10x5-8bit"] / "kan.c").read_text()
    nibbles = (shape_dirs["n17-35x16x4-4bit"] / "kan.c").read_text()
    assert "nibble entries" in nibbles and "every 17 rows (no byte lane can carry)" in nibbles


def _require_board():
    info = get_board(BOARD)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)


def test_lane_groups_bit_exact_on_rv32imac(shape_dirs, tmp_path):
    _require_board()
    report = measure(list(shape_dirs.values()), BOARD, tmp_path / "measure")
    for name, entry in zip(shape_dirs, report["models"]):
        assert entry["check"] == "PASS", (name, entry["firmware_result"])


def test_brimful_byte_lanes_bit_exact_on_rv32imac(brimful_dir, tmp_path):
    _require_board()
    entry = measure([brimful_dir], BOARD, tmp_path / "measure")["models"][0]
    assert entry["check"] == "PASS", entry["firmware_result"]


@pytest.mark.parametrize("n_in, n_out", [(64, 16), (16, 10), (40, 12), (21, 5), (8, 20), (300, 5)])
def test_fewer_entry_bits_never_slower_by_the_cost_model(n_in, n_out):
    """rv32imac: predicted instructions of a layer never grow as its entries narrow (bytes 8..5 bits,
    nibbles 4..2: more rows per byte-lane group), at every code width; the saving is 0 where the C loop runs."""
    class Step:  # the planner's LayerPlan fields estimate reads
        def __init__(self, in_bits, table_bits):
            self.in_bits, self.table_bits = in_bits, table_bits

    class Layer:
        in_features, out_features = n_in, n_out

    for first, last in ((True, False), (False, True)):
        for bits in range(3, 9):
            for widths in ((8, 7, 6, 5), (4, 3, 2)):  # bytes, nibbles
                costs = [edge_table.estimate(Layer, Step(bits, t), QuantOptions(), "rv32imac", first, last)["instructions"]
                         for t in widths]
                assert costs == sorted(costs, reverse=True), (n_in, n_out, bits, costs)
    assert edge_table.lane_group_saving(300, 5, 6, 4, "rv32imac") == 0.0  # over 64 inputs: the C loop
    assert edge_table.lane_group_saving(64, 16, 6, 5, "cortex-m4") == 0.0


def test_rv32imac_board_plan_of_digits_within_the_issue_bound(digits_checkpoint, tmp_path):
    """``generate --board qemu-rv32imac`` on the digits KAN: PASS in at most 1,800 instructions (issue 17),
    at accuracy no worse than the float model's minus 0.5 point."""
    _require_board()
    generate_model(digits_checkpoint, tmp_path / "kan", quiet=True, board=BOARD)
    accuracy = json.loads((tmp_path / "kan" / "report.json").read_text())["accuracy"]
    assert accuracy["quantized"] >= accuracy["float"] - 0.005, accuracy
    entry = measure([tmp_path / "kan"], BOARD, tmp_path / "measure")["models"][0]
    assert entry["check"] == "PASS", entry["firmware_result"]
    assert entry["instructions"] <= 1800, entry["functions"]


@pytest.mark.parametrize("table_bits", [6, 4])
def test_fewer_code_bits_never_slower_with_lane_groups_on_qemu(table_bits, tmp_path):
    """The digits-shaped KAN [64, 16, 10] with 6-bit entries (groups of 4) or nibbles (groups of 17) at
    3..8-bit codes on qemu-rv32imac: every build PASSes and the exact counts never grow with fewer code
    bits (a first layer's kernel never clamps or tests its codes in <prefix>_infer_q, which measure counts,
    so an 8-bit first layer gains nothing over a 7-bit one)."""
    _require_board()
    checkpoint, calibration = make_random_checkpoint(tmp_path / "d.pt", (64, 16, 10), 5, 3, seed=3)
    dirs = []
    for bits in range(3, 9):
        _generate(checkpoint, calibration, tmp_path / f"b{bits}", (bits, bits), (table_bits, table_bits))
        dirs.append(tmp_path / f"b{bits}")
    report = measure(dirs, BOARD, tmp_path / "measure")
    assert [m["check"] for m in report["models"]] == ["PASS"] * len(dirs)
    counts = [m["instructions"] for m in report["models"]]
    assert counts == sorted(counts), counts


STRICT_TARGETS = {  # the cores that compile the RV32 rows, and two that compile their C fallback
    "rv32imac": ("riscv64-unknown-elf-gcc", "-march=rv32imac", "-mabi=ilp32"),
    "rv32ec": ("riscv64-unknown-elf-gcc", "-march=rv32ec", "-mabi=ilp32e"),
    "cortex-m4": ("arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb"),
}


@pytest.mark.parametrize("target", STRICT_TARGETS)
def test_lane_group_shapes_compile_warning_free(shape_dirs, target, tmp_path):
    """Every shape compiles with the strict flags of test_edge_kernels.py at -O0, -O2 and -Os (the asm
    rows' operands, up to 6 per nibble word, must find registers at -O0 too)."""
    require_tool(STRICT_TARGETS[target][0])
    assert_compiles_strict(list(STRICT_TARGETS[target]), shape_dirs, tmp_path)
