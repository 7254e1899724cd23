"""The "pair" coefficient layout of cubic spline layers, for cores without SIMD (RV32; docs/arithmetic.md
section 5): two outputs per 32-bit word, so one multiply gives both outputs' products in 16-bit lanes.

Word ``[i][p][k]`` holds ``(COEF[2p][i][k] + bias) | (COEF[2p+1][i][k] + bias) << 16`` (the high lane of
an odd layer's last pair holds 0). A single product ``B_j * word`` never carries between lanes (both
factors are at most 255 at 8 bits: 65,025). The kernel keeps two 32-bit sums per pair,
``lo += t`` (modulo 2**32) and ``hi += t >> 16``; at the end the high output is ``hi`` and the low
one ``lo - (hi << 16)`` (modulo 2**32, exact: the true lane sums fit 32 bits). Products of slots whose
basis values stay small together (at 8 bits ``B_0 + B_2`` and ``B_1 + B_3`` of the cubic cardinal
spline; not ``B_0 + B_3``, which reaches 255 at the grid's edges) may share one split (one ``t``)
when their lane sum provably stays within 0xFFFF: :func:`lane_groups` decides it from the
layer's actual decode tables and coefficients, never the template.
"""
from __future__ import annotations

import numpy as np

from kan2mcu.errors import QuantizationError

PAIR_LANE_MAX = 0xFFFF  # one 16-bit lane of a pair word's product sum
PAIR_OUTPUTS_PER_PASS = 16  # eight pairs: 16 accumulators (lo, hi) plus operands fit RV32's registers
ROW_SUM_MASK = 0x1FF  # a decode row's sum of basis values: at most 2 * 255 (docs/arithmetic.md section 2)
WORD_BYTES = 4  # the decode entry carries the first live word's byte offset in its input's row


def row_sum_shift(first_max: int) -> int:
    """Where the row sum sits in the decode entry's low halfword, above the first live word's byte offset."""
    return max(1, (WORD_BYTES * int(first_max)).bit_length())


def pair_fits(order: int, first_max: int) -> bool:
    """Whether a layer may take the pair layout: cubic (the halfword kernel's decode), and the first live
    word's byte offset and the row sum of basis values (9 bits) share the decode entry's low halfword."""
    return order == 3 and row_sum_shift(first_max) + ROW_SUM_MASK.bit_length() <= 16


def basis_values(pos_card: np.ndarray, k1: int) -> np.ndarray:
    """Per decode position, its K1 basis values [positions, K1] (value j in byte j of ``pos_card``)."""
    return (pos_card[:, None] >> (8 * np.arange(k1))[None, :]) & 0xFF


def row_sums(pos_card: np.ndarray, k1: int) -> np.ndarray:
    """Per decode position, the sum of its K1 basis values."""
    return basis_values(pos_card, k1).sum(axis=1)


def pair_words(stored: np.ndarray) -> np.ndarray:
    """Biased coefficients ``[O, I, NB]`` (non-negative, at most 0xFFFF) -> uint32 words ``[I, ceil(O/2), NB]``:
    output ``2p`` in the low lane, ``2p + 1`` in the high lane (0 past the last output)."""
    n_out, n_in, n_basis = stored.shape
    padded = np.zeros((2 * -(-n_out // 2), n_in, n_basis), np.int64)
    padded[:n_out] = stored
    words = padded[0::2] | (padded[1::2] << 16)  # [P, I, NB]
    return words.transpose(1, 0, 2).astype(np.uint32)


def _partitions(items: list) -> list:
    """Every set partition of ``items`` (as lists of tuples), in a deterministic order."""
    if not items:
        return [[]]
    head, rest = items[0], items[1:]
    out = []
    for part in _partitions(rest):
        out.append([(head,)] + part)
        for n, group in enumerate(part):
            out.append(part[:n] + [(head,) + group] + part[n + 1:])
    return out


def lane_groups(basis: np.ndarray, top: int) -> tuple:
    """The slot groups whose products share one lane split: ``basis`` [positions, K1] (every basis row
    the decode can give), ``top`` the largest biased coefficient a lane multiplies. A group is allowed
    when ``max over rows of sum_{j in group} B_j`` times ``top`` stays within :data:`PAIR_LANE_MAX`
    (each lane's sum of the group's products, the worst case over every code); of the allowed
    partitions, the one with the fewest groups (ties: the first in a fixed order). Singletons always
    fit (checked: else the layout is refused)."""
    k1 = basis.shape[1]
    peak = {}

    def fits(group: tuple) -> bool:
        if group not in peak:
            peak[group] = int(basis[:, list(group)].sum(axis=1).max(initial=0)) * int(top)
        return peak[group] <= PAIR_LANE_MAX

    if not all(fits((j,)) for j in range(k1)):
        raise QuantizationError(f"a basis value times a coefficient passes a 16-bit lane ({max(peak.values())})")
    candidates = [sorted(tuple(sorted(g)) for g in part) for part in _partitions(list(range(k1)))]
    candidates.sort(key=lambda part: (len(part), part))
    best = next(part for part in candidates if all(fits(g) for g in part))
    return tuple(tuple(g) for g in best)


def pair_sums(coef_words: np.ndarray, groups: tuple, n_out: int, bias_log2: int, first: np.ndarray,
              basis: np.ndarray) -> tuple[np.ndarray, int]:
    """The spline accumulators as the pair kernel computes them, and the largest lane sum of one split:
    words ``[I, P, NB]``, decode ``first`` [N, I] and ``basis`` [N, I, K1] -> ([N, O] int64, peak).
    Mirrors the C (uint32 arithmetic modulo 2**32) so tests compare it with the reference."""
    mask = (1 << 32) - 1
    n, n_in = first.shape
    pairs = coef_words.shape[1]
    lo = np.zeros((n, pairs), np.int64)
    hi = np.zeros((n, pairs), np.int64)
    peak = 0
    for i in range(n_in):
        for group in groups:
            low = np.zeros((n, pairs), np.int64)
            high = np.zeros((n, pairs), np.int64)
            for j in group:
                words = coef_words[i][:, first[:, i] + j].T.astype(np.int64)  # [N, P]
                low += basis[:, i, j][:, None] * (words & 0xFFFF)
                high += basis[:, i, j][:, None] * (words >> 16)
            peak = max(peak, int(low.max(initial=0)), int(high.max(initial=0)))
            t = (low + (high << 16)) & mask  # the C's uint32 product sum
            lo = (lo + t) & mask
            hi = (hi + (t >> 16)) & mask
    correction = (basis.sum(axis=(1, 2)).astype(np.int64) << bias_log2)[:, None]
    low = (lo - (hi << 16) - correction) & mask
    high = (hi - correction) & mask
    out = np.stack([low, high], axis=2).reshape(n, 2 * pairs)[:, :n_out]
    return np.where(out >= 1 << 31, out - (1 << 32), out), peak


def pair_blocks(n_out: int) -> list:
    """(first pair, pairs) passes over the inputs: :data:`PAIR_OUTPUTS_PER_PASS` outputs per pass."""
    pairs, per_pass = -(-n_out // 2), PAIR_OUTPUTS_PER_PASS // 2
    return [(start, min(per_pass, pairs - start)) for start in range(0, pairs, per_pass)]


def pair_base_blocks(n_out: int) -> list:
    """(first, count) passes of the base branch next to a pair layer on cores without SIMD: as many
    outputs per pass as the pair passes (16 accumulators, one load of 4 base values per group)."""
    return [(start, min(PAIR_OUTPUTS_PER_PASS, n_out - start)) for start in range(0, n_out, PAIR_OUTPUTS_PER_PASS)]


def pair_context(ql, layout) -> dict:
    """Render data of the halfword and pair kernels (templates/kernels/spline_halfword.c.j2 ``pair_block``):
    the decode's row stride per input (elements), the pair passes, slot groups, the decode entry's fields,
    and the requantization's shifts inline (pair layers only)."""
    pair, n_out = layout.kind == "pair", ql.out_features
    stride = layout.coef[0].size if layout.kind in ("halfword", "pair") and not layout.aligned else n_out * ql.n_basis
    return {"row_stride": stride, "pair_blocks": pair_blocks(n_out), "lane_groups": layout.lane_groups,
            "pair_base_blocks": pair_base_blocks(n_out), "pair_sum_shift": layout.row_sum_shift,
            "pair_first_mask": (1 << layout.row_sum_shift) - 1, "pair_sum_mask": ROW_SUM_MASK,
            "straight_requant": [int(v) for v in ql.shift] if pair else []}


def pair_table_comment(ql, layout) -> str:
    """The C comment of a pair layer's coefficient table."""
    bias = 1 << layout.bias_log2
    return (f"[{ql.in_features}][{layout.coef.shape[1]}][{ql.n_basis}] words: coefficient of output 2p + {bias} | "
            f"that of output 2p + 1 + {bias} << 16, {ql.coef_bits} bit, per-output scale")
