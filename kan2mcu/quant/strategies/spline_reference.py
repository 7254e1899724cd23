"""The spline layer's integer form (:class:`SplineLayer`) and its bit-exact reference: per input the
decode (first live coefficient, K1 basis values, base-function value), the two int32 accumulators,
and the requantization, as the C computes them (docs/arithmetic.md sections 2-4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class SplineLayer:
    """One spline-strategy layer. Array shapes use I inputs, O outputs, K1 = order + 1.

    ``mode == "cardinal"`` (uniform grid shared by all inputs): input code ``q`` of channel ``i``
    sits at knot-relative position ``u = q + in_offset[i]`` in units of ``h / 2**in_log2p[i]``;
    one table of the cardinal B-spline per distinct ``in_log2p`` (``card``, rows of K1 values,
    channel ``i`` starts at row ``card_start[i]``) serves every input.
    ``mode == "per_input"`` (any grid): per channel and code, the first coefficient index
    (``first_table``) and K1 basis values (``basis_table``), edge-normalized in Python.
    """

    name: str
    mode: str
    in_features: int
    out_features: int
    order: int
    n_basis: int
    act_bits: int
    spline_bits: int
    coef_bits: int
    base_bits: int
    silu_bits: int
    # input encoding: x = in_scale * (q - in_zero)
    in_scale: np.ndarray  # float64 [I]
    in_zero: np.ndarray  # float64 [I]
    # cardinal mode
    in_offset: np.ndarray  # int [I]
    in_log2p: np.ndarray  # int [I]
    in_limit: np.ndarray  # int [I]: u in [0, limit) lies inside the extended grid
    card: np.ndarray  # uint [rows, K1]
    card_start: np.ndarray  # int [I], row of position 0
    # per-input mode
    first_table: np.ndarray  # uint8 [I * Q]
    basis_table: np.ndarray  # uint [I * Q, K1]
    # both modes
    silu_table: np.ndarray  # int16 [n]: the base function (SiLU, GELU, identity, ...: the IR layer's) at the codes
    silu_start: np.ndarray  # int [I]
    coef: np.ndarray  # int [O, I, n_basis]
    base_weight: np.ndarray  # int [O, I]
    mult_spline: np.ndarray  # int64 [O]
    mult_base: np.ndarray  # int64 [O]
    rounding: np.ndarray  # int64 [O], bias + zero point + half, in 2^-shift units
    shift: np.ndarray  # int [O]
    is_last: bool
    out_max: int  # codes clamp to [0, out_max] (inner layers); int32 limit (last layer)
    # float scales, for reports and float wrappers
    basis_scale: float
    silu_scale: float
    coef_scale: np.ndarray  # [O]
    base_scale: np.ndarray  # [O]
    acc_bounds: dict = field(default_factory=dict)  # worst-case |accumulator| per kind
    # cardinal mode: input i reads its table rows scaled by 2**basis_shift[i] (finer coefficient steps)
    basis_shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    strategy: str = "spline"  # the strategy NAME (spline.py)
    # the kernel's coefficient layout chosen by the planner (spline_layout.coefficient_storage): None: the
    # fast one, "compact": nibble words for 2..4-bit coefficients
    coef_layout: str | None = field(default=None, metadata={"omit_default": True})

    @property
    def k1(self) -> int:
        return self.order + 1

    @property
    def codes(self) -> int:
        return 1 << self.act_bits


def _overlapping_windows(members: np.ndarray, offset: np.ndarray, width: int) -> list[np.ndarray]:
    """Channels grouped so that each group's code windows ``[offset, offset + width)`` chain into
    one another (a group's table is never longer than its channels' windows laid end to end)."""
    order = members[np.argsort(offset[members], kind="stable")]
    groups, current, reach = [], [], None
    for channel in order:
        if current and offset[channel] > reach:
            groups.append(np.array(sorted(current)))
            current = []
        current.append(int(channel))
        reach = max(reach if reach is not None and len(current) > 1 else offset[channel] + width,
                    offset[channel] + width)
    if current:
        groups.append(np.array(sorted(current)))
    return groups


def _normalize_edges(first: np.ndarray, basis: np.ndarray, n_basis: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift basis rows so that coefficient reads ``first .. first+order`` stay in ``0..n_basis-1``.

    ``first`` may be negative (left edge of the extended grid) or past ``n_basis-K1`` (right
    edge); the basis values of missing B-splines are dropped. Mirrors the C code exactly.
    """
    k1 = basis.shape[-1]
    first = first.astype(np.int64).copy()
    basis = basis.copy()
    lo = first < 0
    for d in range(1, k1):
        sel = first == -d
        basis[sel] = np.concatenate([basis[sel][:, d:], np.zeros((int(sel.sum()), d), basis.dtype)], axis=1)
    first[lo] = 0
    top = n_basis - k1
    for d in range(1, k1):
        sel = first == top + d
        basis[sel] = np.concatenate([np.zeros((int(sel.sum()), d), basis.dtype), basis[sel][:, : k1 - d]], axis=1)
    first[first > top] = top
    return first, basis


def decode_cardinal(layer: SplineLayer, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (first coefficient, K1 basis values) per channel for codes [N, I], as the C does it."""
    u = codes.astype(np.int64) + layer.in_offset[None, :]
    inside = (u >= 0) & (u < layer.in_limit[None, :])
    uc = np.where(inside, u, 0)
    interval = uc >> layer.in_log2p[None, :]
    position = uc & ((1 << layer.in_log2p[None, :]) - 1)
    rows = layer.card_start[None, :] + position
    basis = layer.card[rows].astype(np.int64)  # [N, I, K1]
    first = interval - layer.order
    first, basis = _normalize_edges(first.reshape(-1), basis.reshape(-1, layer.k1), layer.n_basis)
    first = first.reshape(codes.shape)
    basis = basis.reshape(codes.shape + (layer.k1,))
    basis[~inside] = 0
    first[~inside] = 0
    return first, basis


def decode_inputs(layer: SplineLayer, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per input channel: first coefficient index, K1 basis values and SiLU value, as the C computes them."""
    codes = np.minimum(codes.astype(np.int64), layer.codes - 1)
    if layer.mode == "cardinal":
        first, basis = decode_cardinal(layer, codes)
    else:
        rows = np.arange(layer.in_features)[None, :] * layer.codes + codes
        first = layer.first_table[rows]
        basis = layer.basis_table[rows]
    silu_q = layer.silu_table[layer.silu_start[None, :] + codes]
    return first, basis, silu_q


def live_coefficients(layer: SplineLayer, first: np.ndarray) -> np.ndarray:
    """The K1 coefficients every edge reads: first indices [N, I] -> [O, N, I, K1]."""
    idx = first[:, :, None] + np.arange(layer.k1)[None, None, :]
    return layer.coef[:, np.arange(layer.in_features)[None, :, None], idx]


def accumulator_bounds(layer: SplineLayer) -> tuple[np.ndarray, np.ndarray]:
    """Per output, the exact worst-case |spline| and |base| accumulators over every input code."""
    codes = np.broadcast_to(np.arange(layer.codes)[:, None], (layer.codes, layer.in_features))
    first, basis, silu_q = decode_inputs(layer, codes)  # [Q, I], [Q, I, K1], [Q, I]
    # per output, per input: the largest |sum_j basis * coef| over codes; bounds every partial sum too
    bound_sp = np.zeros(layer.out_features, np.int64)
    for o in range(layer.out_features):  # one output at a time: memory O(Q * I * K1), not O(O * Q * I * K1)
        gathered = layer.coef[o][np.arange(layer.in_features)[None, :, None],
                                 first[:, :, None] + np.arange(layer.k1)[None, None, :]]  # [Q, I, K1]
        bound_sp[o] = (np.abs(gathered) * basis).sum(axis=2).max(axis=0).sum()
    silu_max = np.abs(silu_q).max(axis=0)  # [I]
    bound_b = (np.abs(layer.base_weight) * silu_max[None, :]).sum(axis=1)
    return bound_sp, bound_b


def accumulators(layer: SplineLayer, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two int32 accumulators (spline, base) of every output: [N, I] codes -> ([N, O], [N, O])."""
    first, basis, silu_q = decode_inputs(layer, codes)
    acc_spline = np.einsum("onik,nik->no", live_coefficients(layer, first), basis)
    acc_base = silu_q @ layer.base_weight.T
    return acc_spline, acc_base


def run_layer(layer: SplineLayer, codes: np.ndarray) -> np.ndarray:
    """Requantized outputs before saturation ([N, O] int64); the caller clamps."""
    return requantize_sums(layer, accumulators(layer, codes))  # arithmetic shift: floor division by 2^shift


def requantize_sums(qlayer: SplineLayer, sums: tuple) -> np.ndarray:
    """run_layer's requantization of accumulators(qlayer, codes) (the planner shares the sums)."""
    acc_spline, acc_base = sums
    total = acc_spline * qlayer.mult_spline[None, :] + acc_base * qlayer.mult_base[None, :] + qlayer.rounding[None, :]
    return total >> qlayer.shift[None, :]
