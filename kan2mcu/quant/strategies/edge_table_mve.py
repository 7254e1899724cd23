"""Helium (MVE) layout of an edge-table layer, for Cortex-M55/M85 (kernel:
templates/kernels/edge_table_mve.c.j2, compiled where ``__ARM_FEATURE_MVE`` is set).

A table row is ``row_bytes`` little-endian bytes: byte ``k`` is entry ``k`` (byte entries) or
entries ``2k`` (low nibble) and ``2k + 1`` (high nibble). One ``VLDRB.U16`` widens 8 of those
bytes into the eight 16-bit lanes of a vector accumulator, one ``VADD.I16`` sums them: 2
instructions per 8 byte entries (0.25 per edge), plus an AND and a shift for nibbles. The lanes
are the same 16-bit sums as the scalar kernel's (same chunks, so none can overflow), so the
results are bit-exact with the Python reference.

Decisions made here, not in the template:

* the byte offsets of the 8-byte loads of a row: every 8 bytes, the last load moved back to end
  at the row's end (it re-reads a few entries, whose sums are the same, instead of reading past
  the row); rows under 8 bytes use one load predicated on their length;
* which loads share a pass over the inputs (at most 4 accumulators of the 8 Q registers);
* the turns of the input loop: 8 inputs per turn (4 with 32-bit offsets), their row offsets
  computed in one vector and read lane by lane, then a predicated turn for the rest;
* where each load's lanes are stored so that the lane buffer is in output order;
* the groups of 4 outputs of the vectorized requantization (the last one predicated).

Halfword entries (9..16 bits) and multiply-free layers keep the scalar kernel (None here).
"""
from __future__ import annotations

VECTOR_BYTES = 8  # bytes widened into one uint16x8_t
MAX_ACCUMULATORS = 4  # vector accumulators per pass: of 8 Q registers, the others hold a load, the
# row offsets of 8 inputs, the next offsets and the clamp (or nibble mask) constant


def load_offsets(row_bytes: int) -> list[int]:
    """Byte offsets of the 8-byte loads covering a row (the last one ending at the row's end)."""
    if row_bytes <= VECTOR_BYTES:
        return [0]
    offsets = list(range(0, row_bytes, VECTOR_BYTES))
    offsets[-1] = min(offsets[-1], row_bytes - VECTOR_BYTES)
    return offsets


def mve_context(ql) -> dict | None:
    """Render data of the Helium kernel of edge-table layer ``ql``, or None when it keeps the
    scalar kernel (halfword entries, multiply-free requantization)."""
    if ql.per_word == 2 or getattr(ql, "mul_free", False):
        return None
    nibbles = ql.per_word == 8
    per_byte = 2 if nibbles else 1
    row_bytes = ql.row_words * 4
    offsets = load_offsets(row_bytes)
    per_pass = MAX_ACCUMULATORS // per_byte
    loads = [{"id": n, "offset": off, "store": off * per_byte} for n, off in enumerate(offsets)]
    passes = [loads[n:n + per_pass] for n in range(0, len(loads), per_pass)]
    lanes = max(VECTOR_BYTES, row_bytes) * per_byte
    n_out = ql.out_features
    groups = [{"first": g, "count": min(4, n_out - g)} for g in range(0, n_out, 4)]
    lanes_per_turn = _offsets(ql, row_bytes)["lanes"]
    chunks = []
    for start in range(0, ql.in_features, ql.chunk):  # the scalar kernel's chunks: no lane overflows
        end = min(start + ql.chunk, ql.in_features)
        full_end = start + (end - start) // lanes_per_turn * lanes_per_turn
        chunks.append({"start": start, "full_end": full_end, "tail": end - full_end, "first": start == 0})
    return {"nibbles": nibbles, "row_bytes": row_bytes, "stride": ql.codes * row_bytes, "passes": passes,
            "chunks": chunks,
            "predicate": row_bytes if row_bytes < VECTOR_BYTES else 0, "lanes": max(lanes, 4 * len(groups)),
            "groups": groups, "store": _store(ql), "offsets": _offsets(ql, row_bytes)}


def _store(ql) -> dict:
    """The narrowing store of 4 requantized int32 lanes into the layer's output type."""
    if ql.is_last:
        return {"fn": "vstrwq", "ctype": "int32_t"}
    if ql.out_max <= 0xFF:
        return {"fn": "vstrbq", "ctype": "int8_t"}
    return {"fn": "vstrhq", "ctype": "int16_t"}


def _offsets(ql, row_bytes: int) -> dict:
    """How the per-input row offsets are computed, 8 (uint16) or 4 (uint32, tables over 64 KiB)
    inputs per vector: ``offs[i] = code_i * row_bytes + i * codes * row_bytes``."""
    stride = ql.codes * row_bytes
    wide = wide_offsets(ql.in_features, stride)
    lanes = 4 if wide else 8
    suffix = "u32" if wide else "u16"
    ramp = ", ".join(str(k * stride) for k in range(lanes))
    return {"ctype": "uint32_t" if wide else "uint16_t", "vtype": f"uint{32 if wide else 16}x{lanes}_t",
            "suffix": suffix, "lanes": lanes, "vctp": "vctp32q" if wide else "vctp16q",
            "load": f"vldr{'b' if ql.act_bits <= 8 else 'h'}q_{suffix}",
            "load_z": f"vldr{'b' if ql.act_bits <= 8 else 'h'}q_z_{suffix}",
            "ramp": ramp}



def wide_offsets(n_in: int, stride: int) -> bool:
    """Row offsets need 32 bits (4 per vector instead of 8) when the table exceeds 64 KiB."""
    return n_in * stride > 0xFFFF


def extra_cost(n_in: int, n_out: int, in_bits: int, table_bits: int) -> float:
    """Instructions the Helium kernel spends beyond the shared cost terms: about 0.55 per input for
    32-bit row offsets (digits layer 0: 830 against 795 instructions at 8-bit against 5-bit codes)."""
    from kan2mcu.quant.strategies.edge_table import padded_outputs, entries_per_word  # pylint: disable=import-outside-toplevel

    if entries_per_word(table_bits) == 2:
        return 0.0  # halfword entries: the scalar kernel
    row_bytes = padded_outputs(n_out, table_bits) // entries_per_word(table_bits) * 4
    return 0.55 * n_in if wide_offsets(n_in, (1 << in_bits) * row_bytes) else 0.0
