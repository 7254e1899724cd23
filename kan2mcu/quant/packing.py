"""Bit packing of low-bit tables (layout in docs/arithmetic.md, section "Packed tables").

Element ``n`` of a table packed at ``bits`` (2..8) occupies bits ``n*bits .. n*bits+bits-1`` of
a little-endian bit stream (bit 0 = least significant bit of byte 0). Signed values are stored in
two's complement within their field. One guard byte follows the data so that the C reader, which
loads a 16-bit window ``byte[n*bits/8] | byte[n*bits/8 + 1] << 8``, never reads past the array.
At 8 bits a table is a plain ``int8_t``/``uint8_t`` array (no guard byte, direct indexing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackedTable:
    """Bytes of a packed table, ready to render; ``count`` elements of ``bits`` each."""

    data: tuple[int, ...]  # byte values as the C array holds them (int8 values when direct signed)
    count: int
    bits: int
    signed: bool

    @property
    def direct(self) -> bool:
        """8-bit tables are indexed directly, without unpacking."""
        return self.bits == 8

    @property
    def ctype(self) -> str:
        if self.direct:
            return "int8_t" if self.signed else "uint8_t"
        return "uint8_t"

    @property
    def nbytes(self) -> int:
        return len(self.data)


def pack(values: np.ndarray, bits: int, signed: bool) -> PackedTable:
    """Pack integer ``values`` (flattened in C order) at ``bits`` each; range-checked."""
    flat = np.asarray(values, dtype=np.int64).reshape(-1)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if flat.size and (flat.min() < low or flat.max() > high):
        raise ValueError(f"values {flat.min()}..{flat.max()} do not fit {bits} {'signed' if signed else 'unsigned'} bits")
    if bits == 8:
        return PackedTable(tuple(int(v) for v in flat), int(flat.size), bits, signed)
    fields = flat & ((1 << bits) - 1)
    bit_matrix = ((fields[:, None] >> np.arange(bits)[None, :]) & 1).astype(np.uint8).reshape(-1)
    n_bytes = (bit_matrix.size + 7) // 8 + 1  # + guard byte
    padded = np.zeros(n_bytes * 8, np.uint8)
    padded[: bit_matrix.size] = bit_matrix
    data = np.packbits(padded.reshape(-1, 8), axis=1, bitorder="little").reshape(-1)
    return PackedTable(tuple(int(v) for v in data), int(flat.size), bits, signed)


def unpack(table: PackedTable) -> np.ndarray:
    """Inverse of :func:`pack` (used by tests and the integer reference's self-check)."""
    data = np.asarray(table.data, dtype=np.int64)
    if table.direct:
        return data.copy()
    raw = np.frombuffer(bytes(int(v) & 0xFF for v in data), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[: table.count * table.bits].reshape(table.count, table.bits)
    values = (bits.astype(np.int64) << np.arange(table.bits)[None, :]).sum(axis=1)
    if table.signed:
        sign = 1 << (table.bits - 1)
        values = (values ^ sign) - sign
    return values
