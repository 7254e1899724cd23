"""Layer strategies and the planner: edge-table numerics against an independent float path,
multi-chunk lanes, the planner's budget and error contract, and QEMU checks of speed claims."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_random_checkpoint, require_tool
from kan2mcu.model.bspline import layer_forward
from kan2mcu.errors import OptionError
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.quantize import LayerPlan, QuantOptions, quantize
from kan2mcu.quant.reference import run_model
from kan2mcu.check.verify import verify


def test_edge_table_entries_track_the_float_layer(small_checkpoints):
    """Independent check: dequantized table rows summed over inputs equal the float64 layer forward
    (kan2mcu.model.bspline.layer_forward, which never calls the per-edge code) within half an entry step
    per input."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    model = load_checkpoint(checkpoint).model
    calib = np.load(calibration)
    qmodel = quantize(model, QuantOptions(act_bits=6), calib, plan=[LayerPlan("edge-table", 6)] * 2)
    ql, layer = qmodel.layers[0], model.layers[0]
    rng = np.random.default_rng(0)
    codes = rng.integers(0, ql.codes, size=(200, ql.in_features))
    float_out = layer_forward(layer, ql.code_inputs(codes))  # shared inputs held to their own range (input_share)
    entries = ql.table[np.arange(ql.in_features)[None, :], codes][:, :, : ql.out_features].astype(np.int64)  # [N, I, O]
    signed = entries - (1 << (ql.table_bits - 1))
    # the centres folded into the bias: recover them from the float forward at code 0 is circular, so
    # compare differences between samples instead (the constant cancels)
    approx = (signed * ql.entry_scale[None, None, :]).sum(axis=1)
    diff_float = float_out - float_out[0]
    diff_table = approx - approx[0]
    bound = ql.in_features * ql.entry_scale  # half a step per input, twice (two samples)
    assert np.all(np.abs(diff_float - diff_table) <= bound[None, :] + 1e-12)
    # and it is not trivially loose: the table error is far below the signal
    assert np.abs(diff_float).max() > 20 * np.abs(diff_float - diff_table).max()


def test_wider_entries_track_the_float_edges_closer(small_checkpoints):
    """12-bit entries (halfwords) follow the float edges more closely than 8-bit ones, and 16-bit
    still more closely: the dequantized table against the float64 edge functions at every code, and
    the last layer's integer output against the float64 layer forward on random codes."""
    from kan2mcu.model.bspline import edge_values
    from kan2mcu.quant.strategies.edge_table import run_layer

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    model = load_checkpoint(checkpoint).model
    calib = np.load(calibration)
    table_error, output_error = {}, {}
    for bits in (8, 12, 16):
        qmodel = quantize(model, QuantOptions(table_bits=bits), calib, plan=[LayerPlan("edge-table", 6)] * 2)
        ql, layer = qmodel.layers[-1], model.layers[-1]
        worst = 0.0
        for i in range(ql.in_features):
            x = ql.in_scale[i] * (np.arange(ql.codes) - ql.in_zero[i])
            entries = ql.table[i, :, : ql.out_features].astype(np.float64) - (1 << (bits - 1))
            worst = max(worst, float(np.abs(entries * ql.entry_scale + ql.centre[i] - edge_values(layer, i, x)).max()))
        table_error[bits] = worst
        codes = np.random.default_rng(0).integers(0, ql.codes, size=(2000, ql.in_features))
        x = ql.in_scale[None, :] * (codes - ql.in_zero[None, :])
        integer = run_layer(ql, codes) * qmodel.output_scale
        output_error[bits] = float(np.abs(integer - layer_forward(layer, x)).max())
    # a step 16x finer per 4 bits: the table error shrinks about 16x (allow 8x), the layer's about as
    # much until the int32 output's own step (2^-14 of the calibrated max) takes over
    assert table_error[12] < table_error[8] / 8 and table_error[16] < table_error[12] / 8, table_error
    assert output_error[12] < output_error[8] / 4 and output_error[16] < output_error[12], output_error


def test_table_bits_range_is_checked():
    """--table-bits takes 2..16; outside, one clear error naming the range."""
    assert QuantOptions(table_bits=16).table_bits == 16 and LayerPlan("edge-table", 8, 9).table_bits == 9
    for bad in (1, 17):
        with pytest.raises(OptionError, match=rf"^--table-bits must be an integer in 2\.\.16, got {bad}$"):
            QuantOptions(table_bits=bad)
        with pytest.raises(OptionError, match=r"table bits must be an integer in 2\.\.16"):
            LayerPlan("edge-table", 8, bad)


def test_planner_weighs_halfword_and_nibble_entries(small_checkpoints):
    """--table-bits 12: the planner weighs every entry width down to 2 bits and keeps 12-bit
    (halfword), 8-bit (byte) and 4-bit (nibble) entries (the others cost the same as a wider one);
    halfword tables are predicted at twice the flash of byte tables."""
    from kan2mcu.quant.costmodel import layer_cost
    from kan2mcu.quant.planner import candidate_options, layer_options

    checkpoint, _ = small_checkpoints["8x5x3-G5-k3"]
    model = load_checkpoint(checkpoint).model
    options = QuantOptions(act_bits=6, table_bits=12)
    per_layer = layer_options(model, options, "edge-table")
    assert {step.table_bits for step in per_layer[0]} == set(range(12, 1, -1))
    assert {step.in_bits for step in per_layer[0]} == set(range(6, 1, -1))
    kept, _, dropped = candidate_options(model, options, "edge-table", "cortex-m4")
    assert {step.table_bits for step in kept[0]} == {12, 8, 4} and dropped == 2 * 5 * 8
    layer = model.layers[0]  # 8 -> 5: 6 halfwords (3 words) or 8 bytes (2 words) per row
    from kan2mcu.quant.strategies.edge_table import code_bytes

    wide = layer_cost(layer, LayerPlan("edge-table", 6, 12), options, "cortex-m4")["flash_bytes"]
    byte = layer_cost(layer, LayerPlan("edge-table", 6, 8), options, "cortex-m4")["flash_bytes"]
    code = code_bytes(8, 5, 12, 6, "cortex-m4") - code_bytes(8, 5, 8, 6, "cortex-m4")  # byte entries: asm rows
    assert wide - byte - code == 8 * 64 * 4  # one more word per row


def test_edge_table_lanes_widen_every_chunk(tmp_path):
    """A layer with more inputs than one 16-bit lane can sum (300 > 257) takes the chunked path."""
    checkpoint, calibration = make_random_checkpoint(tmp_path / "wide.pt", (300, 5, 2), 3, 3, seed=5)
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, options=QuantOptions(act_bits=3),
                   plan=[LayerPlan("edge-table", 3)] * 2, quiet=True)
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["plan"][0] == {"strategy": "edge-table", "in_bits": 3, "table_bits": 8}
    text = (tmp_path / "m" / "kan.c").read_text()
    assert "p = in + 257;" in text  # the second chunk of layer 0
    result = verify(tmp_path / "m", calibration=calibration, sanitize=True, build_dir=tmp_path / "b", quiet=True)
    assert result.inputs_checked >= 1000


def test_planner_respects_budget_and_error(digits_checkpoint, tmp_path):
    result = generate_model(digits_checkpoint, tmp_path / "m", quiet=True, flash_budget=48 * 1024)
    planner = result.report["planner"]
    assert planner["predicted_flash_bytes"] <= 48 * 1024
    assert planner["calibration_error"] <= 0.02
    # the bytes actually emitted stay within the prediction (which leaves out the optional input API's
    # tables: they are linked only when the firmware calls kan_quantize_input_q)
    totals = result.report["totals"]
    assert totals["flash_bytes"] - totals["input_api_bytes"] <= planner["predicted_flash_bytes"]
    size = generate_model(digits_checkpoint, tmp_path / "s", quiet=True, optimize="size")
    assert size.report["totals"]["flash_bytes"] < result.report["totals"]["flash_bytes"]


def test_impossible_budget_names_the_smallest_model(digits_checkpoint, tmp_path):
    with pytest.raises(OptionError, match=r"smallest model possible .* needs about \d+ bytes"):
        generate_model(digits_checkpoint, tmp_path / "m", quiet=True, flash_budget=2048)
    assert not (tmp_path / "m").exists()


def test_default_digits_model_is_fast_and_accurate(digits_checkpoint, tmp_path):
    """The default (auto, speed) plan: edge-table layers, accuracy within 0.5 points of float."""
    result = generate_model(digits_checkpoint, tmp_path / "m", quiet=True)
    assert [step["strategy"] for step in result.report["plan"]] == ["edge-table", "edge-table"]
    acc = result.report["accuracy"]
    assert acc["quantized"] >= acc["float"] - 0.005
    assert verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True).inputs_checked >= 1000


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_cost_model_matches_qemu(digits_checkpoint, tmp_path, board):
    """Per-layer predicted instructions within 15% of QEMU's exact counts, for both strategies
    (edge-table with byte and halfword entries, spline with byte and with nibble coefficients)."""
    from kan2mcu.quant.costmodel import layer_cost
    from kan2mcu.firmware.boards import get_board
    from kan2mcu.firmware.measure import measure

    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    model = load_checkpoint(digits_checkpoint).model
    dirs = []
    for strategy, bits, options in (("edge-table", 5, QuantOptions()), ("edge-table", 5, QuantOptions(table_bits=12)),
                                    ("spline", 8, QuantOptions()),
                                    ("spline", 4, QuantOptions(act_bits=4, spline_bits=3, coef_bits=4))):
        plan = [LayerPlan(strategy, bits)] * 2
        folder = tmp_path / f"{strategy}{bits}-{options.table_bits}"
        generate_model(digits_checkpoint, folder, plan=plan, options=options, quiet=True, max_error=1.0)
        dirs.append((folder, plan, options))
    report = measure([d for d, _, _ in dirs], board, tmp_path / "measure")
    for (_, plan, options), entry in zip(dirs, report["models"]):
        assert entry["check"] == "PASS"
        for index, layer in enumerate(model.layers):
            measured = sum(n for f, n in entry["functions"].items() if f"_layer{index}" in f)
            predicted = layer_cost(layer, plan[index], options, info.core, index == 0,
                                   index == len(model.layers) - 1)["instructions"]
            assert abs(predicted - measured) <= 0.15 * measured, (plan[index], index, predicted, measured)


@pytest.mark.parametrize("strategy", ["edge-table", "spline"])
@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_low_bits_are_not_slower(digits_checkpoint, tmp_path, board, strategy):
    """act 4 / spline 3 / coef 4 takes less table flash than 8/8/8 with the same strategy, both run
    bit-exact on the board, and edge-table layers run no more instructions (QEMU's exact counts).
    Spline layers under the default budget take the fast halfword kernel at every coefficient width
    (the compact nibble words only when the budget needs them: test_spline_kernel): the same kernel
    instructions; on M4, where the requantization is branch-free, the whole inference is never slower
    (on M0 and RV32 its 64-bit sign and clamp branches vary with the data by under 1%)."""
    from kan2mcu.firmware.boards import get_board
    from kan2mcu.firmware.measure import measure

    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    low = QuantOptions(act_bits=4, spline_bits=3, coef_bits=4)
    generate_model(digits_checkpoint, tmp_path / "low", options=low, strategy=strategy, quiet=True, max_error=1.0)
    generate_model(digits_checkpoint, tmp_path / "high", strategy=strategy, quiet=True)
    report = measure([tmp_path / "low", tmp_path / "high"], board, tmp_path / "measure")
    low_entry, high_entry = report["models"]
    assert low_entry["check"] == high_entry["check"] == "PASS"
    low_flash, high_flash = (e["memory"]["flash"]["model_tables"] for e in (low_entry, high_entry))
    if strategy == "edge-table":
        assert low_entry["instructions"] <= high_entry["instructions"]
        assert low_flash < high_flash
    else:
        from kan2mcu.codegen.bundle import load_bundle
        from kan2mcu.quant.strategies import spline

        _, low_model = load_bundle(tmp_path / "low")
        assert all(spline.kernel_layout(layer).kind == "halfword" for layer in low_model.layers)
        assert low_flash <= high_flash
        if board == "qemu-cortex-m4":
            assert low_entry["instructions"] <= high_entry["instructions"]


def test_two_models_in_one_build_folder(small_checkpoints, tmp_path):
    """Regression: a second model compiled into the same build folder in the same process must run
    its own code (dlopen hands back an already-loaded library for a path it has seen)."""
    from kan2mcu.codegen.bundle import load_bundle
    from kan2mcu.check.hostcc import HostModel

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    outputs = []
    for strategy in ("spline", "edge-table"):
        folder = tmp_path / strategy
        generate_model(checkpoint, folder, calibration=calibration, strategy=strategy, quiet=True, max_error=10.0)
        _, qmodel = load_bundle(folder)
        codes = np.random.default_rng(1).integers(0, qmodel.layers[0].codes, size=(64, qmodel.in_features))
        c_out = HostModel(folder, tmp_path / "shared-build").infer(codes).astype(np.int64)
        np.testing.assert_array_equal(c_out, run_model(qmodel, codes))
        outputs.append(c_out)
    assert not np.array_equal(outputs[0], outputs[1])
