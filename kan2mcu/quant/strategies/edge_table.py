"""Strategy ``edge-table``: every edge's whole function, tabulated at every input code.

For input ``i`` and code ``q``, one row of the table holds the quantized value of every edge
``i -> o`` (base branch, spline and scales included), so a layer is a sum of table reads: per
input one code load and ``ceil(O / 4)`` word loads, each word adding four outputs at once
(UXTAB16 on DSP cores, masked SWAR adds elsewhere; entries wider than 8 bits are halfwords, two
per word, added straight into 32-bit sums). Because it only evaluates the float edge
function at each code, it works for any grid (uniform or not), any spline order and any base
function. Cost: ``I * 2^act_bits * O`` bytes of flash (twice that for halfword entries). Arithmetic: docs/arithmetic.md, section 7.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from kan2mcu.model.bspline import edge_values
from kan2mcu.errors import QuantizationError
from kan2mcu.quant.fixedpoint import INT32_MAX, requant_int32
from kan2mcu.model.ir import KANLayer
from kan2mcu.quant.strategies import edge_table_mve, mulfree
from kan2mcu.quant.strategies.edge_table_kernel import (INLINE_REQUANT_MAX_OUTPUTS, KERNEL_WORDS,
                                                        asm_loop, entries_per_word, padded_outputs, rv32_lane_group,
                                                        rv32_rows, v6m_loop)
from kan2mcu.quant.strategies.levels import level_aligned

NAME = "edge-table"
TEMPLATE = "kernels/edge_table_select.c.j2"  # picks edge_table_mve.c.j2 or edge_table.c.j2 by core
MAX_CODE_BITS = 12  # 4096 table rows per input: regression models that need fine inputs (ADC counts)
KEEP_ROWS_ELEMENTS = 1 << 24  # float64 edge values (128 MiB) kept between quantize_layer's two passes
LANE_MAX = 0xFFFF  # unsigned 16-bit lanes: two outputs per 32-bit word of lane sums


def entry_dtype(table_bits: int):
    """numpy type of the entries: uint8 up to 8 bits (as before halfwords existed), else uint16."""
    return np.uint8 if table_bits <= 8 else np.uint16


@dataclass(frozen=True, eq=False)
class EdgeTableLayer:
    """One edge-table layer. ``table[i, q, o]`` is the biased entry (``round(edge / entry_scale[o])
    + 2^(table_bits-1)``, unsigned) of edge ``i -> o`` at input code ``q``; outputs are padded
    with zero entries to ``out_pad`` (whole words: 4 byte entries, 8 nibble entries when
    ``table_bits <= 4``, 2 halfword entries when ``table_bits >= 9``). ``chunk`` inputs at most are
    summed in 16-bit lanes before the lanes are widened (no lane can overflow); halfword layers
    have no lanes and one chunk of every input."""

    name: str
    in_features: int
    out_features: int
    act_bits: int
    table_bits: int
    in_scale: np.ndarray  # float64 [I]: x = in_scale * (q - in_zero)
    in_zero: np.ndarray  # float64 [I]
    table: np.ndarray  # uint8 (uint16 above 8 bits) [I, Q, out_pad], 0..2^table_bits-1
    chunk: int
    mult: np.ndarray  # int64 [O]: y = (acc * mult + rounding) >> shift, all in int32
    rounding: np.ndarray  # int64 [O]
    shift: np.ndarray  # int64 [O]
    is_last: bool
    out_max: int
    entry_scale: np.ndarray  # float64 [O], for reports
    centre: np.ndarray  # float64 [I, O]: each edge's mid-range, folded into the bias (for plots)
    clipped_entries: int = 0  # entries saturated at codes the calibration data never reaches
    # inputs on one shared encoder (kan2mcu.quant.input_share; first layer only). Omitted when 0.
    shared_inputs: int = field(default=0, metadata={"omit_default": True})
    # with shared inputs: float64 [I] range each input's edges are tabulated on (its own calibrated
    # range; -inf/inf for inputs on their own encoder): codes beyond it hold the range's ends
    in_lo: np.ndarray | None = field(default=None, metadata={"omit_default": True})
    in_hi: np.ndarray | None = field(default=None, metadata={"omit_default": True})
    strategy: str = NAME
    # multiply-free requantization (kan2mcu.strategies.mulfree): [O, 2^b] thresholds of a hidden
    # layer; the last layer's mult is a power of two. Omitted from model.npz when unused.
    mul_free: bool = field(default=False, metadata={"omit_default": True})
    thresholds: np.ndarray | None = field(default=None, metadata={"omit_default": True})

    @property
    def codes(self) -> int:
        return 1 << self.act_bits

    @property
    def out_pad(self) -> int:
        return int(self.table.shape[2])

    @property
    def per_word(self) -> int:
        return entries_per_word(self.table_bits)

    @property
    def row_words(self) -> int:
        return self.out_pad // self.per_word

    def code_inputs(self, codes: np.ndarray) -> np.ndarray:
        """The float inputs [N, I] the table's entries at ``codes`` [N, I] stand for:
        ``in_scale * (codes - in_zero)``, held to ``in_lo``..``in_hi`` where set."""
        x = self.in_scale[None, :] * (np.asarray(codes, np.float64) - self.in_zero[None, :])
        return x if self.in_lo is None else np.clip(x, self.in_lo[None, :], self.in_hi[None, :])

    def words(self) -> np.ndarray:
        """The table as uint32 words, ``[I * Q * row_words]``: entry ``n*w + j`` of a row in bits
        ``b*j .. b*j+b-1`` of word ``w`` (``n`` entries of ``b = 32 / n`` bits per word)."""
        grouped = self.table.astype(np.int64).reshape(self.in_features, self.codes, self.row_words, self.per_word)
        shifts = np.arange(self.per_word, dtype=np.int64) * (32 // self.per_word)
        return (grouped << shifts).sum(axis=3).reshape(-1)


def unsupported(layer: KANLayer) -> str | None:  # pylint: disable=unused-argument
    """Why this strategy cannot compute ``layer``: never (any edge function can be tabulated)."""
    return None


def input_encoding(layer: KANLayer, lo: np.ndarray, hi: np.ndarray, bits: int,
                   samples: np.ndarray | None = None) -> dict:
    """Affine codes per input over the calibrated range (the grid range widened to the data; the
    table needs no grid alignment). An input whose calibration values are a few levels on a common
    step (pixel values, ADC counts) gets codes that land exactly on those levels instead."""
    qmax = (1 << bits) - 1
    scale, zero = np.empty(layer.in_features), np.empty(layer.in_features)
    on_levels = np.zeros(layer.in_features, dtype=bool)
    for i in range(layer.in_features):
        low, high = lo[i], hi[i]
        if samples is not None and len(samples):
            aligned = level_aligned(samples[:, i], qmax, lo[i], hi[i])
            if aligned is not None:
                scale[i], zero[i] = aligned
                on_levels[i] = True
                continue
        scale[i] = max(high - low, 1e-12) / qmax
        zero[i] = -low / scale[i]
    return {"mode": "affine", "scale": scale, "zero": zero, "on_levels": on_levels}


def quantize_layer(layer: KANLayer, enc: dict, options, next_scale: np.ndarray, next_zero: np.ndarray,
                   is_last: bool, out_max: int) -> EdgeTableLayer:
    """Tabulate every edge at every code of its input and derive the int32 requantization."""
    bits, tbits = enc["bits"], enc.get("table_bits") or options.table_bits
    n_in, n_out = layer.in_features, layer.out_features
    q_count = 1 << bits
    out_pad = padded_outputs(n_out, tbits)
    codes = np.arange(q_count, dtype=np.float64)

    def edge_rows(i: int) -> np.ndarray:  # [Q, O] float values of input i's edges at every code
        x = enc["scale"][i] * (codes - enc["zero"][i])
        if "clip_lo" in enc:  # an input on a shared encoder: its edges held at its own range's ends
            x = np.clip(x, enc["clip_lo"][i], enc["clip_hi"][i])
        values = edge_values(layer, i, x)
        if not np.all(np.isfinite(values)):
            q, o = np.argwhere(~np.isfinite(values))[0]
            raise QuantizationError(f"{layer.name}: edge {i}->{o} is not finite at x = {x[q]:.6g} (input code {q}), "
                                    "inside the calibrated input range; a symbolic function undefined there?")
        return values

    # The range each edge must cover: on level-aligned inputs only the levels' codes (splines refit by
    # update_grid can swing far between data levels, and such swings must not set the step of every
    # other edge); the codes between levels saturate, and are counted. Two passes over the inputs
    # (centres and steps, then entries); the edge values of the first are kept for the second up to
    # KEEP_ROWS_ELEMENTS, beyond that evaluated again (memory: one input's rows plus the table).
    seen = observed_codes(enc, q_count, n_in)  # [I, Q] bool
    centre, peak = np.zeros((n_in, n_out)), np.zeros(n_out)
    kept = [] if n_in * q_count * n_out <= KEEP_ROWS_ELEMENTS else None  # small enough: evaluate once
    for i in range(n_in):
        rows = edge_rows(i)
        if kept is not None:
            kept.append(rows)
        observed = rows[seen[i]]
        centre[i] = (observed.max(axis=0) + observed.min(axis=0)) / 2  # into the bias
        peak = np.maximum(peak, np.abs(observed - centre[i]).max(axis=0))
    half = (1 << (tbits - 1)) - 1
    entry_scale = np.where(peak > 0, peak / max(half, 1), 1.0)
    mul_free = bool(getattr(options, "mul_free", False))
    if mul_free and is_last:  # a power-of-two gain: shifts instead of a multiply
        entry_scale = mulfree.pow2_entry_scale(entry_scale, next_scale)
    bias_code = 1 << (tbits - 1)
    table = np.zeros((n_in, q_count, out_pad), entry_dtype(tbits))
    clipped = 0
    for i in range(n_in):
        scaled = np.round(((edge_rows(i) if kept is None else kept[i]) - centre[i]) / entry_scale[None, :])
        clipped += int(np.count_nonzero(np.abs(scaled) > half))
        table[i, :, :n_out] = np.clip(scaled, -half, half).astype(np.int64) + bias_code
    largest = max(int(table.max()), 1)
    acc_low = table[:, :, :n_out].min(axis=1).sum(axis=0, dtype=np.int64)
    acc_high = table[:, :, :n_out].max(axis=1).sum(axis=0, dtype=np.int64)
    if entries_per_word(tbits) == 2:
        # halfwords go straight into 32-bit sums: one chunk, as long as every sum fits int32 (the
        # requantization's (int32_t) cast; requant_int32 checks acc * M too)
        chunk = n_in
        if int(acc_high.max(initial=0)) > INT32_MAX:
            raise QuantizationError(f"{layer.name}: sums of {tbits}-bit entries over {n_in} inputs could exceed "
                                    "int32; use fewer --table-bits")
    else:
        chunk = min(n_in, LANE_MAX // largest)
    mult, rounding, shift, thresholds = _requant(layer, entry_scale, centre, bias_code, acc_low, acc_high, next_scale,
                                                 next_zero, mul_free, is_last, out_max)
    return EdgeTableLayer(name=layer.name, in_features=n_in, out_features=n_out, act_bits=bits, table_bits=tbits,
                          in_scale=enc["scale"], in_zero=enc["zero"], table=table, chunk=int(chunk), mult=mult,
                          rounding=rounding, shift=shift, is_last=is_last, out_max=out_max,
                          entry_scale=entry_scale, centre=centre, clipped_entries=clipped, mul_free=mul_free,
                          shared_inputs=int(enc.get("shared_inputs", 0)),
                          in_lo=enc.get("clip_lo"), in_hi=enc.get("clip_hi"),
                          thresholds=thresholds)


def _requant(layer: KANLayer, entry_scale, centre, bias_code: int, acc_low, acc_high, next_scale, next_zero,
             mul_free: bool, is_last: bool, out_max: int):
    """The requantization of the entry sums into the next layer's codes (or the outputs): int32
    multiplier, rounding and shift, and the multiply-free thresholds (or None)."""
    gain = entry_scale / next_scale
    offset = (centre.sum(axis=0) + layer.out_bias) / next_scale + next_zero - layer.in_features * bias_code * gain
    thresholds = None
    if mul_free and is_last:
        mult, rounding, shift = mulfree.shift_requant(gain, offset, acc_high, layer.name)
    else:
        mult, rounding, shift = requant_int32(gain, offset, acc_low, acc_high, layer.name)
        if mul_free:
            thresholds = mulfree.code_thresholds(mult, rounding, shift, out_max, acc_high, layer.name)
    return mult, rounding, shift, thresholds


def requantized(qlayer: EdgeTableLayer, layer: KANLayer, next_scale: np.ndarray, next_zero: np.ndarray,
                is_last: bool, out_max: int) -> EdgeTableLayer:
    """``qlayer`` (quantize_layer's result) against another consumer encoding: the table depends on
    the layer's own input codes only, so the planner re-derives only the requantization."""
    n_out, bias_code = qlayer.out_features, 1 << (qlayer.table_bits - 1)
    entries = qlayer.table[:, :, :n_out]
    acc_low = entries.min(axis=1).sum(axis=0, dtype=np.int64)
    acc_high = entries.max(axis=1).sum(axis=0, dtype=np.int64)
    mult, rounding, shift, thresholds = _requant(layer, qlayer.entry_scale, qlayer.centre, bias_code, acc_low,
                                                 acc_high, next_scale, next_zero, qlayer.mul_free, is_last, out_max)
    return dataclasses.replace(qlayer, mult=mult, rounding=rounding, shift=shift, is_last=is_last, out_max=out_max,
                               thresholds=thresholds)


def observed_codes(enc: dict, q_count: int, n_in: int) -> np.ndarray:
    """Per input, the codes whose edge values set the entry step: for an input whose codes sit on
    its calibration levels, exactly the codes those levels take (between levels a spline refit by
    update_grid may swing far, where no data ever goes); every code otherwise (continuous
    activations reach codes the calibration did not, and must not saturate there)."""
    samples = enc.get("samples")
    if samples is None or not len(samples):
        return np.ones((n_in, q_count), dtype=bool)
    codes = np.clip(np.floor(samples / enc["scale"][None, :] + enc["zero"][None, :] + 0.5), 0, q_count - 1)
    codes = codes.astype(np.int64)
    on_levels = enc.get("on_levels", np.zeros(n_in, dtype=bool))
    seen = np.zeros((n_in, q_count), dtype=bool)
    seen[np.arange(n_in)[None, :], codes] = True
    return np.where(on_levels[:, None], seen, True)


def accumulators(layer: EdgeTableLayer, codes: np.ndarray) -> np.ndarray:
    """The sum of table entries per output: [N, I] codes -> [N, O] (exact, as the lanes hold it)."""
    codes = np.minimum(codes.astype(np.int64), layer.codes - 1)
    rows = layer.table[np.arange(layer.in_features)[None, :], codes]  # [N, I, out_pad]
    return rows.sum(axis=1, dtype=np.int64)[:, : layer.out_features]


def run_layer(layer: EdgeTableLayer, codes: np.ndarray) -> np.ndarray:
    """Requantized outputs before saturation ([N, O] int64); the caller clamps."""
    return requantize_sums(layer, accumulators(layer, codes))


def requantize_sums(layer: EdgeTableLayer, acc: np.ndarray) -> np.ndarray:
    """The requantization of accumulators(layer, codes) (the planner shares the sums between consumers)."""
    if layer.thresholds is not None:  # multiply-free: the codes the thresholds give (already in range)
        return mulfree.requantize(layer.thresholds, acc)
    return (acc * layer.mult[None, :] + layer.rounding[None, :]) >> layer.shift[None, :]


def table_bytes(in_features: int, out_features: int, act_bits: int, table_bits: int) -> int:
    """Flash bytes of the table of a layer with these sizes (the cost model's figure)."""
    words = padded_outputs(out_features, table_bits) // entries_per_word(table_bits)
    return in_features * (1 << act_bits) * words * 4


# Cost-model entry. Instructions of one layer = the sum of COSTS[core][term] * cost_terms(...)[term]
# (the terms: cost_terms' docstring). Fitted on QEMU counts of byte (3/4/6-bit codes), nibble and
# halfword layers of five shapes by benchmarks/calibrate_costs.py (least squares of the relative
# errors), all terms at once, after first layers stopped clamping and the Thumb-2 rows took any bias
# from the table pointer: worst / mean fit errors 14% / 3.7% on M0, 11% / 2.8% on M3, 9.6% / 2.2% on
# M4, M7 and M33 (the same counts: the same asm), 17% / 4.7% on rv32ec (the multiply-free layers that
# fit its 16 KiB), 50% / 13% on M55 (halfword layers take the scalar kernel there, which the Helium
# terms cannot fit too); rv32imac's fit predates them (21% worst).
# On Armv6-M the row address comes from the input index (no step of a table pointer): its cost does
# not depend on the code width (row_step is 0 there; row_mul, rows whose bytes are not a power of
# two, costs 5 per input).
WORDS_PER_PASS = {"rv32ec": 2,  # table words per pass over the inputs (nibble words: half), KERNEL_WORDS (4)
                  "cortex-m55": 12}  # on other cores; RV32E: 16 registers; Helium: 6 vector accumulators of 2 words
RV32_GROUP_SAVING = 3.0  # RV32 byte-lane groups: instructions saved per word of a row summed into a group
RV32_NIBBLE_FLUSH = 10.0  # RV32 nibble rows: instructions per word of each group's widening
# RV32 nibble rows: per output, the rest (lanes of four sums per word); fitted on the digits layers at 3 and
# 4 bits (QEMU: 1,092 / 1,060 and 323 / 323 instructions; predicted 1,091 / 1,052 and 331 / 321)
RV32_NIBBLE_OUTPUT = 5.6
CODE_BYTES = 240  # one edge-table kernel at -O2, about (plus the straight-line asm of small layers on DSP cores)
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33")  # byte entries: LDRD + UXTAB16 asm (straight-line or looped)
_M0 = {"layer": 9.13, "input_pass": -6.33, "word": 10.54, "output": 12.58,
       "last_output": -2.02, "nibble_word": 8.46, "halfword_word": -0.75, "row_step": 0.0,
       "row_mul": 4.95, "looped_pass": 0.0, "asm_input": 14.08, "asm_word": -5.64}
# M4, M7 and M33: the same asm, the same counts
_DSP = {"layer": 3.75, "input_pass": 2.72, "word": 4.68, "output": 5.03,
        "last_output": -0.11, "nibble_word": 0.36, "halfword_word": -0.97, "row_step": 1.07,
        "row_mul": 1.61, "looped_pass": 0.28, "asm_input": 0.11, "asm_word": -2.44}
COSTS = {
    "cortex-m0": _M0,
    "cortex-m0plus": _M0,
    "cortex-m3": {"layer": 7.5, "input_pass": 2.17, "word": 6.25, "output": 4.85,
                  "last_output": -0.41, "nibble_word": 1.38, "halfword_word": -2.49, "row_step": 0.64,
                  "row_mul": 2.12, "looped_pass": 0.0, "asm_input": 0.38, "asm_word": -3.02},
    "cortex-m4": _DSP,
    "cortex-m7": _DSP,
    "rv32imac": {"layer": 20.05, "input_pass": 6.51, "word": 5.32, "output": 9.44,
                 "last_output": -5.01, "nibble_word": 1.95, "halfword_word": -1.11, "row_step": 0.88,
                 "row_mul": 2.06, "looped_pass": 0.0, "asm_input": -6.03, "asm_word": 0.38},
    "cortex-m33": _DSP,
}
# rv32ec: the C kernel in narrow passes (2 words) with the threshold requantization (the RV32 asm needs
# more than RV32E's 16 registers); Cortex-M55: the Helium kernel. The asm kernels' terms are 0 on both.
_NO_ASM = {"row_step": 0.0, "row_mul": 0.0, "looped_pass": 0.0, "asm_input": 0.0, "asm_word": 0.0}
COSTS["rv32ec"] = {"layer": -7.52, "input_pass": -0.05, "word": 7.73, "output": 41.03,
                   "last_output": -17.97, "nibble_word": 0.78, "halfword_word": 0.0, **_NO_ASM, "row_mul": 2.14}
COSTS["cortex-m55"] = {"layer": 59.15, "input_pass": 2.32, "word": 1.36, "output": -0.5,
                       "last_output": -0.69, "nibble_word": 2.78, "halfword_word": 1.74, **_NO_ASM, "row_mul": 2.29}


def asm_kernel(n_in: int, row_words: int, in_bits: int, table_bits: int, core: str) -> dict | None:
    """The inline-asm kernel of a byte-entry layer of these sizes on ``core`` (None: the C loop):
    ``{"rows": inputs per step of the table pointer (1: no steps), "looped": a loop (DSP cores)}``;
    RV32 has straight-line rows of nibble entries too."""
    if entries_per_word(table_bits) == 8 and core == "rv32imac":
        shape = rv32_rows(n_in, row_words, in_bits)
        return {"rows": shape["rows"], "looped": False} if shape else None
    if entries_per_word(table_bits) != 4:
        return None
    if core in DSP_CORES or core == "cortex-m3":
        shape = asm_loop(n_in, row_words, in_bits)
        if shape is None or core == "cortex-m3" and not shape["unrolled"]:
            return None
        return {"rows": shape["rows"], "looped": not shape["unrolled"]}
    if core.startswith("cortex-m0"):
        return {"rows": 0, "looped": False} if v6m_loop(row_words, in_bits) else None
    if core == "rv32imac":
        shape = rv32_rows(n_in, row_words, in_bits)
        return {"rows": shape["rows"], "looped": False} if shape else None
    return None


def cost_terms(n_in: int, n_out: int, table_bits: int, in_bits: int, core: str, first: bool, last: bool) -> dict:
    """The terms of the edge-table kernel's cost formula (the keys of COSTS[core]): per layer, per
    input and pass (``input_pass``; no clamp term: a first layer's kernel never clamps, the codes API
    tests the codes before it and ``<prefix>_infer_q``, which measure counts, needs no test; ``first``
    is the strategies' common signature), per table
    word, per output; for the inline-asm kernels of byte entries their own per-input and per-word
    terms, one per step of the table pointer (``row_step``: every ``rows`` inputs, more rows with
    fewer code bits; none on Armv6-M, whose rows come from the input index) and per input of a
    looped asm pass; ``row_mul`` per input whose row address is not one shift."""
    per_word = entries_per_word(table_bits)
    nibbles, halfwords = per_word == 8, per_word == 2
    row_words = padded_outputs(n_out, table_bits) // per_word
    passes = -(-row_words // (WORDS_PER_PASS.get(core, KERNEL_WORDS) // (2 if nibbles else 1)))
    asm = asm_kernel(n_in, row_words, in_bits, table_bits, core)
    row_bytes = 4 * row_words
    return {"layer": 1.0, "input_pass": float(n_in * passes), "word": float(n_in * row_words * (2 if nibbles else 1)),
            "output": float(n_out), "last_output": float(n_out * last),
            "nibble_word": float(n_in * row_words * nibbles), "halfword_word": float(n_in * row_words * halfwords),
            "row_step": float(n_in * passes / asm["rows"]) if asm and asm["rows"] else 0.0,
            "row_mul": float(n_in * passes * bool(row_bytes & (row_bytes - 1))),
            "looped_pass": float(n_in * passes * bool(asm and asm["looped"])),
            "asm_input": float(n_in * passes * bool(asm)), "asm_word": float(n_in * row_words * bool(asm))}


def lane_group_saving(n_in: int, n_out: int, table_bits: int, in_bits: int, core: str) -> float:
    """Instructions the RV32 asm rows save by summing the words of several rows in byte lanes before
    widening them (edge_table_kernel.rv32_lane_group), counted from the asm, not fitted (the COSTS
    were fitted on 8-bit entries, one row per group, and nibbles in the C loop): byte entries, per
    word of every row but a group's last, SRLI + AND + ADD fewer (RV32_GROUP_SAVING); nibble entries
    cost a byte word's LW, ADD, SRLI, AND, ADD per word and row (the asm terms) plus 10 per word and
    group (SLLI, SUB, twice ADD, SRLI, AND, ADD), instead of the C loop's second word and nibble
    terms, and RV32_NIBBLE_OUTPUT more per output. 0 on other cores and kernels."""
    per_word = entries_per_word(table_bits)
    if core != "rv32imac" or per_word == 2:
        return 0.0
    row_words = padded_outputs(n_out, table_bits) // per_word
    if asm_kernel(n_in, row_words, in_bits, table_bits, core) is None:
        return 0.0
    group = rv32_lane_group(table_bits)
    if per_word == 8:
        costs = COSTS[core]
        return (n_in * row_words * (costs["word"] + costs["nibble_word"] - RV32_NIBBLE_FLUSH / group)
                - RV32_NIBBLE_OUTPUT * n_out)
    return RV32_GROUP_SAVING * n_in * row_words * (1.0 - 1.0 / group)


def code_bytes(n_in: int, n_out: int, table_bits: int, in_bits: int, core: str) -> int:
    """Flash of the layer's code, about: the kernel, plus the straight-line asm of a small layer
    (per input and pass: code load, clamp, address; per word: Thumb-2 a half LDRD and two 4-byte
    instructions, RV32 a load and four instructions, 4 bytes each; RV32 tests the codes at once, no
    clamp per input)."""
    per_word = entries_per_word(table_bits)
    row_words = padded_outputs(n_out, table_bits) // per_word
    shape = asm_kernel(n_in, row_words, in_bits, table_bits, core)
    if not shape or shape["looped"] or not shape["rows"]:  # the C loop, an asm loop, the Armv6-M loop
        return CODE_BYTES
    passes = -(-row_words // KERNEL_WORDS)
    if core == "rv32imac":
        return CODE_BYTES + 4 * n_in * (3 * passes + 4 * row_words)
    return CODE_BYTES + 4 * n_in * (3 * passes + -(-row_words // 2) + 2 * row_words)


def estimate(layer: KANLayer, step, options, core: str, first: bool, last: bool, quantized=None) -> dict:
    """Predicted instructions and flash bytes of this layer as an edge-table layer on ``core``
    (``quantized`` adds nothing: the tables' size follows from the shapes)."""
    tbits = getattr(step, "table_bits", None) or options.table_bits
    terms = cost_terms(layer.in_features, layer.out_features, tbits, step.in_bits, core, first, last)
    instructions = sum(COSTS[core][key] * value for key, value in terms.items())
    instructions -= lane_group_saving(layer.in_features, layer.out_features, tbits, step.in_bits, core)
    if core == "cortex-m55":  # Helium: tables over 64 KiB take 32-bit row offsets, 4 per vector
        instructions += edge_table_mve.extra_cost(layer.in_features, layer.out_features, step.in_bits, tbits)
    if getattr(options, "mul_free", False):
        # multiply-free: a last layer reads (lshift, rounding, shift) per output; a hidden one reads
        # code thresholds instead, counted by costmodel.mul_free_extra_bytes
        requant = (1 + 4 + 1) * layer.out_features if last else 0
    else:
        inline = layer.out_features <= INLINE_REQUANT_MAX_OUTPUTS
        requant = (8 if inline else 9) * layer.out_features  # table bytes
    flash = (table_bytes(layer.in_features, layer.out_features, step.in_bits, tbits) + requant
             + code_bytes(layer.in_features, layer.out_features, tbits, step.in_bits, core))
    return {"instructions": max(int(round(instructions)), 1), "flash_bytes": int(flash)}
