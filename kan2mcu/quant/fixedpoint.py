"""Fixed-point helpers shared by the layer strategies: the C types of codes, symmetric
quantization and the integer requantization constants (multiplier, rounding term, shift) with
their overflow checks."""
from __future__ import annotations

import math

import numpy as np

from kan2mcu.errors import QuantizationError

INT32_MAX = 2**31 - 1


def code_ctype(bits: int) -> str:
    """The C type holding codes of ``bits`` bits: uint8_t up to 8 bits, uint16_t above."""
    return "uint8_t" if bits <= 8 else "uint16_t"


def code_type_max(bits: int) -> int:
    """The largest value the C type of ``bits``-bit codes can hold (what a caller can pass)."""
    return 255 if bits <= 8 else 65535


def clamps_caller_codes(bits: int) -> bool:
    """Whether a first layer of ``bits``-bit codes must clamp its input: the caller's type holds
    values above the top code (a layer's own outputs are clamped to the next layer's range)."""
    return (1 << bits) - 1 < code_type_max(bits)
INT64_LIMIT = 2**63 - 1


def quantize_symmetric(values: np.ndarray, bits: int, axis_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed round-to-nearest with scale ``axis_max / (2^(bits-1)-1)`` (zero scale -> 1)."""
    qmax = (1 << (bits - 1)) - 1
    scale = np.where(axis_max > 0, axis_max / qmax, 1.0)
    shape = scale.shape + (1,) * (values.ndim - scale.ndim)
    q = np.clip(np.round(values / scale.reshape(shape)), -qmax, qmax).astype(np.int64)
    return q, scale


def requant_int64(a_spline: np.ndarray, a_base: np.ndarray, bias: np.ndarray, bound_sp: np.ndarray,
                  bound_b: np.ndarray, where: str) -> tuple[np.ndarray, ...]:
    """Two int32 multipliers, an int64 rounding term and a shift per output, ``|M| < 2^30``, with
    ``|acc_sp| * |M1| + |acc_b| * |M2| + |R| < 2^63`` checked exactly."""
    n = len(a_spline)
    m1, m2, r, sh = (np.zeros(n, np.int64) for _ in range(4))
    for o in range(n):
        largest = max(abs(a_spline[o]), abs(a_base[o]), 1e-300)
        shift = min(62, int(math.floor(math.log2((2**30 - 1) / largest))))
        shift = min(shift, 61 - max(0, int(math.ceil(math.log2(abs(bias[o]) + 1)))))
        if shift < 1:
            raise QuantizationError(f"{where}: output {o} needs a multiplier too large for int32")
        m1[o] = int(round(a_spline[o] * 2.0**shift))
        m2[o] = int(round(a_base[o] * 2.0**shift))
        r[o] = int(round(bias[o] * 2.0**shift)) + (1 << (shift - 1))
        sh[o] = shift
        worst = int(bound_sp[o]) * abs(int(m1[o])) + int(bound_b[o]) * abs(int(m2[o])) + abs(int(r[o]))
        if worst > INT64_LIMIT:
            raise QuantizationError(f"{where}: output {o}: requantization could overflow int64 ({worst:.3g})")
    return m1, m2, r, sh


def requant_int32(gain: np.ndarray, offset: np.ndarray, acc_low: np.ndarray, acc_high: np.ndarray,
                  where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32-only requantization ``y = (acc * M + R) >> shift`` for ``y ~ gain * acc + offset``
    (C evaluates ``acc * M`` first, then adds ``R``: both must fit int32).

    ``acc`` lies in ``[acc_low, acc_high]`` per output. The shift is the largest (most precise) one
    for which every intermediate fits int32; ``R`` holds the offset and the rounding half.
    """
    n = len(gain)
    mult, rounding, shift = (np.zeros(n, np.int64) for _ in range(3))
    for o in range(n):
        chosen = None
        for s in range(30, 0, -1):
            m = int(round(float(gain[o]) * 2.0**s))
            r = int(round(float(offset[o]) * 2.0**s)) + (1 << (s - 1))
            extremes = [int(acc_low[o]) * m, int(acc_high[o]) * m, int(acc_low[o]) * m + r, int(acc_high[o]) * m + r, r]
            if abs(m) <= INT32_MAX and all(-INT32_MAX <= v <= INT32_MAX for v in extremes):
                chosen = (m, r, s)
                break
        if chosen is None or chosen[0] == 0 and gain[o] != 0:
            raise QuantizationError(f"{where}: output {o}: no int32 requantization fits "
                                    f"(gain {gain[o]:.3g}, offset {offset[o]:.3g})")
        mult[o], rounding[o], shift[o] = chosen
    return mult, rounding, shift
