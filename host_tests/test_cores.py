"""The newer cores: Cortex-M33 and Cortex-M55 (Helium edge-table kernel) and multiply-free RV32EC.

Host checks of the two new Python passes (exact thresholds, Helium layout: golden values), then
firmware under QEMU: the default digits KAN on M33 and M55 (M55: MVE instructions, <= 800
instructions), and the digits KAN generated for ``--board qemu-rv32ec`` (multiply-free, 16 KiB
flash / 2 KiB RAM, run on an rv32 core without the M extension, no mul/div/libgcc call in the
model's code). Bit-exactness: the firmware compares every output with the Python integer reference.
"""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from conftest import assert_c_equals_reference, assert_one_error, run_cli
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.firmware.boards import get_board
from kan2mcu.firmware.measure import build_firmware, firmware_elf, measure
from kan2mcu.firmware.qemu import run_elf
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.reference import run_model
from kan2mcu.quant.strategies import mulfree
from kan2mcu.quant.strategies.edge_table_mve import load_offsets
from kan2mcu.check.verify import verification_codes
from test_firmware_qemu import offline_environment  # noqa: F401  (fresh offline PlatformIO core, dead proxy)


# --- host: the multiply-free requantization pass ---

def test_thresholds_golden_values():
    """y = clamp((acc * 3 + 2) >> 2, 0, 3): y reaches 1 at acc 1 (5 >> 2), 2 at 2 (8 >> 2), 3 at 4 (14 >> 2)."""
    table = mulfree.code_thresholds(np.array([3]), np.array([2]), np.array([2]), 3, np.array([100]), "t")
    assert table.tolist() == [[0, 1, 2, 4]]
    # a negative offset pushes the thresholds up; unreachable codes clip to acc_high + 1
    table = mulfree.code_thresholds(np.array([1]), np.array([-6]), np.array([1]), 7, np.array([9]), "t")
    assert table.tolist() == [[0, 8, 10, 10, 10, 10, 10, 10]]


@pytest.mark.parametrize("seed", range(6))
def test_thresholds_equal_the_multiply_for_every_sum(seed):
    rng = np.random.default_rng(seed)
    n, bits = 5, int(rng.integers(2, 9))
    out_max, acc_high = (1 << bits) - 1, rng.integers(50, 5000, size=n)
    mult, shift = rng.integers(1, 1 << 14, size=n), rng.integers(4, 16, size=n)
    rounding = rng.integers(-(1 << 18), 1 << 18, size=n)
    table = mulfree.code_thresholds(mult, rounding, shift, out_max, acc_high, "t")
    acc = np.arange(int(acc_high.max()) + 1)[:, None].repeat(n, axis=1)
    acc = np.minimum(acc, acc_high[None, :])
    expected = np.clip((acc * mult + rounding) >> shift, 0, out_max)
    np.testing.assert_array_equal(mulfree.requantize(table, acc), expected)


def test_shift_requant_golden_values():
    mult, rounding, shift = mulfree.shift_requant(np.array([4.0, 0.25]), np.array([2.4, -1.3]),
                                                  np.array([100, 100]), "t")
    assert (mult.tolist(), rounding.tolist(), shift.tolist()) == ([4, 1], [2, -4], [0, 2])
    scale = mulfree.pow2_entry_scale(np.array([0.3, 0.05]), np.array([0.1, 0.1]))
    assert scale.tolist() == [0.4, 0.05]  # 0.1 * 2^2 and 0.1 * 2^-1


# --- host: the Helium layout pass ---

def test_mve_load_offsets_golden_values():
    assert load_offsets(16) == [0, 8]
    assert load_offsets(12) == [0, 4]  # the last load moved back: it re-reads entries 4..7, never past the row
    assert load_offsets(4) == [0]  # under 8 bytes: one predicated load
    assert load_offsets(40) == [0, 8, 16, 24, 32]
    assert load_offsets(44) == [0, 8, 16, 24, 32, 36]


def test_no_mul_refuses_spline_layers_in_one_line(small_checkpoints, tmp_path, capsys):
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration,
                          "--no-mul", "--strategy", "spline")
    assert_one_error(status, err, "--no-mul", "edge-table")


@pytest.mark.parametrize("table_bits", [4, 8, 12])
def test_multiply_free_model_is_bit_exact_on_the_host(small_checkpoints, tmp_path, table_bits):
    """Nibble, byte and halfword entries, threshold and shift requantization: host C == reference
    on every code of every input and random codes."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                   options=QuantOptions(act_bits=6, table_bits=table_bits, mul_free=True),
                   plan=[LayerPlan("edge-table", 6, table_bits), LayerPlan("edge-table", 4, table_bits)])
    _, qmodel = load_bundle(tmp_path / "m")
    assert qmodel.layers[0].thresholds.shape == (5, 16) and qmodel.layers[1].thresholds is None
    assert all(int(m) & (int(m) - 1) == 0 for m in qmodel.layers[1].mult)  # powers of two
    source = (tmp_path / "m" / "kan.c").read_text()
    assert "_l0_thresholds[80]" in source and "_l0_mult" not in source and "_l1_lshift" in source
    from kan2mcu.quant.input_codec import input_codec

    assert input_codec(qmodel, None).raw_layout != "rule"  # the raw-input rule multiplies
    rng = np.random.default_rng(7)
    codes = np.concatenate([rng.integers(0, 64, size=(200, 8)), np.repeat(np.arange(64)[:, None], 8, axis=1)])
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "host")


def test_multiply_free_plan_is_counted_as_written(tmp_path):
    """The planner's flash for a multiply-free plan is the written model's (it counted 4-byte
    thresholds and 9 bytes of requantization per hidden output: 430 bytes too many on the digits
    rv32ec plan), and the threshold count follows the rendered entry type: uint32 once a layer's
    sums pass 0xFFFF (64 inputs of 12-bit entries), uint16 below."""
    from conftest import make_random_checkpoint

    from kan2mcu.model.importers import load_checkpoint
    from kan2mcu.quant import costmodel

    checkpoint, calibration = make_random_checkpoint(tmp_path / "c.pt", (64, 6, 3), 5, 3, seed=4)
    options = QuantOptions(act_bits=6, table_bits=8, mul_free=True)
    result = generate_model(checkpoint, tmp_path / "planned", calibration=calibration, quiet=True, max_error=10.0,
                            strategy="edge-table", allow_saturation=True, options=options)
    assert result.report["planner"]["predicted_flash_bytes"] == result.report["totals"]["model_flash_bytes"]
    model = load_checkpoint(checkpoint).model
    for table_bits, ctype in ((12, "uint32_t"), (8, "uint16_t")):
        plan = [LayerPlan("edge-table", 6, table_bits), LayerPlan("edge-table", 4, table_bits)]
        folder = tmp_path / f"t{table_bits}"
        generate_model(checkpoint, folder, calibration=calibration, quiet=True, max_error=10.0, plan=plan,
                       allow_saturation=True, options=QuantOptions(act_bits=6, table_bits=table_bits, mul_free=True))
        qmodel = load_bundle(folder)[1]
        assert f"{ctype} kan_l0_thresholds[{6 * 16}]" in (folder / "kan.c").read_text()
        counted = costmodel.mul_free_extra_bytes(model, plan, options, qmodel.layers)
        assert counted == [6 * 16 * (4 if ctype == "uint32_t" else 2), 0]
        assert costmodel.mul_free_extra_bytes(model, plan, options)[0] >= counted[0]  # before quantizing: a bound


# --- firmware under QEMU ---

@pytest.fixture(scope="module")
def digits_default(digits_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cores") / "kan_int"
    generate_model(digits_checkpoint, folder, quiet=True)
    return folder


def _model_disassembly(board: str, elf, prefix: str = "kan") -> dict[str, str]:
    """Disassembly per model function (``<prefix>_*``) of a firmware ELF."""
    tool = get_board(board).gcc_prefix + "objdump"
    args = [tool, "-d"] + (["-m", "armv8.1-m.main"] if board == "qemu-cortex-m55" else []) + [str(elf)]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    functions = {}
    for block in text.split("\n\n"):
        head = re.match(r"[0-9a-f]+ <([^>]+)>:", block.strip())
        if head and head.group(1).startswith(prefix + "_"):
            functions[head.group(1)] = block
    return functions


@pytest.mark.parametrize("board", ["qemu-cortex-m33", "qemu-cortex-m55"])
def test_digits_default_plan_on_m33_and_m55(offline_environment, digits_default, board, tmp_path):
    entry = measure([digits_default], board, tmp_path / "m")["models"][0]
    assert entry["check"] == "PASS" and entry["firmware_result"]["mismatches"] == 0, entry.get("firmware_result")
    if board == "qemu-cortex-m55":
        assert entry["instructions"] <= 800, entry["functions"]
        code = _model_disassembly(board, firmware_elf(tmp_path / "m" / "kan-int-qemu-cortex-m55", get_board(board)))
        mve = [name for name, text in code.items() if re.search(r"\svldrb\.u16\s.*\n(?:.*\n)*.*\svadd\.i16\s", text)]
        assert len(mve) == 2, sorted(code)  # both layers run the Helium kernel


def _rv32ec_model(digits_checkpoint, folder):
    generate_model(digits_checkpoint, folder, quiet=True, board="qemu-rv32ec")
    return load_bundle(folder)[1]


def test_digits_multiply_free_on_rv32ec(offline_environment, digits_checkpoint, tmp_path):
    """--board qemu-rv32ec: a plan in its budget, whole firmware within 16 KiB flash and 2 KiB RAM,
    run on an rv32 core whose multiply instructions trap, 120 vectors bit-exact (test split, random
    codes, all-zero and all-max), no mul/div/libgcc
    call in the model's functions, accuracy within 0.5 point of the float model."""
    folder = tmp_path / "kan_ec"
    qmodel = _rv32ec_model(digits_checkpoint, folder)
    assert all(layer.mul_free for layer in qmodel.layers)
    report = json.loads((folder / "report.json").read_text())
    assert report["accuracy"]["quantized"] >= report["accuracy"]["float"] - 0.005
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    codes = np.concatenate([codes[:60], codes[450:508], codes[1450:1452]])
    for batch in range(10):  # 12 vectors per firmware (each with its raw inputs): 120 would not fit 16 KiB
        part = codes[12 * batch:12 * batch + 12]
        vectors = {"inputs": part.tolist(), "outputs": run_model(qmodel, part).tolist(), "abs_tolerance": 0}
        elf = build_firmware(folder, "qemu-rv32ec", tmp_path / f"p{batch}", vectors_override=vectors)
        run = run_elf(get_board("qemu-rv32ec"), elf)
        assert run.result is not None, run.output[-2000:]
        assert (run.result["check"], run.result["mismatches"], run.result["vectors"]) == ("PASS", 0, 12)
    entry = measure([folder], "qemu-rv32ec", tmp_path / "m")["models"][0]
    assert entry["check"] == "PASS"
    assert entry["flash_bytes"] <= 16 * 1024 and entry["ram_bytes"] + entry["stack_bytes"] <= 2 * 1024
    code = _model_disassembly("qemu-rv32ec", elf)
    assert {"kan_infer"} <= set(code) and any(name.startswith("kan_layer") for name in code), sorted(code)
    for name, text in code.items():
        bad = [line for line in text.splitlines()  # (objdump's "# <symbol>" notes on immediates are no calls)
               if re.search(r"\s(mul|mulh|mulhu|mulhsu|div|divu|rem|remu)\s|<__", line.split(" # ")[0])]
        assert not bad, (name, bad[:3])


@pytest.mark.parametrize("table_bits", [4, 8])
def test_helium_kernel_on_small_layers(offline_environment, small_checkpoints, table_bits, tmp_path):
    """The Helium kernel's other layouts on Cortex-M55: nibble entries (interleaving stores), rows of
    8 bytes (one load) and of 4 bytes (a predicated load), 5 and 3 outputs (predicated
    requantization stores): every code of every input and 300 random codes, bit-exact."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 8, table_bits), LayerPlan("edge-table", 6, table_bits)])
    _, qmodel = load_bundle(tmp_path / "m")
    rng = np.random.default_rng(11)
    codes = np.concatenate([rng.integers(0, 256, size=(300, 8)), np.repeat(np.arange(256)[:, None], 8, axis=1)])
    vectors = {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}
    elf = build_firmware(tmp_path / "m", "qemu-cortex-m55", tmp_path / "p", vectors_override=vectors)
    run = run_elf(get_board("qemu-cortex-m55"), elf)
    assert run.result is not None, run.output[-2000:]
    assert (run.result["check"], run.result["mismatches"], run.result["vectors"]) == ("PASS", 0, len(codes))
    code = _model_disassembly("qemu-cortex-m55", elf)
    assert sum("vldrb" in text for text in code.values()) == 2, sorted(code)  # both layers: Helium


@pytest.mark.parametrize("case", ["wide-offsets", "two-chunks"])
def test_helium_kernel_wide_tables_and_chunks(offline_environment, case, tmp_path):
    """Helium kernel on Cortex-M55: 11-bit (uint16) codes into a 128 KiB table (32-bit row offsets,
    4 inputs per turn), and 300 inputs summed in two chunks (16-bit lanes widened after 257 inputs):
    bit-exact against the reference on random codes and every code's extremes."""
    from conftest import make_random_checkpoint

    widths, plan, top = ((8, 5, 3), [LayerPlan("edge-table", 11, 8), LayerPlan("edge-table", 6, 8)], 2048) \
        if case == "wide-offsets" else ((300, 4, 2), [LayerPlan("edge-table", 3, 8), LayerPlan("edge-table", 3, 8)], 8)
    checkpoint, calibration = make_random_checkpoint(tmp_path / "r.pt", widths, 5, 3, seed=5)
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0, plan=plan)
    _, qmodel = load_bundle(tmp_path / "m")
    if case == "two-chunks":
        assert qmodel.layers[0].chunk < 300
    rng = np.random.default_rng(12)
    codes = np.concatenate([rng.integers(0, top, size=(60, widths[0])), np.zeros((1, widths[0]), np.int64),
                            np.full((1, widths[0]), top - 1)])
    vectors = {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}
    elf = build_firmware(tmp_path / "m", "qemu-cortex-m55", tmp_path / "p", vectors_override=vectors)
    run = run_elf(get_board("qemu-cortex-m55"), elf)
    assert run.result is not None, run.output[-2000:]
    assert (run.result["check"], run.result["mismatches"], run.result["vectors"]) == ("PASS", 0, len(codes))


@pytest.mark.parametrize("board, platform", [
    ("rpipico2", "https://github.com/maxgerhardt/platform-raspberrypi.git"),
    ("ch32v003f4p6_evt_r0", "https://github.com/Community-PIO-CH32V/platform-ch32v.git")])
def test_real_board_projects_name_their_community_platform(board, platform, tmp_path):
    """Pico 2 and CH32V003 projects are written (their platforms are not installed here, so they are
    neither built nor measured by these tests)."""
    from pathlib import Path

    from kan2mcu.firmware.project import write_project

    project = write_project(Path(__file__).parent / "fixtures" / "tiny_model", board, tmp_path / "p")
    ini = (project / "platformio.ini").read_text()
    assert f"platform = {platform}" in ini and f"board = {get_board(board).pio_board}" in ini
    assert "framework = arduino" in ini
    assert ("board_build.core = earlephilhower" in ini) == (board == "rpipico2")
