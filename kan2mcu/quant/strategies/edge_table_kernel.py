"""The shape of the edge-table kernel (templates/kernels/edge_table*.c.j2) for one layer: passes of
table words over the inputs, the lane expressions, the requantization, and the per-core inline-asm
loops (Cortex-M4/M7: LDRD + UXTAB16, straight-line for small layers; Cortex-M3: the same with
whole-word sums; Armv6-M: lanes kept in registers; RV32: straight-line rows). ``ql`` is an
EdgeTableLayer (kan2mcu.quant.strategies.edge_table, which imports this module for its cost terms;
so does edge_table_mve: this module imports neither).
Every number the templates print is decided here; the integer sums are those of
kan2mcu.quant.strategies.edge_table.accumulators on every core. Layouts: docs/arithmetic.md, section 7.
"""
from __future__ import annotations

import numpy as np

KERNEL_WORDS = 4  # table words summed per pass over the inputs: 8 lane accumulators (nibbles: 2 words, 4 parts)
LDRD_MAX_OFFSET = 1020  # Thumb-2 LDRD immediate offsets: multiples of 4 up to 1020
LDR_MIN_OFFSET, LDR_MAX_OFFSET = -255, 4095  # Thumb-2 LDR immediate offsets
ADDW_MAX = 4095  # Thumb-2 ADDW immediate
LW_MIN_OFFSET, LW_MAX_OFFSET = -2048, 2047  # RV32 load offsets
RV32_STEP = 4096  # RV32: the table pointer's step at most (the same constants at every code width)
MAX_ASM_ROWS = 8  # input rows per iteration of the asm loop, at most
UNROLL_MAX_INPUTS = 64  # up to this many inputs, the asm is straight-line (about 50 bytes of code per input and pass)
INLINE_REQUANT_MAX_OUTPUTS = 16  # up to this many outputs, requantization is straight-line (no loop); 32 live sums made GCC (hard-float ABI) fail the asm rows
NARROW_WORDS = 2  # RV32E (16 registers): table words per pass (nibbles: 1)
BYTE_LANE_MAX = 255  # RV32: rows summed in byte lanes before widening, as long as no lane can carry
HALFWORD_MIN_BITS = 9  # from here on entries are halfwords, summed in 32-bit accumulators (no lanes)


def entries_per_word(table_bits: int) -> int:
    """Entries in one 32-bit table word: nibbles (2..4 bits, half the flash of bytes), bytes
    (5..8 bits) or halfwords (9..16 bits, twice the flash of bytes)."""
    if table_bits >= HALFWORD_MIN_BITS:
        return 2
    return 8 if table_bits <= 4 else 4


def padded_outputs(out_features: int, table_bits: int) -> int:
    """Outputs rounded up to whole table words."""
    per_word = entries_per_word(table_bits)
    return -(-out_features // per_word) * per_word


def lane_values(ql, parts: int, macro: str, split: bool = False) -> list[list[dict]]:
    """Per table word, ``{"output", "value"}``: the C expression of each output's sum from the
    word's accumulators ``e{w}_{part}``/``o{w}_{part}``. Bytes and nibbles: a part's byte ``k`` holds
    entry ``parts * k + part``, in 16-bit lane ``k // 2`` of the even (k even, ``<macro>_EVEN``) or odd sums.
    Halfwords: ``e`` sums whole words and ``o`` the high halves; the low sum is ``e - (o << 16)``.
    ``split``: the even sums are masked lane sums already (``<macro>_NIBBLES_SPLIT``, RV32E)."""
    halfwords = ql.per_word == 2
    lanes = []
    for w in range(ql.row_words):
        word_lanes = []
        for j in range(ql.per_word):
            output = ql.per_word * w + j
            if output >= ql.out_features:
                continue
            if halfwords:  # a last word whose high entry is padding (zero) needs no correction
                value = f"o{w}_0" if j == 1 else (
                    f"e{w}_0" if output + 1 >= ql.out_features else f"e{w}_0 - (o{w}_0 << 16)")
            else:
                part, byte = j % parts, j // parts
                lane = f"o{w}_{part}" if byte % 2 else (f"e{w}_{part}" if split
                                                        else f"{macro}_EVEN(e{w}_{part}, o{w}_{part})")
                value = f"({lane}){' >> 16' if byte >= 2 else ' & 0xFFFFu'}"
            word_lanes.append({"output": output, "value": value})
        lanes.append(word_lanes)
    return lanes


def kernel_context(ql, macro: str) -> dict:
    """The kernel's shape for one layer: passes of up to KERNEL_WORDS words over each chunk of
    inputs (a pointer loop, the row pointer computed once per input), the lane expressions, and the
    requantization (straight-line for small layers, else a loop over tables); ``blocks_narrow``:
    the passes on RV32E (fewer words, no spills).
    ``macro``: the model's C macro prefix (``KAN``)."""
    nibbles, halfwords = ql.per_word == 8, ql.per_word == 2
    parts = [{"id": 0, "shift": 0, "mask": "0x0F0F0F0Fu"}, {"id": 1, "shift": 4, "mask": "0x0F0F0F0Fu"}] \
        if nibbles else [{"id": 0, "shift": 0, "mask": None}]
    per_pass = KERNEL_WORDS // len(parts)
    summed = (f"halfwords summed in 32-bit accumulators over all {ql.in_features} inputs" if halfwords
              else f"lanes widened every {ql.chunk} inputs")
    # multiply-free layers (kan2mcu.quant.strategies.mulfree) requantize from acc[] in a loop
    inline = ql.out_features <= INLINE_REQUANT_MAX_OUTPUTS and not getattr(ql, "mul_free", False)
    acc = [f"a{o}" if inline else f"acc[{o}]" for o in range(ql.out_features)]
    L = {"description": f"codes {ql.act_bits} bit, one row of {ql.out_pad} entries ({ql.table_bits} bit, biased by "
                        f"{1 << (ql.table_bits - 1)}, {ql.per_word} per word) per input and code; {summed}",
         "codes": ql.codes, "act_bits": ql.act_bits, "row_words": ql.row_words, "stride": ql.codes * ql.row_words,
         "parts": parts, "add": "HALVES_ADD" if halfwords else "LANES_ADD", "inline_requant": inline, "acc": acc,
         "out_bits": int(ql.out_max).bit_length(), "lanes": lane_values(ql, len(parts), macro),
         "chunks": [{"start": s, "end": min(s + ql.chunk, ql.in_features), "first": s == 0}
                    for s in range(0, ql.in_features, ql.chunk)],
         "blocks": [_block(w, min(w + per_pass, ql.row_words)) for w in range(0, ql.row_words, per_pass)]}
    narrow = max(NARROW_WORDS // len(parts), 1)
    L["blocks_narrow"] = [_block(w, min(w + narrow, ql.row_words)) for w in range(0, ql.row_words, narrow)]
    L["lanes_split"] = lane_values(ql, len(parts), macro, split=nibbles)  # the narrow passes' lanes
    L["dsp_asm"] = len(parts) == 1 and not halfwords  # DSP cores (GCC): byte words by inline asm
    L["asm_loop"] = asm_loop(ql.in_features, ql.row_words, ql.act_bits) if L["dsp_asm"] else None
    L["v6m"] = v6m_loop(ql.row_words, ql.act_bits) if L["dsp_asm"] else None
    L["rv32"] = rv32_rows(ql.in_features, ql.row_words, ql.act_bits) if L["dsp_asm"] or nibbles else None
    if L["rv32"]:  # rows summed whole-word in byte lanes before each widening (entries of 2..7 bits)
        L["rv32"]["group"] = rv32_lane_group(ql.table_bits, int(ql.table.max(initial=0)))
        L["rv32"]["nibbles"] = nibbles  # edge_table_rv32.c.j2: rv32_nibbles, else rv32_unrolled
    L["odd_bytes"] = odd_bytes(ql.out_features, ql.row_words) if L["dsp_asm"] else None
    thumb2 = bool(L["asm_loop"] and L["asm_loop"]["unrolled"])  # the straight-line Thumb-2 asm
    v6m = bool(L["v6m"]) and ql.in_features <= UNROLL_MAX_INPUTS  # the Armv6-M loop (a small copy)
    L["code_check"] = {**code_check(ql.in_features, ql.act_bits), "rv32": bool(L["rv32"]), "thumb2": thumb2,
                       "v6m": v6m} if L["rv32"] or thumb2 or v6m else None
    L["requant_rows"] = [{"acc": acc[o], "shift": int(ql.shift[o])} for o in range(ql.out_features)] if inline else []
    return L


def asm_loop(n_in: int, row_words: int, act_bits: int) -> dict | None:
    """The whole input loop of a byte-entry layer in Thumb-2 asm (LDRD + UXTAB16): as many inputs per
    iteration as LDRD's immediate offsets (+-1020 bytes around t) reach (fewer code bits, shorter
    tables, more rows per iteration: never slower), the row address
    ``t + q * row_bytes`` in one ADD (row bytes a power of two) or two (three times one); None
    (a C loop around the asm rows) for other row sizes."""
    row_bytes = 4 * row_words
    times3 = row_bytes % 3 == 0
    base = row_bytes // 3 if times3 else row_bytes
    if base & (base - 1):
        return None
    stride_bytes = 4 * (1 << act_bits) * row_words
    loads = [ld for w in range(0, row_words, KERNEL_WORDS) for ld in _block(w, min(w + KERNEL_WORDS, row_words))["loads"]]

    def reachable(offset: int) -> bool:  # every load of a row at `offset` bytes from t encodes
        return all(-LDRD_MAX_OFFSET <= offset + ld["offset"] <= LDRD_MAX_OFFSET if len(ld["words"]) == 2
                   else LDR_MIN_OFFSET <= offset + ld["offset"] <= LDR_MAX_OFFSET for ld in loads)

    # rows k = 0 .. rows-1 of an iteration at offsets (k - centre) * stride from t: as many as fit
    rows, centre = 1, 0
    for r in range(2, MAX_ASM_ROWS + 1):
        for c in range(r):
            if r * stride_bytes <= ADDW_MAX and all(reachable((k - c) * stride_bytes) for k in range(r)):
                rows, centre = r, c
                break
    offsets = [(k - centre) * stride_bytes for k in range(rows)]
    return {"rows": rows, "centre": centre, "offsets": offsets, "unrolled": n_in <= UNROLL_MAX_INPUTS,
            "row_lsl": base.bit_length() - 1,
            "row_times3": times3, "code_load": "ldrb" if act_bits <= 8 else "ldrh",
            "code_bytes": 1 if act_bits <= 8 else 2}


def rv32_rows(n_in: int, row_words: int, act_bits: int) -> dict | None:
    """The RV32 straight-line rows of a byte-entry layer of up to UNROLL_MAX_INPUTS inputs (None: the
    C loop): rows per step of the table pointer as far as LW's offsets (-2048..2047) reach around it
    and the step stays within 4096 bytes (so that narrower codes only add rows per step),
    the row address as shifts (row bytes a power of two, or three times one)."""
    row_bytes = 4 * row_words
    times3 = row_bytes % 3 == 0
    base = row_bytes // 3 if times3 else row_bytes
    if n_in > UNROLL_MAX_INPUTS or base & (base - 1):
        return None
    stride = 4 * (1 << act_bits) * row_words
    last = 4 * (min(KERNEL_WORDS, row_words) - 1)
    rows, centre = 1, 0
    for r in range(2, RV32_STEP // 4 + 1):  # steps of at most 4096 bytes: one LUI, whatever the width
        c = r // 2
        if r * stride <= RV32_STEP and -c * stride >= LW_MIN_OFFSET and (r - 1 - c) * stride + last <= LW_MAX_OFFSET:
            rows, centre = r, c
    return {"rows": rows, "centre": centre, "offsets": [(k - centre) * stride for k in range(rows)],
            "row_lsl": base.bit_length() - 1, "row_times3": times3,
            "code_load": "lbu" if act_bits <= 8 else "lhu", "code_bytes": 1 if act_bits <= 8 else 2}


def rv32_lane_group(table_bits: int, largest: int | None = None) -> int:
    """RV32 asm rows: rows whose words are summed whole (one ADD per word) before the byte lanes
    are widened into the 16-bit lane sums (ADD, SRLI, AND, ADD per word), as many as cannot carry
    out of a byte lane: ``255 // (2^table_bits - 1)`` (8-bit entries 1, 7-bit 2, 6-bit 4, 5-bit 8;
    nibbles, whose odd and even nibbles take byte lanes of their own, 4-bit 17, 3-bit 36, 2-bit 85;
    never fewer for narrower entries). ``largest``: the layer's largest entry, checked against it."""
    group = BYTE_LANE_MAX // ((1 << table_bits) - 1)
    if largest is not None and largest * group > BYTE_LANE_MAX:
        raise ValueError(f"entries up to {largest} in {group}-row byte-lane sums would carry")
    return group


def code_check(n_in: int, act_bits: int) -> dict:
    """The asm kernels' test of a first layer's codes (RV32 and Thumb-2 straight-line, the Armv6-M
    loop of up to UNROLL_MAX_INPUTS inputs; used where the caller's codes need a clamp):
    the codes read as aligned 32-bit words, ORed, and masked with the bits no code up to the top
    code sets (``mask``, per code in the word); codes left after the last whole word (``tail``) are
    ORed one by one. Nonzero (or codes not 4-byte aligned): the codes are clamped into a copy first,
    so that the asm rows need no clamp (USAT on Thumb-2) per input."""
    code_bits = 8 if act_bits <= 8 else 16
    per_word = 32 // code_bits
    lane = ((1 << code_bits) - 1) & ~((1 << act_bits) - 1)
    mask = sum(lane << (code_bits * k) for k in range(per_word))
    words = n_in // per_word
    return {"words": words, "tail": list(range(words * per_word, n_in)), "mask": f"0x{mask:08X}u"}


def odd_bytes(out_features: int, row_words: int) -> list[str]:
    """Per word of a byte-entry row, how the RV32 asm sums its odd bytes: ``mask`` (``(w >> 8) &
    0x00FF00FF``), ``shift`` (``w >> 8``: a last word whose bytes 2 and 3 are padding, always 0) or
    ``none`` (a last word with one entry: no odd sum)."""
    kinds = ["mask"] * row_words
    real = out_features - 4 * (row_words - 1)  # entries of the last word
    if real <= 2:
        kinds[-1] = "shift" if real == 2 else "none"
    return kinds


def v6m_loop(row_words: int, act_bits: int) -> dict | None:
    """The Armv6-M asm loop of a byte-entry layer: the code index counts up to 0 in bytes (1 per
    byte code, 2 per uint16_t code), the row address ``tend + index * stride / code_bytes + q *
    row_bytes`` with shifts where those factors are powers of two (else MULS); None when a row is
    over 255 bytes and not a power of two (the C loop)."""
    code_bytes = 1 if act_bits <= 8 else 2
    row_bytes, index_stride = 4 * row_words, 4 * (1 << act_bits) * row_words // code_bytes

    def lsl(n: int) -> int | None:
        return n.bit_length() - 1 if n & (n - 1) == 0 else None

    if lsl(row_bytes) is None and row_bytes > 255:
        return None
    return {"row_lsl": lsl(row_bytes), "stride_lsl": lsl(index_stride), "index_stride": index_stride,
            "code_load": "ldrb" if code_bytes == 1 else "ldrh", "code_bytes": code_bytes}


def _block(first: int, end: int) -> dict:
    """Words ``first .. end-1`` of a row, summed in one pass: loaded in pairs (LDRD on Thumb-2)."""
    words = list(range(first, end))
    loads = [{"words": words[k:k + 2], "offset": 4 * (words[k] - first)} for k in range(0, len(words), 2)]
    return {"first": first, "words": words, "loads": loads}


def requant_pairs(ql) -> np.ndarray:
    """The straight-line requantization's table: ``[mult[0], rounding[0], mult[1], ...]`` (int32)."""
    return np.stack([ql.mult, ql.rounding], axis=1).reshape(-1)


