"""Post-training quantization passes of the spline strategy that keep accuracy at 2-4 bits.

Decisions made against the integer tables the C really reads (docs/arithmetic.md §2-3):

- :func:`round_rows`: B-spline table rows rounded so that each row keeps its partition of unity
  exactly (largest-remainder rounding to a fixed integer row sum), at every width; per-input
  tables may take a larger one and clip their few values near 1 (:func:`round_rows_capped`).
- :func:`fit_coefficients`: per edge, the coefficients refit by weighted least squares so that the
  QUANTIZED basis reproduces the float edge function at the input codes, each code weighted by
  how often the calibration data lands on it. Table rounding error is compensated, and
  coefficients of B-splines the data never reaches (``update_grid`` leaves them at 1e6, their
  B-splines peaking at 1e-4 on the data) no longer matter: a small ridge pulls them to zero.
- :func:`choose_coefficients`: per output channel, the coefficients (as trained, or refit) and the
  scale (a clip ratio of their max) that minimize the weighted error on the calibration codes
  (clipping an outlier is chosen when it pays), then :func:`refine_rounding`, error-minimizing
  rounding of the integers.
"""
from __future__ import annotations

import numpy as np

PRIOR = 0.02  # share of each input's fit weight spread over all its codes, seen by the data or not
MARGIN = 3.0  # an edge whose float values off the data stray this many data ranges beyond is "wild"
RIDGE = 1e-4  # relative to the mean diagonal of each input's Gram matrix: damps only what data cannot see
SCALE_CANDIDATES = np.linspace(1.0, 0.25, 31)  # clip ratios of max|c| tried per output channel


def round_rows(values: np.ndarray, one: int) -> np.ndarray:
    """Integer rows ``~ values * one`` whose sums equal ``round(row_sum * one)`` exactly.

    Largest remainder: floor every entry, then give the missing units to the entries with the
    largest fractional parts (ties to the lower index, so results are deterministic). Rows of
    B-spline values summing to 1 become rows summing to ``one``.
    """
    scaled = np.asarray(values, np.float64) * one
    floors = np.floor(scaled)
    target = np.round(scaled.sum(axis=-1))
    missing = (target - floors.sum(axis=-1)).astype(np.int64)  # 0..K1 units per row
    remainder = np.round(scaled - floors, 9)  # fractions equal up to float noise are ties
    order = np.argsort(-remainder, axis=-1, kind="stable")  # largest fraction first, lower index on ties
    rank = np.argsort(order, axis=-1, kind="stable")  # each entry's place in that order
    return (floors + (rank < missing[:, None])).astype(np.int64)


def round_rows_capped(values: np.ndarray, one: int, cap: int) -> np.ndarray:
    """:func:`round_rows`, then every entry above ``cap`` (the table width's largest value) clipped
    and its excess moved, unit by unit, to the live entries (exact value above 0) of its row furthest
    below their exact value:
    rows still sum to ``round(row_sum * one)`` (needs ``K1 * cap >= one``)."""
    rows = round_rows(values, one)
    excess = np.maximum(rows - cap, 0).sum(axis=-1)
    rows = np.minimum(rows, cap)
    exact = np.asarray(values, np.float64) * one
    while excess.any():
        deficit = np.where((rows < cap) & (exact > 0), np.round(exact - rows, 9), -np.inf)
        deficit = np.where(np.isinf(deficit).all(axis=-1, keepdims=True) & (rows < cap), 0.0, deficit)
        pick = np.argmax(deficit, axis=-1)  # lowest index among equals: deterministic
        give = excess > 0
        rows[np.flatnonzero(give), pick[give]] += 1
        excess -= give
    return rows


def table_one_candidates(values: np.ndarray, cap: int) -> list[int]:
    """Integers to try as the table's one: from the largest that needs no clipping up to ``2 *
    cap`` (per-input tables of clustered knots hold a few values near 1; clipping them, with the
    row sums kept by :func:`round_rows_capped`, buys resolution for every other value)."""
    smallest = table_one(float(values.max()), cap)
    largest = min(max(smallest, 2 * cap), values.shape[-1] * cap)
    return sorted({smallest, *np.linspace(smallest, largest, 5).round().astype(int).tolist()})


def fit_residual(coef: np.ndarray, gram: np.ndarray, cross: np.ndarray) -> float:
    """Data-weighted squared error of fitted float coefficients [O, I, NB], up to a constant that
    does not depend on the basis: ``sum_i c^T G_i c - 2 c . b_i`` (:func:`fit_coefficients`)."""
    values = coef.transpose(1, 0, 2)  # [I, O, NB]
    return float(((values @ gram) * values).sum() - 2.0 * np.einsum("iok,iko->", values, cross))


def table_one(float_max: float, value_max: int) -> int:
    """The integer that stands for 1.0 in a basis table: as large as ``value_max`` allows."""
    return max(1, int(np.floor(value_max / max(float_max, 1e-12) + 1e-9)))


def code_weights(samples: np.ndarray | None, scale: np.ndarray, zero: np.ndarray, codes: int) -> np.ndarray:
    """How often the calibration activations [N, I] land on each input code: [I, Q] frequencies
    (uniform over the codes when there is no calibration data)."""
    n_in = len(scale)
    if samples is None or not len(samples):
        return np.full((n_in, codes), 1.0 / codes)
    q = np.floor(samples / scale[None, :] + zero[None, :] + 0.5)
    q = np.clip(np.nan_to_num(q), 0, codes - 1).astype(np.int64)
    weights = np.zeros((n_in, codes))
    for i in range(n_in):
        weights[i] = np.bincount(q[:, i], minlength=codes)
    return weights / len(samples)


def dense_basis(first: np.ndarray, basis: np.ndarray, n_basis: int) -> np.ndarray:
    """Per-code (first, K1 values) rows [Q, K1] as dense rows over all ``n_basis`` B-splines [Q, NB]."""
    q_count, k1 = basis.shape
    dense = np.zeros((q_count, n_basis))
    cols = first[:, None] + np.arange(k1)[None, :]
    np.add.at(dense, (np.arange(q_count)[:, None].repeat(k1, 1), cols), basis)
    return dense


def fit_coefficients(coef: np.ndarray, float_basis: np.ndarray, quant_basis: np.ndarray,
                     weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit float coefficients [O, I, NB] for the quantized basis.

    ``float_basis`` [I, Q, NB]: exact B-splines at each code's float value; ``quant_basis``
    [I, Q, NB]: the integer table values times ``basis_scale`` (what the C multiplies);
    ``weights`` [I, Q]: the calibration codes' frequencies. Returns the coefficients and, per
    input, the data-weighted Gram matrix ``Bq^T W Bq`` [I, NB, NB] and cross term ``Bq^T W f``
    [I, NB, O]: the error metric of :func:`choose_coefficients`.
    """
    n_out, n_in, n_basis = coef.shape
    fitted = np.empty_like(coef, dtype=np.float64)
    gram = np.empty((n_in, n_basis, n_basis))
    cross = np.empty((n_in, n_basis, n_out))
    for i in range(n_in):
        target = float_basis[i] @ coef[:, i, :].T  # [Q, O]: the float edge functions at the codes
        gram[i] = quant_basis[i].T @ (quant_basis[i] * weights[i][:, None])
        cross[i] = (quant_basis[i] * weights[i][:, None]).T @ target
        # every code also gets a small prior weight so that codes the data never visits keep the
        # float function, except on "wild" edges (update_grid splines swing to 1e5 between pixel
        # levels), whose prior targets are held within what the data shows
        seen = weights[i] > 0
        prior_target = target
        if seen.any():
            low, high = target[seen].min(axis=0), target[seen].max(axis=0)
            margin = MARGIN * (high - low)
            wild = (target.min(axis=0) < low - margin) | (target.max(axis=0) > high + margin)  # [O]
            prior_target = np.where(wild[None, :], np.clip(target, low, high), target)
        prior = PRIOR / len(weights[i])
        w_all = (1.0 - PRIOR) * weights[i] + prior
        weighted = quant_basis[i] * w_all[:, None]
        rhs = ((1.0 - PRIOR) * quant_basis[i] * weights[i][:, None]).T @ target + (prior * quant_basis[i]).T @ prior_target
        normal = quant_basis[i].T @ weighted
        ridge = RIDGE * max(float(np.trace(normal)) / n_basis, 1e-30)
        fitted[:, i, :] = np.linalg.solve(normal + ridge * np.eye(n_basis), rhs).T
    return fitted, gram, cross


def choose_coefficients(candidates: tuple, gram: np.ndarray, cross: np.ndarray,
                        bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, of the float coefficient sets in ``candidates`` (each [O, I, NB]) and
    the clip ratios ``SCALE_CANDIDATES`` of their max|c|, the integers and scale whose edge
    functions are closest to the float ones on the calibration codes:
    ``sum_i s^2 q^T G_i q - 2 s q . b_i`` (+ a constant), ``G``/``b`` from :func:`fit_coefficients`.
    Plain rounding is a candidate, so the result is never worse than it on that data."""
    qmax = (1 << (bits - 1)) - 1
    n_out = candidates[0].shape[0]
    best_q = np.zeros(candidates[0].shape, np.int64)
    best_scale = np.ones(n_out)
    best_error = np.full(n_out, np.inf)
    for coef in candidates:
        top = np.abs(coef).max(axis=(1, 2))
        for ratio in SCALE_CANDIDATES:
            scale = np.where(top > 0, top * ratio / qmax, 1.0)
            q = np.clip(np.round(coef / scale[:, None, None]), -qmax, qmax)
            values = (q * scale[:, None, None]).transpose(1, 0, 2)  # [I, O, NB]
            quadratic = ((values @ gram) * values).sum(axis=(0, 2))
            linear = np.einsum("iok,iko->o", values, cross)
            error = quadratic - 2.0 * linear
            better = error < best_error
            best_q[better], best_scale[better], best_error[better] = q[better], scale[better], error[better]
    return refine_rounding(best_q, best_scale, gram, cross, qmax), best_scale


def refine_rounding(q: np.ndarray, scale: np.ndarray, gram: np.ndarray, cross: np.ndarray, qmax: int,
                    sweeps: int = 4) -> np.ndarray:
    """Error-minimizing rounding: per edge, coordinate descent on the integers (each one moved by
    +-1 when that lowers ``s^2 q^T G q - 2 s q . b``), starting from round-to-nearest. Edges are
    independent terms of the error, so all of them move at once."""
    q = q.transpose(1, 0, 2).astype(np.float64)  # [I, O, NB]
    s = scale[None, :, None]
    b = cross.transpose(0, 2, 1)  # [I, O, NB]
    diag = np.einsum("ijj->ij", gram)[:, None, :]  # [I, 1, NB]
    for _ in range(sweeps):
        moved = False
        for j in range(q.shape[2]):
            gq = (q @ gram)[:, :, j]  # [I, O]: (G q)_j
            best_gain, best_step = np.zeros(gq.shape), np.zeros(gq.shape)
            for step in (-1.0, 1.0):
                # error change of q_j += step: s^2 (2 step (Gq)_j + G_jj) - 2 s step b_j
                change = s[:, :, 0] ** 2 * (2 * step * gq + diag[:, :, j]) - 2 * s[:, :, 0] * step * b[:, :, j]
                allowed = np.abs(q[:, :, j] + step) <= qmax
                take = allowed & (change < best_gain - 1e-18)
                best_gain, best_step = np.where(take, change, best_gain), np.where(take, step, best_step)
            q[:, :, j] += best_step
            moved = moved or bool(best_step.any())
        if not moved:
            break
    return q.transpose(1, 0, 2).astype(np.int64)


def shift_candidates(fitted: np.ndarray, max_shift: int) -> list[np.ndarray]:
    """Per-input power-of-two shifts of the basis values to try (each a vector [I]): none, and
    for reference levels at quantiles of the inputs' largest |coefficient|, the shifts that bring
    every louder input down to that level. A shifted input's coefficients take steps 2^s times
    finer relative to its basis, so the channel scale can follow the quieter inputs."""
    loudness = np.abs(fitted).max(axis=(0, 2))  # [I]
    out = [np.zeros(len(loudness), np.int64)]
    live = loudness[loudness > 0]
    if max_shift < 1 or not live.size:
        return out
    for quantile in (0.5, 0.75, 0.9):
        level = float(np.quantile(live, quantile))
        shifts = np.clip(np.ceil(np.log2(np.maximum(loudness, 1e-300) / level) - 1e-9), 0, max_shift).astype(np.int64)
        if not any(np.array_equal(shifts, seen) for seen in out):
            out.append(shifts)
    return out
