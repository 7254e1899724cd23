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
(it then loses at most log2(1 / SHARE_MIN_FRACTION) bits of resolution) or never varies. The
edge tables of a shared input are evaluated on its own range, clamped (``clip_lo``/``clip_hi``):
codes beyond it hold the edge's value at the range's end, as the input's own encoder would have
saturated there, so sharing changes resolution only, never what an out-of-range input does.
"""
from __future__ import annotations

import math

import numpy as np

Q16_SCALE = 1.0 / 65536.0
SHARE_MIN_FRACTION = 1.0 / 16  # an input shares when its range is at least 1/16 of the shared one
_SIGNIFICANT_BITS = 24  # bits of the lattice step A


def columns(input_transform: dict | None, n_in: int) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(scale [I], offset [I], per column?) of a checkpoint's input transform, or None without one
    (or a scalar one that is not positive)."""
    if not input_transform or input_transform.get("scale") is None:
        return None
    scale, offset = input_transform["scale"], input_transform["offset"]
    per_column = isinstance(scale, (list, tuple, np.ndarray))
    scale = np.broadcast_to(np.asarray(scale, np.float64), (n_in,)).copy()
    offset = np.broadcast_to(np.asarray(offset, np.float64), (n_in,)).copy()
    if not np.all(scale > 0) and not per_column:
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
    k = _SIGNIFICANT_BITS - math.floor(math.log2(step))
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
    """[I] bool: the candidate inputs that share (see the module docstring): every candidate whose
    range is at least SHARE_MIN_FRACTION of the widest candidate's and lies within the group's
    range, plus the candidates that never vary."""
    width = raw_hi - raw_lo
    if not np.any(candidates):
        return candidates
    widest = float(np.max(np.where(candidates, width, 0.0)))
    if widest <= 0:
        return np.zeros_like(candidates)
    group = candidates & (width >= SHARE_MIN_FRACTION * widest)
    if not np.any(group):
        return group
    lo, hi = float(np.min(raw_lo[group])), float(np.max(raw_hi[group]))
    constant = candidates & (width <= 0) & (raw_lo >= lo) & (raw_hi <= hi)
    return group | constant


def share_inputs(lo: np.ndarray, hi: np.ndarray, bits: int, input_transform: dict | None,
                 candidates: np.ndarray) -> dict | None:
    """The shared encoder of the first layer's ``candidates`` (inputs with model-space ranges
    ``lo``..``hi``), or None when fewer than two inputs share: ``{"shared": [I] bool, "scale",
    "zero" ([I], meaningful where shared), "clip_lo", "clip_hi" ([I] model-space own ranges)}``."""
    n_in = len(lo)
    raw_scale, raw_offset, _ = raw_transform(input_transform, n_in)
    if not np.all(raw_scale > 0):
        return None
    raw_lo, raw_hi = (lo - raw_offset) / raw_scale, (hi - raw_offset) / raw_scale
    group = shared_group(raw_lo, raw_hi, np.asarray(candidates, bool))
    if np.count_nonzero(group) < 2:
        return None
    lattice = _dyadic_lattice(float(np.min(raw_lo[group])), float(np.max(raw_hi[group])), (1 << bits) - 1)
    if lattice is None:
        return None
    a, b = lattice
    scale = raw_scale / a
    zero = b - raw_offset / scale
    return {"shared": group, "scale": scale, "zero": zero, "clip_lo": np.asarray(lo, np.float64),
            "clip_hi": np.asarray(hi, np.float64)}
