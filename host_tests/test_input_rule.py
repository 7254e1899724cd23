"""The raw-input API's compact layouts (kan2mcu.quant.input_rule, kan2mcu.quant.input_codec): shared rows and
codes computed by an integer affine rule equal the Python quantizer over the whole int32 range,
ties included (every threshold and its neighbours, the ideal real-valued thresholds +-2, dense
random samples, an exhaustive sweep around the codes' range), and take the documented bytes."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import HostModel
from kan2mcu.quant.input_codec import api_flash_bytes, input_codec, quantize_raw, raw_table_bytes, row_index
from kan2mcu.quant.input_lut import RawLut, build_luts, lut_codes, row_table
from kan2mcu.quant.input_rule import RULE_BYTES, RawRule, fit_rule, rule_codes, rule_keys, rule_shift
from kan2mcu.quant.quantize import QuantOptions, quantize
from kan2mcu.model.importers import load_checkpoint

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
VALUES = 1 << 21  # raw values per probe kind over all channels (8 inputs: 2^18 each)


def _ideal_thresholds(qmodel, codec) -> np.ndarray:
    """[I, max] real-valued raw inputs where the code changes (x / s + z + 0.5 = c), computed here
    independently of the codec's bisection."""
    first = qmodel.layers[0]
    c = np.arange(1, first.codes)[None, :]
    x = (c - 0.5 - first.in_zero[:, None]) * first.in_scale[:, None]
    return (x - codec.raw_offset[:, None]) / codec.raw_scale[:, None]


def probe_points(qmodel, codec, rng) -> np.ndarray:
    """[N, I] int32 raws: every stored threshold -1/0/+1, the ideal thresholds' floor -2..+2, the
    int32 extremes, uniform over int32 and uniform over the codes' raw range (per channel)."""
    n_in = qmodel.in_features
    n_random = max(4096, VALUES // n_in)
    stored = codec.raw_keys[codec.raw_row].astype(np.int64) + INT32_MIN  # [I, max]
    ideal = np.clip(np.floor(_ideal_thresholds(qmodel, codec)), INT32_MIN, INT32_MAX).astype(np.int64)
    columns = [stored + d for d in (-1, 0, 1)] + [ideal + d for d in range(-2, 3)]
    columns.append(np.tile(np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]), (n_in, 1)))
    lo, hi = ideal.min(axis=1) - 4, ideal.max(axis=1) + 4
    columns.append(rng.integers(INT32_MIN, INT32_MAX, size=(n_in, n_random), endpoint=True))
    columns.append(rng.integers(lo[:, None], hi[:, None], size=(n_in, n_random), endpoint=True))
    points = np.clip(np.concatenate(columns, axis=1), INT32_MIN, INT32_MAX)
    return np.ascontiguousarray(points.T, dtype=np.int32)


def sweep_points(qmodel, codec) -> np.ndarray:
    """[S, I] every int32 in a window of S values per channel: its codes' whole raw range (plus
    margins) when that is shorter, else centred on it."""
    sweep = max(4096, VALUES // qmodel.in_features)
    ideal = _ideal_thresholds(qmodel, codec)
    centre = np.clip(np.floor((ideal.min(axis=1) + ideal.max(axis=1)) / 2), INT32_MIN + sweep, INT32_MAX - sweep)
    start = centre.astype(np.int64) - sweep // 2
    return np.ascontiguousarray((start[None, :] + np.arange(sweep)[:, None]).astype(np.int32))


def _assert_c_and_rule_equal_python(folder, tmp_path, qmodel, codec, raws):
    expected = quantize_raw(qmodel, codec, raws)
    host = HostModel(folder, tmp_path)
    actual = host.quantize(raws, raw=True).astype(np.int64)
    bad = np.argwhere(actual != expected)
    assert bad.size == 0, (f"row {bad[0][0]} input {bad[0][1]}: raw {raws[tuple(bad[0])]} C {actual[tuple(bad[0])]} "
                           f"Python {expected[tuple(bad[0])]}")
    keys = raws.view(np.uint32) ^ np.uint32(0x80000000)
    for i in range(qmodel.in_features):  # the Python model of the C rule or lookup, channel by channel
        if codec.raw_rules is not None:
            actual = rule_codes(codec.raw_rules[codec.raw_row[i]], codec.raw_shift, keys[:, i])
        elif codec.raw_luts is not None:
            actual = lut_codes(codec.raw_luts[codec.raw_row[i]], codec.raw_lut_codes, keys[:, i])
        else:
            continue
        assert np.array_equal(actual, expected[:, i]), i


@pytest.fixture(scope="module")
def q16_8bit(tmp_path_factory, small_checkpoints):
    """No input transform (raw = Q15.16 x), 8-bit codes: every row in the rule layout."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    folder = tmp_path_factory.mktemp("rule") / "small"
    generate_model(checkpoint, folder, name="small", options=QuantOptions(act_bits=8), calibration=calibration,
                   quiet=True)
    return folder


@pytest.fixture(scope="module")
def features_8bit(tmp_path_factory):
    """Own-data style: one scale and offset per column (raw = feature values in Q15.16), feature
    ranges like the breast-cancer table's, 8-bit codes."""
    import torch

    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    base = tmp_path_factory.mktemp("rule")
    lo = np.array([6.981, 0.05263, 143.5, 0.0, 9.71, 0.1115])
    hi = np.array([28.11, 0.1634, 2501.0, 0.4268, 39.28, 4.885])
    scale = 2.0 / (hi - lo)
    torch.manual_seed(5)
    model = KAN([6, 4, 2], grid_size=5, spline_order=3)
    save_checkpoint(model, base / "f.pt", dataset=None,
                    input_transform={"scale": scale.tolist(), "offset": (-1.0 - lo * scale).tolist()})
    np.save(base / "f.npy", np.random.default_rng(5).uniform(-1.0, 1.0, size=(600, 6)))
    folder = base / "feat"
    generate_model(base / "f.pt", folder, name="feat", options=QuantOptions(act_bits=8), calibration=base / "f.npy",
                   quiet=True)
    return folder


@pytest.fixture(scope="module")
def runs_model(tmp_path_factory):
    """64 inputs in two blocks of one calibrated range each (inside the grid / 40 times as wide: too
    unlike to share one encoder, kan2mcu.quant.input_share): two rows, found by runs of consecutive
    channels instead of a row per channel."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_random_checkpoint  # pylint: disable=import-outside-toplevel

    base = tmp_path_factory.mktemp("rule")
    checkpoint, _ = make_random_checkpoint(base / "r.pt", (64, 3, 2), 5, 3, seed=7)
    rng = np.random.default_rng(7)
    data = np.concatenate([rng.uniform(-0.9, 0.9, (600, 32)), rng.uniform(-36.0, 36.0, (600, 32))], axis=1)
    data[0, 32:], data[1, 32:] = -40.0, 40.0
    np.save(base / "r.npy", data)
    folder = base / "runs"
    generate_model(checkpoint, folder, name="runs", options=QuantOptions(act_bits=6), calibration=base / "r.npy",
                   quiet=True, max_error=1.0)
    return folder


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("rule") / "kan"
    generate_model(digits_checkpoint, folder, quiet=True)
    return folder


@pytest.mark.parametrize("which", ["q16_8bit", "features_8bit", "runs_model", "digits_folder"])
def test_raw_api_equals_python_over_the_int32_range(which, request, tmp_path):
    folder = request.getfixturevalue(which)
    model, qmodel = load_bundle(folder)
    codec = input_codec(qmodel, model.metadata.get("input_transform"))
    if which in ("q16_8bit", "features_8bit"):
        assert codec.raw_layout == "rule" and codec.raw_kind == ("q16" if which == "q16_8bit" else "features")
    if which == "digits_folder":  # pixels 0..16: each row's codes change within a few raw values
        assert codec.raw_layout == "lut" and len(codec.raw_lut_codes) <= 64 * len(codec.raw_luts)
    if which == "runs_model":
        assert row_index(codec) == ("runs", 2 * 3) and "runs_raw_run_end[2]" in (folder / "runs.c").read_text()
    raws = np.concatenate([probe_points(qmodel, codec, np.random.default_rng(19)), sweep_points(qmodel, codec)])
    assert raws.min() == INT32_MIN and raws.max() == INT32_MAX
    _assert_c_and_rule_equal_python(folder, tmp_path, qmodel, codec, raws)


def test_rule_layout_bytes_and_source(q16_8bit):
    model, qmodel = load_bundle(q16_8bit)
    codec = input_codec(qmodel, model.metadata.get("input_transform"))
    n_rows, n_in = codec.raw_keys.shape[0], qmodel.in_features
    assert (n_rows, row_index(codec)) == (1, ("shared", 0))  # 8 inputs of one calibrated range share an encoder
    assert qmodel.layers[0].strategy != "edge-table" or qmodel.layers[0].shared_inputs == n_in
    assert raw_table_bytes(codec) == RULE_BYTES
    assert api_flash_bytes(qmodel, model.metadata.get("input_transform")) == raw_table_bytes(codec)
    assert raw_table_bytes(codec) < 4 * 255 * n_rows  # one row of 8-bit thresholds alone is 1,020 B
    source = (q16_8bit / "small.c").read_text()
    assert "small_raw_rules[" in source and "small_raw_thresholds" not in source
    assert f"{{ 0x{codec.raw_rules[0].base:08X}u, {codec.raw_rules[0].step}u," in source
    report = __import__("json").loads((q16_8bit / "report.json").read_text())
    assert report["totals"]["input_api_bytes"] == raw_table_bytes(codec)


def test_shared_range_784_inputs_fit_in_a_kilobyte(tmp_path):
    """784 inputs on one grid, no calibration data: every channel shares one encoder, so one rule
    row and no row table (at 8-bit codes a threshold row per input was ~800 KB)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_random_checkpoint  # pylint: disable=import-outside-toplevel

    checkpoint, _ = make_random_checkpoint(tmp_path / "wide.pt", (784, 2, 2), 5, 3, seed=3)
    model = load_checkpoint(checkpoint).model
    for bits in (3, 4, 8):
        qmodel = quantize(model, QuantOptions(act_bits=bits), None)
        codec = input_codec(qmodel, model.metadata.get("input_transform"))
        assert codec.raw_keys.shape[0] == 1
        assert api_flash_bytes(qmodel, model.metadata.get("input_transform")) <= (RULE_BYTES if bits > 3 else 4 * 7 + 1)


def test_rule_golden_fit():
    """Thresholds of code = floor(raw / 3 + 0.5) for raw >= 0 (keys, 4-bit codes): golden rule."""
    shift = rule_shift(15)
    assert shift == 28
    raws = np.array([3 * c - 1 for c in range(1, 16)])  # smallest raw with raw / 3 + 0.5 >= c
    keys = (raws + 2**31).astype(np.uint32)
    rule = fit_rule(keys, 15, shift)
    assert rule == RawRule(base=0x80000002, step=3, frac=0, add=0, low=0, count=15, guess_mult=43691, guess_in=0,
                          guess_out=17)  # 43691 / 2^17 = 1 / 3 rounded up
    assert np.array_equal(rule_keys(rule, shift), keys)


def test_rule_low_and_count_of_clamped_rows():
    """Codes reached at INT32_MIN (key 0) and codes no int32 reaches (top below the maximum)."""
    shift = rule_shift(15)
    keys = np.array([0, 0, 10, 20, 30, 40, 0xFFFFFFFF, 0xFFFFFFFF] + [0xFFFFFFFF] * 7, np.uint32)
    rule = fit_rule(keys, 6, shift)
    assert (rule.low, rule.count) == (2, 4)
    probe = np.array([0, 9, 10, 11, 39, 40, 2**32 - 1], np.uint32)
    assert rule_codes(rule, shift, probe).tolist() == [2, 2, 3, 3, 5, 6, 6]


def test_rows_that_follow_no_rule_are_refused():
    shift = rule_shift(7)
    keys = np.array([100, 200, 300, 301, 500, 600, 700], np.uint32)  # 301: not on any line
    assert fit_rule(keys, 7, shift) is None


def test_lut_golden_rows():
    """Code tables of a row reached from INT32_MIN (low 2), of a row with two codes on one key and
    of a constant row; and the lookup at and around each threshold."""
    keys = np.array([0, 0, 10, 12, 12, 15, 0xFFFFFFFF], np.uint32)
    assert row_table(keys, 6).tolist() == [2, 3, 3, 5, 5, 5, 6]  # low, then keys 10..15
    assert row_table(np.zeros(7, np.uint32), 7).tolist() == [7, 7]
    luts, codes = build_luts(np.stack([keys, np.zeros(7, np.uint32)]), np.array([6, 7]))
    assert luts == (RawLut(first=10, start=0, last=5), RawLut(first=0xFFFFFFFF, start=7, last=0))
    probe = np.array([0, 9, 10, 11, 12, 14, 15, 16, 2**32 - 1])
    assert lut_codes(luts[0], codes, probe).tolist() == [2, 2, 3, 3, 5, 5, 6, 6, 6]
    assert lut_codes(luts[1], codes, probe).tolist() == [7] * 9
