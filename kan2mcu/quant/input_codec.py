"""Exact input quantization for the C API: the Python quantizer's decisions as code thresholds.

``kan2mcu.quant.reference.quantize_inputs`` maps a model input x to a first-layer code with float64
arithmetic. C on a microcontroller cannot repeat that bit for bit cheaply (no double FPU, FMA
contraction, float32 inputs), so the decision itself is precomputed here: per input channel and
per code c = 1..max, the smallest input that the Python quantizer maps to c or more. The function
is monotone, so ``code = number of thresholds <= input`` is the same function on its domain:

* float32 inputs (``<prefix>_quantize_input``): thresholds are float32 values, compared through
  an order-preserving uint32 key of their bit pattern (no float arithmetic, NaN -> code 0);
* raw integers (``<prefix>_quantize_input_q``): x = raw * raw_scale + raw_offset, with the
  checkpoint's input transform (digits: raw pixels 0..16, x = raw / 8 - 1) or, without one,
  Q15.16 fixed point (x = raw / 2^16). Thresholds are int32, keyed the same way.
* checkpoints trained on your own data carry one scale and offset per column (kan2mcu.data.tabular):
  there both APIs take the raw feature values, the float API as they are
  (x = f * scale[i] + offset[i]) and the integer API in Q15.16 (x = raw * 2^-16 * scale[i] + offset[i]).

Channels with the same thresholds share one row (digits: 64 pixels, a few distinct ranges); with a
single row there is no per-channel row table. The raw API's rows are stored in one of two layouts,
whichever takes fewer bytes (:func:`raw_table_bytes`): "thresholds" (the keys of every code) or
"rule" (kan2mcu.quant.input_rule: the keys follow an exact integer affine rule in the code and are
computed, 24 bytes a row whatever the code width); "rule" needs a rule for every row. Rows whose
codes change over a short run of raw values (pixels) use "lut" (kan2mcu.quant.input_lut: one code per
raw value) when it is not much larger, for speed.
:func:`api_flash_bytes` is the flash the raw API's tables take, as the report counts it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from kan2mcu.errors import QuantizationError
from kan2mcu.quant.input_lut import LUT_HEADER_BYTES, RawLut, build_luts
from kan2mcu.quant.input_rule import RULE_BYTES, RawRule, fit_rules, rule_shift
from kan2mcu.quant.input_share import columns as columns_of
from kan2mcu.quant.quantize import QuantModel
from kan2mcu.quant.reference import quantize_inputs

Q16_SCALE = 1.0 / 65536.0
_SIGN = np.uint64(0x80000000)
_KEY_NEG_INF = 0x00800000  # order key of -inf
_KEY_POS_INF = 0xFF800000  # order key of +inf
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class InputCodec:
    """Everything the C input API needs, as data."""

    raw_scale: np.ndarray  # [I] x = raw * raw_scale + raw_offset
    raw_offset: np.ndarray  # [I]
    raw_kind: str  # "checkpoint" (its scalar input transform), "q16" (Q15.16 x) or "features" (per column)
    channel_row: np.ndarray  # [I] row of each channel in the threshold tables
    float_keys: np.ndarray  # [R, max] uint32 order keys of the float32 thresholds
    raw_keys: np.ndarray  # [R', max] uint32 keys (raw ^ 0x80000000) of the int32 thresholds
    raw_row: np.ndarray  # [I] row of each channel in raw_keys
    raw_top: np.ndarray  # [R'] highest code an int32 raw value reaches
    float_scale: np.ndarray  # [I] float API: x = f * float_scale + float_offset (identity but for "features")
    float_offset: np.ndarray  # [I]
    raw_rules: tuple[RawRule, ...] | None = None  # [R'] when the raw layout is "rule", else None
    raw_shift: int = 0  # the rules' shift (kan2mcu.quant.input_rule.rule_shift)
    raw_luts: tuple[RawLut, ...] | None = None  # [R'] when the raw layout is "lut", else None
    raw_lut_codes: np.ndarray | None = None  # the code tables of every row, one after the other

    @property
    def raw_layout(self) -> str:
        """"lut" (codes looked up), "rule" (codes computed) or "thresholds" (codes counted in stored rows)."""
        if self.raw_luts is not None:
            return "lut"
        return "thresholds" if self.raw_rules is None else "rule"

    @property
    def code_max(self) -> int:
        return int(self.raw_keys.shape[1])


def float_order_key(x: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 values that sort like the values (-0 == +0); C: <prefix>_float_key."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    key = np.where(bits & _SIGN, _SIGN - (bits & np.uint64(0x7FFFFFFF)), bits + _SIGN)
    return (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _float_from_key(key: np.ndarray) -> np.ndarray:
    key = np.asarray(key, dtype=np.uint64)
    bits = np.where(key >= _SIGN, key - _SIGN, _SIGN | (_SIGN - key))
    return (bits & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)


def raw_to_model_input(raw: np.ndarray, codec: InputCodec) -> np.ndarray:
    """Model inputs (float64) of raw integer inputs: raw * raw_scale + raw_offset."""
    return np.asarray(raw, dtype=np.float64) * codec.raw_scale + codec.raw_offset


def quantize_raw(qmodel: QuantModel, codec: InputCodec, raw: np.ndarray) -> np.ndarray:
    """The Python quantizer on raw integer inputs: what ``<prefix>_quantize_input_q`` computes."""
    return quantize_inputs(qmodel, raw_to_model_input(raw, codec))


def float_api_inputs(values: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Model inputs (float64) of what the float API takes: the values as float32, then times
    ``scale`` plus ``offset`` per column in float64 (see :func:`float_api_transform`)."""
    values = np.asarray(values, dtype=np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return values * scale + offset


def float_to_model_input(values: np.ndarray, codec: InputCodec) -> np.ndarray:
    """Model inputs (float64) of what ``codec``'s float API takes (the identity unless the
    checkpoint scales each column)."""
    return float_api_inputs(values, codec.float_scale, codec.float_offset)


def quantize_float(qmodel: QuantModel, codec: InputCodec, values: np.ndarray) -> np.ndarray:
    """The Python quantizer on float API inputs: what ``<prefix>_quantize_input`` computes."""
    with np.errstate(invalid="ignore"):
        return quantize_inputs(qmodel, float_to_model_input(values, codec))


def model_input_to_float(x: np.ndarray, codec: InputCodec) -> np.ndarray:
    """float32 values for the float API that stand for model inputs ``x`` (the inverse transform)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return ((np.asarray(x, np.float64) - codec.float_offset) / codec.float_scale).astype(np.float32)


def float_api_transform(input_transform: dict | None, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale [I], offset [I]) the float API applies to its inputs: the checkpoint's per-column
    scaling (own data), else the identity (the float API then takes model inputs x)."""
    columns = columns_of(input_transform, n_in)
    if columns is not None and columns[2]:
        return columns[0], columns[1]
    return np.ones(n_in), np.zeros(n_in)


def _smallest_reaching(evaluate, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per element, the smallest integer k in (lo, hi] with evaluate(k) >= target, given
    evaluate(lo) < target <= evaluate(hi) and evaluate monotone (bisection on int64 arrays)."""
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        reached = evaluate(mid) >= target
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid)
    return hi


def _thresholds(qmodel: QuantModel, to_input, key_lo: int, key_hi: int) -> np.ndarray:
    """[I, max] smallest key (in [key_lo, key_hi]) whose input reaches code c = 1..max; key_hi
    when even key_hi does not reach it."""
    n_in, top = qmodel.in_features, qmodel.layers[0].codes - 1
    target = np.broadcast_to(np.arange(1, top + 1)[:, None], (top, n_in))

    def evaluate(keys):
        return quantize_inputs(qmodel, to_input(keys))

    lo_codes = evaluate(np.full((top, n_in), key_lo, np.int64))
    hi_codes = evaluate(np.full((top, n_in), key_hi, np.int64))
    lo = np.full((top, n_in), key_lo - 1, np.int64)  # virtual key below the domain: reaches nothing
    hi = np.full((top, n_in), key_hi, np.int64)
    found = _smallest_reaching(evaluate, lo, hi, target)
    found = np.where(lo_codes >= target, key_lo, found)  # reached from the bottom of the domain
    found = np.where(hi_codes < target, key_hi, found)  # never reached (the caller clamps to the top)
    return found.T  # [I, max]


def _rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, index = np.unique(table, axis=0, return_inverse=True)
    return rows, index.reshape(-1)


def input_codec(qmodel: QuantModel, input_transform: dict | None) -> InputCodec:
    """The threshold tables of ``qmodel``'s first layer; ``input_transform`` is the checkpoint's
    ``{"scale", "offset"}`` (x = raw * scale + offset) or None (raw is Q15.16 fixed point)."""
    first = qmodel.layers[0]
    if not np.all(first.in_scale > 0):
        raise QuantizationError("input scales must be positive for the C input quantizer")
    n_in = qmodel.in_features
    ones, zeros = np.ones(n_in), np.zeros(n_in)
    columns = columns_of(input_transform, n_in)
    float_scale, float_offset = ones, zeros
    if columns is None:
        raw_scale, raw_offset, kind = ones * Q16_SCALE, zeros, "q16"
    elif columns[2]:
        raw_scale, raw_offset, kind = columns[0] * Q16_SCALE, columns[1], "features"
        float_scale, float_offset = columns[0], columns[1]
    else:
        raw_scale, raw_offset, kind = columns[0], columns[1], "checkpoint"

    def float_input(keys):
        with np.errstate(invalid="ignore", over="ignore"):
            return _float_from_key(keys).astype(np.float64) * float_scale + float_offset

    def raw_input(keys):
        return keys.astype(np.float64) * raw_scale + raw_offset

    float_t = _thresholds(qmodel, float_input, _KEY_NEG_INF, _KEY_POS_INF)
    raw_t = _thresholds(qmodel, raw_input, _INT32_MIN, _INT32_MAX)
    float_rows, float_index = _rows(float_t.astype(np.uint32))
    raw_keys = raw_t - _INT32_MIN  # raw ^ 0x80000000: the unsigned order of int32
    tops = quantize_inputs(qmodel, raw_input(np.full((1, qmodel.in_features), _INT32_MAX)))[0]
    raw_rows, raw_index = _rows(np.concatenate([raw_keys, tops[:, None]], axis=1))  # same keys and top
    codec = InputCodec(raw_scale, raw_offset, kind, float_index.astype(np.int64), float_rows,
                       raw_rows[:, :-1].astype(np.uint32), raw_index.astype(np.int64), raw_rows[:, -1],
                       float_scale, float_offset)
    return _choose_layout(codec, rules_allowed=not getattr(qmodel.options, "mul_free", False))


def _choose_layout(codec: InputCodec, rules_allowed: bool = True) -> InputCodec:
    """``codec`` in its raw layout: the smaller of "thresholds" and "rule" (when every raw row has a
    rule), or "lut" (when every row's codes change over a short run of raw values) if that takes at
    most twice as many bytes, or 256 more: a lookup costs a few instructions an input, the others
    a search (kan2mcu.quant.input_rule, kan2mcu.quant.input_lut). A multiply-free model
    (``rules_allowed`` False) never computes codes by a rule: rules multiply."""
    shift = rule_shift(codec.code_max)
    rules = fit_rules(codec.raw_keys, codec.raw_top, shift) if rules_allowed else None
    if rules is not None:
        ruled = dataclasses.replace(codec, raw_rules=tuple(rules), raw_shift=shift)
        codec = ruled if raw_table_bytes(ruled) < raw_table_bytes(codec) else codec
    luts = build_luts(codec.raw_keys, codec.raw_top)
    if luts is not None:
        looked_up = dataclasses.replace(codec, raw_rules=None, raw_luts=luts[0], raw_lut_codes=luts[1])
        smallest = raw_table_bytes(codec)
        if raw_table_bytes(looked_up) <= max(2 * smallest, smallest + 256):
            return looked_up
    return codec


def code_bytes(code_max: int) -> int:
    """Bytes of one code in C (uint8_t up to 255, else uint16_t)."""
    return 1 if code_max <= 255 else 2


def row_runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(end, row) of each run of consecutive channels on one row: channels ``end[k-1]..end[k]-1``
    use row ``row[k]``."""
    rows = np.asarray(rows, np.int64)
    starts = np.flatnonzero(np.diff(rows, prepend=-1) != 0)
    return np.append(starts[1:], len(rows)), rows[starts]


def row_index(codec: InputCodec) -> tuple[str, int]:
    """How channels find their raw row, and its bytes: "shared" (one row, no table), "runs"
    (uint16_t end and uint8_t/uint16_t row per run of consecutive channels on one row) or "table"
    (a uint8_t/uint16_t row per channel), whichever is smallest."""
    n_rows = codec.raw_keys.shape[0]
    if n_rows <= 1:
        return "shared", 0
    row_bytes = 1 if n_rows <= 256 else 2
    runs = len(row_runs(codec.raw_row)[0]) * (2 + row_bytes)
    table = codec.raw_row.size * row_bytes
    return ("runs", runs) if runs < table else ("table", table)


def raw_table_bytes(codec: InputCodec) -> int:
    """Flash bytes of the raw API's read-only tables in ``codec``'s layout."""
    n_rows = codec.raw_keys.shape[0]
    index = row_index(codec)[1]
    if codec.raw_luts is not None:
        return LUT_HEADER_BYTES * n_rows + code_bytes(codec.code_max) * len(codec.raw_lut_codes) + index
    if codec.raw_rules is not None:
        return RULE_BYTES * n_rows + index
    return 4 * codec.raw_keys.size + code_bytes(codec.code_max) * n_rows + index


_API_BYTES_CACHE: dict[bytes, int] = {}


def api_flash_bytes(qmodel: QuantModel, input_transform: dict | None) -> int:
    """Flash bytes of the integer input API's tables (``<prefix>_quantize_input_q``, always linked
    with an integer model) for ``qmodel`` and the checkpoint's ``input_transform``: what the report
    totals count. The float API's tables (compiled only with ``<P>_WITH_FLOAT_API``) are not included.
    Depends only on the first layer's input encoding, so plans sharing it share one computation."""
    first = qmodel.layers[0]
    columns = columns_of(input_transform, qmodel.in_features)
    parts = [first.in_scale, first.in_zero, [first.codes]] + ([] if columns is None else [*columns[:2], [columns[2]]])
    key = hashlib.sha256(b"|".join(np.asarray(p, np.float64).tobytes() for p in parts)).digest()
    if key not in _API_BYTES_CACHE:
        _API_BYTES_CACHE[key] = raw_table_bytes(input_codec(qmodel, input_transform))
    return _API_BYTES_CACHE[key]


def probe_floats(qmodel: QuantModel, rng: np.random.Generator, n_values: int,
                 codec: InputCodec | None = None) -> np.ndarray:
    """[N, I] float32 inputs that stress the float quantizer: uniform over the calibrated range and
    beyond, exact rounding ties (x / scale + zero = k + 0.5) and their float32 neighbours, and the
    specials (NaN, +-inf, +-0, denormals, +-FLT_MAX); at least ``n_values`` values. With a
    per-column ``codec`` the values are raw features (the ties then only near ties)."""
    first = qmodel.layers[0]
    n_in, top = first.in_features, first.codes - 1
    rows = -(-n_values // n_in)
    scale, offset = (1.0, 0.0) if codec is None else (codec.float_scale, codec.float_offset)
    lo = (first.in_scale * (0 - first.in_zero) - offset) / scale
    hi = (first.in_scale * (top - first.in_zero) - offset) / scale
    span = hi - lo
    uniform = rng.uniform(lo - 0.25 * span, hi + 0.25 * span, size=(rows, n_in))
    k = rng.integers(-2, top + 2, size=(rows, n_in)) + 0.5
    ties = (((k - first.in_zero) * first.in_scale - offset) / scale).astype(np.float32)  # nearest float32 to a tie
    step = rng.integers(-2, 3, size=(rows, n_in)).astype(np.int32)
    near = (ties.view(np.int32) + step).view(np.float32)  # a few ulps around the ties
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.17549435e-38,
                         3.4028235e38, -3.4028235e38], np.float32)
    special = rng.choice(specials, size=(rows, n_in))
    pick = rng.integers(0, 4, size=(rows, n_in))
    out = np.choose(pick, [uniform.astype(np.float32), ties, near, special])
    return np.ascontiguousarray(out, dtype=np.float32)


def probe_raws(qmodel: QuantModel, codec: InputCodec, rng: np.random.Generator, n_values: int) -> np.ndarray:
    """[N, I] int32 raw inputs: uniform over the raw range of the calibrated inputs and beyond, the
    thresholds and their neighbours, and the int32 extremes; at least ``n_values`` values."""
    first = qmodel.layers[0]
    n_in, top = first.in_features, first.codes - 1
    rows = -(-n_values // n_in)
    lo = (first.in_scale * (0 - first.in_zero) - codec.raw_offset) / codec.raw_scale
    hi = (first.in_scale * (top - first.in_zero) - codec.raw_offset) / codec.raw_scale
    span = np.maximum(hi - lo, 1.0)
    uniform = np.clip(rng.uniform(lo - 0.25 * span, hi + 0.25 * span, size=(rows, n_in)), _INT32_MIN, _INT32_MAX)
    thresholds = codec.raw_keys[codec.raw_row].astype(np.int64) + _INT32_MIN  # [I, max]
    pick_code = rng.integers(0, top, size=(rows, n_in))
    near = thresholds[np.arange(n_in)[None, :], pick_code] + rng.integers(-1, 2, size=(rows, n_in))
    extremes = rng.choice(np.array([_INT32_MIN, _INT32_MIN + 1, -1, 0, 1, _INT32_MAX - 1, _INT32_MAX]),
                          size=(rows, n_in))
    pick = rng.integers(0, 3, size=(rows, n_in))
    out = np.choose(pick, [np.floor(uniform).astype(np.int64), np.clip(near, _INT32_MIN, _INT32_MAX), extremes])
    return np.ascontiguousarray(out, dtype=np.int32)


def _code_keys(keys: np.ndarray, top: int, middle: bool) -> np.ndarray:
    """[max + 1] key of each code's smallest raw (``middle`` False) or of the middle of its raw
    interval (the end codes' intervals cut to their neighbour's width, so the key stays near the
    data's range) in one row; codes out of reach: -1."""
    low = min(int(np.count_nonzero(keys[:top] == 0)), top)
    starts = np.concatenate([[0], keys[low:top].astype(np.int64)])  # codes low..top
    ends = np.concatenate([starts[1:] - 1, [2**32 - 1]])
    if top > low:
        ends[-1] = min(ends[-1], starts[-1] + (starts[-1] - starts[-2] if top > low + 1 else 0))
        starts[0] = max(starts[0], ends[0] - (ends[1] - starts[1] if top > low + 1 else 0))
    out = np.full(len(keys) + 1, -1, np.int64)
    out[low:top + 1] = (starts + ends) // 2 if middle else np.concatenate([[0], keys[low:top]])
    return out


def raw_for_codes(qmodel: QuantModel, codec: InputCodec, codes: np.ndarray) -> np.ndarray | None:
    """[N, I] int32 raw inputs that ``<prefix>_quantize_input_q`` maps to ``codes``, or None when
    some code is out of the raw API's reach: on even rows the middle of each code's raw interval
    (as data would fall), on odd rows its smallest raw (a threshold, where an off-by-one shows).
    The firmware self-check feeds these, as a user's firmware would."""
    codes = np.asarray(codes, np.int64)
    if codes.ndim != 2 or codes.shape[1] != qmodel.in_features or codes.size == 0:
        return None
    if np.any(codes < 0) or np.any(codes > codec.code_max):
        return None
    rows = range(len(codec.raw_top))
    middles = np.stack([_code_keys(codec.raw_keys[r], int(codec.raw_top[r]), True) for r in rows])
    starts = np.stack([_code_keys(codec.raw_keys[r], int(codec.raw_top[r]), False) for r in rows])
    odd = (np.arange(len(codes)) % 2 == 1)[:, None]
    key = np.where(odd, starts[codec.raw_row[None, :], codes], middles[codec.raw_row[None, :], codes])
    if np.any(key < 0):
        return None
    raw = (key + _INT32_MIN).astype(np.int32)
    return raw if np.array_equal(quantize_raw(qmodel, codec, raw), codes) else None
