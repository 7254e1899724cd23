"""Post-training quantization of a KAN IR into the integer model the C code and the reference run.

The arithmetic is specified in docs/arithmetic.md. This module orchestrates: it calibrates the
activation ranges, lets each layer's strategy (kan2mcu.quant.strategies) choose how its input codes map
to floats, and asks the strategy to quantize the layer against the next layer's input encoding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kan2mcu.model.bspline import model_forward
from kan2mcu.errors import OptionError
from kan2mcu.quant.fixedpoint import INT32_MAX
from kan2mcu.quant.input_share import share_inputs
from kan2mcu.model.ir import KANLayer, KANModel
from kan2mcu.quant.strategies import get_strategy
from kan2mcu.quant.strategies.edge_table import EdgeTableLayer
from kan2mcu.quant.strategies.levels import on_levels
from kan2mcu.quant.strategies.spline import SplineLayer, decode_cardinal, decode_inputs, live_coefficients  # noqa: F401

OUTPUT_FRACTION_BITS = 14  # calibrated max |logit| maps to 2^14 output units
MAX_CODE_BITS = 12  # widest input codes (edge-table layers; 2^12 table rows per input at most)
QuantLayer = SplineLayer | EdgeTableLayer
TABLE_BITS_RANGE = (2, 16)  # edge-table entries: nibbles (2..4), bytes (5..8), halfwords (9..16)


def check_table_bits(value, what: str) -> None:
    """Refuse an edge-table entry width outside 2..16 in one line."""
    low, high = TABLE_BITS_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(f"{what} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True)
class QuantOptions:
    """The precision knobs. act/spline/coef are the KANtize knobs (2..8 bits; act up to 12 for
    edge-table layers); edge-table entries take 2..16 bits (9..16: halfword entries)."""

    act_bits: int = 8  # unsigned input codes of every layer (a plan may lower it per layer)
    spline_bits: int = 8  # unsigned B-spline table values
    coef_bits: int = 8  # signed spline coefficients, per-output-channel scale
    base_bits: int = 12  # signed SiLU-branch weights (kept wider: the sensitive part, per QuantKAN)
    silu_bits: int = 12  # signed SiLU table values
    table_bits: int = 8  # edge-table entries
    mul_free: bool = False  # multiply-free requantization (kan2mcu.quant.strategies.mulfree); edge-table layers only

    def __post_init__(self) -> None:
        check_table_bits(self.table_bits, "--table-bits")
        for name in ("act_bits", "spline_bits", "coef_bits"):
            value, top = getattr(self, name), MAX_CODE_BITS if name == "act_bits" else 8
            if not isinstance(value, int) or not 2 <= value <= top:
                raise OptionError(f"--{name.replace('_', '-')} must be an integer in 2..{top}, got {value!r}")
        for name in ("base_bits", "silu_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 4 <= value <= 16:
                raise OptionError(f"--{name.replace('_', '-')} must be an integer in 4..16, got {value!r}")

    def as_dict(self) -> dict:
        knobs = {k: getattr(self, k) for k in ("act_bits", "spline_bits", "coef_bits", "base_bits", "silu_bits",
                                               "table_bits")}
        return {**knobs, "mul_free": True} if self.mul_free else knobs  # absent: as before the option existed


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is computed: its strategy and the bit width of its input codes."""

    strategy: str
    in_bits: int
    table_bits: int | None = None  # edge-table entry width (None: --table-bits)
    coef_bits: int | None = None  # spline coefficient width (None: --coef-bits)
    coef_layout: str | None = None  # spline: "compact" (nibble words, 2..4-bit coefficients), "aligned" (two
    # halfword copies: LDRD on DSP cores), "pair" (two outputs per word: cores without SIMD); None: the fast
    # halfword kernel

    def __post_init__(self) -> None:
        top = get_strategy(self.strategy).MAX_CODE_BITS
        if not isinstance(self.in_bits, int) or not 2 <= self.in_bits <= top:
            raise OptionError(f"{self.strategy} layers take input codes of 2..{top} bits, got {self.in_bits!r}"
                              + ("; use edge-table layers for wider codes" if top < MAX_CODE_BITS else ""))
        if self.table_bits is not None:
            check_table_bits(self.table_bits, "table bits")
        if self.coef_bits is not None and (self.strategy != "spline" or not isinstance(self.coef_bits, int)
                                           or not 2 <= self.coef_bits <= 8):
            raise OptionError(f"coefficient bits are a spline layer's, 2..8; got {self.coef_bits!r} for {self.strategy}")
        if self.coef_layout not in (None, "compact", "aligned", "pair") or (self.coef_layout and self.strategy != "spline"):
            raise OptionError(f"a coefficient layout is a spline layer's, 'compact', 'aligned', 'pair' or none; got "
                              f"{self.coef_layout!r}")

    def as_dict(self) -> dict:
        out = {"strategy": self.strategy, "in_bits": self.in_bits}
        if self.table_bits is not None:
            out["table_bits"] = self.table_bits
        if self.coef_bits is not None:
            out["coef_bits"] = self.coef_bits
        if self.coef_layout is not None:
            out["coef_layout"] = self.coef_layout
        return out


@dataclass(frozen=True, eq=False)
class QuantModel:
    """The whole integer model plus how its outputs map back to floats."""

    layers: tuple
    options: QuantOptions
    output_scale: float  # float logit = output_scale * int32 output
    calibration: str  # how the ranges were found (for the report)

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    @property
    def plan(self) -> tuple[LayerPlan, ...]:
        return tuple(LayerPlan(layer.strategy, layer.act_bits, getattr(layer, "table_bits", None),
                               layer.coef_bits if layer.strategy == "spline" and layer.coef_bits != self.options.coef_bits
                               else None) for layer in self.layers)


def default_plan(model: KANModel, options: QuantOptions, strategy: str = "spline") -> tuple[LayerPlan, ...]:
    """Every layer with ``strategy`` and ``options.act_bits`` input codes (at most the strategy's widest)."""
    bits = min(options.act_bits, get_strategy(strategy).MAX_CODE_BITS)
    return tuple(LayerPlan(strategy, bits) for _ in model.layers)


def calibrate(model: KANModel, calibration: np.ndarray | None) -> list:
    """Float activations entering each layer, plus the model output (None entries without data)."""
    if calibration is None:
        return [None] * (len(model.layers) + 1)
    calibration = np.asarray(calibration, dtype=np.float64)
    if calibration.ndim != 2 or calibration.shape[1] != model.layers[0].in_features:
        raise OptionError(f"calibration data must be [N, {model.layers[0].in_features}], got {calibration.shape}")
    if not np.all(np.isfinite(calibration)):
        raise OptionError("calibration data holds NaN/Inf")
    _, activations = model_forward(model, calibration, return_all=True)
    return activations


def sample_ranges(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``samples`` [N, C], the range new data is expected in: the sample min/max,
    widened on continuous columns by one expected spacing ``(max - min) / (N - 1)`` per side (the
    unbiased estimate of a uniform distribution's bounds; a fresh value lands beyond the sample
    extremes with probability ``2 / (N + 1)``, and a thin calibration set would otherwise saturate
    it). Columns on a few levels of one step (pixels, counts) keep their extremes: their codes sit
    on the levels, extended on the same step (kan2mcu.quant.strategies.levels)."""
    lo, hi = samples.min(axis=0), samples.max(axis=0)
    gap = (hi - lo) / max(len(samples) - 1, 1)
    continuous = np.array([not on_levels(samples[:, c]) for c in range(samples.shape[1])], dtype=bool)
    return np.where(continuous, lo - gap, lo), np.where(continuous, hi + gap, hi)


def channel_ranges(layer: KANLayer, samples: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per input: the grid range widened to the calibration data's expected range (when there is
    data, see :func:`sample_ranges`)."""
    lo, hi = layer.grid_range()
    if samples is not None and len(samples):
        data_lo, data_hi = sample_ranges(samples)
        lo, hi = np.minimum(lo, data_lo), np.maximum(hi, data_hi)
    return lo, hi


def quantize(model: KANModel, options: QuantOptions, calibration: np.ndarray | None,
             plan: tuple[LayerPlan, ...] | None = None, activations: list | None = None) -> QuantModel:
    """Quantize ``model`` following ``plan`` (default: every layer ``spline`` at ``options.act_bits``).

    ``calibration`` holds model inputs [N, I] (None: ranges from the grids); ``activations`` may
    pass :func:`calibrate`'s result when quantizing the same model several times.
    """
    plan = tuple(plan) if plan is not None else default_plan(model, options)
    if options.mul_free and any(step.strategy != "edge-table" for step in plan):
        raise OptionError("--no-mul (or a board without a multiplier) needs edge-table layers: spline layers "
                          "multiply; use --strategy edge-table or auto")
    if len(plan) != len(model.layers):
        raise OptionError(f"a plan needs one entry per layer ({len(model.layers)}), got {len(plan)}")
    if activations is None:
        activations = calibrate(model, calibration)
    encodings = [layer_encoding(model, index, step, activations) for index, step in enumerate(plan)]
    output_scale = model_output_scale(model, activations)
    layers = [quantize_one(model, index, plan, encodings, options, output_scale) for index in range(len(plan))]
    how = "calibration data" if calibration is not None else "grid ranges only (no calibration data)"
    return QuantModel(tuple(layers), options, output_scale, how)


def layer_encoding(model: KANModel, index: int, step: LayerPlan, activations: list) -> dict:
    """How layer ``index``'s input codes map to floats under ``step`` (its strategy's choice over the
    calibrated range), with the step's widths and the calibration samples entering the layer."""
    layer = model.layers[index]
    lo, hi = channel_ranges(layer, activations[index])
    enc = get_strategy(step.strategy).input_encoding(layer, lo, hi, step.in_bits, activations[index])
    if index == 0 and step.strategy == "edge-table":
        enc = shared_input_encoding(layer, {**enc, "bits": step.in_bits}, lo, hi, activations[index],
                                    model.metadata.get("input_transform"))
    enc["bits"] = step.in_bits
    enc["table_bits"] = step.table_bits
    enc["samples"] = activations[index]  # calibration activations entering the layer (or None)
    return enc


def shared_input_encoding(layer: KANLayer, enc: dict, lo: np.ndarray, hi: np.ndarray, samples: np.ndarray | None,
                          input_transform: dict | None) -> dict:
    """An edge-table first layer's encoding with its continuous inputs of one range on one shared
    encoder (kan2mcu.quant.input_share: one threshold row in the C input API); ``shared_inputs``
    counts them (0: none share), ``clip_lo``/``clip_hi`` bound where their edges are evaluated."""
    shared = share_inputs(layer, lo, hi, enc, input_transform, samples)
    if shared is None:
        return {**enc, "shared_inputs": 0}
    group = shared["shared"]
    return {**enc, "scale": np.where(group, shared["scale"], enc["scale"]),
            "zero": np.where(group, shared["zero"], enc["zero"]),
            "clip_lo": np.where(group, shared["clip_lo"], -np.inf), "clip_hi": np.where(group, shared["clip_hi"], np.inf),
            "shared_inputs": int(np.count_nonzero(group))}


def model_output_scale(model: KANModel, activations: list) -> float:
    """float logit per int32 output unit: the calibrated max |logit| (else a weight bound) at 2^14."""
    if activations[-1] is not None:
        out_abs = float(np.max(np.abs(activations[-1])))
    else:  # no data: bound the last layer's float output by its weights
        out_abs = _float_output_bound(model.layers[-1])
    return max(out_abs, 1e-12) / 2**OUTPUT_FRACTION_BITS


def step_options(options: QuantOptions, step: LayerPlan) -> QuantOptions:
    """The options one layer is quantized with: the step's coefficient width when it sets one."""
    if step.coef_bits is None or step.coef_bits == options.coef_bits:
        return options
    return dataclasses.replace(options, coef_bits=step.coef_bits)


def quantize_one(model: KANModel, index: int, plan: tuple, encodings: list, options: QuantOptions,
                 output_scale: float):
    """Layer ``index`` of ``plan`` quantized against the next layer's input encoding (it depends on
    its own step and its consumer's encoding only: the planner reuses it across plans)."""
    layer, step = model.layers[index], plan[index]
    is_last = index == len(model.layers) - 1
    next_scale = np.full(layer.out_features, output_scale) if is_last else encodings[index + 1]["scale"]
    next_zero = np.zeros(layer.out_features) if is_last else encodings[index + 1]["zero"]
    out_max = INT32_MAX if is_last else (1 << plan[index + 1].in_bits) - 1
    qlayer = get_strategy(step.strategy).quantize_layer(layer, encodings[index], step_options(options, step),
                                                        next_scale, next_zero, is_last, out_max)
    if getattr(step, "coef_layout", None):  # the planner's choice of the spline kernel's coefficient layout
        qlayer = dataclasses.replace(qlayer, coef_layout=step.coef_layout)
    return qlayer


def _float_output_bound(layer: KANLayer) -> float:
    per_out = np.abs(layer.coef).max(axis=2).sum(axis=1) + np.abs(layer.base_weight).sum(axis=1) * 2.0
    return float(np.max(np.abs(layer.out_scale) * per_out + np.abs(layer.out_bias)))
