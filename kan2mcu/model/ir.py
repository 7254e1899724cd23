"""Typed, torch-free intermediate representation of a KAN.

Every importer (kan2mcu's own checkpoints, pykan, efficient-kan) produces a :class:`KANModel`;
every later pass (quantize, tables, render, reference) reads only this.

A layer computes, for output ``o``::

    y[o] = out_scale[o] * sum_i ( base_weight[o, i] * base_function(x[i])
                                  + sum_m coef[o, i, m] * B_m(x[i]; knots[i])
                                  + sum of symbolic terms c * f(a * x[i] + b) + d of edge i -> o )
           + out_bias[o]

``B_m`` are the B-splines of order ``order`` on input ``i``'s knot vector (``n_basis = n_knots -
order - 1``). Knots may differ per input and need not be uniform. Masked (pruned) edges have zero
coefficients and zero base weight.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from kan2mcu.errors import CheckpointError, UnsupportedModelError

BASE_FUNCTIONS = ("silu", "identity", "zero", "gelu", "relu", "tanh", "sigmoid")  # kan2mcu.model.bspline evaluates them
SYMBOLIC_FUNCTIONS = ("x", "x^2", "x^3", "x^4", "x^5", "1/x", "1/x^2", "1/x^3", "1/x^4", "1/x^5", "sqrt", "x^0.5",
                      "x^1.5", "1/sqrt(x)", "1/x^0.5", "exp", "log", "abs", "sin", "cos", "tan", "tanh", "sgn",
                      "arcsin", "arccos", "arctan", "arctanh", "0", "gaussian")  # pykan's symbolic library


@dataclass(frozen=True)
class SymbolicEdge:
    """A symbolic term ``c * f(a * x + b) + d`` added to edge ``inp -> out`` (pykan ``auto_symbolic``)."""

    out: int
    inp: int
    name: str
    a: float
    b: float
    c: float
    d: float

    def as_list(self) -> list:
        return [self.out, self.inp, self.name, self.a, self.b, self.c, self.d]


def _frozen_array(name: str, value, ndim: int, where: str) -> np.ndarray:
    array = np.array(value, dtype=np.float64, copy=True)
    if array.ndim != ndim:
        raise CheckpointError(f"{where}: {name} must have {ndim} dimensions, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise CheckpointError(f"{where}: {name} holds {bad} NaN/Inf value(s)")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class KANLayer:
    """One KAN layer: ``in_features`` inputs, ``out_features`` outputs (see module docstring)."""

    knots: np.ndarray  # [I, n_knots], non-decreasing per row
    order: int  # spline order k (3 = cubic)
    coef: np.ndarray  # [O, I, n_basis], spline scalers already folded in
    base_weight: np.ndarray  # [O, I]
    out_scale: np.ndarray = None  # [O]
    out_bias: np.ndarray = None  # [O]
    base_function: str = "silu"
    name: str = "layer"
    symbolic: tuple = ()  # SymbolicEdge terms, summed into their edges before out_scale

    def __post_init__(self) -> None:
        where = self.name
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("knots", _frozen_array("knots", self.knots, 2, where))
        set_("coef", _frozen_array("coef", self.coef, 3, where))
        set_("base_weight", _frozen_array("base_weight", self.base_weight, 2, where))
        n_out, n_in = self.base_weight.shape
        if self.out_scale is None:
            set_("out_scale", np.ones(n_out))
        if self.out_bias is None:
            set_("out_bias", np.zeros(n_out))
        set_("out_scale", _frozen_array("out_scale", self.out_scale, 1, where))
        set_("out_bias", _frozen_array("out_bias", self.out_bias, 1, where))
        if self.base_function not in BASE_FUNCTIONS:
            raise UnsupportedModelError(
                f"{where}: base function {self.base_function!r} is not supported (only {BASE_FUNCTIONS})")
        set_("symbolic", tuple(e if isinstance(e, SymbolicEdge) else SymbolicEdge(*e) for e in self.symbolic))
        for edge in self.symbolic:
            if edge.name not in SYMBOLIC_FUNCTIONS:
                raise UnsupportedModelError(f"{where}: symbolic function {edge.name!r} is not supported")
            if not (0 <= edge.out < n_out and 0 <= edge.inp < n_in):
                raise CheckpointError(f"{where}: symbolic edge {edge.inp}->{edge.out} outside the layer")
            if not all(np.isfinite([edge.a, edge.b, edge.c, edge.d])):
                raise CheckpointError(f"{where}: symbolic edge {edge.inp}->{edge.out} has NaN/Inf parameters")
        if not isinstance(self.order, (int, np.integer)) or not 1 <= self.order <= 5:
            raise UnsupportedModelError(f"{where}: spline order {self.order} not supported (1..5)")
        n_basis = self.knots.shape[1] - self.order - 1
        if n_basis < 1:
            raise CheckpointError(f"{where}: {self.knots.shape[1]} knots are too few for order {self.order}")
        expected = (n_out, n_in, n_basis)
        if self.coef.shape != expected:
            raise CheckpointError(f"{where}: coef shape {self.coef.shape}, expected {expected}")
        if self.knots.shape[0] != n_in:
            raise CheckpointError(f"{where}: knots for {self.knots.shape[0]} inputs, layer has {n_in}")
        if self.out_scale.shape != (n_out,) or self.out_bias.shape != (n_out,):
            raise CheckpointError(f"{where}: out_scale/out_bias must have shape ({n_out},)")
        if np.any(np.diff(self.knots, axis=1) <= 0):
            raise UnsupportedModelError(f"{where}: knots must be strictly increasing per input")

    @property
    def in_features(self) -> int:
        return self.base_weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.base_weight.shape[0]

    @property
    def n_basis(self) -> int:
        return self.coef.shape[2]

    @property
    def grid_size(self) -> int:
        """Number of grid intervals inside the un-extended grid (``G``)."""
        return self.knots.shape[1] - 2 * self.order - 1

    def uniform_grid(self, rtol: float = 1e-6) -> tuple[float, float] | None:
        """``(t0, h)`` when every input shares one uniform knot vector, else ``None``."""
        t0 = float(self.knots[0, 0])
        h = float(self.knots[0, 1] - self.knots[0, 0])
        expected = t0 + h * np.arange(self.knots.shape[1])
        if np.allclose(self.knots, expected[None, :], rtol=0, atol=rtol * max(abs(h), 1e-12) * 10):
            return t0, h
        return None

    def grid_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-input ``(low, high)`` of the un-extended grid ``[t_k, t_{n-k-1}]``."""
        k = self.order
        return self.knots[:, k].copy(), self.knots[:, -k - 1].copy()


@dataclass(frozen=True, eq=False)
class KANModel:
    """A whole KAN: layers in order plus where it came from."""

    layers: tuple[KANLayer, ...]
    source: str = "kan2mcu"  # "kan2mcu" | "pykan" | "efficient-kan"
    metadata: dict = field(default_factory=dict)  # e.g. dataset name, input transform

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise CheckpointError("model has no layers")
        for prev, nxt in zip(self.layers, self.layers[1:]):
            if prev.out_features != nxt.in_features:
                raise CheckpointError(
                    f"{nxt.name}: takes {nxt.in_features} inputs but {prev.name} gives {prev.out_features}")

    @property
    def widths(self) -> list[int]:
        return [self.layers[0].in_features] + [layer.out_features for layer in self.layers]

    def sha256(self) -> str:
        """Content hash of every number in the model (stable across runs and machines)."""
        digest = hashlib.sha256()
        for layer in self.layers:
            digest.update(str(layer.order).encode())
            if layer.base_function != "silu" or layer.symbolic:  # (SiLU-only models keep their old hashes)
                digest.update(repr((layer.base_function, [e.as_list() for e in layer.symbolic])).encode())
            for array in (layer.knots, layer.coef, layer.base_weight, layer.out_scale, layer.out_bias):
                digest.update(str(array.shape).encode())
                digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        return digest.hexdigest()
