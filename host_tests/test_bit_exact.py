"""Bit-exactness: generated C == Python integer reference, for several bit widths and shapes."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_c_equals_reference
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import run_sanitized
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.reference import run_model
from kan2mcu.check.verify import verification_codes, verify

BITS = [pytest.param(b, id=f"{b}bit") for b in (2, 3, 4, 8)]
STRATEGIES = [pytest.param(s, id=s) for s in ("spline", "edge-table")]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", ["8x5x3-G5-k3", "6x4x4x2-G3-k2"])
def test_small_models_bit_exact(small_checkpoints, tmp_path, shape, bits, strategy):
    checkpoint, calibration = small_checkpoints[shape]
    options = QuantOptions(act_bits=bits, spline_bits=bits, coef_bits=bits, table_bits=max(bits, 4))
    # bit-exactness only: the guard rightly refuses some 2-bit random models as far from float
    generate_model(checkpoint, tmp_path / "m", options=options, calibration=calibration, quiet=True,
                   strategy=strategy, max_error=10.0, allow_saturation=True)
    _, qmodel = load_bundle(tmp_path / "m")
    codes = verification_codes(qmodel, np.load(calibration))
    _assert_every_code_on_every_input(codes, qmodel)
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "build")


@pytest.mark.parametrize("table_bits", [9, 12, 16])
@pytest.mark.parametrize("shape", ["8x5x3-G5-k3", "6x4x4x2-G3-k2"])
def test_halfword_edge_tables_bit_exact(small_checkpoints, tmp_path, shape, table_bits):
    """Entries of 9..16 bits (halfwords, two per word, 32-bit sums with the low halves recovered
    from whole-word sums): C == reference on every code of every input, under ASan + UBSan; odd
    output counts exercise the padded tail word."""
    from kan2mcu.quant.quantize import LayerPlan

    checkpoint, calibration = small_checkpoints[shape]
    n_layers = shape.count("x")
    plan = [LayerPlan("edge-table", bits, table_bits) for bits in (8, 6, 5)[:n_layers]]
    generate_model(checkpoint, tmp_path / "m", options=QuantOptions(table_bits=table_bits), calibration=calibration,
                   quiet=True, plan=plan, max_error=10.0, allow_saturation=True)
    _, qmodel = load_bundle(tmp_path / "m")
    assert all(layer.per_word == 2 and layer.table.dtype == np.uint16 for layer in qmodel.layers)
    assert max(int(layer.table.max()) for layer in qmodel.layers) > 255  # really wider than a byte
    codes = verification_codes(qmodel, np.load(calibration))
    _assert_every_code_on_every_input(codes, qmodel)
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "build")
    sanitized = run_sanitized(tmp_path / "m", codes[:400], tmp_path / "build-san")
    np.testing.assert_array_equal(sanitized.astype(np.int64), run_model(qmodel, codes[:400]))


def test_wide_codes_with_halfword_entries_bit_exact(tmp_path):
    """10- and 11-bit codes (uint16) reading 12- and 16-bit entries: C == reference on every code
    of every input and on codes the first layer clamps (verify), under ASan + UBSan."""
    from conftest import make_random_checkpoint
    from kan2mcu.quant.quantize import LayerPlan

    checkpoint, calibration = make_random_checkpoint(tmp_path / "r.pt", (2, 5, 1), 5, 3, seed=4)
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10, 12), LayerPlan("edge-table", 11, 16)])
    _, qmodel = load_bundle(tmp_path / "m")
    assert [(layer.act_bits, layer.per_word) for layer in qmodel.layers] == [(10, 2), (11, 2)]
    result = verify(tmp_path / "m", calibration=calibration, sanitize=True, build_dir=tmp_path / "b", quiet=True)
    assert result.inputs_checked >= 1024


def _assert_every_code_on_every_input(codes: np.ndarray, qmodel) -> None:
    """The checked codes reach every code of every input, and codes above the maximum."""
    top = qmodel.layers[0].codes - 1
    for column in codes.T:
        assert set(range(top + 1)) <= set(column.tolist())
    assert codes.max() == 255


@pytest.mark.parametrize("act,spline,coef", [(8, 8, 8), (8, 3, 8), (8, 2, 4), (4, 3, 3), (6, 8, 5)],
                         ids=lambda v: str(v))
def test_digits_bit_exact(digits_checkpoint, tmp_path, act, spline, coef):
    options = QuantOptions(act_bits=act, spline_bits=spline, coef_bits=coef)
    generate_model(digits_checkpoint, tmp_path / "m", options=options, quiet=True, strategy="spline")
    _, qmodel = load_bundle(tmp_path / "m")
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    _assert_every_code_on_every_input(codes, qmodel)
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "build")


def test_sanitizers_clean(digits_checkpoint, small_checkpoints, tmp_path):
    """ASan + UBSan: no out-of-bounds read or undefined behaviour for any code, incl. codes > max."""
    generate_model(digits_checkpoint, tmp_path / "d", options=QuantOptions(act_bits=4, spline_bits=3, coef_bits=3),
                   quiet=True, strategy="spline")
    checkpoint, calibration = small_checkpoints["6x4x4x2-G3-k2"]
    generate_model(checkpoint, tmp_path / "s", calibration=calibration, quiet=True, strategy="spline")
    generate_model(checkpoint, tmp_path / "e", calibration=calibration, quiet=True, strategy="edge-table")
    for folder, x in ((tmp_path / "d", load_dataset("digits").x_test), (tmp_path / "s", np.load(calibration)),
                      (tmp_path / "e", np.load(calibration))):
        _, qmodel = load_bundle(folder)
        codes = verification_codes(qmodel, x)
        # a sanitizer finding exits the program non-zero (run_sanitized raises); outputs must still match
        sanitized = run_sanitized(folder, codes, folder.parent / f"build-{folder.name}")
        np.testing.assert_array_equal(sanitized.astype(np.int64), run_model(qmodel, codes))


def test_mismatch_is_reported(digits_checkpoint, tmp_path):
    """A corrupted table makes verify fail with the first mismatching index."""
    from kan2mcu.errors import VerificationError

    generate_model(digits_checkpoint, tmp_path / "m", quiet=True, strategy="spline")
    source = tmp_path / "m" / "kan.c"
    text = source.read_text()
    marker = "static const int32_t kan_l1_mult_spline[10] = {"
    start = text.index(marker) + len(marker)
    line_end = text.index(",", text.index("\n", start))
    first_value_start = text.index("\n", start) + 1
    value = text[first_value_start:line_end].strip()
    source.write_text(text[:first_value_start] + f"    {int(value) + 12345}" + text[line_end:])
    with pytest.raises(VerificationError, match="first mismatch at input"):
        verify(tmp_path / "m", build_dir=tmp_path / "build", quiet=True)
