"""Accuracy of the integer model against float evaluations, with bounds close to what is measured.

Bit-exactness (C == Python integer reference) is tested elsewhere; it cannot see a wrong table or a
wrong rounding constant that C and reference share. These tests can: they compare the dequantized
integer reference with

- the float64 IR forward (``kan2mcu.model.bspline.model_forward``, "the float model"), and
- an independent float64 evaluation: the checkpoint run by torch (kan2mcu.model.torch_kan.KAN in
  float64), see host_tests/independent.py;

on the digits test split (450 samples) and on 2,000 seeded inputs spread over the calibrated range
of the small fixtures. Each bound is about 1.5x the error measured on this code (torch 2.13.0 CPU,
numbers in the comments: measured max / measured RMS logit error), per basis mode and per bit
setting, so a change that makes the arithmetic measurably worse fails here. Measured effect of two
bugs that bit-exact tests cannot see, digits 8/8/8: requantization rounding term dropped max 0.217
-> 0.396, RMS 0.057 -> 0.093; cardinal table sampled one position off max 0.485, RMS 0.115.
"""
from __future__ import annotations

import numpy as np
import pytest

from independent import torch_forward
from kan2mcu.model.bspline import layer_forward, model_forward
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.reference import dequantize_outputs, quantize_inputs, run_layer, run_model
from kan2mcu.quant.strategies.spline import accumulators as spline_accumulators

N_PROBE = 2000

# (act, spline, coef) bits -> (max, RMS) bound on |quantized logit - float logit|, digits test split.
DIGITS_BOUNDS = {
    (8, 8, 8): (0.29, 0.08),  # measured 0.1916 / 0.0530
    (8, 3, 8): (0.74, 0.15),  # measured 0.4933 / 0.0980
    (8, 2, 4): (3.3, 0.66),  # measured 2.1816 / 0.4336
    (6, 8, 5): (1.7, 0.4),  # measured 1.1292 / 0.2624
    (4, 3, 3): (16.2, 3.4),  # measured 10.7245 / 2.2109
}

# fixture -> {bits: (max, RMS)} against the torch float64 forward, on N_PROBE inputs in range.
# Bounds are about 1.5x the measured figures and were only ever tightened: where the data-fitted
# coefficients (docs/arithmetic.md section 3) raised a max error on these probes, the older bound stays.
SMALL_BOUNDS = {
    "8x5x3-G5-k3": {  # cardinal tables, cubic; output peak 0.64
        (8, 8, 8): (0.017, 0.0039),  # measured 0.0110 / 0.0026
        (8, 3, 8): (0.093, 0.023),  # measured 0.0614 / 0.0151
        (4, 4, 4): (0.29, 0.062),  # measured 0.1920 / 0.0409
        (2, 2, 2): (0.7, 0.2),  # measured 0.5981 / 0.1443
    },
    "6x4x4x2-G3-k2": {  # cardinal tables, quadratic, three layers; output peak 0.216
        (8, 8, 8): (0.0081, 0.002),  # measured 0.0054 / 0.0013
        (8, 3, 8): (0.075, 0.019),  # measured 0.0498 / 0.0150
        (4, 4, 4): (0.15, 0.031),  # measured 0.0966 / 0.0202
        (2, 2, 2): (0.28, 0.14),  # measured 0.1864 / 0.0919
    },
    "nonuniform-5x4x3": {  # per-input tables (non-uniform knots); output peak 4.32
        (8, 8, 8): (0.51, 0.044),  # measured 0.3395 / 0.0291
        (8, 3, 8): (1.11, 0.18),  # measured 1.0275 / 0.1186
        (4, 4, 4): (3.5, 0.56),  # measured 2.8978 / 0.3702
    },
}


def _logit_errors(out: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    err = out - reference
    return float(np.abs(err).max()), float(np.sqrt(np.mean(err ** 2)))


def _quantized_logits(folder, x: np.ndarray) -> np.ndarray:
    _, qmodel = load_bundle(folder)
    return dequantize_outputs(qmodel, run_model(qmodel, quantize_inputs(qmodel, x)))


@pytest.fixture(scope="module")
def fixtures(small_checkpoints, nonuniform_checkpoint) -> dict:
    """name -> (checkpoint, calibration file, probe inputs inside the calibrated range)."""
    cases = dict(small_checkpoints)
    cases["nonuniform-5x4x3"] = nonuniform_checkpoint
    out = {}
    for name, (checkpoint, calibration) in cases.items():
        calib = np.load(calibration)
        probe = np.random.default_rng(7).uniform(calib.min(axis=0), calib.max(axis=0), size=(N_PROBE, calib.shape[1]))
        out[name] = (checkpoint, calibration, probe)
    return out


@pytest.mark.parametrize("name", sorted(SMALL_BOUNDS))
def test_float_model_equals_torch_forward(fixtures, name):
    """The IR's float64 forward computes what the torch module computes (only summation order differs)."""
    checkpoint, _, probe = fixtures[name]
    wide = np.concatenate([probe, 2.0 * probe])  # beyond the grid too: SiLU branch and zero splines
    ours = model_forward(load_checkpoint(checkpoint).model, wide)
    theirs = torch_forward(checkpoint, wide)
    assert np.abs(ours - theirs).max() <= 1e-12 * max(1.0, float(np.abs(theirs).max()))  # measured <= 2.2e-15


@pytest.mark.parametrize("name,bits", [(n, b) for n in sorted(SMALL_BOUNDS) for b in SMALL_BOUNDS[n]],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)))
def test_small_models_track_torch_float64(fixtures, tmp_path, name, bits):
    checkpoint, calibration, probe = fixtures[name]
    generate_model(checkpoint, tmp_path / "m", options=QuantOptions(*bits), calibration=calibration, quiet=True, strategy="spline",
                   allow_saturation=True)  # the test bounds the error itself; low-bit random models trip the guard
    worst, rms = _logit_errors(_quantized_logits(tmp_path / "m", probe), torch_forward(checkpoint, probe))
    bound_max, bound_rms = SMALL_BOUNDS[name][bits]
    print(f"{name} {bits}: max {worst:.4f} (bound {bound_max}), rms {rms:.4f} (bound {bound_rms})")
    assert worst <= bound_max and rms <= bound_rms, (worst, rms)


@pytest.mark.parametrize("bits", sorted(DIGITS_BOUNDS), ids=lambda b: "-".join(map(str, b)))
def test_digits_logits_track_the_float_model(digits_checkpoint, tmp_path, bits):
    generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(*bits), quiet=True, strategy="spline")
    x_test = load_dataset("digits").x_test
    model, _ = load_bundle(tmp_path / "m")
    worst, rms = _logit_errors(_quantized_logits(tmp_path / "m", x_test), model_forward(model, x_test))
    bound_max, bound_rms = DIGITS_BOUNDS[bits]
    print(f"digits {bits}: max {worst:.4f} (bound {bound_max}), rms {rms:.4f} (bound {bound_rms})")
    assert worst <= bound_max and rms <= bound_rms, (worst, rms)


@pytest.mark.parametrize("spline_bits,allowed_drop", [(8, 0.005), (3, 0.010)])
def test_digits_accuracy_within_budget(digits_checkpoint, tmp_path, spline_bits, allowed_drop):
    """Argmax accuracy on the test split (measured: float 0.9600, 8 bit 0.9622, 3 bit 0.9600)."""
    result = generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(spline_bits=spline_bits),
                            quiet=True, strategy="spline")
    acc = result.report["accuracy"]
    assert acc["float"] > 0.9, "the default KAN should learn digits"
    assert acc["quantized"] >= acc["float"] - allowed_drop, acc


# Inner layers at 8/8/8: integer output code minus the ideal code (the layer's own int32
# accumulators times their float scales, plus the bias, divided by the next scale, plus the next
# zero point: exactly what requantization should round), on 4,000 random codes, unsaturated
# outputs only. This isolates requantization from the choice of coefficients (which the torch
# comparisons above bound). Bounds: (max |difference|, |mean difference|) in codes.
INNER_BOUNDS = {
    "8x5x3-G5-k3": (0.52, 0.015),  # measured 0.5000 / 0.0026 (rounding term dropped: mean -0.50)
    "6x4x4x2-G3-k2": (0.52, 0.015),  # measured 0.5000 / 0.0062
    "nonuniform-5x4x3": (0.52, 0.015),  # measured 0.5000 / 0.0040
}


def _inner_layer_errors(folder) -> tuple[float, float]:
    """Worst |code - ideal| and worst |mean(code - ideal)| over the inner layers, 4,000 random codes."""
    model, qmodel = load_bundle(folder)
    rng = np.random.default_rng(0)
    worst, worst_mean = 0.0, 0.0
    for index, (layer, qlayer) in enumerate(zip(model.layers[:-1], qmodel.layers[:-1])):
        following = qmodel.layers[index + 1]
        codes = rng.integers(0, qlayer.codes, size=(4000, qlayer.in_features))
        acc_spline, acc_base = spline_accumulators(qlayer, codes)
        real = (acc_spline * (qlayer.basis_scale * qlayer.coef_scale)[None, :]
                + acc_base * (qlayer.base_scale * qlayer.silu_scale)[None, :]) * layer.out_scale + layer.out_bias
        ideal = real / following.in_scale + following.in_zero
        inside = (ideal > 0.5) & (ideal < qlayer.out_max - 0.5)
        diff = (run_layer(qlayer, codes) - ideal)[inside]
        assert diff.size > 1000
        worst, worst_mean = max(worst, float(np.abs(diff).max())), max(worst_mean, abs(float(diff.mean())))
    return worst, worst_mean


def _inner_layer_errors_vs_float(folder) -> tuple[float, float]:
    """As above, with the ideal code from the float layer on the dequantized input codes (an edge
    table's entries are the float edge functions, so this isolates its requantization too)."""
    model, qmodel = load_bundle(folder)
    rng = np.random.default_rng(0)
    worst, worst_mean = 0.0, 0.0
    for index, (layer, qlayer) in enumerate(zip(model.layers[:-1], qmodel.layers[:-1])):
        following = qmodel.layers[index + 1]
        codes = rng.integers(0, qlayer.codes, size=(4000, qlayer.in_features))
        ideal = layer_forward(layer, qlayer.code_inputs(codes)) / following.in_scale + following.in_zero
        inside = (ideal > 0.5) & (ideal < qlayer.out_max - 0.5)
        diff = (run_layer(qlayer, codes) - ideal)[inside]
        assert diff.size > 1000
        worst, worst_mean = max(worst, float(np.abs(diff).max())), max(worst_mean, abs(float(diff.mean())))
    return worst, worst_mean


@pytest.mark.parametrize("name", sorted(INNER_BOUNDS))
def test_inner_layer_requantization_rounds_to_nearest(fixtures, tmp_path, name):
    """Requantization rounds to nearest: the mean code error is near 0 (truncation would give -0.5)."""
    checkpoint, calibration, _ = fixtures[name]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, strategy="spline")
    worst, worst_mean = _inner_layer_errors(tmp_path / "m")
    bound_max, bound_mean = INNER_BOUNDS[name]
    print(f"{name}: max {worst:.3f} (bound {bound_max}), |mean| {worst_mean:.4f} (bound {bound_mean})")
    assert worst <= bound_max and worst_mean <= bound_mean, (worst, worst_mean)


# ---- the edge-table strategy (every edge tabulated at every input code) ----------------------
# Plans are explicit (every layer edge-table at the given code bits), so the planner cannot
# change what is measured. Keys: (code bits, table bits).
EDGE_SMALL_BOUNDS = {
    "8x5x3-G5-k3": {
        (8, 8): (0.10, 0.0038),  # measured 0.0677 / 0.0025
        (6, 6): (0.11, 0.013),  # measured 0.0743 / 0.0088
        (4, 4): (0.25, 0.058),  # measured 0.1675 / 0.0388
    },
    "6x4x4x2-G3-k2": {
        (8, 8): (0.020, 0.0021),  # measured 0.0134 / 0.0014
        (6, 6): (0.031, 0.0078),  # measured 0.0207 / 0.0052
        (4, 4): (0.14, 0.035),  # measured 0.0963 / 0.0233
    },
    "nonuniform-5x4x3": {
        (8, 8): (0.53, 0.047),  # measured 0.3524 / 0.0312
        (6, 6): (1.08, 0.17),  # measured 0.7230 / 0.1145
        (4, 4): (3.98, 0.62),  # measured 2.6500 / 0.4127
    },
}
EDGE_DIGITS_BOUNDS = {
    (8, 8): (0.83, 0.11),  # measured 0.5538 / 0.0753
    (6, 8): (0.91, 0.24),  # measured 0.6052 / 0.1589
    (4, 4): (6.6, 1.87),  # measured 4.3740 / 1.2441
}
# inner layers, 8-bit codes and entries: (max |code - ideal|, |mean|)
EDGE_INNER_BOUNDS = {
    "8x5x3-G5-k3": (2.0, 0.050),  # measured 1.336 / 0.0330
    "6x4x4x2-G3-k2": (1.64, 0.025),  # measured 1.090 / 0.0167
    "nonuniform-5x4x3": (2.15, 0.036),  # measured 1.433 / 0.0241
}


def _edge_table(checkpoint, folder, bits, calibration=None):
    code_bits, table_bits = bits
    n_layers = len(load_checkpoint(checkpoint).model.layers)
    generate_model(checkpoint, folder, options=QuantOptions(act_bits=code_bits, table_bits=table_bits),
                   calibration=calibration, plan=[LayerPlan("edge-table", code_bits)] * n_layers, quiet=True)
    _, qmodel = load_bundle(folder)
    assert [(l.strategy, l.act_bits) for l in qmodel.layers] == [("edge-table", code_bits)] * n_layers


@pytest.mark.parametrize("name,bits", [(n, b) for n in sorted(EDGE_SMALL_BOUNDS) for b in EDGE_SMALL_BOUNDS[n]],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)))
def test_edge_table_small_models_track_torch_float64(fixtures, tmp_path, name, bits):
    checkpoint, calibration, probe = fixtures[name]
    _edge_table(checkpoint, tmp_path / "m", bits, calibration)
    worst, rms = _logit_errors(_quantized_logits(tmp_path / "m", probe), torch_forward(checkpoint, probe))
    bound_max, bound_rms = EDGE_SMALL_BOUNDS[name][bits]
    print(f"edge-table {name} {bits}: max {worst:.4f} (bound {bound_max}), rms {rms:.4f} (bound {bound_rms})")
    assert worst <= bound_max and rms <= bound_rms, (worst, rms)


@pytest.mark.parametrize("bits", sorted(EDGE_DIGITS_BOUNDS), ids=lambda b: "-".join(map(str, b)))
def test_edge_table_digits_logits_track_the_float_model(digits_checkpoint, tmp_path, bits):
    _edge_table(digits_checkpoint, tmp_path / "m", bits)
    x_test = load_dataset("digits").x_test
    model, _ = load_bundle(tmp_path / "m")
    worst, rms = _logit_errors(_quantized_logits(tmp_path / "m", x_test), model_forward(model, x_test))
    bound_max, bound_rms = EDGE_DIGITS_BOUNDS[bits]
    print(f"edge-table digits {bits}: max {worst:.4f} (bound {bound_max}), rms {rms:.4f} (bound {bound_rms})")
    assert worst <= bound_max and rms <= bound_rms, (worst, rms)


@pytest.mark.parametrize("name", sorted(EDGE_INNER_BOUNDS))
def test_edge_table_inner_layers_round_to_nearest(fixtures, tmp_path, name):
    checkpoint, calibration, _ = fixtures[name]
    _edge_table(checkpoint, tmp_path / "m", (8, 8), calibration)
    worst, worst_mean = _inner_layer_errors_vs_float(tmp_path / "m")
    bound_max, bound_mean = EDGE_INNER_BOUNDS[name]
    print(f"edge-table {name}: max {worst:.3f} (bound {bound_max}), |mean| {worst_mean:.4f} (bound {bound_mean})")
    assert worst <= bound_max and worst_mean <= bound_mean, (worst, worst_mean)
