"""Raw-input codes computed instead of stored: an exact integer affine rule per threshold row.

The raw-input quantizer (kan2mcu.quant.input_codec) decides a channel's code as the number of its
thresholds (uint32 keys, ascending) at or below the input's key. When a row's thresholds follow
an integer affine rule in the code, they need not be stored: with ``low`` = the code of INT32_MIN
and ``count`` = how many codes above it an int32 can reach, the threshold of code low + 1 + j is

    key(j) = base + j * step + ((j * frac + add) >> shift)      j = 0 .. count - 1   (uint32 arithmetic)

(``shift`` = 32 - bits of the largest code, at most 30, so ``j * frac + add`` < 2^32; the other
terms wrap modulo 2^32 and still give the exact key, which is < 2^32; ``add`` < 2^shift, so
key(0) = ``base``). The C code is then ``low + #{j : key(j) <= key}``: below ``base`` it is
``low``; above, a guess of the last j with key(j) <= key from the distance to ``base``
(``min((key - base) >> guess_in, 0xFFFF) * guess_mult >> guess_out``, a code off at most) is
corrected by stepping j up while key(j + 1) <= key and down while key(j) > key, which gives the
exact count from any guess; the guess only saves steps.

:func:`fit_rule` searches the rule exactly: for P = step * 2^shift + frac and Q' (any integer), the
conditions ``v_j * 2^shift <= j * P + Q' < (v_j + 1) * 2^shift`` (v_j = key(j) - key(0)) hold for
every j iff P lies in the intersection of the pairwise bounds, and then Q' in the intersection of
the per-j bounds (integer arithmetic, int64). The fitted rule is checked against every threshold
before it is returned: it reproduces the stored thresholds exactly, so the computed code equals the
stored table's on every int32 input. Rows whose thresholds follow no such rule (float rounding
can bend a row) keep their stored thresholds.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

MAX_RULE_CODES = 1024  # pairwise search: at most ~500k pairs per row
RULE_BYTES = 24  # one C rule: 4 uint32 (base, step, frac, add), uint16 guess_mult, 2 uint8 guess
# shifts and 2 codes, padded to 4-byte alignment


@dataclass(frozen=True)
class RawRule:
    """One row's code rule (see the module docstring); all fields are uint32 values."""

    base: int
    step: int
    frac: int
    add: int
    low: int  # code of INT32_MIN
    count: int  # codes above ``low`` that an int32 reaches
    guess_mult: int = 0  # uint16: the guess of j (speed only; see the module docstring)
    guess_in: int = 0
    guess_out: int = 0


def rule_shift(code_max: int) -> int:
    """The shift of every rule of a model whose codes go up to ``code_max``."""
    return min(32 - max(1, int(code_max).bit_length()), 30)


def rule_keys(rule: RawRule, shift: int) -> np.ndarray:
    """key(j) for j = 0..count - 1, exactly as the C code computes it (uint32 wrap-around)."""
    j = np.arange(rule.count, dtype=np.uint64)
    mask = np.uint64(0xFFFFFFFF)
    low = (j * np.uint64(rule.frac) + np.uint64(rule.add)) & mask
    keys = np.uint64(rule.base) + ((j * np.uint64(rule.step)) & mask) + (low >> np.uint64(shift))
    return (keys & mask).astype(np.uint32)


def rule_codes(rule: RawRule, shift: int, keys: np.ndarray) -> np.ndarray:
    """Codes of uint32 input keys under ``rule`` (what the C binary search returns)."""
    thresholds = rule_keys(rule, shift)
    return rule.low + np.searchsorted(thresholds, np.asarray(keys, np.uint32), side="right")


def with_guess(rule: RawRule, shift: int) -> RawRule:
    """``rule`` with the guess parameters of its thresholds' mean spacing (1 / codes per key)."""
    if rule.count <= 1:
        return rule
    keys = rule_keys(rule, shift).astype(np.int64)
    span = int(keys[-1] - keys[0])
    guess_in = max(0, span.bit_length() - 16)
    spacing = max(span, 1) / (rule.count - 1)  # keys per code
    guess_out = 0
    while guess_out < 31 and (1 << (guess_out + 1 + guess_in)) / spacing < 0xFFFE:
        guess_out += 1
    mult = min(0xFFFF, math.ceil((1 << (guess_out + guess_in)) / spacing))  # rounded up: exact at thresholds
    return dataclasses.replace(rule, guess_mult=mult, guess_in=guess_in, guess_out=guess_out)


def _slope_range(v: np.ndarray, shift: int) -> tuple[int, int]:
    """[P_lo, P_hi] of the pairwise conditions on v_1..v_n (v_1 = 0), int64 exact."""
    n = len(v)
    i, j = np.triu_indices(n, k=1)
    dj = (j - i).astype(np.int64)
    dv = v[j] - v[i]
    unit = np.int64(1) << np.int64(shift)
    lower = (dv - 1) * unit + 1  # (j - i) P >= lower
    upper = (dv + 1) * unit - 1  # (j - i) P <= upper
    p_lo = int(max(0, (-((-lower) // dj)).max()))
    p_hi = int((upper // dj).min())
    return p_lo, p_hi


def fit_rule(keys: np.ndarray, top: int, shift: int) -> RawRule | None:
    """The rule of one threshold row (``keys``: the uint32 thresholds of codes 1..max, ``top``: the
    highest code an int32 reaches), or None when its thresholds follow no such rule."""
    keys = np.asarray(keys, np.int64)
    low = int(np.count_nonzero(keys[:top] == 0))  # reached at INT32_MIN (key 0)
    count = int(top) - low
    if count <= 1:
        base = int(keys[low]) if count == 1 else 0
        return RawRule(base, 0, 0, 0, low, count)
    if count > MAX_RULE_CODES:
        return None
    e = keys[low:top]
    v = e - e[0]
    p_lo, p_hi = _slope_range(v, shift)
    if p_lo > p_hi:
        return None
    p = (p_lo + p_hi) // 2
    unit = 1 << shift
    vs = [int(x) for x in v]  # Python integers: j * P may exceed int64
    q_lo = max(vj * unit - j * p for j, vj in enumerate(vs))  # j = 0: 0 <= Q' < 2^shift, base = key(0)
    q_hi = min((vj + 1) * unit - 1 - j * p for j, vj in enumerate(vs))
    if q_lo > q_hi:
        return None
    q = q_lo  # the smallest: one less breaks the threshold that is tight there
    rule = RawRule(base=int(e[0]) + (q >> shift), step=(p >> shift) % (1 << 32),
                   frac=p & (unit - 1), add=q & (unit - 1), low=low, count=count)
    if not np.array_equal(rule_keys(rule, shift).astype(np.int64), e):
        return None
    return with_guess(rule, shift)


def fit_rules(rows: np.ndarray, tops: np.ndarray, shift: int) -> list[RawRule] | None:
    """A rule for every threshold row, or None as soon as one row has none."""
    rules = []
    for keys, top in zip(rows, tops):
        rule = fit_rule(keys, int(top), shift)
        if rule is None:
            return None
        rules.append(rule)
    return rules
