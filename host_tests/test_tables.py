"""The quantized tables against independent float64 values (scipy B-splines, SiLU, the IR weights).

Bit-exact tests compare the C with a Python mirror built from the same tables, so a wrong table is
invisible to them. Here every table value is checked against the float it stands for: each must
be within half a quantization step (round to nearest) of an independent evaluation, for every code
of every input (B-spline tables: within one step, rows keeping the partition of unity). The B-spline check goes through ``decode_inputs`` (which the bit-exact tests tie
to the C), so it covers the cardinal tables, code alignment (offset, positions per interval,
limits) and edge normalization, as well as the per-input tables.
"""
from __future__ import annotations

import numpy as np
import pytest

import independent
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.data.datasets import load_dataset
from kan2mcu.quant.fixedpoint import quantize_symmetric
from kan2mcu.quant.quantize import QuantOptions, calibrate, decode_inputs

# knots are float32 values in the checkpoint: a cardinal table built on one input's knots may be
# off by float32 round-off on another input's; this slack is far below any table step (>= 1e-3).
SLACK = 1e-6
OPTIONS = {"8-8-8": QuantOptions(), "8-3-8": QuantOptions(spline_bits=3), "4-2-4": QuantOptions(4, 2, 4),
           "6-5-6": QuantOptions(6, 5, 6)}


@pytest.fixture(scope="module")
def models(small_checkpoints, nonuniform_checkpoint, digits_checkpoint, tmp_path_factory) -> dict:
    """(fixture, options id) -> (float IR, integer model), generated once per module."""
    base = tmp_path_factory.mktemp("tables")
    cases = dict(small_checkpoints)
    cases["nonuniform-5x4x3"] = nonuniform_checkpoint
    cases["digits"] = (digits_checkpoint, None)
    out = {}
    for name, (checkpoint, calibration) in cases.items():
        for key, options in OPTIONS.items():
            folder = base / f"{name}-{key}"
            generate_model(checkpoint, folder, options=options, calibration=calibration, quiet=True, strategy="spline",
                           allow_saturation=True)  # table properties, not accuracy: low bits trip the guard
            out[name, key] = load_bundle(folder)
    return out


@pytest.fixture(scope="module")
def calibration_inputs(small_checkpoints, nonuniform_checkpoint) -> dict:
    """The calibration inputs each model was generated with (digits: its training split)."""
    out = {name: np.load(calibration) for name, (_, calibration) in small_checkpoints.items()}
    out["nonuniform-5x4x3"] = np.load(nonuniform_checkpoint[1])
    out["digits"] = load_dataset("digits").x_train
    return out


CASES = [(name, key) for name in ("8x5x3-G5-k3", "6x4x4x2-G3-k2", "nonuniform-5x4x3", "digits") for key in OPTIONS]


def _code_values(qlayer) -> tuple[np.ndarray, np.ndarray]:
    """Every code [Q, I] and the float input it stands for."""
    codes = np.repeat(np.arange(qlayer.codes)[:, None], qlayer.in_features, axis=1)
    if hasattr(qlayer, "code_inputs"):  # edge-table: shared inputs' edges held to their own range
        return codes, qlayer.code_inputs(codes)
    return codes, qlayer.in_scale[None, :] * (codes - qlayer.in_zero[None, :])


@pytest.mark.parametrize("name,key", CASES)
def test_basis_tables_approximate_the_bsplines(models, name, key):
    model, qmodel = models[name, key]
    expected_modes = {"nonuniform-5x4x3": "per_input"}
    for layer, qlayer in zip(model.layers, qmodel.layers):
        assert qlayer.mode == expected_modes.get(name, "cardinal")
        codes, x = _code_values(qlayer)
        first, basis, _ = decode_inputs(qlayer, codes)  # [Q, I], [Q, I, K1]
        inside_codes = 0
        shifts = qlayer.basis_shift if qlayer.basis_shift.size else np.zeros(qlayer.in_features, np.int64)
        assert shifts.max() <= 8 - qlayer.spline_bits  # shifted rows still fit the byte tables
        for i in range(qlayer.in_features):
            dense = np.zeros((qlayer.codes, qlayer.n_basis))
            rows = np.arange(qlayer.codes)[:, None]
            np.add.at(dense, (rows, first[:, i, None] + np.arange(qlayer.k1)[None, :]), basis[:, i, :])
            dense /= 2 ** shifts[i]  # cardinal rows read by input i may be scaled by a power of two
            truth = independent.bsplines(layer.knots[i], layer.order, x[:, i])
            error = np.abs(dense * qlayer.basis_scale - truth)
            # largest-remainder rounding: every value within one step, and the partition of unity exact.
            # Per-input tables may pick a larger one and clip a few values near 1 to the width's top
            # (their excess moved within the row): the rows without a clipped value keep the step bound
            top = (1 << qlayer.spline_bits) - 1
            clipped = (truth * round(1 / qlayer.basis_scale) > top + 0.5).any(axis=1)
            assert qlayer.mode == "per_input" or not clipped.any()
            assert error[~clipped].max() <= qlayer.basis_scale + SLACK, (layer.name, i, error, qlayer.basis_scale)
            inside = np.abs(truth.sum(axis=1) - 1.0) < 1e-9
            inside_codes += int(inside.sum())  # hidden layers: a code window may lie beyond the grid
            assert np.all(dense[inside].sum(axis=1) == round(1 / qlayer.basis_scale)), (layer.name, i)
        assert inside_codes > 0
        top = (1 << qlayer.spline_bits) - 1
        unshifted = basis >> shifts[None, :, None]
        assert np.all(unshifted << shifts[None, :, None] == basis)
        assert top - 1 <= unshifted.max() <= top  # the table's one is as large as the width allows


@pytest.mark.parametrize("name,key", CASES)
def test_silu_tables_approximate_silu(models, name, key):
    model, qmodel = models[name, key]
    for qlayer in qmodel.layers:
        codes, x = _code_values(qlayer)
        _, _, silu_q = decode_inputs(qlayer, codes)
        error = np.abs(silu_q * qlayer.silu_scale - independent.silu(x)).max()
        assert error <= qlayer.silu_scale / 2 * (1 + 1e-9), (qlayer.name, error, qlayer.silu_scale)


@pytest.mark.parametrize("name,key", CASES)
def test_base_weights_round_to_nearest(models, name, key):
    """SiLU-branch weights: per output channel, within half a step; the largest on the largest code."""
    model, qmodel = models[name, key]
    for layer, qlayer in zip(model.layers, qmodel.layers):
        base_step = qlayer.base_scale[:, None]
        assert np.all(np.abs(qlayer.base_weight * base_step - layer.base_weight) <= base_step / 2 * (1 + 1e-9))


@pytest.mark.parametrize("name,key", CASES)
def test_coefficients_fit_the_edges_better_than_rounding(models, calibration_inputs, name, key):
    """The spline coefficients are fit to the quantized tables on the calibration codes
    (docs/arithmetic.md section 3): on those codes, every layer's edge functions come out closer
    to the float ones (independent scipy B-splines) than with plain round-to-nearest coefficients
    at the per-channel max|c| scale."""
    model, qmodel = models[name, key]
    activations = calibrate(model, calibration_inputs[name])
    for layer, qlayer, values in zip(model.layers, qmodel.layers, activations):
        codes = np.clip(np.floor(values / qlayer.in_scale + qlayer.in_zero + 0.5), 0, qlayer.codes - 1).astype(np.int64)
        x = qlayer.in_scale[None, :] * (codes - qlayer.in_zero[None, :])
        first, basis, _ = decode_inputs(qlayer, codes)  # [N, I], [N, I, K1]
        rounded, step = quantize_symmetric(layer.coef, qlayer.coef_bits, np.abs(layer.coef).max(axis=(1, 2)))
        errors = {}
        for label, ints, scale in (("fit", qlayer.coef, qlayer.coef_scale), ("rounded", rounded, step)):
            total = 0.0
            for i in range(qlayer.in_features):
                truth = independent.bsplines(layer.knots[i], layer.order, x[:, i]) @ layer.coef[:, i, :].T  # [N, O]
                live = ints[:, i, :][:, first[:, i, None] + np.arange(qlayer.k1)[None, :]]  # [O, N, K1]
                ours = np.einsum("onk,nk->no", live, basis[:, i, :]) * qlayer.basis_scale * scale[None, :]
                total += float(((ours - truth) ** 2).sum())
            errors[label] = total
        assert errors["fit"] <= errors["rounded"] * (1 + 1e-9), (layer.name, errors)


@pytest.mark.parametrize("name,key", CASES)
def test_requantization_constants_follow_the_spec(models, name, key):
    """docs/arithmetic.md section 4, recomputed here: M = round(A * 2^shift), |M| < 2^30,
    R = round((bias / s_next + z_next) * 2^shift) + 2^(shift-1)."""
    model, qmodel = models[name, key]
    for index, (layer, qlayer) in enumerate(zip(model.layers, qmodel.layers)):
        if qlayer.is_last:
            s_next, z_next = np.full(qlayer.out_features, qmodel.output_scale), np.zeros(qlayer.out_features)
        else:
            s_next, z_next = qmodel.layers[index + 1].in_scale, qmodel.layers[index + 1].in_zero
        for o in range(qlayer.out_features):
            shift = int(qlayer.shift[o])
            a_spline = layer.out_scale[o] * qlayer.basis_scale * qlayer.coef_scale[o] / s_next[o]
            a_base = layer.out_scale[o] * qlayer.base_scale[o] * qlayer.silu_scale / s_next[o]
            assert int(qlayer.mult_spline[o]) == round(a_spline * 2.0 ** shift)
            assert int(qlayer.mult_base[o]) == round(a_base * 2.0 ** shift)
            assert max(abs(int(qlayer.mult_spline[o])), abs(int(qlayer.mult_base[o]))) < 2 ** 30
            assert max(abs(int(qlayer.mult_spline[o])), abs(int(qlayer.mult_base[o]))) >= 2 ** 28  # precision kept
            bias = layer.out_bias[o] / s_next[o] + z_next[o]
            assert int(qlayer.rounding[o]) == round(bias * 2.0 ** shift) + (1 << (shift - 1))


# ---- edge-table strategy: every entry against the independent edge function ---------------------

def _edge_functions(layer, i: int, x: np.ndarray) -> np.ndarray:
    """Float64 value of every edge i -> o at ``x`` [N] ([N, O]), from scipy B-splines and expit:
    out_scale * (base weight * silu(x) + sum of coefficients x B-splines)."""
    basis = independent.bsplines(layer.knots[i], layer.order, x)
    return (basis @ layer.coef[:, i, :].T + independent.silu(x)[:, None] * layer.base_weight[None, :, i]) \
        * layer.out_scale[None, :]


@pytest.mark.parametrize("name", ["8x5x3-G5-k3", "6x4x4x2-G3-k2", "nonuniform-5x4x3"])
@pytest.mark.parametrize("bits", [(8, 8), (6, 4), (4, 6)], ids=lambda b: f"codes{b[0]}-entries{b[1]}")
def test_edge_table_entries_approximate_the_edge_functions(small_checkpoints, nonuniform_checkpoint, tmp_path,
                                                          name, bits):
    """Every entry equals its edge function at that code within half an entry step, around the
    edge's centre (folded into the bias); entries the calibration data never reaches may saturate,
    and then only where the edge function lies beyond the saturated value (and they are counted)."""
    from kan2mcu.model.importers import load_checkpoint
    from kan2mcu.quant.quantize import LayerPlan

    checkpoint, calibration = {**small_checkpoints, "nonuniform-5x4x3": nonuniform_checkpoint}[name]
    n_layers = len(load_checkpoint(checkpoint).model.layers)
    generate_model(checkpoint, tmp_path / "m", options=QuantOptions(act_bits=bits[0], table_bits=bits[1]),
                   calibration=calibration, plan=[LayerPlan("edge-table", bits[0])] * n_layers, quiet=True)
    model, qmodel = load_bundle(tmp_path / "m")
    for layer, qlayer in zip(model.layers, qmodel.layers):
        assert qlayer.strategy == "edge-table" and qlayer.table.min() >= 0
        assert qlayer.table.max() < (1 << qlayer.table_bits)
        assert np.all(qlayer.table[:, :, qlayer.out_features:] == 0)  # padding lanes add nothing
        codes, x = _code_values(qlayer)
        half = (1 << (qlayer.table_bits - 1)) - 1
        saturated_total = 0
        for i in range(qlayer.in_features):
            truth = (_edge_functions(layer, i, x[:, i]) - qlayer.centre[i][None, :]) / qlayer.entry_scale[None, :]
            signed = qlayer.table[i, :, :qlayer.out_features].astype(np.float64) - (1 << (qlayer.table_bits - 1))
            inside = np.abs(signed) < half
            error = np.abs(signed - truth)[inside]
            assert error.max(initial=0.0) <= 0.5 + 1e-6, (layer.name, i, float(error.max()))
            beyond = np.sign(signed) * truth >= half - 0.5 - 1e-6  # saturated entries: the edge is out there
            assert np.all(beyond[~inside]), (layer.name, i)
            saturated_total += int(np.count_nonzero(np.abs(np.round(truth)) > half))
        assert qlayer.clipped_entries == saturated_total
