"""``generate --fold-silu``: SiLU branches refit into the spline coefficients where the refit is
accurate (kan2mcu.quant.foldsilu), the report states the float error, the C drops the folded layers'
SiLU tables and accumulators and stays bit-exact, and a fold that would be inaccurate is refused."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_c_equals_reference, require_tool
from kan2mcu.model.bspline import layer_forward
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.quant.foldsilu import fold_layer, fold_silu
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.check.verify import verification_codes


@pytest.fixture(scope="module")
def folded(digits_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("fold")
    result = generate_model(digits_checkpoint, base / "folded", quiet=True, strategy="spline", fold_silu=True)
    plain = generate_model(digits_checkpoint, base / "plain", quiet=True, strategy="spline")
    return base, result.report, plain.report


def test_fold_layer_matches_inside_the_grid(digits_checkpoint):
    layer = load_checkpoint(digits_checkpoint).model.layers[0]
    folded = fold_layer(layer)
    assert not folded.base_weight.any()
    t, k = layer.knots[0], layer.order
    x = np.random.default_rng(0).uniform(t[k], t[-k - 1], size=(2000, layer.in_features))  # the inner grid
    before, after = layer_forward(layer, x), layer_forward(folded, x)
    # cubic splines on this grid fit SiLU to well under 1% of the layer's output range
    assert np.abs(after - before).max() < 0.005 * np.ptp(before)


def test_digits_fold_report_and_bit_exact_c(folded, tmp_path):
    base, report, plain = folded
    layers = report["fold_silu"]["layers"]
    # layer 0's inputs (pixels) stay inside its grid: folds with a tiny error; layer 1's inputs mostly
    # leave the grid, where the B-splines vanish and SiLU does not: kept
    assert [row["folded"] for row in layers] == [True, False]
    assert layers[0]["rms_error"] < 0.005 and layers[0]["inside_grid"] == 1.0
    assert layers[1]["rms_error"] > report["fold_silu"]["limit"]
    assert report["fold_silu"]["model"]["rms_error"] < 0.005
    assert "--fold-silu" in (base / "folded" / "report.md").read_text()
    assert report["accuracy"]["quantized"] >= report["accuracy"]["float"] - 0.005
    source = (base / "folded" / "kan.c").read_text()
    assert "kan_l0_silu" not in source and "kan_l0_weight" not in source and "kan_l0_mult_base" not in source
    # layer 1 keeps its base branch: weights, and its base values (a table of its own in the compact
    # layouts, in the per-position decode words of the halfword layout)
    assert "kan_l1_weight" in source and "kan_l1_mult_base" in source
    assert "kan_l1_silu" in source or "kan_l1_pos" in source
    assert report["totals"]["flash_bytes"] < plain["totals"]["flash_bytes"]
    _, qmodel = load_bundle(base / "folded")
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    assert_c_equals_reference(base / "folded", codes, tmp_path / "build")


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0"])
def test_folded_model_runs_faster_on_firmware(folded, board):
    from kan2mcu.firmware.boards import get_board
    from kan2mcu.firmware.measure import measure

    info = get_board(board)
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    base, _, _ = folded
    report = measure([base / "folded", base / "plain"], board, base / f"measure-{board}")
    fold_entry, plain_entry = report["models"]
    assert fold_entry["check"] == plain_entry["check"] == "PASS"
    assert fold_entry["instructions"] < plain_entry["instructions"]


def test_inaccurate_fold_is_refused(digits_checkpoint):
    model = load_checkpoint(digits_checkpoint).model
    with pytest.raises(QuantizationError, match=r"^--fold-silu: no layer can fold: .* generate without --fold-silu$"):
        fold_silu(model, load_dataset("digits").x_train, max_error=1e-9)


def test_fold_needs_the_spline_strategy(digits_checkpoint, tmp_path):
    with pytest.raises(OptionError, match="--fold-silu folds the SiLU branch of spline layers"):
        generate_model(digits_checkpoint, tmp_path / "m", quiet=True, fold_silu=True)
    assert not (tmp_path / "m").exists()
