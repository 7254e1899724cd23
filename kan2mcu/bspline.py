"""B-spline basis evaluation (Cox-de Boor) and the float forward pass of the IR, in numpy."""
from __future__ import annotations

import numpy as np

from kan2mcu.ir import KANLayer, KANModel


def bspline_basis(x: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """Values of all B-splines of ``order`` on ``knots`` at ``x``.

    ``x``: [N, I]; ``knots``: [I, n_knots]. Returns [N, I, n_knots - order - 1]. Intervals are
    half-open ``[t_j, t_{j+1})`` exactly as efficient-kan and pykan evaluate them, so values
    outside ``[t_0, t_last)`` are all zero.
    """
    x = np.asarray(x, dtype=np.float64)[:, :, None]
    t = np.asarray(knots, dtype=np.float64)[None, :, :]
    bases = ((x >= t[:, :, :-1]) & (x < t[:, :, 1:])).astype(np.float64)
    for p in range(1, order + 1):
        left = (x - t[:, :, : -(p + 1)]) / (t[:, :, p:-1] - t[:, :, : -(p + 1)]) * bases[:, :, :-1]
        right = (t[:, :, p + 1:] - x) / (t[:, :, p + 1:] - t[:, :, 1:-p]) * bases[:, :, 1:]
        bases = left + right
    return bases


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU ``x * sigmoid(x)``, numerically safe for large ``|x|``."""
    x = np.asarray(x, dtype=np.float64)
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def layer_forward(layer: KANLayer, x: np.ndarray) -> np.ndarray:
    """Float64 forward of one layer: [N, I] -> [N, O]."""
    basis = bspline_basis(x, layer.knots, layer.order)  # [N, I, M]
    spline = np.einsum("nim,oim->no", basis, layer.coef)
    base = silu(x) @ layer.base_weight.T
    return (spline + base) * layer.out_scale[None, :] + layer.out_bias[None, :]


def model_forward(model: KANModel, x: np.ndarray, *, return_all: bool = False):
    """Float64 forward of the whole model. With ``return_all`` also the input of every layer."""
    activations = [np.asarray(x, dtype=np.float64)]
    for layer in model.layers:
        activations.append(layer_forward(layer, activations[-1]))
    return (activations[-1], activations) if return_all else activations[-1]


def edge_values(layer: KANLayer, i: int, x: np.ndarray) -> np.ndarray:
    """Float64 value of every edge leaving input ``i`` at points ``x`` ([N] -> [N, O]).

    The whole edge function: base branch + spline, times the output scale (the output bias is
    not part of an edge). ``sum_i edge_values(layer, i, x[:, i]) + out_bias == layer_forward``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    basis = bspline_basis(x[:, None], layer.knots[i:i + 1], layer.order)[:, 0, :]  # [N, M]
    spline = basis @ layer.coef[:, i, :].T  # [N, O]
    base = silu(x)[:, None] * layer.base_weight[None, :, i]
    return (spline + base) * layer.out_scale[None, :]
