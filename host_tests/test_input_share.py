"""Inputs that share a range share one encoder and one C threshold row (issue 19, item 1;
kan2mcu.quant.input_share): the decision, the dyadic lattice that makes rows coincide under
per-column transforms, the clamped edges, the 1 KB bound at 784 inputs, and the C raw API
bit-exact with the Python quantizer over the int32 range (ties included)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant import input_share
from kan2mcu.quant.input_codec import api_flash_bytes, input_codec
from kan2mcu.quant.quantize import LayerPlan, QuantOptions, channel_ranges, quantize

sys.path.insert(0, str(Path(__file__).parent))
from test_input_rule import INT32_MAX, INT32_MIN, _assert_c_and_rule_equal_python, probe_points, sweep_points  # noqa: E402


def _pixel_checkpoint(path: Path, n_in: int, seed: int, hidden: int = 2, alike: bool = True) -> tuple[Path, np.ndarray]:
    """A random KAN [n_in, hidden, 2] with an own-data style per-column transform (min-max of each
    column onto the grid, as ``kan2mcu train --data``) fitted on a training split whose column
    maxima differ, and pixel-like calibration rows (raw 0..16 in every column when ``alike``, else
    up to a maximum per column in 2..16), in model units."""
    import torch

    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    rng = np.random.default_rng(seed)
    top = np.round(rng.uniform(12.0 if alike else 2.0, 16.0, n_in), 4)  # the training split's maxima
    span = np.full(n_in, 16.0) if alike else top
    raw = np.round(rng.uniform(0.0, 1.0, (400, n_in)) * span, 4)
    raw[0], raw[1] = 0.0, span
    scale = 2.0 / top
    torch.manual_seed(seed)
    model = KAN([n_in, hidden, 2], grid_size=5, spline_order=3)
    save_checkpoint(model, path, dataset=None, input_transform={"scale": scale.tolist(), "offset": [-1.0] * n_in})
    calibration = raw * scale - 1.0
    np.save(path.with_suffix(".npy"), calibration)
    return path, calibration


def _edge_plan(bits: int) -> tuple:
    return (LayerPlan("edge-table", bits), LayerPlan("edge-table", 4))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_784_pixels_on_per_column_scales_share_one_row_within_a_kilobyte(tmp_path, bits):
    checkpoint, calibration = _pixel_checkpoint(tmp_path / "px.pt", 784, seed=11)
    model = load_checkpoint(checkpoint).model
    transform = model.metadata.get("input_transform")
    qmodel = quantize(model, QuantOptions(), calibration, _edge_plan(bits))
    assert qmodel.layers[0].shared_inputs == 784
    codec = input_codec(qmodel, transform)
    assert codec.raw_kind == "features" and codec.raw_keys.shape[0] == 1  # 784 column scales, one row
    assert api_flash_bytes(qmodel, transform) <= 1024


def test_unlike_ranges_keep_their_own_encoders(tmp_path):
    """Columns of different units (one 40x wider than the rest) are not crushed onto one lattice."""
    checkpoint, calibration = _pixel_checkpoint(tmp_path / "px.pt", 8, seed=3, alike=False)
    model = load_checkpoint(checkpoint).model
    lo, hi = channel_ranges(model.layers[0], calibration)
    raw_scale, raw_offset, _ = input_share.raw_transform(model.metadata["input_transform"], 8)
    raw_lo, raw_hi = (lo - raw_offset) / raw_scale, (hi - raw_offset) / raw_scale
    everyone = np.ones(8, bool)
    assert input_share.shared_group(raw_lo, raw_hi, everyone).all()
    wide_hi = raw_hi.copy()
    wide_hi[5] = raw_lo[5] + 40 * (raw_hi - raw_lo).max()
    group = input_share.shared_group(raw_lo, wide_hi, everyone)
    assert group.tolist() == [True] * 5 + [False] + [True] * 2  # the wide column alone keeps its own
    narrow_hi = raw_hi.copy()
    narrow_hi[2] = raw_lo[2] + (raw_hi - raw_lo).max() / 40
    assert input_share.shared_group(raw_lo, narrow_hi, everyone).tolist() == [True] * 2 + [False] + [True] * 5
    far_lo, far_hi = raw_lo.copy(), raw_hi.copy()  # alike widths, far apart: one lattice would crush it
    far_lo[2], far_hi[2] = raw_lo[2] + 1e3 * raw_hi.max(), raw_hi[2] + 1e3 * raw_hi.max()
    assert input_share.shared_group(far_lo, far_hi, everyone).tolist() == [True] * 2 + [False] + [True] * 5


def test_sharing_stops_where_the_added_error_would_exceed_its_slack():
    own_total = 1.0
    extra = np.array([0.3, -0.1, 0.05, 0.2, 0.0, 0.01])
    group = np.array([True, True, True, True, True, False])
    # by increasing extra error: -0.1, 0.0, 0.05, 0.2 (0.25 of 1.0 spent); 0.3 would exceed; 0.01 not a member
    assert input_share.admitted(extra, own_total, group).tolist() == [False, True, True, True, True, False]
    assert input_share.admitted(extra, 0.0, group).tolist() == [False, True, False, False, True, False]


def test_inputs_whose_error_grows_too_much_keep_their_own_encoders(tmp_path):
    """Alike ranges (maxima 2..16) on a random KAN whose every edge matters: at 3-bit codes the
    coarser shared codes would add more than ERROR_SLACK of the layer's own error, so the inputs
    that lose the most keep their own encoders (the alike group is larger than what shares)."""
    checkpoint, calibration = _pixel_checkpoint(tmp_path / "px.pt", 64, seed=3, alike=False)
    model = load_checkpoint(checkpoint).model
    qmodel = quantize(model, QuantOptions(), calibration, _edge_plan(3))
    lo, hi = channel_ranges(model.layers[0], calibration)
    raw_scale, raw_offset, _ = input_share.raw_transform(model.metadata["input_transform"], 64)
    alike = input_share.shared_group((lo - raw_offset) / raw_scale, (hi - raw_offset) / raw_scale, np.ones(64, bool))
    assert 2 <= qmodel.layers[0].shared_inputs < np.count_nonzero(alike)


def test_dyadic_lattice_stays_off_ties():
    """code = floor(raw * A + B + 0.5): B's denominator 2^(k+1) is twice A's at least and its
    numerator odd, so raw * A + B + 0.5 is never within 2^-(k+1) of an integer (no float tie)."""
    for raw_lo, raw_hi, qmax in [(0.0, 16 * 65536.0, 255), (-3.5e6, 9.1e6, 3), (0.0, 16.0, 7), (100.25, 101.5, 4095)]:
        a, b = input_share._dyadic_lattice(raw_lo, raw_hi, qmax)  # pylint: disable=protected-access
        (_, a_den), (b_num, b_den) = a.as_integer_ratio(), b.as_integer_ratio()
        assert b_num % 2 == 1 and b_den >= 4 and b_den % (2 * a_den) == 0
        step = qmax / (raw_hi - raw_lo)
        assert step - 2.0**-input_share.MAX_LATTICE_BITS < a <= step and a > step * (1 - 2.0**-12)
        assert abs(raw_lo * a + b) <= 2.0 / b_den  # the range starts at code 0


def test_shared_edges_hold_their_own_range_ends(tmp_path):
    """A shared input's table rows beyond its own range (``clip_lo``/``clip_hi``) repeat the entry
    at the range's end, as its own encoder would saturate there: sharing changes resolution only."""
    from kan2mcu.quant.quantize import layer_encoding, quantize_one
    from kan2mcu.quant.quantize import calibrate

    checkpoint, calibration = _pixel_checkpoint(tmp_path / "px.pt", 8, seed=5, alike=False)
    model = load_checkpoint(checkpoint).model
    plan = _edge_plan(8)
    activations = calibrate(model, calibration)
    encodings = [layer_encoding(model, i, step, activations) for i, step in enumerate(plan)]
    enc = encodings[0]
    x = enc["scale"] * (np.arange(256)[:, None] - enc["zero"])  # [Q, I]
    clip_lo, clip_hi = np.full(8, -np.inf), np.full(8, np.inf)
    clip_lo[3], clip_hi[3] = x[60, 3], x[150, 3]
    encodings[0] = {**enc, "clip_lo": clip_lo, "clip_hi": clip_hi}
    table = quantize_one(model, 0, plan, encodings, QuantOptions(), 1.0).table[3].astype(np.int64)
    assert np.all(table[:61] == table[60]) and np.all(table[150:] == table[150])
    assert len(np.unique(table[60:151], axis=0)) > 20  # inside: the edges vary


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("share")
    checkpoint, _ = _pixel_checkpoint(base / "px.pt", 48, seed=7, hidden=3)
    folder = base / "px"
    generate_model(checkpoint, folder, name="px", options=QuantOptions(act_bits=8), calibration=base / "px.npy",
                   plan=_edge_plan(8), quiet=True)
    return folder


def test_shared_row_c_equals_python_over_the_int32_range(shared_folder, tmp_path):
    model, qmodel = load_bundle(shared_folder)
    codec = input_codec(qmodel, model.metadata.get("input_transform"))
    assert qmodel.layers[0].shared_inputs == 48 and codec.raw_keys.shape[0] == 1
    raws = np.concatenate([probe_points(qmodel, codec, np.random.default_rng(23)), sweep_points(qmodel, codec)])
    assert raws.min() == INT32_MIN and raws.max() == INT32_MAX
    _assert_c_and_rule_equal_python(shared_folder, tmp_path, qmodel, codec, raws)
    report = __import__("json").loads((shared_folder / "report.json").read_text())
    assert report["layers"][0]["shared_inputs"] == 48
    assert "48 of 48 inputs share one encoder" in (shared_folder / "report.md").read_text()


def test_the_budget_counts_the_shared_input_api(tmp_path):
    """784 alike pixels under a 24 KiB budget: the planner predicts the shared input API exactly (one
    row), the written total fits the budget, and the report says which inputs share."""
    checkpoint, _ = _pixel_checkpoint(tmp_path / "px.pt", 784, seed=13)
    folder = tmp_path / "px"
    generate_model(checkpoint, folder, name="px", calibration=tmp_path / "px.npy", flash_budget=24576,
                   strategy="edge-table", quiet=True)
    report = __import__("json").loads((folder / "report.json").read_text())
    totals, planner = report["totals"], report["planner"]
    assert planner["predicted_input_api_bytes"] == totals["input_api_bytes"] <= 1024
    assert totals["model_flash_bytes"] <= 24576
    assert report["layers"][0]["shared_inputs"] == 784


def test_input_columns_of_a_checkpoint():
    """One reading of a checkpoint's input transform for the codec and the sharing pass: scalar or
    per column, none without one, and a clear error for a column scaled by zero or less."""
    from kan2mcu.errors import QuantizationError

    assert input_share.columns(None, 3) is None
    scale, offset, per_column = input_share.columns({"scale": 0.5, "offset": -1.0}, 3)
    assert scale.tolist() == [0.5] * 3 and offset.tolist() == [-1.0] * 3 and not per_column
    assert input_share.columns({"scale": 0.0, "offset": 0.0}, 3) is None
    with pytest.raises(QuantizationError, match="positive in every column"):
        input_share.columns({"scale": [1.0, 0.0, 2.0], "offset": [0.0, 0.0, 0.0]}, 3)
