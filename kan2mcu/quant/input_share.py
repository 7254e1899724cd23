"""One input encoder for inputs that share a range (issue 19, item 1): pixels, ADC channels of one
sensor, columns scaled alike.

The C input API (kan2mcu.quant.input_codec) stores one threshold row per distinct raw-input code
function; a 784-pixel first layer whose inputs each got their own calibrated range needs 784 rows.
Here the first layer's continuous inputs are placed, in *raw* units (what ``<prefix>_quantize_input_q``
takes: x = raw * raw_scale[i] + raw_offset[i]), on one shared lattice of codes

    code = floor(raw * A + B + 0.5)        A = m / 2^k,  B = (2n + 1) / 2^(k+1)   (m, n integers)

so every shared input has the same code function of raw, and the threshold rows coincide. A and
B are dyadic with B half a lattice step off the tie lattice: ``raw * A + B + 0.5`` is never within
2^-(k+1) of an integer, so the per-input float64 arithmetic of the Python quantizer (a different
scale and offset per column) cannot round two shared inputs apart. (Bit-exactness never depends on
this: the C thresholds are always searched from the Python quantizer itself; it only makes the rows
equal.) The model-space encoder of input i is then ``scale_i = raw_scale[i] / A`` and ``zero_i =
B - raw_offset[i] / scale_i``.

An input shares when its own range keeps at least ``SHARE_MIN_FRACTION`` of the shared range
(it then loses at most log2(1 / SHARE_MIN_FRACTION) bits of resolution) or never varies
(:func:`shared_group`), and only while it costs no accuracy that shows: the extra error its
coarser codes add to its edges' values, measured on the calibration rows, summed over the
sharing inputs, stays within ERROR_SLACK (1/4) of the first layer's own input-quantization error
(:func:`added_error`, :func:`admitted`). The edge tables of a shared input are evaluated on its own
range, clamped (``clip_lo``/``clip_hi``): codes beyond it hold the edge's value at the range's end,
as the input's own encoder would have saturated there, so sharing changes resolution only, never
what an out-of-range input does.

Measured on scikit-learn's digits upsampled to 28x28 (benchmarks/scale.py's [784,32,10] KAN, 360
held-out rows): input API 4,718 -> 362 B at 2-bit codes, 7,688 -> 744..771 B at 3..8 bits, held-out
accuracy with sharing equal or higher at every width (2/3/4/8 bits: 0.9722/0.9778/0.9750/0.9722,
without: 0.9722/0.9750/0.9750/0.9694).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from kan2mcu.errors import QuantizationError

Q16_SCALE = 1.0 / 65536.0
SHARE_MIN_FRACTION = 1.0 / 16  # an input shares when its range is at least 1/16 of the shared one
_SIGNIFICANT_BITS = 24  # bits of the lattice step A (fewer when MAX_LATTICE_BITS binds)
MAX_LATTICE_BITS = 36  # k at most: the 2^-(k+1) tie margin stays far above float64 errors in code units (~2^-43)
ERROR_SLACK = 0.25  # sharing may add at most this share of the first layer's own input-quantization error
PROBE_ROWS = 256  # calibration rows the decision is measured on
ELEMENTS_PER_CHUNK = 1 << 21  # edge values per evaluation chunk (16 MiB of float64)
_EXACT_CACHE: dict = {}  # the last layer's exact edge values on its probe rows, by chunk
CACHE_ELEMENTS = 1 << 24  # larger layers (128 MiB of float64 and more) evaluate them again instead


def columns(input_transform: dict | None, n_in: int) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(scale [I], offset [I], per column?) of a checkpoint's input transform, or None without one
    (or a scalar one that is not positive); a per-column one must be positive in every column."""
    if not input_transform or input_transform.get("scale") is None:
        return None
    scale, offset = input_transform["scale"], input_transform["offset"]
    per_column = isinstance(scale, (list, tuple, np.ndarray))
    scale = np.broadcast_to(np.asarray(scale, np.float64), (n_in,)).copy()
    offset = np.broadcast_to(np.asarray(offset, np.float64), (n_in,)).copy()
    if not np.all(scale > 0):
        if per_column:
            raise QuantizationError("the checkpoint's input scaling must be positive in every column")
        return None
    return scale, offset, per_column


def raw_transform(input_transform: dict | None, n_in: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(raw_scale [I], raw_offset [I], kind) of the raw-input API: x = raw * raw_scale + raw_offset."""
    cols = columns(input_transform, n_in)
    if cols is None:
        return np.full(n_in, Q16_SCALE), np.zeros(n_in), "q16"
    if cols[2]:
        return cols[0] * Q16_SCALE, cols[1], "features"
    return cols[0], cols[1], "checkpoint"


def _dyadic_lattice(raw_lo: float, raw_hi: float, qmax: int) -> tuple[float, float] | None:
    """(A, B) of a lattice putting [raw_lo, raw_hi] on codes 0..qmax, dyadic as in the module
    docstring; None when the range is empty or too wide or far for exact float64 arithmetic."""
    span = raw_hi - raw_lo
    if not (math.isfinite(span) and span > 0):
        return None
    step = qmax / span
    k = min(_SIGNIFICANT_BITS - math.floor(math.log2(step)), MAX_LATTICE_BITS)
    offset = -raw_lo * step
    while k > 0 and abs(offset) * 2.0 ** (k + 2) >= 2.0**52:
        k -= 1
    m = math.floor(step * 2.0**k)
    if k <= 0 or m <= 0:
        return None
    a = m / 2.0**k
    n = math.floor(-raw_lo * a * 2.0**k)  # B rounded down: raw_lo's code stays >= 0 (B = offset - 2^-(k+1))
    return a, (2 * n + 1) / 2.0 ** (k + 1)


def shared_group(raw_lo: np.ndarray, raw_hi: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[I] bool: the candidate inputs that share (see the module docstring). The group starts as
    the most candidates whose widths lie within a factor 1 / SHARE_MIN_FRACTION of each other;
    members centred farther than half the widest member / SHARE_MIN_FRACTION from the others'
    median centre leave it, then members narrower than SHARE_MIN_FRACTION of the group's whole range (union of the members'
    ranges: offsets count too) leave it, until none does. Candidates that never vary join when
    they lie within the group's range."""
    candidates = np.asarray(candidates, bool)
    width = raw_hi - raw_lo
    varying = candidates & (width > 0)
    group = np.zeros_like(candidates)
    if not np.any(varying):
        return group
    widths = np.sort(width[varying])
    first = np.searchsorted(widths, widths * SHARE_MIN_FRACTION, side="left")
    count = np.arange(len(widths)) - first + 1
    top = widths[len(count) - 1 - int(np.argmax(count[::-1]))]  # the most members; the widest on ties
    group = varying & (width <= top) & (width >= top * SHARE_MIN_FRACTION)
    middle = (raw_lo + raw_hi) / 2
    centre = float(np.median(middle[group]))  # members far off the others' centre would stretch the lattice
    group &= np.abs(middle - centre) <= top / SHARE_MIN_FRACTION / 2
    while np.any(group):
        span = float(np.max(raw_hi[group]) - np.min(raw_lo[group]))
        keep = group & (width >= SHARE_MIN_FRACTION * span)
        if np.array_equal(keep, group):
            break
        group = keep
    if not np.any(group):
        return group
    lo, hi = float(np.min(raw_lo[group])), float(np.max(raw_hi[group]))
    constant = candidates & (width <= 0) & (raw_lo >= lo) & (raw_hi <= hi)
    return group | constant


def _snapped(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmax: int) -> np.ndarray:
    """[N, I] model inputs ``x`` at their codes' values (as the Python quantizer rounds them)."""
    codes = np.clip(np.floor(x / scale + zero + 0.5), 0, qmax)
    return scale * (codes - zero)


def _edges(layer, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """[N, C, O] values of the edges leaving inputs ``cols`` at ``x`` [N, C] (as
    kan2mcu.model.bspline.edge_values, several inputs at once)."""
    from kan2mcu.model.bspline import BASE_FUNCTION_VALUES, bspline_basis, symbolic_values  # pylint: disable=import-outside-toplevel

    basis = bspline_basis(x, layer.knots[cols], layer.order)  # [N, C, M]
    values = np.matmul(basis.transpose(1, 0, 2), layer.coef[:, cols, :].transpose(1, 2, 0)).transpose(1, 0, 2)
    values += BASE_FUNCTION_VALUES[layer.base_function](x)[:, :, None] * layer.base_weight[:, cols].T[None, :, :]
    where = {int(c): k for k, c in enumerate(cols)}
    for edge in layer.symbolic:
        if edge.inp in where:
            k = where[edge.inp]
            values[:, k, edge.out] += symbolic_values(edge.name, edge.a, edge.b, edge.c, edge.d, x[:, k])
    return values * layer.out_scale[None, None, :]


def added_error(layer, x: np.ndarray, own: tuple, shared: tuple, qmax: int, clip: tuple) -> tuple[np.ndarray, float]:
    """Per input, the extra squared error (mean over rows and outputs) of its edges' values when
    its codes come from the ``shared`` (scale, zero) instead of its ``own``; and the first layer's
    whole input-quantization error on its own encoders (sum over inputs of the same measure)."""
    x_own = _snapped(x, *own, qmax)
    x_shared = np.clip(_snapped(x, *shared, qmax), *clip)
    n_in = x.shape[1]
    extra, own_error = np.zeros(n_in), np.zeros(n_in)
    step = max(1, ELEMENTS_PER_CHUNK // max(1, len(x) * layer.out_features))
    key = (id(layer), hashlib.sha256(x.tobytes()).hexdigest())  # the exact values serve every code width
    if _EXACT_CACHE.get("key") != key:
        _EXACT_CACHE.clear()
        _EXACT_CACHE.update(key=key, layer=layer)  # the layer kept alive: its id stays its own
    for start in range(0, n_in, step):
        cols = np.arange(start, min(n_in, start + step))
        exact = _EXACT_CACHE.get(start)
        if exact is None:
            exact = _edges(layer, x[:, cols], cols)
            if x.size * layer.out_features <= CACHE_ELEMENTS:
                _EXACT_CACHE[start] = exact
        own_error[cols] = np.mean((_edges(layer, x_own[:, cols], cols) - exact) ** 2, axis=(0, 2))
        extra[cols] = np.mean((_edges(layer, x_shared[:, cols], cols) - exact) ** 2, axis=(0, 2)) - own_error[cols]
    return extra, float(own_error.sum())


def _probe_rows(samples: np.ndarray | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[N, I] inputs to weigh the decision on: up to PROBE_ROWS calibration rows (evenly spaced,
    deterministic), else points spread evenly over each input's range."""
    if samples is not None and len(samples):
        pick = np.unique(np.linspace(0, len(samples) - 1, min(len(samples), PROBE_ROWS)).astype(np.int64))
        return np.asarray(samples, np.float64)[pick]
    return lo + (hi - lo) * np.linspace(0.0, 1.0, 64)[:, None]


def admitted(extra: np.ndarray, own_total: float, group: np.ndarray) -> np.ndarray:
    """The members of ``group`` that may share: by increasing extra error, as long as their extra
    errors add up to at most ERROR_SLACK of the layer's own input-quantization error (members
    whose error does not grow always)."""
    order = [int(i) for i in np.argsort(extra, kind="stable") if group[i]]
    out, spent = np.zeros_like(group), 0.0
    for i in order:
        cost = max(float(extra[i]), 0.0)
        if spent + cost > ERROR_SLACK * own_total and cost > 0:
            break
        out[i], spent = True, spent + cost
    return out


def share_inputs(layer, lo: np.ndarray, hi: np.ndarray, enc: dict, input_transform: dict | None,
                 samples: np.ndarray | None = None) -> dict | None:
    """The shared encoder of the first ``layer``'s continuous inputs (not on levels in ``enc``, its
    own encoding; model-space ranges ``lo``..``hi``), or None when fewer than two inputs share:
    ``{"shared": [I] bool, "scale", "zero" ([I], meaningful where shared), "clip_lo", "clip_hi"
    ([I] model-space own ranges)}``. Inputs alike in range (:func:`shared_group`) share while the
    error their coarser codes add to the layer's edges stays within ERROR_SLACK of its own
    input-quantization error, measured on the calibration rows (:func:`added_error`)."""
    n_in, bits = len(lo), int(enc["bits"])
    qmax = (1 << bits) - 1
    raw_scale, raw_offset, _ = raw_transform(input_transform, n_in)
    if not np.all(raw_scale > 0):
        return None
    raw_lo, raw_hi = (lo - raw_offset) / raw_scale, (hi - raw_offset) / raw_scale
    group = shared_group(raw_lo, raw_hi, ~np.asarray(enc["on_levels"], bool))
    for _ in range(2):  # the lattice of the group, then of its admitted members (finer: errors only drop)
        if np.count_nonzero(group) < 2:
            return None
        lattice = _dyadic_lattice(float(np.min(raw_lo[group])), float(np.max(raw_hi[group])), qmax)
        if lattice is None:
            return None
        scale = raw_scale / lattice[0]
        zero = lattice[1] - raw_offset / scale
        if _ > 0:
            break
        x = _probe_rows(samples, lo, hi)
        extra, own_total = added_error(layer, x, (enc["scale"], enc["zero"]), (scale, zero), qmax, (lo, hi))
        group = admitted(extra, own_total, group)
    return {"shared": group, "scale": scale, "zero": zero, "clip_lo": np.asarray(lo, np.float64),
            "clip_hi": np.asarray(hi, np.float64)}
