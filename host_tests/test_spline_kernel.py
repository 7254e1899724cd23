"""The spline kernel's coefficient layout (spline.kernel_layout): nibble words and biased bytes hold
exactly the quantized coefficients, the nibble kernel's lane arithmetic (mirrored in Python) gives
the reference's accumulators without a lane passing 0xFFFF, and the C is bit-exact at the issue's
bit settings, including ones whose lanes must be widened several times per layer."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_c_equals_reference
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.strategies import spline
from kan2mcu.check.verify import verification_codes

# act / spline / coef bits: the four settings, plus 8-bit basis values with nibble
# coefficients (lanes fill fastest: widened every few inputs) and 2-bit coefficients
SETTINGS = [(8, 8, 8), (6, 4, 4), (4, 3, 4), (4, 2, 3), (8, 8, 4), (6, 8, 2)]


@pytest.fixture(scope="module")
def digits_models(digits_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("spline-kernel")
    out = {}
    for act, spl, coef in SETTINGS:
        folder = base / f"{act}{spl}{coef}"
        generate_model(digits_checkpoint, folder, options=QuantOptions(act_bits=act, spline_bits=spl, coef_bits=coef),
                       quiet=True, strategy="spline", max_error=1.0, allow_saturation=True)
        out[(act, spl, coef)] = folder
    return out


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_layout_holds_exactly_the_coefficients(digits_models, setting):
    _, qmodel = load_bundle(digits_models[setting])
    for layer in qmodel.layers:
        kl = spline.kernel_layout(layer)
        bias = 1 << kl.bias_log2
        assert kl.nibble == (layer.coef_bits <= 4 and layer.out_features >= 4)
        if kl.nibble:
            assert kl.coef.dtype == np.uint32 and kl.coef.shape == (kl.blocks, layer.in_features, layer.n_basis)
            for o in range(layer.out_features):
                block, p = divmod(o, spline.NIBBLE_OUTPUTS)
                nibble = (kl.coef[block].astype(np.int64) >> (4 * spline.nibble_slot(p))) & 0xF
                np.testing.assert_array_equal(nibble - bias, layer.coef[o])
        else:
            assert kl.coef.min() >= 0 and kl.coef.max() <= 255
            np.testing.assert_array_equal(kl.coef - bias, layer.coef)
        # SiLU-branch weights: zero padding, groups of 4 in base_weight_order
        order = spline.base_weight_order(layer)
        groups = kl.weight.reshape(layer.out_features, kl.groups, 4)
        unpermuted = np.empty_like(groups)
        unpermuted[:, :, order] = groups
        flat = unpermuted.reshape(layer.out_features, -1)
        np.testing.assert_array_equal(flat[:, :layer.in_features], layer.base_weight)
        assert not flat[:, layer.in_features:].any()


def test_nibble_slots_pair_outputs_in_lanes():
    assert [spline.nibble_slot(p) for p in range(8)] == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s[2] <= 4], ids=lambda s: "-".join(map(str, s)))
def test_nibble_lanes_equal_the_reference_and_never_overflow(digits_models, setting):
    _, qmodel = load_bundle(digits_models[setting])
    codes = verification_codes(qmodel, load_dataset("digits").x_test)[:400]
    x = np.clip(codes, 0, 255)
    for layer in qmodel.layers:
        kl = spline.kernel_layout(layer)
        # the worst code of every input at once: each input's largest basis-row sum
        sums, peak = spline.nibble_sums(layer, kl, x)
        acc_spline, _ = spline.accumulators(layer, x)
        np.testing.assert_array_equal(sums, acc_spline)
        assert peak <= spline.LANE_MAX
        x = np.clip(spline.run_layer(layer, x), 0, layer.out_max)


def test_lanes_are_widened_within_a_layer(digits_models):
    """8-bit basis values with 4-bit coefficients: a lane could pass 0xFFFF after a few dozen
    inputs, so the 64-input layer is split into chunks; the chunk bound is tight (one more input
    could overflow on the worst codes)."""
    _, qmodel = load_bundle(digits_models[(8, 8, 4)])
    layer = qmodel.layers[0]
    kl = spline.kernel_layout(layer)
    assert 1 < kl.chunk < layer.in_features
    codes = np.broadcast_to(np.arange(layer.codes)[:, None], (layer.codes, layer.in_features))
    _, basis, _ = spline.decode_inputs(layer, codes)
    per_input = int(basis.sum(axis=2).max()) * 15
    assert kl.chunk * per_input <= spline.LANE_MAX < (kl.chunk + 1) * per_input


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_spline_kernel_bit_exact_on_the_host(digits_models, setting, tmp_path):
    folder = digits_models[setting]
    _, qmodel = load_bundle(folder)
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    assert_c_equals_reference(folder, codes, tmp_path / "build")
