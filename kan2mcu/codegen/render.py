"""Render the C sources of a model from the Jinja2 templates (no numeric decisions here)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import jinja2
import numpy as np

from kan2mcu.errors import OptionError, UnsupportedModelError
from kan2mcu.quant.fixedpoint import clamps_caller_codes, code_ctype
from kan2mcu.quant.input_codec import float_api_transform, input_codec, raw_table_bytes, row_index, row_runs
from kan2mcu.model.ir import KANModel
from kan2mcu.quant.packing import PackedTable, pack
from kan2mcu.paths import templates_dir
from kan2mcu.quant.quantize import QuantModel
from kan2mcu.quant.strategies import edge_table_kernel, get_strategy
from kan2mcu.quant.strategies.edge_table_mve import mve_context
from kan2mcu.quant.strategies.mulfree import render_tables as requant_tables
from kan2mcu.quant.strategies.spline_pair import pair_context, pair_table_comment
from kan2mcu.quant.strategies.spline import (NIBBLE_OUTPUTS, base_weight_groups, base_weight_order, kernel_layout,
                                            m0_base_blocks, spline_blocks)

_IDENT = re.compile(r"[^a-z0-9_]")
WS_IN_ENTRY_MAX = 24  # bytes of the halfword spline kernel's per-input scratch entry, at most
WS_PAIR_ENTRY_MAX = 16  # the pair kernel's: two pointers (8 bytes on 32-bit cores, 16 on 64-bit hosts)


def c_prefix(name: str) -> str:
    """The C prefix for a model name: lower-case identifier characters, never starting with a digit."""
    prefix = _IDENT.sub("_", name.lower()).strip("_") or "kan"
    if prefix[0].isdigit():
        prefix = "kan_" + prefix
    return prefix


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _rows(values, per_line: int = 16, fmt=str) -> list[str]:
    items = [fmt(v) for v in values]
    return [", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line)] or ["0"]


def _float_literal(value: float) -> str:
    text = f"{float(value):.9g}"
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text + "f"


def _int_ctype(values: np.ndarray, signed_ok: bool = True) -> str:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for bits in (8, 16, 32):
        if lo >= 0 and hi < (1 << bits):
            return f"uint{bits}_t"
        if signed_ok and lo >= -(1 << (bits - 1)) and hi < (1 << (bits - 1)):
            return f"int{bits}_t"
    return "int64_t"


class _Symbols:
    """Every emitted symbol goes through here: prefixed, and a collision is a hard error."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.seen = prefix, set()

    def __call__(self, name: str) -> str:
        symbol = f"{self.prefix}_{name}"
        if symbol in self.seen:
            raise OptionError(f"two C symbols would both be named {symbol}")
        self.seen.add(symbol)
        return symbol


@dataclass(frozen=True)
class RenderedModel:
    """The generated files (name -> text) and the byte counts the report needs."""

    files: dict
    table_bytes: int
    workspace_bytes: int
    layer_bytes: list  # per layer: {"tables": {...name: bytes}, ...}
    input_api_bytes: int = 0  # the integer input API's threshold tables (always linked with the model)


def _table(symbols: _Symbols, name: str, values, ctype: str, comment: str, fmt=str, per_line: int = 16) -> dict:
    values = list(np.asarray(values).reshape(-1)) if isinstance(values, np.ndarray) else list(values)
    return {"symbol": symbols(name), "ctype": ctype, "length": max(len(values), 1),
            "rows": _rows(values, per_line=per_line, fmt=fmt), "comment": comment, "attributes": "", "armv6m_rows": [],
            "nbytes": max(len(values), 1) * _CTYPE_BYTES[ctype]}


_CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
                "int64_t": 8, "float": 4}


class TableEmitter:
    """What a strategy's render pass uses to declare its tables: every symbol prefixed, every
    table's bytes counted (the report's figures come from here)."""

    def __init__(self, symbols: _Symbols, layer_index: int) -> None:
        self.sym, self.tables, self.prefix = symbols, [], f"l{layer_index}"

    def table(self, key: str, values, ctype: str | None = None, comment: str = "", hex_words: bool = False,
              aligned: bool = False, armv6m=None) -> str:
        """Declare ``static const ctype <prefix>_l<N>_<key>[]``; returns its symbol. ``armv6m``: other
        values of the same count and ctype, compiled instead on Armv6-M (the bytes counted are one set)."""
        values = np.asarray(values).reshape(-1)
        ctype = ctype or _int_ctype(values)
        fmt = str
        if ctype == "int64_t":
            fmt = lambda v: f"INT64_C({int(v)})"  # noqa: E731
        elif hex_words:
            fmt = lambda v: f"0x{int(v):08x}u"  # noqa: E731
        entry = _table(self.sym, f"{self.prefix}_{key}", values, ctype, comment, fmt=fmt,
                       per_line=8 if hex_words else 16)
        entry["attributes"] = " __attribute__((aligned(4)))" if aligned else ""
        if armv6m is not None:
            assert np.asarray(armv6m).size == values.size
            entry["armv6m_rows"] = _rows(list(np.asarray(armv6m).reshape(-1)), per_line=8 if hex_words else 16, fmt=fmt)
        self.tables.append(entry)
        return entry["symbol"]

    def packed(self, key: str, packed: PackedTable, comment: str) -> str:
        """Declare a bit-packed table (kan2mcu.quant.packing)."""
        return self.table(key, packed.data, packed.ctype, comment)


def _spline_context(ql, index: int, emit: TableEmitter) -> dict:
    """Render data of a spline-strategy layer (kernel: templates/kernels/spline.c.j2)."""
    if ql.n_basis - ql.k1 > 255:
        raise OptionError(f"{ql.name}: {ql.n_basis} B-splines per input are more than the C tables index (256)")
    layout = kernel_layout(ql, first=index == 0)
    storage = {"nibble": f"biased by {1 << layout.bias_log2} in nibbles, {NIBBLE_OUTPUTS} outputs per word",
               "byte": f"biased by {1 << layout.bias_log2} in bytes",
               "halfword": f"biased by {1 << layout.bias_log2} in halfwords, the outputs' rows side by side per input",
               "pair": f"biased by {1 << layout.bias_log2}, two outputs per word (16-bit lanes)"}[
                   layout.kind]
    L = {"title": f"layer {index} ({ql.name}): {ql.in_features} -> {ql.out_features}, strategy spline, "
                  f"order {ql.order}, {ql.n_basis} B-splines per input, {ql.mode} basis tables",
         "description": f"codes {ql.act_bits} bit, basis {ql.spline_bits} bit, coefficients {ql.coef_bits} bit "
                        f"({storage}), SiLU {ql.silu_bits} bit, base weights {ql.base_bits} bit",
         "mode": ql.mode, "k1": ql.k1, "order": ql.order, "n_basis": ql.n_basis, "first_max": ql.n_basis - ql.k1,
         "spline_bits": ql.spline_bits, "coef_bits": ql.coef_bits, "nibble": layout.nibble,
         "kind": layout.kind, "act_bits": ql.act_bits, **spline_blocks(ql.out_features, ql.n_basis, layout.aligned),
         "aligned": layout.aligned,
         "chunk": layout.chunk, "bias_log2": layout.bias_log2,
         # nibble blocks: full ones (8 outputs, 4 lanes) in a loop, then a tail using only the lanes it needs
         "full_blocks": ql.out_features // NIBBLE_OUTPUTS, "tail_outputs": ql.out_features % NIBBLE_OUTPUTS,
         "pairs": ql.out_features // 2, "odd": ql.out_features % 2 == 1, **pair_context(ql, layout)}
    # all-zero SiLU-branch weights (--fold-silu): no SiLU table, weights or accumulator
    L["has_base"] = bool(np.any(ql.base_weight))
    L["positions"], L["pos_clamped"] = bool(layout.pos_card.size), layout.pos_clamped
    if L["has_base"] and not L["positions"]:
        L["silu"] = emit.table("silu", ql.silu_table, "int16_t", f"base-function value per code, scale {ql.silu_scale:.6g}")
        L["silu_start"] = emit.table("silu_start", ql.silu_start, _int_ctype(ql.silu_start, False),
                                     "per input: index of code 0 in the SiLU table")
    if L["positions"]:
        L["pos_start"] = emit.table("pos_start", layout.pos_start, _int_ctype(layout.pos_start, False),
                                    "per input: entry of its code 0 in the decode tables")
        entries = np.stack([layout.pos_card, layout.pos_row | ((layout.pos_base & 0xFFFF) << 16)], axis=1)
        L["pos"] = emit.table("pos", entries, "uint32_t",
                              f"per position: {ql.k1} basis values of {ql.spline_bits} bit (value j in byte j, scale "
                              f"{ql.basis_scale:.6g}), then first coefficient | base-function value << 16 (scale "
                              f"{ql.silu_scale:.6g})", hex_words=True, aligned=True)
    elif ql.mode == "cardinal":
        L["offset"] = emit.table("offset", ql.in_offset, None, "per input: knot-relative position of code 0")
        L["log2p"] = emit.table("log2p", ql.in_log2p, "uint8_t", "per input: log2 of codes per grid interval")
        L["limit"] = emit.table("limit", ql.in_limit, _int_ctype(ql.in_limit, False),
                                "per input: positions inside the extended grid")
        L["card_start"] = emit.table("card_start", ql.card_start, _int_ctype(ql.card_start, False),
                                     "per input: first row of its cardinal table")
        L["card"] = emit.table("card", ql.card, "uint8_t", f"cardinal B-spline rows of {ql.k1} values, "
                                                          f"{ql.spline_bits} bit, scale {ql.basis_scale:.6g}")
    else:
        basis = pack(ql.basis_table, ql.spline_bits, signed=False)
        L["first"] = emit.table("first", ql.first_table, "uint8_t", "per input and code: first coefficient")
        L["basis"] = emit.packed("basis", basis, f"per input and code: {ql.k1} basis values, "
                                                 f"{ql.spline_bits} bit, scale {ql.basis_scale:.6g}")
        L["basis_direct"] = basis.direct
    if layout.kind == "halfword":
        L["coef"] = emit.table("coef", layout.coef, "uint16_t", f"{'two copies (odd first indices: the second), ' if layout.aligned else ''}[{ql.in_features}][{ql.out_features}][{ql.n_basis}] "
                               f"coefficients, {ql.coef_bits} bit + {1 << layout.bias_log2}, per-output scale",
                               aligned=True)
    elif layout.kind == "pair":
        L["coef"] = emit.table("coef", layout.coef, "uint32_t", pair_table_comment(ql, layout), hex_words=True, aligned=True)
    elif layout.nibble:
        L["coef"] = emit.table("coef", layout.coef, "uint32_t",
                               f"[{layout.blocks}][{ql.in_features}][{ql.n_basis}] words: nibble p // 2 + 4 * (p % 2) "
                               f"= coefficient of output {NIBBLE_OUTPUTS} * block + p, {ql.coef_bits} bit "
                               f"+ {1 << layout.bias_log2}",
                               hex_words=True, aligned=True)
    else:
        L["coef"] = emit.table("coef", layout.coef, "uint8_t", f"[{ql.out_features}][{ql.in_features}][{ql.n_basis}] "
                               f"coefficients, {ql.coef_bits} bit + {1 << layout.bias_log2}, per-output scale")
    if L["has_base"]:
        L.update(_base_weight_context(ql, layout, emit))
    L["mult_spline"] = emit.table("mult_spline", ql.mult_spline, "int32_t",
                                  "requantization multiplier of the spline accumulator")
    if L["has_base"]:
        L["mult_base"] = emit.table("mult_base", ql.mult_base, "int32_t",
                                    "requantization multiplier of the SiLU accumulator")
    L["rounding"] = emit.table("rounding", ql.rounding, "int64_t", "bias, zero point and rounding, in units of 2^-shift")
    if layout.kind != "pair":  # pair layers: the shifts inline (straight_requant)
        L["shift"] = emit.table("shift", ql.shift, "uint8_t", "right shift of the requantization")
    return L


def _base_weight_context(ql, layout, emit: TableEmitter) -> dict:
    """The spline kernel's base-branch weights [group][output][4] (Armv6-M: a biased copy, same bytes)."""
    order, bias = base_weight_order(ql), layout.weight_bias
    ctype = _int_ctype(layout.weight)
    comment = (f"[{layout.groups}][{ql.out_features}][4] base-branch weights, {ql.base_bits} bit"
               f"{f' (Armv6-M: + {bias})' if bias else ''}, groups of 4 inputs stored as w{' w'.join(map(str, order))}")
    return {"weight_ctype": ctype, "groups": layout.groups,
            "weight_slot": [order.index(k) for k in range(4)],  # where input k of a group is stored
            "weight_bias_log2": bias.bit_length() - 1, "m0_base_blocks": m0_base_blocks(ql.out_features, bias > 0),
            "weight": emit.table("weight", layout.weight, ctype, comment, aligned=True,
                                 armv6m=base_weight_groups(ql, bias) if bias else None)}


def _edge_table_context(ql, index: int, emit: TableEmitter) -> dict:
    """Render data of an edge-table layer (kernel: templates/kernels/edge_table.c.j2; the kernel's
    shape is decided in kan2mcu.quant.strategies.edge_table_kernel)."""
    L = edge_table_kernel.kernel_context(ql, emit.sym.prefix.upper())
    L["title"] = f"layer {index} ({ql.name}): {ql.in_features} -> {ql.out_features}, strategy edge-table"
    L["table"] = emit.table("table", ql.words(), "uint32_t",
                            f"[{ql.in_features}][{ql.codes}][{ql.row_words}] words of {ql.per_word} entries",
                            hex_words=True, aligned=True)
    if L["inline_requant"]:  # (multiplier, rounding) pairs, shifts inline (the Helium kernel reads them too)
        L["requant"] = "int32"
        L["requant_table"] = emit.table("requant", edge_table_kernel.requant_pairs(ql), "int32_t",
                                        "requantization (multiplier, rounding in 2^-shift units) per output")
    else:  # int32 multiply, or multiply-free (kan2mcu.quant.strategies.mulfree)
        L.update(requant_tables(ql, emit))
    return L


# render data per strategy; the kernel template is the strategy's own (kan2mcu.quant.strategies.<name>.TEMPLATE)
LAYER_CONTEXTS = {"spline": _spline_context, "edge-table": _edge_table_context}


def _feature_columns(input_transform: dict | None, n_in: int) -> list[str]:
    """Header comment lines, one per column, of a per-column input scaling (own data), else []."""
    if not input_transform or not isinstance(input_transform.get("scale"), (list, tuple)):
        return []
    scales, offsets = float_api_transform(input_transform, n_in)
    names = list(input_transform.get("columns") or [])
    lines = []
    for i, (scale, offset) in enumerate(zip(scales, offsets)):
        name = re.sub(r"[^A-Za-z0-9_.()\[\] -]", "?", str(names[i]))[:40] if i < len(names) else f"x{i}"
        lines.append(f"{i:3d} {name}: x = f * {float(scale)!r} + ({float(offset)!r})")
    return lines


def _raw_api_context(codec) -> dict:
    """Template data of the raw-input API's rows in ``codec``'s layout (kan2mcu.quant.input_codec)."""

    def hexu(v):
        return f"0x{int(v):08X}u"

    n_rows = int(codec.raw_keys.shape[0])
    ends, run_rows = row_runs(codec.raw_row)
    context = {
        "raw_layout": codec.raw_layout, "raw_threshold_count": n_rows,
        "raw_index": row_index(codec)[0],
        "raw_channel_row": _rows(codec.raw_row),
        "raw_run_count": len(ends), "raw_run_end": _rows(ends), "raw_run_row": _rows(run_rows),
        "raw_row_ctype": "uint8_t" if n_rows <= 256 else "uint16_t",
    }
    if codec.raw_luts is not None:
        context.update(raw_luts=[{"first": hexu(t.first), "start": t.start, "last": t.last} for t in codec.raw_luts],
                       raw_lut_size=len(codec.raw_lut_codes), raw_lut_codes=_rows(codec.raw_lut_codes))
    elif codec.raw_rules is not None:
        context.update(raw_rule_shift=codec.raw_shift, raw_rules=[
            {"base": hexu(r.base), "step": f"{r.step}u", "frac": f"{r.frac}u", "add": f"{r.add}u",
             "guess_mult": r.guess_mult, "guess_in": r.guess_in, "guess_out": r.guess_out,
             "low": r.low, "count": r.count} for r in codec.raw_rules])
    else:
        context.update(raw_threshold_rows=[_rows(r, 8, hexu) for r in codec.raw_keys],
                       raw_top_rows=_rows(codec.raw_top))
    return context


def _input_api_context(qmodel: QuantModel, sym: _Symbols, input_transform: dict | None) -> tuple[dict, int]:
    """Template data of the input API (templates/model_api_int.c.j2, model.h.j2), whose thresholds
    kan2mcu.quant.input_codec decides, and the bytes of the tables always linked with it (the raw API)."""
    for symbol in ("input_scale", "input_zero", "count_le", "raw_thresholds", "raw_row", "raw_top",
                   "raw_rule_t", "raw_rules", "raw_threshold", "raw_code", "raw_run_end", "raw_run_row",
                   "raw_lut_t", "raw_luts", "raw_lut_codes", "raw_lut_code", "quantize_input_q", "float_thresholds", "float_row",
                   "float_key", "quantize_input", "dequantize_output"):
        sym(symbol)
    codec = input_codec(qmodel, input_transform)
    first = qmodel.layers[0]

    def hexu(v):
        return f"0x{int(v):08X}u"

    context = {
        "raw_kind": codec.raw_kind,
        "raw_scale": repr(float(codec.raw_scale[0])), "raw_offset": repr(float(codec.raw_offset[0])),
        "feature_columns": _feature_columns(input_transform, qmodel.in_features),
        "input_scale_rows": _rows(first.in_scale, 8, _float_literal),
        "input_zero_rows": _rows(first.in_zero, 8, _float_literal),
        "float_threshold_count": int(codec.float_keys.shape[0]),
        "float_threshold_rows": [_rows(r, 8, hexu) for r in codec.float_keys],
        "float_channel_row": _rows(codec.channel_row),
        "float_row_ctype": "uint8_t" if codec.float_keys.shape[0] <= 256 else "uint16_t",
        **_raw_api_context(codec),
    }
    return context, raw_table_bytes(codec)


def render_int(qmodel: QuantModel, name: str, banner: str, input_transform: dict | None = None) -> RenderedModel:
    """C sources of the integer model: common frame (model_int.c.j2) + one kernel per layer strategy."""
    prefix = c_prefix(name)
    sym = _Symbols(prefix)
    for symbol in ("ws_first", "ws_basis", "ws_silu", "ws_base", "ws_spline", "ws_in", "ws_in_t", "ws_pair", "ws_pair_t",
                   "mul64", "field", "infer", "infer_q", "satu"):
        sym(symbol)
    layers, layer_bytes, calls, codes_check = [], [], [], None
    n_layers = len(qmodel.layers)
    # codes between layers: the consumer's width decides the buffer's type (uint8_t or uint16_t)
    act_buffers = [{"symbol": sym(f"act{i}"), "size": layer.out_features, "ctype": code_ctype(consumer.act_bits)}
                   for i, (layer, consumer) in enumerate(zip(qmodel.layers[:-1], qmodel.layers[1:]))]
    for index, ql in enumerate(qmodel.layers):
        emit = TableEmitter(sym, index)
        L = LAYER_CONTEXTS[ql.strategy](ql, index, emit)
        out_ctype = "int32_t" if ql.is_last else act_buffers[index]["ctype"]
        clamp = index == 0 and clamps_caller_codes(ql.act_bits)
        if clamp and ql.strategy == "edge-table":  # the codes API tests the codes first (codes_check)
            codes_check = {"fn": sym("l0_codes"), "bits": ql.act_bits,
                           **edge_table_kernel.code_check(ql.in_features, ql.act_bits)}
            clamp = False
        L.update(fn=sym(f"layer{index}"), template=get_strategy(ql.strategy).TEMPLATE, strategy=ql.strategy, n_in=ql.in_features,
                 n_out=ql.out_features, codes=ql.codes, code_max=ql.codes - 1,
                 clamp_input=clamp, is_last=ql.is_last, out_code_max=ql.out_max,
                 in_ctype=code_ctype(ql.act_bits), out_ctype=out_ctype, tables=emit.tables)
        if ql.strategy == "edge-table":  # the Helium kernel's layout (None: scalar kernel only)
            L["mve"] = mve_context(ql)
        layers.append(L)
        layer_bytes.append({t_["symbol"]: t_["nbytes"] for t_ in emit.tables})
        src = "input" if index == 0 else act_buffers[index - 1]["symbol"]
        dst = "output" if index == n_layers - 1 else act_buffers[index]["symbol"]
        calls.append({"fn": L["fn"], "src": src, "dst": dst})
    first = qmodel.layers[0]
    splines = [l for l in qmodel.layers if l.strategy == "spline"]
    max_in = max((4 * -(-l.in_features // 4) for l in splines), default=0)  # SiLU values read 4 at a time
    k1_max = max((l.k1 for l in splines), default=0)
    max_out = max((l.out_features for l in splines), default=0)
    kinds = {kernel_layout(l).kind for l in splines}
    halfword, compact = "halfword" in kinds, bool(kinds - {"halfword", "pair"})
    # the halfword kernel's per-input entry is 12 bytes on DSP cores, 20 on other 32-bit cores and 24 on
    # 64-bit hosts: its workspace figure is the largest of these, an upper bound (docs/report-keys.md)
    workspace = ((max_in + 4 * max_in * k1_max if compact else 0) + 4 * max_in + 8 * max_out
                 + (WS_IN_ENTRY_MAX * max_in if halfword else 0) + (WS_PAIR_ENTRY_MAX * max_in if "pair" in kinds else 0)) + sum(
        b["size"] * _CTYPE_BYTES[b["ctype"]] for b in act_buffers)
    table_bytes = sum(sum(lb.values()) for lb in layer_bytes)
    context = {
        "banner": banner, "name": name, "prefix": prefix, "P": prefix.upper(), "arith": "int",
        "input_size": qmodel.in_features, "output_size": qmodel.out_features,
        "input_code_max": first.codes - 1, "code_ctype": code_ctype(first.act_bits),
        "output_scale": f"{qmodel.output_scale:.9g}",
        "workspace_bytes": workspace, "table_bytes": table_bytes,
        "has_spline": bool(splines), "has_edge_table": any(l.strategy == "edge-table" for l in qmodel.layers),
        "has_halfword_table": any(l.strategy == "edge-table" and l.per_word == 2 for l in qmodel.layers),
        "has_mve_table": any(L.get("mve") for L in layers),
        "max_in": max_in, "k1_max": k1_max, "max_out": max_out, "has_halfword_spline": halfword,
        "has_compact_spline": compact, "has_pair_spline": "pair" in kinds, "act_buffers": act_buffers, "layers": layers,
        "calls": calls, "codes_check": codes_check,
    }
    api, api_bytes = _input_api_context(qmodel, sym, input_transform)
    context.update(api)
    context["table_bytes"] = table_bytes + api_bytes
    env = _environment()
    files = {f"{name}.h": env.get_template("model.h.j2").render(context),
             f"{name}.c": env.get_template("model_int.c.j2").render(context)}
    return RenderedModel(files, table_bytes + api_bytes, workspace, layer_bytes, api_bytes)


def render_float(model: KANModel, name: str, banner: str) -> RenderedModel:
    """C sources of the float32 back end (Cox-de Boor per input, dense coefficients)."""
    for layer in model.layers:
        if layer.base_function != "silu" or layer.symbolic:
            what = f"base function {layer.base_function!r}" if layer.base_function != "silu" else "symbolic edges"
            raise UnsupportedModelError(f"{layer.name}: the float32 back end computes SiLU bases only, not {what}; "
                                        "use --arith int (the edge-table strategy tabulates any edge function)")
    prefix = c_prefix(name)
    sym = _Symbols(prefix)
    sym("infer"), sym("expf"), sym("silu"), sym("bsplines"), sym("ws_basis"), sym("ws_silu")
    layers, layer_bytes, calls = [], [], []
    act_buffers = [{"symbol": sym(f"act{i}"), "size": layer.out_features} for i, layer in enumerate(model.layers[:-1])]
    for index, layer in enumerate(model.layers):
        t = f"l{index}"
        tables = [_table(sym, f"{t}_knots", layer.knots.reshape(-1), "float", f"[{layer.in_features}][{layer.knots.shape[1]}] knots", _float_literal),
                  _table(sym, f"{t}_coef", layer.coef.reshape(-1), "float", f"[{layer.out_features}][{layer.in_features}][{layer.n_basis}] coefficients", _float_literal),
                  _table(sym, f"{t}_weight", layer.base_weight.reshape(-1), "float", "SiLU-branch weights", _float_literal),
                  _table(sym, f"{t}_out_scale", layer.out_scale, "float", "output scale", _float_literal),
                  _table(sym, f"{t}_out_bias", layer.out_bias, "float", "output bias", _float_literal)]
        L = {"title": f"layer {index} ({layer.name}): {layer.in_features} -> {layer.out_features}, order {layer.order}",
             "fn": sym(f"layer{index}"), "n_in": layer.in_features, "n_out": layer.out_features, "order": layer.order,
             "n_knots": layer.knots.shape[1], "n_basis": layer.n_basis, "tables": tables,
             "knots": tables[0]["symbol"], "coef": tables[1]["symbol"], "weight": tables[2]["symbol"],
             "out_scale": tables[3]["symbol"], "out_bias": tables[4]["symbol"]}
        layers.append(L)
        layer_bytes.append({t_["symbol"]: t_["nbytes"] for t_ in tables})
        src = "input" if index == 0 else act_buffers[index - 1]["symbol"]
        dst = "output" if index == len(model.layers) - 1 else act_buffers[index]["symbol"]
        calls.append({"fn": L["fn"], "src": src, "dst": dst})
    max_in = max(l.in_features for l in model.layers)
    max_knots = max(l.knots.shape[1] for l in model.layers)
    workspace = 4 * (max_in * max_knots + max_in + sum(b["size"] for b in act_buffers))
    table_bytes = sum(sum(lb.values()) for lb in layer_bytes)
    context = {"banner": banner, "name": name, "prefix": prefix, "P": prefix.upper(), "arith": "float",
               "input_size": model.layers[0].in_features, "output_size": model.layers[-1].out_features,
               "workspace_bytes": workspace, "table_bytes": table_bytes, "max_in": max_in, "max_knots": max_knots,
               "act_buffers": act_buffers, "layers": layers, "calls": calls,
               "feature_columns": _feature_columns(model.metadata.get("input_transform"), model.layers[0].in_features)}
    env = _environment()
    files = {f"{name}.h": env.get_template("model.h.j2").render(context),
             f"{name}.c": env.get_template("model_float.c.j2").render(context)}
    return RenderedModel(files, table_bytes, workspace, layer_bytes)
