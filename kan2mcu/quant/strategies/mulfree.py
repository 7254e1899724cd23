"""Multiply-free requantization of edge-table layers (``--no-mul``; forced on cores without a
multiplier such as RV32EC): with it a whole KAN runs on table reads, adds, compares and shifts.

An edge-table layer already sums table entries without multiplying; only its requantization
``y = clamp((acc * M + R) >> S, 0, out_max)`` multiplies. This pass replaces it, exactly:

* a hidden layer's output code is a non-decreasing step function of its accumulator (``M > 0``),
  so it equals the number of thresholds ``T[k] = ceil((k * 2^S - R) / M)``, ``k = 1..out_max``,
  that the accumulator reaches. C finds it by a binary search over ``2^b`` thresholds per output
  (``T[0] = 0``, never above an accumulator): ``b`` compares for ``b``-bit codes, same result
  as the multiply for every accumulator (checked in host_tests/test_cores.py);
* the last layer's entry step is rounded up to the output step times a power of two (at most
  one bit of entry precision less), so its gain is ``2^k`` and ``y = ((acc << k) + R) >> s``
  (one of ``k``, ``s`` zero) is exact in int32, with ``M = 2^k`` for the reference.

The integer reference (:func:`requantize`) mirrors the C: thresholds for hidden layers, the
multiply by ``2^k`` for the last layer. Arithmetic: docs/arithmetic.md.
"""
from __future__ import annotations

import numpy as np

from kan2mcu.errors import QuantizationError
from kan2mcu.quant.fixedpoint import INT32_MAX


def pow2_entry_scale(entry_scale: np.ndarray, next_scale: np.ndarray) -> np.ndarray:
    """The last layer's entry steps rounded up to ``next_scale * 2^k`` (gain a power of two)."""
    ratio = np.asarray(entry_scale, dtype=np.float64) / np.asarray(next_scale, dtype=np.float64)
    return next_scale * np.exp2(np.ceil(np.log2(ratio)))


def shift_requant(gain: np.ndarray, offset: np.ndarray, acc_high: np.ndarray,
                  where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mult = 2^k, rounding, shift)`` of ``y = ((acc << k) + R) >> s`` for power-of-two gains."""
    n = len(gain)
    mult, rounding, shift = np.ones(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for o in range(n):
        k = int(round(float(np.log2(gain[o]))))
        if 2.0**k != float(gain[o]):
            raise QuantizationError(f"{where}: output {o}: gain {gain[o]:.6g} is not a power of two")
        if k >= 0:
            mult[o], rounding[o] = 1 << k, int(np.floor(float(offset[o]) + 0.5))
        else:
            shift[o] = -k
            rounding[o] = int(np.floor(float(offset[o]) * 2.0**-k)) + (1 << (-k - 1))
        extremes = (int(acc_high[o]) * int(mult[o]) + int(rounding[o]), int(rounding[o]), int(acc_high[o]) * int(mult[o]))
        if not all(-INT32_MAX <= v <= INT32_MAX for v in extremes):
            raise QuantizationError(f"{where}: output {o}: no int32 shift requantization fits (gain 2^{k})")
    return mult, rounding, shift


def code_thresholds(mult: np.ndarray, rounding: np.ndarray, shift: np.ndarray, out_max: int,
                    acc_high: np.ndarray, where: str) -> np.ndarray:
    """``[O, 2^b]`` thresholds (``b`` = bits of ``out_max``): entry ``k >= 1`` is the smallest
    accumulator whose requantized code reaches ``k``, clipped to ``0..acc_high + 1``; entry 0 is 0."""
    size = out_max + 1
    if size & (size - 1):
        raise QuantizationError(f"{where}: output codes 0..{out_max} are not a power of two")
    table = np.zeros((len(mult), size), np.int64)
    for o in range(len(mult)):
        m, r, s = int(mult[o]), int(rounding[o]), int(shift[o])
        if m <= 0:
            raise QuantizationError(f"{where}: output {o}: multiplier {m} is not positive; no threshold form")
        for k in range(1, size):
            need = (k << s) - r  # acc * m >= need
            t = -((-need) // m)  # ceil(need / m), exact integers
            table[o, k] = min(max(t, 0), int(acc_high[o]) + 1)
    return table


def requantize(thresholds: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Output codes of ``acc`` ([N, O]) by thresholds: how many of ``T[o, 1:]`` each reaches
    (what the C binary search finds)."""
    return (acc[:, :, None] >= thresholds[None, :, 1:]).sum(axis=2, dtype=np.int64)


def threshold_bytes(n_out: int, next_bits: int, top_threshold: int) -> int:
    """Flash of a hidden layer's threshold table (the cost model's figure): uint16 entries when
    the largest threshold fits them (as render_tables chooses), else uint32."""
    return n_out * (1 << next_bits) * (2 if top_threshold <= 0xFFFF else 4)


def render_tables(ql, emit) -> dict:
    """Declare the requantization tables of edge-table layer ``ql`` and say which C form reads
    them: ``int32`` (multiply; mult, rounding, shift), ``thresholds`` (binary search) or
    ``shifts`` (last layer: lshift, rounding, shift)."""
    if not getattr(ql, "mul_free", False):
        return {"requant": "int32",
                "mult": emit.table("mult", ql.mult, "int32_t", "requantization multiplier (int32 arithmetic)"),
                "rounding": emit.table("rounding", ql.rounding, "int32_t",
                                       "bias, zero points and rounding, 2^-shift units"),
                "shift": emit.table("shift", ql.shift, "uint8_t", "right shift of the requantization")}
    if ql.is_last:
        lshift = np.array([int(m).bit_length() - 1 for m in ql.mult], np.int64)
        return {"requant": "shifts",
                "lshift": emit.table("lshift", lshift, "uint8_t", "left shift: the power-of-two gain"),
                "rounding": emit.table("rounding", ql.rounding, "int32_t",
                                       "bias, zero points and rounding, 2^-shift units"),
                "shift": emit.table("shift", ql.shift, "uint8_t", "right shift of the requantization")}
    size = ql.thresholds.shape[1]
    bits = size.bit_length() - 1
    ctype = "uint16_t" if int(ql.thresholds.max()) <= 0xFFFF else "uint32_t"
    return {"requant": "thresholds", "threshold_bits": bits, "threshold_ctype": ctype,
            "steps": [1 << (bits - 1 - j) for j in range(bits)],
            "thresholds": emit.table("thresholds", ql.thresholds, ctype,
                                     f"[{ql.out_features}][{size}] smallest sums reaching each output code")}
