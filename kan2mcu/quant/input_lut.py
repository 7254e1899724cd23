"""Raw-input codes looked up: one small code table per row when a row's codes change over a short
run of raw values (pixels 0..16, ADC counts of a few bits).

For one threshold row (kan2mcu.quant.input_codec: the uint32 keys of codes 1..max, and the highest code
an int32 reaches), with ``low`` = the code of INT32_MIN, the codes change only between the row's
first reachable threshold ``first`` and its last one. The row's table holds ``low`` followed by the
code of every key from ``first`` to the last threshold; the C code is

    idx = key < first ? 0 : 1 + min(key - first, last)      code = codes[start + idx]

which equals the threshold count on every key (the table is that count, entry by entry). A row
whose code never changes gets ``first`` = 0xFFFFFFFF and both entries ``low``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUT_HEADER_BYTES = 8  # uint32 first, uint16 start, uint16 last
MAX_LUT_ENTRIES = 4096  # per row; beyond that the rule or the thresholds are smaller anyway


@dataclass(frozen=True)
class RawLut:
    """One row's code table: entries ``start .. start + last + 1`` of the shared code array."""

    first: int  # key of the row's first reachable threshold
    start: int
    last: int  # the table's last key offset (its entries cover keys first .. first + last)


def row_table(keys: np.ndarray, top: int) -> np.ndarray | None:
    """The codes of one row: ``low``, then the code of keys first .. last threshold; None when
    longer than MAX_LUT_ENTRIES."""
    keys = np.asarray(keys, np.int64)
    low = int(np.count_nonzero(keys[:top] == 0))
    if top <= low:
        return np.array([low, low], np.int64)
    thresholds = keys[low:top]
    length = int(thresholds[-1] - thresholds[0]) + 1
    if length + 1 > MAX_LUT_ENTRIES:
        return None
    span = thresholds[0] + np.arange(length)
    return np.concatenate([[low], low + np.searchsorted(thresholds, span, side="right")])


def build_luts(rows: np.ndarray, tops: np.ndarray) -> tuple[tuple[RawLut, ...], np.ndarray] | None:
    """(one RawLut per row, the shared code array), or None when a row's table is too long or the
    array outgrows uint16 offsets."""
    luts, chunks, start = [], [], 0
    for keys, top in zip(rows, tops):
        table = row_table(keys, int(top))
        if table is None:
            return None
        low = int(np.count_nonzero(np.asarray(keys[:int(top)], np.int64) == 0))
        first = 0xFFFFFFFF if int(top) <= low else int(keys[low])
        luts.append(RawLut(first=first, start=start, last=len(table) - 2))
        chunks.append(table)
        start += len(table)
    if start > 0xFFFF:
        return None
    return tuple(luts), np.concatenate(chunks)


def lut_codes(lut: RawLut, codes: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Codes of uint32 input keys under ``lut`` (what the C lookup returns)."""
    keys = np.asarray(keys, np.int64)
    index = np.where(keys < lut.first, 0, 1 + np.minimum(keys - lut.first, lut.last))
    return codes[lut.start + index]
