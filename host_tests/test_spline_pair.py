"""The pair coefficient layout of cubic spline layers (kan2mcu/quant/strategies/spline_pair.py, docs/arithmetic.md
section 5): two outputs per 32-bit word, one multiply per basis value for both, 16-bit lanes split by
``lo += t; hi += t >> 16``. The words hold exactly the quantized coefficients; the slot groups sharing
a split are allowed only by their bound on the actual tables; the lane arithmetic (mirrored in Python)
equals the reference with lanes up to 65,025; the C is bit-exact on the host (odd output counts, one
output, every input code including the grid edges, extreme coefficients) and under QEMU on every
emulated board with a multiplier; the planner takes it for RV32 and not for the M4 (golden bytes:
tools/generated_hashes.py, configuration spline-8-8-8-rv32)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import assert_c_equals_reference, make_random_checkpoint
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.errors import QuantizationError
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.strategies import spline
from kan2mcu.quant.strategies.spline_pair import lane_groups, pair_sums, pair_words
from kan2mcu.quant.strategies.spline_reference import accumulators, decode_inputs
from test_firmware_qemu import offline_environment  # noqa: F401  (fresh offline PlatformIO core, dead proxy)

OPTIONS = QuantOptions(act_bits=8, spline_bits=8, coef_bits=8)


def _pair_model(checkpoint, calibration, folder, layers: int, options=OPTIONS):
    generate_model(checkpoint, folder, calibration=calibration, options=options, quiet=True, strategy="spline",
                   max_error=1.0, allow_saturation=True, plan=[LayerPlan("spline", options.act_bits, None, None, "pair")]
                   * layers)
    return load_bundle(folder)[1]


def _extreme_checkpoint(path, widths, seed):
    """Spline weights of one sign per output (+1 on even outputs, -1 on odd ones): every output's
    coefficients sit near +127 or -127, so the biased lanes approach 255 x 255."""
    import torch

    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    checkpoint, calibration = make_random_checkpoint(path, widths, 5, 3, seed)  # for its calibration rows
    model = KAN(list(widths), grid_size=5, spline_order=3)
    with torch.no_grad():
        for layer in model.layers:
            sign = torch.tensor([1.0 if o % 2 == 0 else -1.0 for o in range(layer.spline_weight.shape[0])])
            layer.spline_weight.copy_(sign[:, None, None] * torch.ones_like(layer.spline_weight))
    save_checkpoint(model, checkpoint, dataset=None, input_transform=None)
    return checkpoint, calibration


def _every_code(qmodel, extra: np.ndarray) -> np.ndarray:
    """Every code of the first layer on every input at once (the grid's edges included), plus ``extra``."""
    n_in, codes = qmodel.layers[0].in_features, qmodel.layers[0].codes
    sweep = np.broadcast_to(np.arange(codes)[:, None], (codes, n_in))
    return np.concatenate([sweep, np.roll(sweep, 7, axis=0), extra]).astype(np.int64)


@pytest.fixture(scope="module")
def pair_models(tmp_path_factory):
    """[8, 5, 3] (odd outputs), [5, 3, 1] (one output) random KANs and [6, 4, 3] with extreme coefficients,
    every layer in the pair layout."""
    base = tmp_path_factory.mktemp("pair")
    out = {}
    for name, widths, seed, extreme in (("8x5x3", (8, 5, 3), 1, False), ("5x3x1", (5, 3, 1), 3, False),
                                        ("6x4x3-extreme", (6, 4, 3), 4, True)):
        make = _extreme_checkpoint if extreme else (lambda p, w, s: make_random_checkpoint(p, w, 5, 3, s))
        checkpoint, calibration = make(base / f"{name}.pt", widths, seed)
        folder = base / name
        qmodel = _pair_model(checkpoint, calibration, folder, len(widths) - 1)
        out[name] = (folder, qmodel, calibration)
    return out


def test_lane_groups_follow_the_bound_on_the_tables():
    """Slots group only while max(sum of their basis values) x the largest coefficient <= 0xFFFF: the
    cubic cardinal rows give (0, 2), (1, 3) at 8 bits (each pair of alternate values sums to at most
    2/3 of ONE = 255); a row where B0 + B2 passes 257 (with 255 coefficients) splits them."""
    rows = np.array([[64, 254, 64, 0], [0, 64, 254, 64], [11, 180, 180, 11]])
    assert lane_groups(rows, 255) == ((0, 2), (1, 3))
    assert lane_groups(rows, 128) == ((0, 1, 2, 3),)  # 7-bit biased coefficients: one split per input
    loud = np.vstack([rows, [[130, 0, 128, 124]]])  # B0 + B2 = 258: 258 x 255 > 0xFFFF
    groups = lane_groups(loud, 255)
    assert (0, 2) not in groups and sorted(j for g in groups for j in g) == [0, 1, 2, 3]
    for group in groups:
        assert loud[:, list(group)].sum(axis=1).max() * 255 <= 0xFFFF
    assert lane_groups(np.array([[2, 2, 2, 2]]), 255) == ((0, 1, 2, 3),)  # small rows: one split per input
    with pytest.raises(QuantizationError):
        lane_groups(np.array([[300, 0, 0, 0]]), 255)


def test_pair_words_hold_the_coefficients():
    """Word [i][p][k] = coefficient of output 2p (low lane) | of output 2p + 1 (high lane) << 16; the high
    lane past an odd layer's last output is 0."""
    stored = np.arange(3 * 2 * 4).reshape(3, 2, 4) + 1
    words = pair_words(stored)
    assert words.shape == (2, 2, 4) and words.dtype == np.uint32
    np.testing.assert_array_equal(words[:, 0] & 0xFFFF, stored[0])
    np.testing.assert_array_equal(words[:, 0] >> 16, stored[1])
    np.testing.assert_array_equal(words[:, 1] & 0xFFFF, stored[2])
    np.testing.assert_array_equal(words[:, 1] >> 16, 0)


@pytest.mark.parametrize("name", ["8x5x3", "5x3x1", "6x4x3-extreme"])
def test_pair_lanes_equal_the_reference(pair_models, name):
    """The kernel's arithmetic (Python mirror: uint32 words, the groups' splits, lo - (hi << 16)) gives the
    reference's spline accumulators on every code of every input; no split's lane passes 0xFFFF, and with
    extreme coefficients the lanes reach 255 x 255 (the bound is tight, not loose)."""
    _, qmodel, _ = pair_models[name]
    peaks = []
    for layer in qmodel.layers:
        kl = spline.kernel_layout(layer)
        assert kl.kind == "pair" and kl.coef.shape == (layer.in_features, -(-layer.out_features // 2), layer.n_basis)
        codes = np.broadcast_to(np.arange(layer.codes)[:, None], (layer.codes, layer.in_features))
        first, basis, _ = decode_inputs(layer, codes)
        sums, peak = pair_sums(kl.coef, kl.lane_groups, layer.out_features, kl.bias_log2, first, basis)
        np.testing.assert_array_equal(sums, accumulators(layer, codes)[0])
        assert peak <= 0xFFFF
        peaks.append(peak)
        # the decode entry carries 4 * first (bytes) | row sum << shift; row sums of the basis values
        np.testing.assert_array_equal(kl.pos_row & ((1 << kl.row_sum_shift) - 1), 4 * kl.pos_first)
        rows = (kl.pos_card[:, None] >> (8 * np.arange(4))[None, :]) & 0xFF
        np.testing.assert_array_equal(kl.pos_row >> kl.row_sum_shift, rows.sum(axis=1))
    if name == "6x4x3-extreme":
        assert max(peaks) >= 255 * 250, peaks


@pytest.mark.parametrize("name", ["8x5x3", "5x3x1", "6x4x3-extreme"])
def test_pair_layout_bit_exact_on_the_host(pair_models, name, tmp_path):
    """The C of the pair layout equals the reference on every code of every input (grid edges included)
    and on the calibration rows' codes."""
    folder, qmodel, _ = pair_models[name]
    rng = np.random.default_rng(5)
    extra = rng.integers(0, qmodel.layers[0].codes, (64, qmodel.layers[0].in_features))
    assert_c_equals_reference(folder, _every_code(qmodel, extra), tmp_path / "build")


def test_pair_layout_no_libgcc_call_on_rv32(pair_models, tmp_path):
    """The model's code on rv32imac (pair passes, straight-line int64 requantization) calls no library
    function (no __muldi3: the 64-bit products are MUL + MULH)."""
    gcc = shutil.which("riscv64-unknown-elf-gcc")
    if gcc is None:
        pytest.skip("riscv64-unknown-elf toolchain missing")
    for name in ("8x5x3", "6x4x3-extreme"):
        obj = tmp_path / f"{name}.o"
        subprocess.run([gcc, "-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2", "-O2", "-ffreestanding", "-Wall",
                        "-Werror", "-c", str(pair_models[name][0] / "kan.c"), "-o", str(obj)], check=True)
        undefined = subprocess.run([gcc.replace("gcc", "nm"), "-u", str(obj)], check=True, capture_output=True,
                                   text=True).stdout.split()
        assert [sym for sym in undefined if sym != "U"] == []
        listing = subprocess.run([gcc.replace("gcc", "objdump"), "-d", str(obj)], check=True, capture_output=True,
                                 text=True).stdout
        assert "mulh" in listing and "__muldi3" not in listing


@pytest.mark.parametrize("board", ["qemu-rv32imac", "qemu-cortex-m0", "qemu-cortex-m3", "qemu-cortex-m4", "qemu-cortex-m7",
                                   "qemu-cortex-m33", "qemu-cortex-m55"])
def test_pair_layout_on_firmware(pair_models, board, tmp_path):
    """Under QEMU the firmware's outputs equal the reference's (its self-check) for the odd, the one-output
    and the extreme-coefficient models in the pair layout."""
    from kan2mcu.firmware.measure import measure

    for name in ("8x5x3", "5x3x1", "6x4x3-extreme"):
        entry = measure([pair_models[name][0]], board, tmp_path / name)["models"][0]
        assert entry["check"] == "PASS", (name, entry["firmware_result"])


def test_planner_takes_the_pair_layout_for_rv32_only(digits_checkpoint, tmp_path):
    """Planned for rv32imac (--board), the digits KAN at 8/8/8 takes the pair layout in both layers; planned
    for the M4 (the default), none (the halfword kernel's SMLAD is faster there)."""
    import json

    layouts = {}
    for name, board in (("rv", "qemu-rv32imac"), ("m4", None)):
        generate_model(digits_checkpoint, tmp_path / name, options=OPTIONS, quiet=True, strategy="spline",
                       max_error=1.0, allow_saturation=True, **({"board": board} if board else {}))
        report = json.loads((tmp_path / name / "report.json").read_text())
        layouts[name] = [row.get("coef_layout") for row in report["planner"]["layers"]]
    assert layouts["rv"] == ["pair", "pair"]
    assert "pair" not in layouts["m4"]
    _, qmodel = load_bundle(tmp_path / "rv")
    codes = np.broadcast_to(np.arange(256)[:, None], (256, 64)).astype(np.int64)
    assert [spline.kernel_layout(layer).lane_groups for layer in qmodel.layers] == [((0, 2), (1, 3))] * 2
    assert_c_equals_reference(tmp_path / "rv", codes, tmp_path / "build")


def test_four_splits_when_no_group_fits():
    """Rows of large values everywhere: no two slots may share a split (255 + 255 > 257), four splits."""
    assert lane_groups(np.array([[255, 255, 255, 255]]), 255) == ((0,), (1,), (2,), (3,))
    assert lane_groups(np.array([[100, 100, 100, 100]]), 255) == ((0, 1), (2, 3))
