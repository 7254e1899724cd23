"""The spline kernel's view of a layer (how the C stores and reads what kan2mcu.strategies.spline
computes; the integer sums are unchanged) and the spline strategy's cost model.

Layouts are specified in docs/arithmetic.md section 5; the template is templates/kernels/spline.c.j2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kan2mcu.errors import QuantizationError
from kan2mcu.model.ir import KANLayer
from kan2mcu.quant.strategies.spline_pair import (basis_values, lane_groups, pair_fits, pair_words, row_sum_shift,
                                                   row_sums)
from kan2mcu.quant.strategies.spline_reference import SplineLayer, _overlapping_windows, decode_inputs

NIBBLE_OUTPUTS = 8  # outputs per 32-bit word of nibble coefficients


def nibble_slot(p: int) -> int:
    """Nibble of a word holding output ``p`` of its block: outputs 2q and 2q + 1 share lane q
    (nibbles q and q + 4), so a block of r outputs needs only ceil(r / 2) lanes."""
    return p // 2 + 4 * (p % 2)


LANE_MAX = 0xFFFF  # a 16-bit lane of the nibble kernel


@dataclass(frozen=True, eq=False)
class KernelLayout:
    """How the spline kernel stores and reads a layer's coefficients (docs/arithmetic.md §5).

    ``kind == "halfword"`` (:func:`coefficient_storage`: cubic layers with 5..8-bit coefficients):
    ``coef`` is uint16 ``[i][o][k]``, the coefficients biased by ``2**bias_log2``; per input the
    outputs' rows lie side by side, so one address per input (its first live coefficient) reaches
    every output at an immediate offset. DSP cores read the edge's 4 coefficients as two words
    ``(c[f], c[f+1])``, ``(c[f+2], c[f+3])`` and SMLAD them with the input's basis pairs; other
    cores multiply halfword by basis value. ``kind == "nibble"`` (2..4-bit coefficients, any order): word ``[block][i][k]`` holds coefficient ``k`` of input ``i`` for outputs
    ``8 * block + p`` in nibble :func:`nibble_slot` ``(p)``, biased to be unsigned; lanes widened
    every ``chunk`` inputs. ``kind == "byte"``: ``coef`` ``[o][i][k]``, biased bytes. Every layout
    is biased; the kernel subtracts the bias times the sum of all basis values once per output
    (exact: unsigned sums wrap modulo 2**32 at worst and the true sum fits int32).
    """

    kind: str
    coef: np.ndarray  # halfword: uint16 [I, O, n_basis]; nibble: uint32 [blocks, I, n_basis]; byte: uint8 [O, I, n_basis]
    bias_log2: int
    blocks: int
    chunk: int
    weight: np.ndarray  # [groups, O, 4] base-branch weights (base_weight_groups)
    groups: int  # inputs / 4, rounded up
    # halfword, cardinal: per position (input i, code q at pos_start[i] + q) the input's basis word
    # (value j in byte j, grid edges applied) and first coefficient (position_tables)
    pos_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos_card: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos_first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos_base: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # base-function value
    pos_clamped: bool = False  # the tables run on to code 255: the C needs no input clamp
    aligned: bool = False  # halfword, "aligned" layout: coef holds two copies, odd first indices read the second
    weight_bias: int = 0  # Armv6-M's copy of ``weight`` holds every real weight + this (weight_bias_for)
    lane_groups: tuple = ()  # pair layout: basis slots whose products share one lane split (spline_pair)
    row_sum_shift: int = 0  # pair layout: the decode entry carries first | row sum << this

    @property
    def nibble(self) -> bool:
        return self.kind == "nibble"

    @property
    def pos_row(self) -> np.ndarray:
        """Per position, the coefficient index the decode entry carries: the first coefficient, or in
        the aligned layout ``first + (first & 1) * (copy + 1)`` (odd ones read the second copy, which
        starts one halfword later: every edge's 4 coefficients are two word-aligned words, one LDRD)."""
        if self.kind == "pair":  # 4 * first (bytes) | the row's sum of basis values << row_sum_shift (spline_pair)
            return 4 * self.pos_first | (row_sums(self.pos_card, 4) << self.row_sum_shift)
        if not self.aligned:
            return self.pos_first
        n = self.coef.size // 2  # copies of I * O * n_basis halfwords, one pad halfword between them
        return self.pos_first + (self.pos_first & 1) * (n + 1)


def uses_nibbles(coef_bits: int, out_features: int) -> bool:
    """Nibble words for 2..4-bit coefficients, unless the layer has fewer than 4 outputs: then a
    word would hold mostly padding, bigger than bytes and, for one output, slower."""
    return coef_bits <= 4 and out_features >= 4


def coefficient_storage(order: int, coef_bits: int, out_features: int, layout: str | None = None) -> str:
    """Cubic layers: ``halfword`` (the fast kernel: two SMLAD per edge on DSP cores, 2 bytes per
    coefficient at every width), or with ``layout == "compact"`` (the planner's choice when the flash
    budget needs it) ``nibble`` words for 2..4-bit coefficients (:func:`uses_nibbles`). Other orders:
    ``nibble`` for 2..4-bit coefficients, else ``byte``."""
    if uses_nibbles(coef_bits, out_features) and (layout == "compact" or order != 3):
        return "nibble"
    return "halfword" if order == 3 else "byte"


ALIGNED_MAX_INDEX = 0xFFFF  # the aligned layout's coefficient index travels in a decode word's low halfword


def aligned_fits(order: int, n_in: int, n_out: int, n_basis: int) -> bool:
    """Whether a layer may take the aligned layout: cubic, both copies indexed by 16 bits, and an even
    number of halfwords per input (so a row's word alignment follows its first index's parity)."""
    return order == 3 and (n_out * n_basis) % 2 == 0 and 2 * n_in * n_out * n_basis + 1 <= ALIGNED_MAX_INDEX


def compact_differs(order: int, coef_bits: int, out_features: int) -> bool:
    """Whether the compact layout is another layout than the fast one (the planner weighs both)."""
    return coefficient_storage(order, coef_bits, out_features, "compact") != coefficient_storage(
        order, coef_bits, out_features)


def base_weight_order(layer: SplineLayer) -> list[int]:
    """Input order within a group of 4 base-branch weights. Byte weights (--base-bits <= 8) are
    stored as (w0, w2, w1, w3): SXTB16 of the group's word gives the lanes (w0, w1), SXTB16 with
    ROR 8 gives (w2, w3), the pairs SMLAD multiplies with two base values read as one word.
    Halfword weights are already such pairs."""
    return [0, 2, 1, 3] if layer.base_bits <= 8 else [0, 1, 2, 3]


def weight_bias_for(layer: SplineLayer) -> int:
    """Bias of the Armv6-M copy of halfword base-branch weights (9..15 bits): unsigned there, so the
    assembly reads them with LDRH at an immediate offset (Armv6-M has no LDRSH with one); the kernel
    subtracts bias x the sum of the base values once per output (exact modulo 2**32, the true sum fits
    int32). The copy has the same bytes count and ctype as the signed table (it replaces it under
    ``__ARM_ARCH_6M__``). Byte weights and 16-bit ones, and layers too wide for the assembly's weight
    steps (:func:`m0_base_blocks` runs C there, which reads the weights as they are): no copy (bias 0)."""
    if not 8 < layer.base_bits <= 15 or 8 * layer.out_features > M0_ADDS_MAX:
        return 0
    bias = 1 << (layer.base_bits - 1)
    biased = layer.base_weight.astype(np.int64) + bias
    return bias if biased.size and biased.min() >= 0 and biased.max() <= 0x7FFF else 0


def base_weight_groups(layer: SplineLayer, bias: int = 0) -> np.ndarray:
    """Base-branch weights [groups, O, 4]: inputs zero-padded to a multiple of 4 (the padding stays 0),
    real weights plus ``bias``; group g holds inputs 4g .. 4g + 3 of every output (one pointer per
    group, outputs at immediate offsets), each group in :func:`base_weight_order`."""
    groups = -(-layer.in_features // 4)
    padded = np.zeros((layer.out_features, groups * 4), np.int64)
    padded[:, :layer.in_features] = layer.base_weight + bias
    order = base_weight_order(layer)
    return padded.reshape(layer.out_features, groups, 4)[:, :, order].transpose(1, 0, 2).copy()


CLAMP_TABLE_BYTES = 8192  # most flash the decode tables may grow by to absorb a first layer's input clamp
CODE_TYPE_TOP = 255  # codes of at most 8 bits arrive as uint8_t


def position_tables(layer: SplineLayer, clamp: bool = False) -> dict:
    """Cardinal layers: the decode of every input code as one table read (no grid arithmetic in C).

    Inputs that read the same cardinal rows (same ``card_start``) and whose code windows
    ``[offset, offset + Q)`` overlap share one chunk of positions; input ``i``'s code ``q`` is entry
    ``pos_start[i] + q``: its K1 basis values as one word (value j in byte j), its first coefficient
    and its base-function value, exactly as :func:`decode_inputs` gives them (positions outside the
    grid: 0, 0). ``clamp`` (a first layer whose caller may pass codes above the top one): when every
    chunk is one input window and the copies cost at most :data:`CLAMP_TABLE_BYTES`, each chunk runs
    on to code 255 with copies of its top code's entry (``pos_clamped``: the C reads the caller's
    code as it is, no clamp instruction)."""
    q_count = layer.codes
    codes = np.broadcast_to(np.arange(q_count)[:, None], (q_count, layer.in_features))
    first, basis, base = decode_inputs(layer, codes)  # [Q, I], [Q, I, K1], [Q, I]
    words = (basis.astype(np.int64) << (8 * np.arange(layer.k1))[None, None, :]).sum(axis=2)
    groups = [group for rows in sorted(set(layer.card_start.tolist()))
              for group in _overlapping_windows(np.flatnonzero(layer.card_start == rows), layer.in_offset, q_count)]
    single = all(len(set(layer.in_offset[g].tolist())) == 1 for g in groups)
    clamped = clamp and single and len(groups) * (CODE_TYPE_TOP + 1 - q_count) * 7 <= CLAMP_TABLE_BYTES
    start = np.zeros(layer.in_features, np.int64)
    chunks, cursor = [], 0
    for group in groups:
        u_lo = int(layer.in_offset[group].min())
        length = int(layer.in_offset[group].max()) + q_count - u_lo
        chunk = np.zeros((3, CODE_TYPE_TOP + 1 if clamped else length), np.int64)  # card, first, base
        for i in group:
            at = int(layer.in_offset[i]) - u_lo
            chunk[:, at:at + q_count] = words[:, i], first[:, i], base[:, i]
            start[i] = cursor + at
        if clamped:  # codes above the top read the top code's entry
            chunk[:, q_count:] = chunk[:, q_count - 1:q_count]
        chunks.append(chunk)
        cursor += chunk.shape[1]
    pos_card, pos_first, pos_base = np.concatenate(chunks, axis=1)
    # inputs sharing a chunk must agree on every shared position
    idx = start[None, :] + np.arange(q_count)[:, None]
    if not (np.array_equal(pos_card[idx], words) and np.array_equal(pos_first[idx], first)
            and np.array_equal(pos_base[idx], base)):
        raise QuantizationError(f"{layer.name}: inputs sharing decode positions disagree")
    return {"pos_start": start, "pos_card": pos_card, "pos_first": pos_first, "pos_base": pos_base,
            "pos_clamped": clamped}


def kernel_layout(layer: SplineLayer, first: bool = False) -> KernelLayout:
    """The coefficient layout of ``layer``'s C kernel (``first``: the model's first layer, whose
    caller's codes may lie above the top code); the integer sums it computes are unchanged."""
    weight, groups = base_weight_groups(layer), -(-layer.in_features // 4)
    bias_log2 = layer.coef_bits - 1  # stored values 1 .. 2**coef_bits - 1, unsigned
    kind = coefficient_storage(layer.order, layer.coef_bits, layer.out_features, layer.coef_layout)
    if kind != "nibble":
        stored = layer.coef + (1 << bias_log2)
        top = 0xFFFF if kind == "halfword" else 255
        if stored.min() < 0 or stored.max() > top:
            raise QuantizationError(f"{layer.name}: coefficients do not fit biased {kind}s")
        if kind == "byte":
            return KernelLayout(kind, stored, bias_log2, 0, layer.in_features, weight, groups,
                                weight_bias=weight_bias_for(layer))
        clamp = first and layer.codes - 1 < CODE_TYPE_TOP
        positions = position_tables(layer, clamp) if layer.mode == "cardinal" else {}
        rows = stored.transpose(1, 0, 2).astype(np.uint16)
        if layer.coef_layout == "pair" and positions and pair_fits(layer.order, layer.n_basis - layer.k1):
            basis = basis_values(positions["pos_card"], layer.k1)
            return KernelLayout("pair", pair_words(stored), bias_log2, 0, layer.in_features, weight, groups,
                                **positions, weight_bias=weight_bias_for(layer), lane_groups=lane_groups(
                                    basis, int(stored.max())), row_sum_shift=row_sum_shift(layer.n_basis - layer.k1))
        aligned = (layer.coef_layout == "aligned" and bool(positions)
                   and aligned_fits(layer.order, layer.in_features, layer.out_features, layer.n_basis))
        if aligned:  # [copy 1][pad][copy 2]: flat, the C indexes it by the decode's coefficient index
            flat = rows.reshape(-1)
            rows = np.concatenate([flat, np.zeros(1, np.uint16), flat])
        return KernelLayout(kind, rows, bias_log2, 0, layer.in_features, weight, groups, **positions,
                            weight_bias=weight_bias_for(layer), aligned=aligned)
    n_out, n_in = layer.out_features, layer.in_features
    blocks = -(-n_out // NIBBLE_OUTPUTS)
    stored = np.full((blocks * NIBBLE_OUTPUTS, n_in, layer.n_basis), 1 << bias_log2, np.int64)
    stored[:n_out] = layer.coef + (1 << bias_log2)  # padding outputs hold coefficient 0
    if stored.min() < 0 or stored.max() > 15:
        raise QuantizationError(f"{layer.name}: coefficients do not fit biased nibbles")
    nibbles = stored.reshape(blocks, NIBBLE_OUTPUTS, n_in, layer.n_basis)
    words = np.zeros((blocks, n_in, layer.n_basis), np.int64)
    for p in range(NIBBLE_OUTPUTS):
        words |= nibbles[:, p] << (4 * nibble_slot(p))
    # a lane sums basis x stored nibble over the inputs of a chunk: bound it by each input's largest
    # basis-row sum over all codes
    codes = np.broadcast_to(np.arange(layer.codes)[:, None], (layer.codes, n_in))
    _, basis, _ = decode_inputs(layer, codes)
    per_input = int(basis.sum(axis=2).max()) * 15 if basis.size else 0
    chunk = max(1, min(n_in, LANE_MAX // max(per_input, 1)))
    return KernelLayout(kind, words.astype(np.uint32), bias_log2, blocks, chunk, weight, groups,
                        weight_bias=weight_bias_for(layer))


def nibble_sums(layer: SplineLayer, kl: KernelLayout, codes: np.ndarray) -> tuple[np.ndarray, int]:
    """The spline accumulators as the nibble kernel computes them (16-bit lanes widened every chunk,
    bias removed at the end), and the largest lane value reached: [N, I] codes -> ([N, O], int).
    Tests compare the sums with :func:`accumulators` and the lane value with 0xFFFF."""
    first, basis, _ = decode_inputs(layer, codes)
    n = codes.shape[0]
    out = np.zeros((n, layer.out_features), np.int64)
    correction = basis.sum(axis=(1, 2)) << kl.bias_log2
    lane_peak = 0
    for blk in range(kl.blocks):
        acc = np.zeros((n, NIBBLE_OUTPUTS), np.int64)
        for start in range(0, layer.in_features, kl.chunk):
            lanes = np.zeros((n, NIBBLE_OUTPUTS), np.int64)  # lane p: output p of the block
            for i in range(start, min(start + kl.chunk, layer.in_features)):
                for j in range(layer.k1):
                    x = kl.coef[blk, i][first[:, i] + j].astype(np.int64)
                    for p in range(NIBBLE_OUTPUTS):
                        lanes[:, p] += basis[:, i, j] * ((x >> (4 * nibble_slot(p))) & 0xF)
            lane_peak = max(lane_peak, int(lanes.max()))
            acc += lanes
        real = min(NIBBLE_OUTPUTS, layer.out_features - blk * NIBBLE_OUTPUTS)
        out[:, blk * NIBBLE_OUTPUTS: blk * NIBBLE_OUTPUTS + real] = acc[:, :real] - correction[:, None]
    return out, lane_peak


# Outputs per pass of the spline kernel's halfword branch and of its base branch, per kind of core:
# DSP (Cortex-M4/M7: 8 accumulators + operands in 14 registers), narrow (Armv6-M: 8 low registers),
# wide (the rest: RISC-V, Armv7-M without DSP, hosts). Measured on QEMU (docs/arithmetic.md section 5); the render pass and the
# cost terms read them from here.
SPLINE_OUTPUTS_PER_PASS = {"dsp": 8, "narrow": 2, "wide": 8}


def _blocks(total: int, per_pass: int) -> list:
    return [(start, min(per_pass, total - start)) for start in range(0, total, per_pass)]


# Armv6-M's LDRH reaches 62 bytes and ADDS adds at most 255: the assembly block of the halfword branch
M0_LDRH_REACH, M0_ADDS_MAX, M0_OUTPUTS_PER_PASS = 62, 255, 4


def m0_blocks(n_out: int, n_basis: int) -> list:
    """(first, count, byte offset) passes of the Armv6-M assembly block: up to 4 outputs (4 high
    registers), every row read at an immediate offset; offset None: the block is C."""
    per_pass = max(1, min(M0_OUTPUTS_PER_PASS, (M0_LDRH_REACH - 6) // (2 * n_basis) + 1))
    out = []
    for first, count in _blocks(n_out, per_pass):
        offset = 2 * n_basis * first
        fits = offset <= M0_ADDS_MAX and 2 * n_basis * (count - 1) + 6 <= M0_LDRH_REACH
        out.append((first, count, offset if fits else None))
    return out


def m0_base_blocks(n_out: int, biased_halfwords: bool) -> list:
    """(first, count, asm) passes of the Armv6-M base branch: up to 4 outputs (4 high-register
    accumulators), weights read with LDRH at immediate offsets (biased halfword weights only), the
    weight pointer stepped by one ADDS per group (8 x outputs <= 255); else the narrow C passes."""
    if not biased_halfwords or 8 * n_out > M0_ADDS_MAX:
        return [(first, count, False) for first, count in _blocks(n_out, SPLINE_OUTPUTS_PER_PASS["narrow"])]
    return [(first, count, True) for first, count in _blocks(n_out, M0_OUTPUTS_PER_PASS)]


THUMB2_LDR_REACH = 4095  # LDR's immediate offset on Thumb-2: the DSP assembly block reads rows within it
THUMB2_LDRD_REACH = 1020  # LDRD's (aligned layout)


def spline_blocks(n_out: int, n_basis: int, aligned: bool = False) -> dict:
    """(first, count) blocks of the spline kernel's passes over the inputs; DSP blocks carry whether
    the assembly block reaches their rows (else they are C)."""
    blocks = {kind: _blocks(n_out, n) for kind, n in SPLINE_OUTPUTS_PER_PASS.items()}
    reach = (lambda at: at <= THUMB2_LDRD_REACH) if aligned else (lambda at: at + 4 <= THUMB2_LDR_REACH)
    dsp = [(first, count, reach(2 * n_basis * (first + count - 1))) for first, count in blocks["dsp"]]
    return {"row_blocks": blocks, "base_blocks": blocks, "m0_blocks": m0_blocks(n_out, n_basis), "dsp_blocks": dsp}


# Cost-model entry. Instructions of one layer = sum over the terms of cost_terms() of COSTS[core][term]
# x term. Fitted on QEMU counts by benchmarks/calibrate_costs.py. The hw_* terms are the halfword
# kernel's (cubic layers); the others keep the byte/nibble kernel's fit (other orders).
CODE_BYTES = 1400  # one spline kernel at -O2, about
# Byte/nibble terms: worst fit error 7.8% (M0, M7), under 6.5% elsewhere, on 4 shapes x 4 bit settings.
# hw_* terms (non-negative least squares, 4 cubic shapes x 4 bit settings): worst error 2.1-2.9% on
# M3/M4/M7/rv32imac. M0 refitted after its base-branch assembly block (least squares, 5 shapes x 4 bit
# settings, benchmarks/calibrate_costs.py --strategy spline --term hw_*): worst 18.5% (the 8->4 and
# 4->6 layers; the terms are collinear there, hence signs without a per-instruction meaning).
# hw_pair_* (the pair layout against the halfword terms; --term hw_pair_edge --term hw_pair_input
# --term hw_pair_output, 5 shapes x 8/8/8 and 4/3/4): worst error on the pair layers 5.9% rv32imac,
# 12% M4/M7, 20% M3, 36% M0 (its smallest layers).
_M0 = {"layer": -329.92, "input": 109.41, "edge": 17.65, "byte_edge": 12.98,
       "nibble_lane": 2.34, "nibble_pass": 16.15, "output": 142.71, "last_output": -24.1,
       "hw_layer": -1032.6, "hw_input": 67.6, "hw_edge": -30.62, "hw_pass": 10.73,
       "hw_base_pass": 331.87, "hw_output": 365.93, "hw_last_output": -70.47, "hw_aligned_edge": 0.0,
       "hw_pair_edge": 1.66, "hw_pair_input": -36.85, "hw_pair_output": -65.16}
COSTS = {
    "cortex-m0": _M0,
    "cortex-m0plus": _M0,
    "cortex-m3": {"layer": 70.19, "input": 46.92, "edge": 7.8, "byte_edge": 10.59,
                  "nibble_lane": -1.4, "nibble_pass": 19.6, "output": 45.06, "last_output": 0.89,
                  "hw_layer": 29.12, "hw_input": 31.44, "hw_edge": 11.83, "hw_pass": 8.28,
                  "hw_base_pass": 0.0, "hw_output": 35.18, "hw_last_output": 0.0, "hw_aligned_edge": 0.0,
                  "hw_pair_edge": -2.02, "hw_pair_input": -19.33, "hw_pair_output": -23.27},
    "cortex-m4": {"layer": 5.0, "input": 50.93, "edge": 5.74, "byte_edge": 5.09,
                  "nibble_lane": 0.32, "nibble_pass": 16.59, "output": 54.35, "last_output": 1.1,
                  "hw_layer": 110.85, "hw_input": 20.24, "hw_edge": 5.25, "hw_pass": 5.99,
                  "hw_base_pass": 0.0, "hw_output": 22.51, "hw_last_output": 0.48, "hw_aligned_edge": -0.86,
                  "hw_pair_edge": 3.2, "hw_pair_input": -9.25, "hw_pair_output": -12.59},
    "cortex-m7": {"layer": 36.23, "input": 45.61, "edge": 5.83, "byte_edge": 5.22,
                  "nibble_lane": 0.31, "nibble_pass": 18.7, "output": 49.75, "last_output": 1.46,
                  "hw_layer": 109.86, "hw_input": 20.25, "hw_edge": 5.28, "hw_pass": 5.85,
                  "hw_base_pass": 0.0, "hw_output": 21.25, "hw_last_output": 0.0, "hw_aligned_edge": -0.86,
                  "hw_pair_edge": 3.24, "hw_pair_input": -9.41, "hw_pair_output": -12.21},
    "rv32imac": {"layer": 67.01, "input": 58.88, "edge": 11.83, "byte_edge": 9.93,
                 "nibble_lane": 0.95, "nibble_pass": 13.26, "output": 52.94, "last_output": 0.97,
                 "hw_layer": 60.7, "hw_input": 39.41, "hw_edge": 14.92, "hw_pass": 1.52,
                 "hw_base_pass": 33.46, "hw_output": 38.5, "hw_last_output": 4.6, "hw_aligned_edge": 0.0,
                 "hw_pair_edge": -5.01, "hw_pair_input": -14.14, "hw_pair_output": -20.09},
}
# Not fitted: Cortex-M33 has the M4's DSP path, Cortex-M55 runs the scalar DSP path as the M7 does.
# No rv32ec entry: spline layers multiply, and cores without a multiplier take edge tables only.
COSTS["cortex-m33"] = dict(COSTS["cortex-m4"])
COSTS["cortex-m55"] = dict(COSTS["cortex-m7"])
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")  # the SMLAD paths
NARROW_CORES = ("cortex-m0", "cortex-m0plus")  # Armv6-M: the assembly block, narrow base passes


def halfword_passes(n_out: int, core: str, n_basis: int = 8) -> tuple[int, int]:
    """Passes over the inputs of the halfword kernel's spline branch and base branch on ``core``."""
    if core in DSP_CORES:
        return len(_blocks(n_out, SPLINE_OUTPUTS_PER_PASS["dsp"])), len(_blocks(n_out, SPLINE_OUTPUTS_PER_PASS["dsp"]))
    if core in NARROW_CORES:
        return len(m0_blocks(n_out, n_basis)), len(_blocks(n_out, SPLINE_OUTPUTS_PER_PASS["narrow"]))
    return len(_blocks(n_out, SPLINE_OUTPUTS_PER_PASS["wide"])), len(_blocks(n_out, SPLINE_OUTPUTS_PER_PASS["wide"]))


def cost_terms(n_in: int, n_out: int, coef_bits: int, last: bool, core: str = "cortex-m4", order: int = 3,
               n_basis: int = 8, layout: str | None = None) -> dict:
    """The terms of the spline kernel's cost formula. Cubic layers (halfword kernel): decode per
    input, spline and base MACs per edge, per input and pass over the inputs (8 outputs per pass,
    4 on Armv6-M), per group of 4 inputs and base pass, plus the aligned or pair layout's
    differences (per edge; pair also per input and output); other orders: decode per input, base branch
    per edge, byte coefficients per edge, or nibble lanes (per input: 4 per full block of 8
    outputs, one per two outputs of the tail block) and nibble blocks per input. Both:
    requantization per output."""
    edges = n_in * n_out
    terms = dict.fromkeys(COSTS[core], 0.0)
    kind = coefficient_storage(order, coef_bits, n_out, layout)
    if kind == "halfword":
        passes, base_passes = halfword_passes(n_out, core, n_basis)
        aligned = layout == "aligned" and aligned_fits(order, n_in, n_out, n_basis)
        pair = layout == "pair" and pair_fits(order, n_basis - order - 1)
        terms.update(hw_aligned_edge=float(edges) if aligned else 0.0, hw_pair_edge=float(edges) * pair,
                     hw_pair_input=float(n_in) * pair, hw_pair_output=float(n_out) * pair)
        terms.update(hw_layer=1.0, hw_input=float(n_in), hw_edge=float(edges), hw_pass=float(n_in * passes),
                     hw_base_pass=float(-(-n_in // 4) * base_passes), hw_output=float(n_out),
                     hw_last_output=float(n_out * last))
        return terms
    nibble = kind == "nibble"
    full, tail = divmod(n_out, NIBBLE_OUTPUTS)
    terms.update(layer=1.0, input=float(n_in), edge=float(edges), byte_edge=0.0 if nibble else float(edges),
                 nibble_lane=float(n_in * (4 * full + (tail + 1) // 2)) if nibble else 0.0,
                 nibble_pass=float(n_in * (full + (tail > 0))) if nibble else 0.0,
                 output=float(n_out), last_output=float(n_out * last))
    return terms


def decode_position_bytes(layer: SplineLayer, first: bool) -> int:
    """Exact flash of a cardinal halfword layer's decode tables: two words per position (basis
    values; first coefficient and base value) and a start index per input."""
    positions = position_tables(layer, first and layer.codes - 1 < CODE_TYPE_TOP)
    top = int(positions["pos_start"].max(initial=0))
    start_bytes = 1 if top <= 0xFF else 2 if top <= 0xFFFF else 4  # the renderer's narrowest type
    return 8 * len(positions["pos_card"]) + start_bytes * layer.in_features


def estimate(layer: KANLayer, step, options, core: str, first: bool, last: bool, quantized=None) -> dict:
    """Predicted instructions and flash bytes of this layer as a spline layer on ``core``.

    ``quantized`` (the layer as quantized under ``step``, when the planner has it): the decode
    positions of the halfword kernel are counted exactly (the formula assumes that the inputs' code
    windows overlap and share positions; inputs whose ranges lie apart each take their own)."""
    c = COSTS[core]
    n_in, n_out = layer.in_features, layer.out_features
    layout = getattr(step, "coef_layout", None)
    terms = cost_terms(n_in, n_out, options.coef_bits, last, core, layer.order, layer.n_basis, layout)
    instructions = sum(c[key] * value for key, value in terms.items())
    k1, codes = layer.order + 1, 1 << step.in_bits
    kind = coefficient_storage(layer.order, options.coef_bits, n_out, layout)
    if kind == "halfword":  # the aligned layout: two copies; the pair layout: words of two outputs
        copies = 2 if layout == "aligned" and aligned_fits(layer.order, n_in, n_out, layer.n_basis) else 1
        outputs = 2 * -(-n_out // 2) if layout == "pair" and pair_fits(layer.order, layer.n_basis - k1) else n_out
        coef = 2 * copies * outputs * n_in * layer.n_basis
    elif kind == "nibble":  # words of 8 nibbles per block of 8 outputs
        coef = 4 * -(-n_out // NIBBLE_OUTPUTS) * n_in * layer.n_basis
    else:
        coef = n_out * n_in * layer.n_basis
    weights = n_out * 4 * -(-n_in // 4) * (1 if options.base_bits <= 8 else 2)
    if layer.uniform_grid() is None:  # per-input tables: first index + K1 packed values per code
        basis = n_in * codes * (1 + k1 * options.spline_bits / 8)
    elif kind == "halfword":  # per position a basis word and a first index (windows shared), per input a start
        basis = 5 * (codes + n_in) + 2 * n_in
    else:  # one row of K1 bytes per position (at most one per code) + per-input offsets
        basis = codes * k1 + 6 * n_in
    silu_table = 2 * (codes + n_in) + 2 * n_in
    if quantized is not None and kind == "halfword" and quantized.mode == "cardinal":
        basis, silu_table = decode_position_bytes(quantized, first), 0
    flash = coef + weights + basis + silu_table + 17 * n_out + CODE_BYTES
    return {"instructions": max(int(round(instructions)), 1), "flash_bytes": int(flash)}
