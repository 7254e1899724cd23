"""Strategy ``spline``: the KANtize path. Per input, a low-bit B-spline table gives the K1
non-zero basis values; per edge, K1 coefficient MACs plus one SiLU-branch MAC.

Numeric decisions (code alignment, tables, scales, multipliers) are made here; the kernel
template ``templates/kernels/spline.c.j2`` only lays them out. Arithmetic: docs/arithmetic.md.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from kan2mcu.model.bspline import BASE_FUNCTION_VALUES, bspline_basis
from kan2mcu.errors import QuantizationError
from kan2mcu.quant.fixedpoint import INT32_MAX, quantize_symmetric, requant_int64
from kan2mcu.model.ir import KANLayer
from kan2mcu.quant.strategies.levels import level_aligned
from kan2mcu.quant.strategies.spline_reference import (  # noqa: F401  (re-exported: the strategy interface)
    SplineLayer, _normalize_edges, _overlapping_windows, accumulator_bounds, accumulators, decode_cardinal, decode_inputs,
    live_coefficients, requantize_sums, run_layer,
)
from kan2mcu.quant.strategies.spline_fit import (choose_coefficients, code_weights, dense_basis, fit_coefficients,
                                           fit_residual, round_rows, round_rows_capped, shift_candidates,
                                           table_one, table_one_candidates)

NAME = "spline"
TEMPLATE = "kernels/spline.c.j2"
MAX_CODE_BITS = 8  # its kernel and decode tables take byte codes


def unsupported(layer: KANLayer) -> str | None:
    """Why this strategy cannot compute ``layer`` (None when it can)."""
    if layer.symbolic:
        return f"{len(layer.symbolic)} symbolic edge(s) (the spline kernel has no symbolic terms)"
    return None


def _largest_pow2_at_most(value: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(value)))) if value >= 1 else 1


def input_encoding(layer: KANLayer, lo: np.ndarray, hi: np.ndarray, bits: int,
                   samples: np.ndarray | None = None) -> dict:
    """Code alignment of every input channel (cardinal when the grid is uniform and shared).

    Per-input mode evaluates its tables at each code, so an input whose calibration values are a
    few levels on one step (pixels) gets codes exactly on those levels, as edge-table does."""
    qmax = (1 << bits) - 1
    uniform = layer.uniform_grid()
    if uniform is None:
        scale = (hi - lo) / qmax
        zero = -lo / scale
        for i in range(layer.in_features if samples is not None and len(samples) else 0):
            aligned = level_aligned(samples[:, i], qmax, lo[i], hi[i])
            if aligned is not None:
                scale[i], zero[i] = aligned
        return {"mode": "per_input", "scale": scale, "zero": zero}
    t0, h = uniform
    n_intervals = layer.knots.shape[1] - 1
    log2p = np.zeros(layer.in_features, np.int64)
    offset = np.zeros(layer.in_features, np.int64)
    for i in range(layer.in_features):
        p = min(_largest_pow2_at_most(h * qmax / (hi[i] - lo[i])), 1 << bits)
        log2p[i] = int(math.log2(p))
        s = h / p
        offset[i] = int(round(((lo[i] + hi[i]) / 2 - t0) / s - qmax / 2))  # centre the code window
    too_far = np.flatnonzero(np.abs(offset) + (1 << bits) > INT32_MAX >> 1)
    if too_far.size:
        i = int(too_far[0])
        raise QuantizationError(f"{layer.name}: input {i} ranges over [{lo[i]:.6g}, {hi[i]:.6g}], {abs(offset[i]):.3g} "
                                f"code steps from the grid at {t0:.6g}: its code offset does not fit the C tables "
                                "(int32); rescale the inputs, or use --strategy edge-table")
    scale = h / (1 << log2p)
    return {"mode": "cardinal", "scale": scale, "zero": -offset - t0 / scale, "t0": t0, "h": h,
            "log2p": log2p, "offset": offset, "limit": n_intervals << log2p}


def quantize_layer(layer: KANLayer, enc: dict, options, next_scale: np.ndarray, next_zero: np.ndarray,
                   is_last: bool, out_max: int) -> SplineLayer:
    """The spline-strategy integer layer for input encoding ``enc`` (from :func:`input_encoding`)."""
    n_in, n_out = layer.in_features, layer.out_features
    bits = enc["bits"]
    q_count = 1 << bits
    spline_max = (1 << options.spline_bits) - 1
    base_fn = BASE_FUNCTION_VALUES[layer.base_function]  # the base branch's table: any base function of the IR
    view = _code_view(layer, enc)  # computed once: the table-one choice and the coefficient fit share it

    if enc["mode"] == "cardinal":
        tables = _cardinal_tables(layer, enc, q_count, spline_max, base_fn)
    else:
        tables = _per_input_tables(layer, enc, view, q_count, spline_max, base_fn)
    card, card_start, first_table, basis_table, basis_scale, float_silu, silu_start = tables

    silu_qmax = (1 << (options.silu_bits - 1)) - 1
    silu_scale = max(float(np.max(np.abs(float_silu))), 1e-12) / silu_qmax
    silu_table = np.clip(np.round(float_silu / silu_scale), -silu_qmax, silu_qmax).astype(np.int64)

    base_q, base_scale = quantize_symmetric(layer.base_weight, options.base_bits,
                                            np.abs(layer.base_weight).max(axis=1))

    qlayer_args = dict(
        name=layer.name, mode=enc["mode"], in_features=n_in, out_features=n_out, order=layer.order,
        n_basis=layer.n_basis, act_bits=bits, spline_bits=options.spline_bits,
        coef_bits=options.coef_bits, base_bits=options.base_bits, silu_bits=options.silu_bits,
        in_scale=enc["scale"], in_zero=enc["zero"],
        in_offset=enc.get("offset", np.zeros(n_in, np.int64)), in_log2p=enc.get("log2p", np.zeros(n_in, np.int64)),
        in_limit=enc.get("limit", np.zeros(n_in, np.int64)), card=card, card_start=card_start,
        first_table=first_table, basis_table=basis_table, silu_table=silu_table, silu_start=silu_start,
        base_weight=base_q, basis_scale=basis_scale, silu_scale=silu_scale,
        base_scale=base_scale, is_last=is_last, out_max=out_max,
    )
    qlayer_args["coef"], qlayer_args["coef_scale"], shifts = _quantize_coefficients(layer, enc, view, options,
                                                                                   qlayer_args)
    if shifts.any():  # cardinal rows per (positions per interval, shift): copies of the rows, shifted
        card, card_start = _shifted_tables(card, card_start, shifts, layer.order + 1, enc)
        qlayer_args.update(card=card, card_start=card_start, basis_shift=shifts)
    # exact worst-case accumulators over every code of every input (inputs vary independently)
    draft = SplineLayer(**qlayer_args, mult_spline=np.zeros(n_out, np.int64), mult_base=np.zeros(n_out, np.int64),
                        rounding=np.zeros(n_out, np.int64), shift=np.zeros(n_out, np.int64))
    bound_sp, bound_b = accumulator_bounds(draft)
    where = layer.name
    if bound_sp.max() > INT32_MAX or bound_b.max() > INT32_MAX:
        raise QuantizationError(
            f"{where}: an int32 accumulator could overflow (spline bound {int(bound_sp.max())}, base bound "
            f"{int(bound_b.max())}); lower --base-bits/--silu-bits or --coef-bits")
    a_spline = layer.out_scale * basis_scale * qlayer_args["coef_scale"] / next_scale
    a_base = layer.out_scale * base_scale * silu_scale / next_scale
    bias = layer.out_bias / next_scale + next_zero
    m1, m2, r, sh = requant_int64(a_spline, a_base, bias, bound_sp, bound_b, where)
    return SplineLayer(**qlayer_args, mult_spline=m1, mult_base=m2, rounding=r, shift=sh,
                       acc_bounds={"spline": int(bound_sp.max()), "base": int(bound_b.max())})


def _cardinal_tables(layer: KANLayer, enc: dict, q_count: int, spline_max: int, base_fn) -> tuple:
    """Uniform grids: one cardinal B-spline table per positions-per-interval, shared by every input,
    and base-function tables shared by channels with the same code step."""
    k1, n_in = layer.order + 1, layer.in_features
    # one table per distinct positions-per-interval: rows = positions, columns = the K1 live B-splines
    card_rows, card_start, tables = [], np.zeros(n_in, np.int64), {}
    for lp in sorted(set(enc["log2p"].tolist())):
        p = 1 << lp
        m = layer.order  # an interior interval: all K1 B-splines exist, values depend on position only
        x = layer.knots[0, m] + (np.arange(p) + 0.0) * (enc["h"] / p)
        values = bspline_basis(x[:, None], layer.knots[:1], layer.order)[:, 0, 0:k1]
        tables[lp] = (sum(len(r) for r in card_rows), values)
        card_rows.append(values)
    float_card = np.concatenate(card_rows, axis=0)
    one = table_one(float(float_card.max()), spline_max)
    basis_scale = 1.0 / one
    card = round_rows(float_card, one)  # every row sums to `one`: the partition of unity holds
    for i in range(n_in):
        card_start[i] = tables[int(enc["log2p"][i])][0]
    first_table, basis_table = np.zeros(0, np.int64), np.zeros((0, k1), np.int64)
    # SiLU tables shared by channels with the same code step: index by knot-relative position u
    silu_chunks, silu_start, cursor = [], np.zeros(n_in, np.int64), 0
    for lp in sorted(set(enc["log2p"].tolist())):
        # one chunk per cluster of overlapping code windows: channels far apart get their own
        # chunks instead of one table spanning the gap between them
        for members in _overlapping_windows(np.flatnonzero(enc["log2p"] == lp), enc["offset"], q_count):
            u_lo = int(enc["offset"][members].min())
            u_hi = int(enc["offset"][members].max()) + q_count - 1
            u = np.arange(u_lo, u_hi + 1)
            silu_chunks.append(base_fn(enc["t0"] + u * (enc["h"] / (1 << lp))))
            silu_start[members] = cursor + enc["offset"][members] - u_lo
            cursor += len(u)
    float_silu = np.concatenate(silu_chunks)
    return card, card_start, first_table, basis_table, basis_scale, float_silu, silu_start


def _per_input_tables(layer: KANLayer, enc: dict, view, q_count: int, spline_max: int, base_fn) -> tuple:
    """Non-uniform grids: per input and code, the first live B-spline and the K1 basis values, and
    the base function at every code."""
    k1, n_in = layer.order + 1, layer.in_features
    x_codes = enc["scale"][:, None] * (np.arange(q_count)[None, :] - enc["zero"][:, None])  # [I, Q] inputs
    first_rows, basis_rows = [], []
    for i in range(n_in):
        b = bspline_basis(x_codes[i][:, None], layer.knots[i:i + 1], layer.order)[:, 0, :]  # [Q, nb]
        t = layer.knots[i]
        interval = np.clip(np.searchsorted(t, x_codes[i], side="right") - 1, 0, len(t) - 2)
        inside = (x_codes[i] >= t[0]) & (x_codes[i] < t[-1])
        first = interval - layer.order
        padded = np.concatenate([np.zeros((q_count, k1)), b, np.zeros((q_count, k1))], axis=1)
        cols = first[:, None] + np.arange(k1)[None, :] + k1
        live = padded[np.arange(q_count)[:, None], cols]
        first, live = _normalize_edges(first, live, layer.n_basis)
        first[~inside], live[~inside] = 0, 0.0
        first_rows.append(first)
        basis_rows.append(live)
    float_basis = np.concatenate(basis_rows, axis=0)
    first_table = np.concatenate(first_rows).astype(np.int64)
    one = _best_table_one(layer, enc, view, first_table, float_basis, spline_max)
    basis_scale = 1.0 / one
    basis_table = round_rows_capped(float_basis, one, spline_max)  # rows keep their float sums
    card, card_start = np.zeros((0, k1), np.int64), np.zeros(n_in, np.int64)
    float_silu = base_fn(x_codes).reshape(-1)
    silu_start = np.arange(n_in, dtype=np.int64) * q_count
    return card, card_start, first_table, basis_table, basis_scale, float_silu, silu_start


def _code_view(layer: KANLayer, enc: dict) -> tuple[np.ndarray, np.ndarray]:
    """The exact B-splines at every code's float value [I, Q, NB] and how often the calibration
    data lands on each code [I, Q]: what the table and coefficient fits measure against."""
    q_count = 1 << enc["bits"]
    x_codes = enc["scale"][:, None] * (np.arange(q_count)[None, :] - enc["zero"][:, None])  # [I, Q]
    float_basis = np.stack([bspline_basis(x_codes[i][:, None], layer.knots[i:i + 1], layer.order)[:, 0, :]
                            for i in range(layer.in_features)])
    return float_basis, code_weights(enc.get("samples"), enc["scale"], enc["zero"], q_count)


def _best_table_one(layer: KANLayer, enc: dict, view: tuple, first_table: np.ndarray, float_rows: np.ndarray,
                    spline_max: int) -> int:
    """Per-input mode: of :func:`table_one_candidates`, the table's one whose tables let the fitted
    coefficients reproduce the float edge functions best on the calibration codes."""
    candidates = table_one_candidates(float_rows, spline_max)
    if len(candidates) == 1:
        return candidates[0]
    q_count, n_in = 1 << enc["bits"], layer.in_features
    float_basis, weights = view
    first = first_table.reshape(n_in, q_count)
    scores = []
    for one in candidates:
        rows = (round_rows_capped(float_rows, one, spline_max) / one).reshape(n_in, q_count, -1)
        quant_basis = np.stack([dense_basis(first[i], rows[i], layer.n_basis) for i in range(n_in)])
        fitted, gram, cross = fit_coefficients(layer.coef, float_basis, quant_basis, weights)
        scores.append(fit_residual(fitted, gram, cross))
    return candidates[int(np.argmin(scores))]


def _quantize_coefficients(layer: KANLayer, enc: dict, view: tuple, options,
                           args: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer coefficients [O, I, NB], their per-output scales and the per-input basis shifts,
    fit to the quantized tables and the calibration codes (kan2mcu/quant/strategies/spline_fit.py)."""
    q_count = 1 << enc["bits"]
    codes = np.arange(q_count)
    probe = SplineLayer(**args, coef=np.zeros((0, 0, 0), np.int64), coef_scale=np.zeros(0),
                        mult_spline=np.zeros(0, np.int64), mult_base=np.zeros(0, np.int64),
                        rounding=np.zeros(0, np.int64), shift=np.zeros(0, np.int64))
    first, basis, _ = decode_inputs(probe, np.broadcast_to(codes[:, None], (q_count, layer.in_features)))
    float_basis, weights = view
    quant_basis = np.stack([dense_basis(first[:, i], basis[:, i, :], layer.n_basis)
                            for i in range(layer.in_features)]) * args["basis_scale"]
    fitted, gram, cross = fit_coefficients(layer.coef, float_basis, quant_basis, weights)
    # per-input shifts of the cardinal rows (room: 8 - spline_bits bits in a byte), kept when they
    # lower the error on the calibration codes
    max_shift = 8 - options.spline_bits if enc["mode"] == "cardinal" else 0
    best = None
    for shifts in shift_candidates(fitted, max_shift):
        factor = (2.0 ** shifts)[None, :, None]
        candidates = (layer.coef / factor, fitted / factor)
        gram_s, cross_s = gram * (4.0 ** shifts)[:, None, None], cross * (2.0 ** shifts)[:, None, None]
        q, scale = choose_coefficients(candidates, gram_s, cross_s, options.coef_bits)
        error = fit_residual(q * scale[:, None, None], gram_s, cross_s)
        if best is None or error < best[0] - 1e-12 * abs(best[0]):
            best = (error, q, scale, shifts)
    return best[1], best[2], best[3]


def _shifted_tables(card: np.ndarray, card_start: np.ndarray, shifts: np.ndarray, k1: int,
                    enc: dict) -> tuple[np.ndarray, np.ndarray]:
    """The cardinal rows with one copy per (positions per interval, shift) in use; row starts per input."""
    rows, starts, placed = [card], card_start.copy(), {}
    cursor = len(card)
    for i in range(len(shifts)):
        if shifts[i] == 0:
            continue
        key = (int(enc["log2p"][i]), int(shifts[i]))
        if key not in placed:
            p = 1 << key[0]
            rows.append(card[card_start[i]:card_start[i] + p] << key[1])
            placed[key] = cursor
            cursor += p
        starts[i] = placed[key]
    return np.concatenate(rows, axis=0).reshape(-1, k1), starts


# The kernel's layouts and the cost model (spline_layout).
from kan2mcu.quant.strategies.spline_layout import (  # noqa: E402,F401  (re-exported: the strategy interface)
    CODE_BYTES, COSTS, DSP_CORES, KernelLayout, LANE_MAX, NARROW_CORES, NIBBLE_OUTPUTS,
    SPLINE_OUTPUTS_PER_PASS, aligned_fits, base_weight_groups, base_weight_order, coefficient_storage, compact_differs,
    cost_terms, estimate, halfword_passes, kernel_layout, m0_base_blocks, m0_blocks, nibble_slot, nibble_sums,
    position_tables, spline_blocks, uses_nibbles,
)
from kan2mcu.quant.strategies.spline_pair import pair_fits  # noqa: E402,F401  (the planner weighs the pair layout)


def requantized(qlayer: SplineLayer, layer: KANLayer, next_scale: np.ndarray, next_zero: np.ndarray,
                is_last: bool, out_max: int, bounds: tuple | None = None) -> SplineLayer:
    """``qlayer`` (quantize_layer's result) against another consumer encoding: tables and
    coefficients depend on the layer's own input codes only, so the planner re-derives only the
    requantization (``bounds``: accumulator_bounds(qlayer), when already known). Must stay equal
    to quantize_layer's own requantization (host_tests/test_planner_budget.py checks it)."""
    bound_sp, bound_b = bounds if bounds is not None else accumulator_bounds(qlayer)
    a_spline = layer.out_scale * qlayer.basis_scale * qlayer.coef_scale / next_scale
    a_base = layer.out_scale * qlayer.base_scale * qlayer.silu_scale / next_scale
    bias = layer.out_bias / next_scale + next_zero
    m1, m2, r, sh = requant_int64(a_spline, a_base, bias, bound_sp, bound_b, layer.name)
    return dataclasses.replace(qlayer, mult_spline=m1, mult_base=m2, rounding=r, shift=sh, is_last=is_last,
                               out_max=out_max)
