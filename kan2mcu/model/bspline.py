"""B-spline basis evaluation (Cox-de Boor) and the float forward pass of the IR, in numpy."""
from __future__ import annotations

import numpy as np

from kan2mcu.model.ir import KANLayer, KANModel


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


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # pylint: disable=import-outside-toplevel  (scikit-learn brings scipy)

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


# Base functions of the IR, by name (torch's exact forms: GELU is the erf form, not tanh).
BASE_FUNCTION_VALUES = {
    "silu": silu,
    "identity": lambda x: np.asarray(x, dtype=np.float64),
    "zero": lambda x: np.zeros_like(np.asarray(x, dtype=np.float64)),
    "gelu": _gelu,
    "relu": lambda x: np.maximum(np.asarray(x, dtype=np.float64), 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))),
}

# pykan's symbolic library (kan.utils.SYMBOLIC_LIB, plain forms as pykan's default forward uses them)
SYMBOLIC_FUNCTION_VALUES = {
    "x": lambda x: x, "x^2": lambda x: x**2, "x^3": lambda x: x**3, "x^4": lambda x: x**4, "x^5": lambda x: x**5,
    "1/x": lambda x: 1 / x, "1/x^2": lambda x: 1 / x**2, "1/x^3": lambda x: 1 / x**3, "1/x^4": lambda x: 1 / x**4,
    "1/x^5": lambda x: 1 / x**5, "sqrt": np.sqrt, "x^0.5": np.sqrt, "x^1.5": lambda x: np.sqrt(x) ** 3,
    "1/sqrt(x)": lambda x: 1 / np.sqrt(x), "1/x^0.5": lambda x: 1 / np.sqrt(x), "exp": np.exp, "log": np.log,
    "abs": np.abs, "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sgn": np.sign,
    "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan, "arctanh": np.arctanh, "0": lambda x: x * 0,
    "gaussian": lambda x: np.exp(-x**2),
}


def symbolic_values(name: str, a: float, b: float, c: float, d: float, x: np.ndarray) -> np.ndarray:
    """``c * f(a * x + b) + d`` for pykan's symbolic function ``name`` (NaN/Inf where f is undefined)."""
    with np.errstate(all="ignore"):
        return c * SYMBOLIC_FUNCTION_VALUES[name](a * np.asarray(x, dtype=np.float64) + b) + d


def layer_forward(layer: KANLayer, x: np.ndarray) -> np.ndarray:
    """Float64 forward of one layer: [N, I] -> [N, O]."""
    x = np.asarray(x, dtype=np.float64)
    basis = bspline_basis(x, layer.knots, layer.order)  # [N, I, M]
    spline = np.einsum("nim,oim->no", basis, layer.coef)
    base = BASE_FUNCTION_VALUES[layer.base_function](x) @ layer.base_weight.T
    for edge in layer.symbolic:
        spline[:, edge.out] += symbolic_values(edge.name, edge.a, edge.b, edge.c, edge.d, x[:, edge.inp])
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
    base = BASE_FUNCTION_VALUES[layer.base_function](x)[:, None] * layer.base_weight[None, :, i]
    for edge in layer.symbolic:
        if edge.inp == i:
            spline[:, edge.out] += symbolic_values(edge.name, edge.a, edge.b, edge.c, edge.d, x)
    return (spline + base) * layer.out_scale[None, :]
