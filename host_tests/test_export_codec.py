"""The C input API (`<prefix>_quantize_input_q`, `<prefix>_quantize_input`) equals the Python
quantizer (kan2mcu.quant.reference.quantize_inputs) on every input: digits test split, 100,000 stress
values (rounding ties and their neighbours, NaN, +-inf, +-0, denormals), int32 extremes."""
from __future__ import annotations

import re

import numpy as np
import pytest

from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import VerificationError
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import HostModel
from kan2mcu.quant.input_codec import float_order_key, input_codec, probe_floats, probe_raws, quantize_raw
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.reference import quantize_inputs
from kan2mcu.check.verify import verify

N_VALUES = 100_000


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("codec") / "kan"
    generate_model(digits_checkpoint, folder, quiet=True)
    return folder


@pytest.fixture(scope="module")
def q16_model(tmp_path_factory, small_checkpoints):
    """A checkpoint without input transform (raw = Q15.16) and 4-bit input codes."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    folder = tmp_path_factory.mktemp("codec") / "small"
    generate_model(checkpoint, folder, name="small", options=QuantOptions(act_bits=4), calibration=calibration,
                   quiet=True)
    return folder


def _python_codes(qmodel, x):
    with np.errstate(invalid="ignore", over="ignore"):
        return quantize_inputs(qmodel, np.asarray(x, np.float32).astype(np.float64))


def test_order_key_sorts_like_float32():
    values = np.array([-np.inf, -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, 3e38, np.inf], np.float32)
    keys = float_order_key(values).astype(np.int64)
    assert np.all(np.diff(keys) >= 0)
    assert keys[4] == keys[5]  # -0 == +0
    assert np.count_nonzero(np.diff(keys) == 0) == 1


def test_header_carries_the_transform_and_the_fixed_comment(digits_model):
    header = (digits_model / "kan.h").read_text()
    assert "#define KAN_INPUT_RAW_SCALE 0.125" in header
    assert "#define KAN_INPUT_RAW_OFFSET (-1.0)" in header
    assert "typedef uint8_t kan_code_t;" in header  # 8-bit codes: byte arrays, as before
    assert "int kan_quantize_input_q(const int32_t raw[KAN_INPUT_SIZE], kan_code_t codes[KAN_INPUT_SIZE]);" in header
    assert "KAN_quantize_input" not in header and "kan_quantize_input_q (raw integers)" in header


def test_digits_test_split_raw_and_float_api_equal_python(digits_model, tmp_path):
    model, qmodel = load_bundle(digits_model)
    host = HostModel(digits_model, tmp_path)
    data = load_dataset("digits")
    expected = quantize_inputs(qmodel, data.x_test)
    raw = np.rint((data.x_test + 1.0) * 8.0).astype(np.int32)  # the pixels 0..16
    assert np.array_equal(raw * 0.125 - 1.0, data.x_test)
    assert np.array_equal(host.quantize(raw, raw=True), expected)
    assert np.array_equal(host.quantize(data.x_test.astype(np.float32)), expected)
    assert expected.size == 450 * 64


@pytest.mark.parametrize("which", ["digits_model", "q16_model"])
def test_100k_stress_floats_and_raws_equal_python(which, request, tmp_path):
    folder = request.getfixturevalue(which)
    model, qmodel = load_bundle(folder)
    codec = input_codec(qmodel, model.metadata.get("input_transform"))
    host = HostModel(folder, tmp_path)
    rng = np.random.default_rng(2024)
    x = probe_floats(qmodel, rng, N_VALUES)
    assert x.size >= N_VALUES and np.isnan(x).any() and np.isposinf(x).any() and np.isneginf(x).any()
    expected = _python_codes(qmodel, x)
    actual = host.quantize(x)
    assert int(np.count_nonzero(actual != expected)) == 0
    # the rounding ties really are there: inputs whose scaled value lies exactly at k + 0.5
    first = qmodel.layers[0]
    scaled = x.astype(np.float64) / first.in_scale + first.in_zero + 0.5
    with np.errstate(invalid="ignore"):
        assert np.count_nonzero(np.isfinite(scaled) & (scaled == np.floor(scaled))) > 0
    raw = probe_raws(qmodel, codec, rng, N_VALUES)
    assert raw.min() == np.iinfo(np.int32).min and raw.max() == np.iinfo(np.int32).max
    assert int(np.count_nonzero(host.quantize(raw, raw=True) != quantize_raw(qmodel, codec, raw))) == 0


def test_specials_map_as_documented(digits_model, tmp_path):
    _, qmodel = load_bundle(digits_model)
    host = HostModel(digits_model, tmp_path)
    top = qmodel.layers[0].codes - 1
    x = np.stack([np.full(64, np.nan, np.float32), np.full(64, np.inf, np.float32), np.full(64, -np.inf, np.float32)])
    assert host.quantize(x).tolist() == [[0] * 64, [top] * 64, [0] * 64]
    assert np.array_equal(_python_codes(qmodel, x), host.quantize(x))


def test_q16_model_documents_fixed_point_raw(q16_model):
    header = (q16_model / "small.h").read_text()
    assert "#define SMALL_INPUT_RAW_Q16 1" in header and "#define SMALL_INPUT_CODE_MAX 15u" in header


def test_verify_catches_a_wrong_threshold(digits_model, tmp_path):
    """verify calls both C quantizers: one threshold off by one key fails it."""
    broken = tmp_path / "kan"
    broken.mkdir()
    for item in digits_model.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    source = (broken / "kan.c").read_text()
    table = source.index("kan_float_thresholds[")
    match = re.compile(r"0x([0-9A-F]{8})u").search(source, table + 200)
    value = int(match.group(1), 16) + 1
    (broken / "kan.c").write_text(source[:match.start()] + f"0x{value:08X}u" + source[match.end():])
    with pytest.raises(VerificationError, match="kan_quantize_input differs"):
        verify(broken, quiet=True)
