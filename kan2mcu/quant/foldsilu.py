"""``generate --fold-silu``: each layer's SiLU base branch refit into its spline coefficients.

Per input ``i``, SiLU is approximated on the input's grid by B-splines of the layer's own order
and knots (least squares on evenly spaced points of the part of the grid the inputs reach), and
``base_weight[o, i]`` times that fit is added to ``coef[o, i]``; the base weights become zero, so
the spline kernel has no SiLU table, weights or accumulator. Outside the grid the B-splines vanish
while SiLU does not, so the refit changes the float model; :func:`fold_silu` measures how much on
the calibration data, layer by layer, and keeps the SiLU branch of a layer whose outputs the
refit would move too far (typically one whose inputs often leave its grid).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from kan2mcu.model.bspline import bspline_basis, layer_forward, model_forward, silu
from kan2mcu.errors import QuantizationError
from kan2mcu.model.ir import KANLayer, KANModel

SAMPLES_PER_INTERVAL = 32
MAX_FOLD_ERROR = 0.01  # RMS output change, as a fraction of the float output range


def fold_layer(layer: KANLayer, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> KANLayer:
    """``layer`` with its SiLU branch refit into the spline coefficients (base weights zero). The fit
    of input ``i`` covers ``[lo[i], hi[i]]`` (its calibrated range) within its knots when given,
    else the inner grid, where the B-splines sum to one."""
    coef = layer.coef.copy()
    n_intervals = layer.knots.shape[1] - 1
    k = layer.order
    for i in range(layer.in_features):
        t = layer.knots[i]
        a, b = float(t[k]), float(t[-k - 1])
        if lo is not None and hi is not None and min(float(t[-1]), float(hi[i])) > max(float(t[0]), float(lo[i])):
            a, b = max(float(t[0]), float(lo[i])), min(float(t[-1]), float(hi[i]))
        x = np.linspace(a, b, SAMPLES_PER_INTERVAL * n_intervals, endpoint=False)
        basis = bspline_basis(x[:, None], layer.knots[i:i + 1], layer.order)[:, 0, :]  # [S, M]
        fit, *_ = np.linalg.lstsq(basis, silu(x), rcond=None)
        coef[:, i, :] += layer.base_weight[:, i, None] * fit[None, :]
    return dataclasses.replace(layer, coef=coef, base_weight=np.zeros_like(layer.base_weight))


def fold_silu(model: KANModel, calib: np.ndarray | None, max_error: float = MAX_FOLD_ERROR) -> tuple[KANModel, dict]:
    """The model with every layer folded whose refit changes that layer's float outputs (on its
    inputs from ``calib``, else from points spread over the first layer's grid) by at most
    ``max_error`` RMS of their range; the other layers keep their SiLU branch. Returns the model
    and a report: per layer the error and whether it folded, and the whole model's output change.
    Raises QuantizationError when no layer can fold."""
    for layer in model.layers:
        if layer.base_function != "silu" or layer.symbolic:
            raise QuantizationError(f"--fold-silu: {layer.name} has base function {layer.base_function!r}"
                                    f"{' and symbolic edges' if layer.symbolic else ''}; only SiLU branches fold")
    if calib is None:
        first = model.layers[0].knots
        calib = np.random.default_rng(0).uniform(first[:, 0], first[:, -1], size=(512, first.shape[0]))
    _, activations = model_forward(model, calib, return_all=True)
    layers, rows = [], []
    for layer, x, y in zip(model.layers, activations, activations[1:]):
        candidate = fold_layer(layer, x.min(axis=0), x.max(axis=0))
        error = _relative_change(y, layer_forward(candidate, x))
        folded = error["rms_error"] <= max_error
        layers.append(candidate if folded else layer)
        rows.append({"layer": layer.name, "folded": folded, **error,
                     "inside_grid": float(((x >= layer.knots[:, 0]) & (x < layer.knots[:, -1])).mean())})
    if not any(row["folded"] for row in rows):
        worst = min(rows, key=lambda r: r["rms_error"])
        raise QuantizationError(
            f"--fold-silu: no layer can fold: refitting SiLU into the splines changes every layer's outputs by more "
            f"than {100 * max_error:.2f}% RMS of their range (best: {worst['layer']}, {100 * worst['rms_error']:.2f}%; "
            f"{100 * worst['inside_grid']:.0f}% of its inputs inside the grid); generate without --fold-silu")
    result = dataclasses.replace(model, layers=layers)
    report = {"limit": max_error, "samples": int(len(calib)), "layers": rows,
              "model": _relative_change(activations[-1], model_forward(result, calib))}
    return result, report


def _relative_change(before: np.ndarray, after: np.ndarray) -> dict:
    span = max(float(before.max() - before.min()), 1e-12)
    diff = after - before
    return {"rms_error": float(np.sqrt(np.mean(diff ** 2)) / span), "max_error": float(np.abs(diff).max() / span)}
