"""The spline kernel's coefficient layouts (spline.kernel_layout): halfword rows (cubic layers, every
coefficient width), nibble words and biased bytes (other orders) hold exactly the quantized
coefficients; the per-position decode tables equal the reference's decode; golden bytes pin each
layout; the nibble kernel's lane arithmetic (mirrored in Python) gives the reference's accumulators
without a lane passing 0xFFFF; and the C is bit-exact at the issue's bit settings, on the host and,
for the Armv6-M assembly and DSP paths, with no libgcc call in the model's code."""
from __future__ import annotations

import dataclasses

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
# the 2..4-bit settings again with the compact coefficient layout (nibble words), as the planner
# chooses it when the flash budget needs it; without it they take the fast halfword kernel
COMPACT = [s + ("compact",) for s in SETTINGS if s[2] <= 4]


@pytest.fixture(scope="module")
def digits_models(digits_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("spline-kernel")
    out = {}
    from kan2mcu.quant.quantize import LayerPlan

    for setting in SETTINGS + COMPACT:
        act, spl, coef = setting[:3]
        folder = base / "".join(map(str, setting))
        plan = [LayerPlan("spline", act, None, None, "compact")] * 2 if len(setting) == 4 else None
        generate_model(digits_checkpoint, folder, options=QuantOptions(act_bits=act, spline_bits=spl, coef_bits=coef),
                       quiet=True, strategy="spline", max_error=1.0, allow_saturation=True, plan=plan)
        out[setting] = folder
    return out


def test_planner_takes_the_compact_layout_only_when_the_budget_needs_it(digits_checkpoint, tmp_path):
    """4-bit coefficients: under the default budget the fast halfword kernel (fewer bits never run a
    slower kernel; the aligned copies where the planner takes them); under a budget the halfword rows
    do not fit, the compact nibble words; the plan names the layouts; both bit-exact on the host."""
    import json

    options = QuantOptions(act_bits=4, spline_bits=3, coef_bits=4)
    kinds = {}
    for name, budget in (("fast", None), ("compact", 20000)):
        generate_model(digits_checkpoint, tmp_path / name, options=options, quiet=True, strategy="spline",
                       max_error=1.0, allow_saturation=True, **({"flash_budget": budget} if budget else {}))
        _, qmodel = load_bundle(tmp_path / name)
        kinds[name] = [spline.kernel_layout(layer).kind for layer in qmodel.layers]
        report = json.loads((tmp_path / name / "report.json").read_text())
        layouts = [row.get("coef_layout") for row in report["planner"]["layers"]]
        assert [layout == "compact" for layout in layouts] == [kind == "nibble" for kind in kinds[name]]
        assert [layout == "aligned" for layout in layouts] == [spline.kernel_layout(layer).aligned
                                                               for layer in qmodel.layers]
        codes = verification_codes(qmodel, load_dataset("digits").x_test)
        assert_c_equals_reference(tmp_path / name, codes, tmp_path / f"build-{name}")
    assert kinds["fast"] == ["halfword", "halfword"]
    assert "nibble" in kinds["compact"]
    assert (tmp_path / "compact" / "report.md").read_text().count("compact coefficient layout") >= 1


def test_aligned_layout_needs_even_rows():
    """The aligned layout (two copies: LDRD) only where a row's alignment follows the first index's
    parity (even halfwords per input); elsewhere the single copy, whatever the plan asked."""
    odd = dataclasses.replace(_tiny_layer(order=3, coef_bits=5), coef_layout="aligned")  # 5 outputs x 5 B-splines
    kl = spline.kernel_layout(odd)
    assert not kl.aligned and kl.coef.shape == (3, 5, 5)
    np.testing.assert_array_equal(kl.pos_row, kl.pos_first)
    assert spline.aligned_fits(3, 64, 16, 8) and not spline.aligned_fits(3, 3, 5, 5)
    assert not spline.aligned_fits(3, 1024, 32, 8)  # two copies past a 16-bit index
    assert not spline.aligned_fits(2, 64, 16, 8)  # cubic only


def _unpermuted_weights(layer, kl) -> np.ndarray:
    """Base-branch weights [O, 4 * groups] read back from the layout's [group][output][4] words."""
    order = spline.base_weight_order(layer)
    unpermuted = np.empty_like(kl.weight)
    unpermuted[:, :, order] = kl.weight
    return unpermuted.transpose(1, 0, 2).reshape(layer.out_features, -1)


@pytest.mark.parametrize("setting", SETTINGS + COMPACT, ids=lambda s: "-".join(map(str, s)))
def test_layout_holds_exactly_the_coefficients(digits_models, setting):
    """Cubic layers: halfword rows [i][o][k] of biased 5..8-bit coefficients (2..4-bit ones keep the
    compact nibble words, checked in test_nibble_*); the base-branch weights in [group][output][4]
    (zero padding), and per position the reference's decode."""
    _, qmodel = load_bundle(digits_models[setting])
    if len(setting) == 4:  # the compact layout chosen: the KANtize path's small flash, nibble words
        assert all(spline.kernel_layout(layer).kind == "nibble" for layer in qmodel.layers)
        return
    for layer in qmodel.layers:
        kl = spline.kernel_layout(layer)
        bias = 1 << kl.bias_log2
        assert kl.kind == "halfword" and kl.coef.dtype == np.uint16
        rows = kl.coef
        if kl.aligned:  # two copies of the rows, one pad halfword between them
            n = layer.in_features * layer.out_features * layer.n_basis
            assert kl.coef.shape == (2 * n + 1,) and kl.coef[n] == 0
            np.testing.assert_array_equal(kl.coef[:n], kl.coef[n + 1:])
            rows = kl.coef[:n].reshape(layer.in_features, layer.out_features, layer.n_basis)
        assert rows.shape == (layer.in_features, layer.out_features, layer.n_basis)
        np.testing.assert_array_equal(rows.astype(np.int64).transpose(1, 0, 2) - bias, layer.coef)
        flat = _unpermuted_weights(layer, kl)
        np.testing.assert_array_equal(flat[:, :layer.in_features], layer.base_weight)
        assert not flat[:, layer.in_features:].any()
        # Armv6-M's copy of halfword base weights (9..15 bits): biased (unsigned, LDRH), padding stays 0
        assert kl.weight_bias == (1 << (layer.base_bits - 1) if 8 < layer.base_bits <= 15 else 0)
        copy = spline.base_weight_groups(layer, kl.weight_bias)
        assert copy.shape == kl.weight.shape and copy.min() >= 0 and copy.max() <= 0x7FFF
        diff = copy - kl.weight  # the bias on every real weight, 0 on the padding
        assert set(np.unique(diff).tolist()) <= {0, kl.weight_bias}
        assert int((diff == kl.weight_bias).sum()) == layer.out_features * layer.in_features
        # the decode of every code of every input, one table read; a first layer of narrow codes reads
        # every uint8_t code, those above the top as the top one (the tables absorb the clamp)
        first_layer = layer is qmodel.layers[0]
        kl = spline.kernel_layout(layer, first=first_layer)
        assert kl.pos_clamped == (first_layer and layer.codes < 256)
        top = 256 if kl.pos_clamped else layer.codes
        codes = np.broadcast_to(np.arange(top)[:, None], (top, layer.in_features))
        first, basis, base = spline.decode_inputs(layer, codes)  # clamps codes above the top
        at = kl.pos_start[None, :] + codes
        np.testing.assert_array_equal(kl.pos_first[at], first)
        np.testing.assert_array_equal(kl.pos_base[at], base)
        # the coefficient index each decode entry carries: the first one, in the aligned layout in the
        # copy where its 4 coefficients are two word-aligned words (one LDRD)
        row = kl.pos_row[at]
        if kl.aligned:
            address = 2 * (row + np.arange(layer.in_features)[None, :] * layer.out_features * layer.n_basis)
            assert not (address % 4).any()
            np.testing.assert_array_equal(row - (first & 1) * (kl.coef.size // 2 + 1), first)
        else:
            np.testing.assert_array_equal(row, first)
        for j in range(layer.k1):
            np.testing.assert_array_equal((kl.pos_card[at] >> (8 * j)) & 0xFF, basis[:, :, j])


def _tiny_layer(order: int, coef_bits: int, base_bits: int = 12, offsets=(0, 3, 0)):
    """A hand-made cardinal spline layer: 3 inputs, 5 outputs, n_basis = 5, 4-bit codes; the base
    table indexed by knot-relative position, as quantize_layer builds it."""
    k1 = order + 1
    n_in, n_out, n_basis = 3, 5, 5
    coef = (np.arange(n_out * n_in * n_basis).reshape(n_out, n_in, n_basis) % 7) - 3
    base = (np.arange(n_out * n_in).reshape(n_out, n_in) % 5) - 2
    card = np.array([[1, 4, 1, 0][:k1], [0, 2, 2, 0][:k1]], np.int64)
    z = np.zeros(n_out, np.int64)
    return spline.SplineLayer(
        name="tiny", mode="cardinal", in_features=n_in, out_features=n_out, order=order, n_basis=n_basis,
        act_bits=4, spline_bits=3, coef_bits=coef_bits, base_bits=base_bits, silu_bits=12,
        in_scale=np.ones(n_in), in_zero=np.zeros(n_in), in_offset=np.array(offsets), in_log2p=np.ones(n_in, np.int64),
        in_limit=np.full(n_in, (n_basis + order) * 2), card=card, card_start=np.array([0, 0, 0]),
        first_table=np.zeros(0, np.int64), basis_table=np.zeros((0, k1), np.int64),
        silu_table=np.arange(40) - 16, silu_start=np.array(offsets), coef=coef, base_weight=base,
        mult_spline=z, mult_base=z, rounding=z, shift=z, is_last=True, out_max=0,
        basis_scale=1.0, silu_scale=1.0, coef_scale=np.ones(n_out), base_scale=np.ones(n_out))


def test_halfword_layout_golden_bytes():
    """The bytes the C reads, pinned: coefficient halfwords [i][o][k] + 2^(bits-1), base weights
    [group][o][4] (inputs padded to 4), and the per-position decode (inputs 0 and 2 share a window,
    input 1's window is 3 positions on, overlapping: one chunk)."""
    layer = _tiny_layer(order=3, coef_bits=5)
    kl = spline.kernel_layout(layer)
    assert kl.kind == "halfword" and kl.bias_log2 == 4
    assert kl.coef[0, 0].tolist() == [13, 14, 15, 16, 17]  # output 0, input 0: coefficients -3..1 + 16
    assert kl.coef[1, 0].tolist() == [18, 19, 13, 14, 15]  # output 0, input 1
    assert kl.coef[0, 1].tolist() == [14, 15, 16, 17, 18]  # output 1, input 0
    assert kl.coef.tobytes()[:6] == bytes([13, 0, 14, 0, 15, 0])  # little-endian halfwords
    # 4-bit coefficients: the fast halfword kernel, unless the planner chose the compact layout
    assert spline.kernel_layout(_tiny_layer(order=3, coef_bits=4)).kind == "halfword"
    compact = dataclasses.replace(_tiny_layer(order=3, coef_bits=4), coef_layout="compact")
    assert spline.kernel_layout(compact).kind == "nibble"
    assert kl.weight.shape == (1, 5, 4)
    assert kl.weight[0, 0].tolist() == [-2, -1, 0, 0] and kl.weight[0, 1].tolist() == [1, 2, -2, 0]
    # Armv6-M's copy: 12-bit base weights + 2048 (unsigned halfwords), the padding input stays 0
    assert kl.weight_bias == 2048
    m0 = spline.base_weight_groups(layer, kl.weight_bias)
    assert m0[0, 0].tolist() == [2046, 2047, 2048, 0] and m0[0, 1].tolist() == [2049, 2050, 2046, 0]
    assert kl.pos_start.tolist() == [0, 3, 0] and not kl.pos_clamped
    assert kl.pos_base[:4].tolist() == [-16, -15, -14, -13]  # input 0's base values (silu_start 0)
    # as a first layer (4-bit codes from uint8_t) the overlapping windows 0 and 3 keep the clamp in C; with
    # windows apart (inputs 0 and 2 share one, input 1 has its own) each runs on to code 255 with copies
    # of its top code's entry
    assert not spline.kernel_layout(layer, first=True).pos_clamped
    kf = spline.kernel_layout(_tiny_layer(order=3, coef_bits=5, offsets=(0, 20, 0)), first=True)
    assert kf.pos_clamped and kf.pos_start.tolist() == [0, 256, 0] and len(kf.pos_card) == 512
    assert kf.pos_first[15:256].tolist() == [kf.pos_first[15]] * 241
    assert kf.pos_base[256 + 15:].tolist() == [kf.pos_base[256 + 15]] * 241
    # position u: interval u >> 1, row u & 1; first = interval - 3, clipped at the grid's edges
    assert kl.pos_first[:10].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert [hex(w) for w in kl.pos_card[:8]] == ["0x0", "0x0", "0x1", "0x2", "0x104", "0x202", "0x10401", "0x20200"]
    assert kl.pos_first[10] == 1 and hex(kl.pos_card[10]) == "0x1040100"  # past the top: shifted up one byte


def test_byte_and_nibble_layouts_golden_bytes():
    """Other orders keep the compact layouts: quadratic, 8-bit coefficients in biased bytes [o][i][k];
    4-bit coefficients in nibble words (output p of a block in nibble p // 2 + 4 * (p % 2))."""
    layer = _tiny_layer(order=2, coef_bits=8, base_bits=8)
    kl = spline.kernel_layout(layer)
    assert kl.kind == "byte" and kl.coef[0, 0].tolist() == [125, 126, 127, 128, 129]
    assert kl.weight[0, 1].tolist() == [1, -2, 2, 0]  # byte weights: w0 w2 w1 w3
    nib = spline.kernel_layout(_tiny_layer(order=2, coef_bits=4))
    assert nib.kind == "nibble" and nib.coef.dtype == np.uint32 and nib.coef.shape == (1, 3, 5)
    # outputs 0..4 of input 0, coefficient 0: -3, -2, -1, 0, 1 (+ 8); outputs 5..7 padding (8)
    assert hex(int(nib.coef[0, 0, 0])) == "0x88868975"


def test_nibble_slots_pair_outputs_in_lanes():
    assert [spline.nibble_slot(p) for p in range(8)] == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.fixture(scope="module")
def quadratic_models(small_checkpoints, tmp_path_factory):
    """The quadratic [6, 4, 4, 2] model (nibble and byte layouts) at the nibble settings."""
    checkpoint, calibration = small_checkpoints["6x4x4x2-G3-k2"]
    base = tmp_path_factory.mktemp("spline-quadratic")
    out = {}
    for act, spl, coef in [(8, 8, 4), (4, 3, 4), (6, 8, 2)]:
        folder = base / f"{act}{spl}{coef}"
        generate_model(checkpoint, folder, calibration=calibration, quiet=True, strategy="spline", max_error=10.0,
                       allow_saturation=True, options=QuantOptions(act_bits=act, spline_bits=spl, coef_bits=coef))
        out[(act, spl, coef)] = folder
    return out


@pytest.mark.parametrize("setting", [(8, 8, 4), (4, 3, 4), (6, 8, 2)], ids=lambda s: "-".join(map(str, s)))
def test_nibble_lanes_equal_the_reference_and_never_overflow(quadratic_models, small_checkpoints, setting, tmp_path):
    folder = quadratic_models[setting]
    _, qmodel = load_bundle(folder)
    rng = np.random.default_rng(7)
    codes = np.concatenate([rng.integers(0, 256, size=(300, 6)), np.repeat(np.arange(256)[:, None], 6, axis=1)])
    x = np.clip(codes, 0, qmodel.layers[0].codes - 1)
    kinds = []
    for layer in qmodel.layers:
        kl = spline.kernel_layout(layer)
        kinds.append(kl.kind)
        if kl.nibble:
            sums, peak = spline.nibble_sums(layer, kl, x)
            acc_spline, _ = spline.accumulators(layer, x)
            np.testing.assert_array_equal(sums, acc_spline)
            assert peak <= spline.LANE_MAX
        x = np.clip(spline.run_layer(layer, x), 0, layer.out_max)
    assert kinds == ["nibble", "nibble", "byte"]  # 4, 4 and 2 outputs
    assert_c_equals_reference(folder, codes, tmp_path / "build")


def test_lanes_are_widened_within_a_layer(tmp_path):
    """8-bit basis values with 4-bit coefficients in a quadratic layer of 24 inputs: a lane could
    pass 0xFFFF after 17 inputs, so the layer is split into chunks; the chunk bound is tight (one
    more input could overflow on the worst codes), and the C is bit-exact."""
    from conftest import make_random_checkpoint

    checkpoint, calibration = make_random_checkpoint(tmp_path / "wide.pt", (24, 8, 2), 5, 2, seed=6)
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, strategy="spline", max_error=10.0,
                   allow_saturation=True, options=QuantOptions(act_bits=8, spline_bits=8, coef_bits=4))
    _, qmodel = load_bundle(tmp_path / "m")
    layer = qmodel.layers[0]
    kl = spline.kernel_layout(layer)
    assert kl.nibble and 1 <= kl.chunk < layer.in_features
    codes = np.broadcast_to(np.arange(layer.codes)[:, None], (layer.codes, layer.in_features))
    sums, peak = spline.nibble_sums(layer, kl, codes)
    np.testing.assert_array_equal(sums, spline.accumulators(layer, codes)[0])
    assert peak <= spline.LANE_MAX
    _, basis, _ = spline.decode_inputs(layer, codes)
    per_input = int(basis.sum(axis=2).max()) * 15
    assert kl.chunk * per_input <= spline.LANE_MAX < (kl.chunk + 1) * per_input
    rng = np.random.default_rng(8)
    assert_c_equals_reference(tmp_path / "m", rng.integers(0, 256, size=(300, 24)), tmp_path / "build")


@pytest.mark.parametrize("setting", SETTINGS + COMPACT, ids=lambda s: "-".join(map(str, s)))
def test_spline_kernel_bit_exact_on_the_host(digits_models, setting, tmp_path):
    folder = digits_models[setting]
    _, qmodel = load_bundle(folder)
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    assert_c_equals_reference(folder, codes, tmp_path / "build")


def test_no_libgcc_call_on_armv6m(digits_models, tmp_path):
    """The model's code on Cortex-M0 (the halfword assembly block, the int64 requantization, the
    compact layout's decode) calls no library function: the object file of kan.c has no undefined
    symbol."""
    import shutil
    import subprocess

    gcc, nm = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-nm")
    if gcc is None or nm is None:
        pytest.skip("arm-none-eabi toolchain missing")
    for setting in [(8, 8, 8), (4, 3, 4), (4, 3, 4, "compact")]:
        folder = digits_models[setting]
        obj = tmp_path / f"{'-'.join(map(str, setting))}.o"
        subprocess.run([gcc, "-mcpu=cortex-m0", "-mthumb", "-O2", "-ffreestanding", "-Wall", "-Werror", "-c",
                        str(folder / "kan.c"), "-o", str(obj)], check=True)
        undefined = subprocess.run([nm, "-u", str(obj)], check=True, capture_output=True, text=True).stdout.split()
        undefined = [sym for sym in undefined if sym != "U"]
        # no libgcc helper and no memset (GCC zeroed local arrays with one: 1,120 instructions per
        # inference in the compact layout's decode on M0)
        assert undefined == [], undefined
        listing = subprocess.run([gcc.replace("gcc", "objdump"), "-d", str(obj)], check=True, capture_output=True,
                                 text=True).stdout
        assert "__muldi3" not in listing and "__aeabi_lmul" not in listing
        assert "ldm" in listing or len(setting) == 4


def test_armv6m_int64_product_is_exact(digits_models, tmp_path):
    """The Armv6-M branch of <prefix>_mul64 (four 16 x 16 products, carries, sign), compiled on the
    host, equals the exact product on the extremes and on random operands (models never reach the
    middle sum's carry, so this is where it is checked)."""
    import re
    import subprocess

    source = (digits_models[(8, 8, 8)] / "kan.c").read_text()
    body = re.search(r"static inline int64_t kan_mul64\(int32_t a, int32_t b\)\n\{\n.*?\n\}\n", source, re.S).group(0)
    body = body.replace("#if defined(__ARM_ARCH_6M__)", "#if 1")
    rng = np.random.default_rng(9)
    edges = [-(2**31), -(2**31) + 1, -65536, -65535, -1, 0, 1, 65535, 65536, 2**31 - 1]
    pairs = [(a, b) for a in edges for b in edges] + [tuple(map(int, p)) for p in rng.integers(-(2**31), 2**31, (2000, 2))]
    harness = tmp_path / "mul64.c"
    harness.write_text("#include <stdint.h>\n#include <stdio.h>\n" + body + "static const int32_t AB[][2] = {"
                       + ",".join(f"{{{a}, {b}}}" if a != -(2**31) and b != -(2**31) else
                                  f"{{{'INT32_MIN' if a == -(2**31) else a}, {'INT32_MIN' if b == -(2**31) else b}}}"
                                  for a, b in pairs)
                       + "};\nint main(void) {\n    unsigned n;\n    for (n = 0; n < sizeof AB / sizeof AB[0]; ++n)\n"
                       "        printf(\"%lld\\n\", (long long)kan_mul64(AB[n][0], AB[n][1]));\n    return 0;\n}\n")
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", str(harness),
                    "-o", str(tmp_path / "mul64")], check=True)
    out = subprocess.run([str(tmp_path / "mul64")], check=True, capture_output=True, text=True).stdout.split()
    assert [int(v) for v in out] == [a * b for a, b in pairs]
