"""Input codes wider than 8 bits (edge-table layers, --act-bits up to 12): uint16 codes through the
C API, the layer buffers, the firmware and the exports, bit-exact everywhere; wider codes give a
smaller error; and the calibrated ranges of continuous inputs are widened by one expected sample
spacing so that a thin calibration set does not saturate fresh data."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_random_checkpoint, require_tool
from kan2mcu.model.bspline import model_forward
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.errors import OptionError
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.quantize import LayerPlan, QuantOptions, sample_ranges
from kan2mcu.quant.reference import dequantize_outputs, quantize_inputs, run_model
from kan2mcu.check.verify import verify

BIG_BUDGET = 1 << 24


@pytest.fixture(scope="module")
def regression_checkpoint(tmp_path_factory):
    """A random [2, 5, 1] KAN: a small regression-sized model whose tables stay small at 12 bits."""
    return make_random_checkpoint(tmp_path_factory.mktemp("wide") / "r.pt", (2, 5, 1), 5, 3, seed=4)


def _max_error(folder, checkpoint, x) -> float:
    """max |integer model - float model| over the float output range, on inputs ``x``."""
    reference = model_forward(load_checkpoint(checkpoint).model, x)
    _, qmodel = load_bundle(folder)
    ours = dequantize_outputs(qmodel, run_model(qmodel, quantize_inputs(qmodel, x)))
    return float(np.abs(ours - reference).max() / np.ptp(reference))


def test_wide_codes_are_uint16_and_bit_exact(regression_checkpoint, tmp_path):
    checkpoint, calibration = regression_checkpoint
    result = generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                            plan=[LayerPlan("edge-table", 10), LayerPlan("edge-table", 11)], flash_budget=BIG_BUDGET)
    assert [step["in_bits"] for step in result.report["plan"]] == [10, 11]
    header = (tmp_path / "m" / "kan.h").read_text()
    source = (tmp_path / "m" / "kan.c").read_text()
    assert "typedef uint16_t kan_code_t;" in header
    assert "#define KAN_INPUT_CODE_MAX 1023u" in header
    assert "int kan_infer(const kan_code_t input[KAN_INPUT_SIZE]" in header
    assert "static uint16_t kan_act0[5];" in source  # the hidden codes (11 bits) between the layers
    assert "(const uint16_t *in, uint16_t *out)" in source
    # every code of every input, random codes up to twice the range (the first layer clamps them),
    # 65535 on every input, and the C input quantizers against the Python one
    checked = verify(tmp_path / "m", calibration=calibration, quiet=True)
    assert checked.inputs_checked >= 1024
    _, qmodel = load_bundle(tmp_path / "m")
    top = run_model(qmodel, np.full((1, 2), 1023))
    assert np.array_equal(run_model(qmodel, np.full((1, 2), 65535)), top)  # saturates at the top code
    assert np.array_equal(run_model(qmodel, np.full((1, 2), 70000)), top)  # what uint16 can hold


def test_spline_layer_feeds_wide_codes(small_checkpoints, tmp_path):
    """A spline layer (byte codes in) writing 10-bit codes for an edge-table layer: bit-exact."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("spline", 8), LayerPlan("edge-table", 10)], flash_budget=BIG_BUDGET)
    assert "typedef uint8_t kan_code_t;" in (tmp_path / "m" / "kan.h").read_text()
    assert "static uint16_t kan_act0[5];" in (tmp_path / "m" / "kan.c").read_text()
    assert verify(tmp_path / "m", calibration=calibration, quiet=True).inputs_checked >= 1000


def test_wider_codes_give_a_smaller_error(regression_checkpoint, tmp_path):
    checkpoint, calibration = regression_checkpoint
    x = np.load(calibration)
    errors = {}
    for bits in (8, 10):
        generate_model(checkpoint, tmp_path / f"m{bits}", calibration=calibration, quiet=True, max_error=1.0,
                       plan=[LayerPlan("edge-table", bits)] * 2, flash_budget=BIG_BUDGET)
        errors[bits] = _max_error(tmp_path / f"m{bits}", checkpoint, x)
    print("max error over the output range by code bits:", errors)
    assert errors[10] < errors[8]


def test_code_width_limits_are_one_line_errors(regression_checkpoint, tmp_path):
    checkpoint, calibration = regression_checkpoint
    with pytest.raises(OptionError, match=r"--act-bits must be an integer in 2\.\.12, got 13"):
        QuantOptions(act_bits=13)
    with pytest.raises(OptionError, match=r"spline layers take input codes of 2\.\.8 bits, got 10; use edge-table"):
        LayerPlan("spline", 10)
    with pytest.raises(OptionError, match="--strategy spline takes --act-bits up to 8"):
        generate_model(checkpoint, tmp_path / "no", calibration=calibration, quiet=True,
                       options=QuantOptions(act_bits=10), strategy="spline")
    assert not (tmp_path / "no").exists()
    # auto weighs spline layers at their widest (8 bits) and edge-table layers up to --act-bits
    result = generate_model(checkpoint, tmp_path / "auto", calibration=calibration, quiet=True,
                            options=QuantOptions(act_bits=10), flash_budget=BIG_BUDGET)
    assert all(step["in_bits"] <= (8 if step["strategy"] == "spline" else 10) for step in result.report["plan"])


def test_continuous_ranges_widen_by_one_sample_spacing():
    rng = np.random.default_rng(0)
    continuous = rng.uniform(-1.0, 1.0, 101)
    pixels = rng.integers(0, 17, 101).astype(float)  # levels on one step keep their extremes
    lo, hi = sample_ranges(np.stack([continuous, pixels], axis=1))
    gap = (continuous.max() - continuous.min()) / 100
    assert lo[0] == pytest.approx(continuous.min() - gap) and hi[0] == pytest.approx(continuous.max() + gap)
    assert (lo[1], hi[1]) == (pixels.min(), pixels.max())


def test_thin_calibration_ranges_reach_past_the_samples(regression_checkpoint, tmp_path):
    """Calibrated on 60 rows, a hidden channel whose values leave the grid gets codes one expected
    sample spacing past its sample extremes, where fresh data from the same distribution lands."""
    checkpoint, _ = regression_checkpoint
    rng = np.random.default_rng(7)
    thin = rng.uniform(-1, 1, (60, 2))
    np.save(tmp_path / "thin.npy", thin)
    generate_model(checkpoint, tmp_path / "m", calibration=tmp_path / "thin.npy", quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10)] * 2, flash_budget=BIG_BUDGET)
    _, qmodel = load_bundle(tmp_path / "m")
    model = load_checkpoint(checkpoint).model
    _, acts = model_forward(model, thin, return_all=True)
    hidden, layer = acts[1], qmodel.layers[1]
    code_lo, code_hi = -layer.in_zero * layer.in_scale, (layer.codes - 1 - layer.in_zero) * layer.in_scale
    grid_lo, grid_hi = model.layers[1].grid_range()
    gap = np.ptp(hidden, axis=0) / (len(hidden) - 1)
    below, above = hidden.min(axis=0) < grid_lo, hidden.max(axis=0) > grid_hi
    assert below.any() or above.any()  # the fixture's hidden values do leave the grid
    assert np.all(code_lo[below] <= hidden.min(axis=0)[below] - 0.99 * gap[below])
    assert np.all(code_hi[above] >= hidden.max(axis=0)[above] + 0.99 * gap[above])


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_wide_codes_run_bit_exact_on_qemu(regression_checkpoint, small_checkpoints, tmp_path, board):
    from kan2mcu.firmware.boards import get_board
    from kan2mcu.firmware.measure import measure

    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    checkpoint, calibration = regression_checkpoint
    generate_model(checkpoint, tmp_path / "wide", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10), LayerPlan("edge-table", 9)], flash_budget=BIG_BUDGET)
    small, small_calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(small, tmp_path / "mixed", calibration=small_calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("spline", 8), LayerPlan("edge-table", 10)], flash_budget=BIG_BUDGET)
    report = measure([tmp_path / "wide", tmp_path / "mixed"], board, tmp_path / "measure")
    assert [entry["check"] for entry in report["models"]] == ["PASS", "PASS"]


def test_wide_code_library_selftest_passes(regression_checkpoint, tmp_path):
    """The exported CMake library of a 10-bit-code model: its hosted self-check (test vectors and
    the raw-input quantizer against Python's codes) builds warning-free and passes."""
    import subprocess

    from kan2mcu.export import export_library

    require_tool("cmake")
    require_tool("gcc")
    checkpoint, calibration = regression_checkpoint
    generate_model(checkpoint, tmp_path / "kan", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10)] * 2, flash_budget=BIG_BUDGET)
    src, build = export_library(tmp_path / "kan", ["cmake"], tmp_path / "libs")["cmake"], tmp_path / "build"
    assert "static const uint16_t kan_selftest_raw_codes" in (src / "test" / "kan_selftest_vectors.h").read_text()
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DKAN_BUILD_SELFTEST=ON", "-DKAN_WITH_FLOAT_API=ON",
                    "-DCMAKE_C_COMPILER=gcc", "-DCMAKE_C_FLAGS=-Wall -Wextra -Wconversion -Werror"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    run = subprocess.run([str(build / "kan_selftest")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("PASS:"), run.stdout


def test_unreachable_max_error_is_said(regression_checkpoint, tmp_path):
    """--max-error tighter than the bit widths can reach: the most accurate plan, and a warning that
    names the best error and the wider widths edge-table layers take."""
    checkpoint, calibration = regression_checkpoint
    result = generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1e-6,
                            strategy="edge-table")
    planner = result.report["planner"]
    assert planner["error_tolerance"] == pytest.approx(planner["calibration_error"])  # the best plan, no slack
    assert "--max-error 1e-06 is below what these bit widths reach" in planner["warning"]
    assert "--act-bits up to 12" in planner["warning"] and "--table-bits up to 16" in planner["warning"]


def test_wide_codes_fuzz_clean(regression_checkpoint, tmp_path):
    """uint16 codes of any value (libFuzzer bytes, and the random loop) under ASan+UBSan: no finding."""
    from kan2mcu.check.hostcc import fuzz

    checkpoint, calibration = regression_checkpoint
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10), LayerPlan("edge-table", 9)], flash_budget=BIG_BUDGET)
    assert fuzz(tmp_path / "m", 2, tmp_path / "fz").executions > 1000
    assert fuzz(tmp_path / "m", 1, tmp_path / "loop", engine="loop").executions > 1000
