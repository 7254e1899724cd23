"""Quantizing and scoring many plans of one model without redoing shared work (issue 19, item 5).

Layers are independent given their input codes: layer ``i`` under step ``s`` depends on its own
input encoding (``s``'s strategy and code width) and on its consumer's encoding (the next step's
strategy and code width) only. So every input encoding, every quantized layer and every layer's
integer outputs on the calibration data are computed once and shared by all the plans that
contain them. A layer's tables and coefficients (the costly part) are even shared across
consumers: only the requantization is re-derived (the strategy's ``requantized``), and its
accumulators on the calibration rows are kept (``accumulators``, then ``requantize_sums``). The
figures equal :func:`kan2mcu.quant.quantize.quantize` + :func:`kan2mcu.quant.reference.run_model` on the whole
plan (host_tests/test_planner_budget.py).
"""
from __future__ import annotations

import numpy as np

from kan2mcu.quant.budget import input_api_bytes_for
from kan2mcu.errors import QuantizationError
from kan2mcu.quant.output_error import is_classifier, output_error
from kan2mcu.quant.quantize import LayerPlan, QuantModel, calibrate, layer_encoding, model_output_scale, quantize_one
from kan2mcu.quant.reference import ELEMENTS_PER_CHUNK, INT32_MIN, run_layer
from kan2mcu.quant.strategies import get_strategy


def _encoding_key(step: LayerPlan | None):
    return None if step is None else (step.strategy, step.in_bits)


class PlanSearch:
    """Per-layer quantizations, input API sizes and calibration outputs, cached across plans."""

    def __init__(self, model, options, calibration: np.ndarray | None, input_transform: dict | None = None):
        self.model, self.options, self.calibration = model, options, calibration
        self.input_transform = input_transform
        self.activations = calibrate(model, calibration)
        self.output_scale = model_output_scale(model, self.activations)
        self._encodings: dict = {}
        self._layers: dict = {}
        self._sums: dict = {}
        self._outputs: dict = {}
        self._api: dict = {}
        self._any_consumer: dict = {}  # (index, step) -> that layer quantized for some consumer
        self._bounds: dict = {}
        self.quantized_layers = 0  # quantize_layer calls (the costly ones), for the report and tests

    def encoding(self, index: int, step: LayerPlan) -> dict:
        """Layer ``index``'s input encoding under ``step`` (shared by every entry width)."""
        key = (index, step.strategy, step.in_bits)
        if key not in self._encodings:
            self._encodings[key] = layer_encoding(self.model, index, LayerPlan(step.strategy, step.in_bits),
                                                  self.activations)
        return {**self._encodings[key], "table_bits": step.table_bits}

    def api_bytes(self, first: LayerPlan) -> int:
        """Flash of the C input API when the first layer takes ``first``'s codes."""
        key = _encoding_key(first)
        if key not in self._api:
            self._api[key] = input_api_bytes_for(self.encoding(0, first), self.model.layers[0].in_features,
                                                 self.input_transform, self.options)
        return self._api[key]

    def layer(self, plan: tuple, index: int):
        """Layer ``index`` of ``plan``, quantized (QuantizationError when it cannot be)."""
        step = plan[index]
        nxt = plan[index + 1] if index + 1 < len(plan) else None
        key = (index, step, _encoding_key(nxt))
        if key in self._layers:
            return self._layers[key]
        strategy = get_strategy(step.strategy)
        done = self._any_consumer.get((index, step))
        if done is not None and hasattr(strategy, "requantized"):  # only the requantization depends on the consumer
            scale, zero = self._next_encoding(index, nxt)
            out_max = (1 << nxt.in_bits) - 1 if nxt is not None else done.out_max
            self._layers[key] = self._requantized(strategy, done, index, step, (scale, zero, nxt is None, out_max))
            return self._layers[key]
        encodings = {index: self.encoding(index, step)}
        if nxt is not None:
            encodings[index + 1] = self.encoding(index + 1, nxt)
        self.quantized_layers += 1
        self._layers[key] = quantize_one(self.model, index, plan, encodings, self.options, self.output_scale)
        self._any_consumer[(index, step)] = self._layers[key]
        return self._layers[key]

    def _requantized(self, strategy, done, index: int, step: LayerPlan, consumer: tuple):
        """``done`` requantized for ``consumer``. Spline layers: the overflow check first runs on the
        largest accumulator bound of any output (``acc_bounds``); only if that refuses, on the exact
        per-output bounds (the constants never depend on the bounds: the result is exact)."""
        layer = self.model.layers[index]
        if not hasattr(strategy, "accumulator_bounds"):
            return strategy.requantized(done, layer, *consumer)
        if (index, step) not in self._bounds:
            n_out = done.out_features
            self._bounds[(index, step)] = (np.full(n_out, done.acc_bounds["spline"], np.int64),
                                           np.full(n_out, done.acc_bounds["base"], np.int64))
        try:
            return strategy.requantized(done, layer, *consumer, bounds=self._bounds[(index, step)])
        except QuantizationError:
            exact = strategy.accumulator_bounds(done)
            if all(np.array_equal(a, b) for a, b in zip(exact, self._bounds[(index, step)])):
                raise
            self._bounds[(index, step)] = exact
            return strategy.requantized(done, layer, *consumer, bounds=exact)

    def _next_encoding(self, index: int, nxt: LayerPlan | None):
        if nxt is None:
            n_out = self.model.layers[index].out_features
            return np.full(n_out, self.output_scale), np.zeros(n_out)
        enc = self.encoding(index + 1, nxt)
        return enc["scale"], enc["zero"]

    def qmodel(self, plan: tuple) -> QuantModel:
        """The whole integer model of ``plan`` (as kan2mcu.quant.quantize.quantize builds it)."""
        layers = tuple(self.layer(plan, i) for i in range(len(plan)))
        how = "calibration data" if self.calibration is not None else "grid ranges only (no calibration data)"
        return QuantModel(layers, self.options, self.output_scale, how)

    def outputs(self, plan: tuple) -> np.ndarray:
        """Integer outputs of ``plan`` on the calibration rows, layer outputs shared between plans."""
        first = self.layer(plan, 0)
        codes = np.floor(self.calibration / first.in_scale[None, :] + first.in_zero[None, :] + 0.5)
        codes = np.clip(np.where(np.isnan(codes), 0.0, codes), 0, first.codes - 1).astype(np.int64)
        for index in range(len(plan)):
            key = (plan[: index + 1], _encoding_key(plan[index + 1]) if index + 1 < len(plan) else None)
            if key not in self._outputs:
                self._outputs[key] = self._run(plan, index, codes)
            codes = self._outputs[key]
        return codes

    def _run(self, plan: tuple, index: int, codes: np.ndarray) -> np.ndarray:
        qlayer = self.layer(plan, index)
        strategy = get_strategy(qlayer.strategy)
        if not hasattr(strategy, "requantize_sums"):
            return run_layer(qlayer, codes)
        sums_key = plan[: index + 1]  # the accumulators do not depend on the consumer
        if sums_key not in self._sums:
            step = max(1, ELEMENTS_PER_CHUNK // max(1, qlayer.in_features * qlayer.out_features * 4))
            parts = [strategy.accumulators(qlayer, codes[s:s + step]) for s in range(0, len(codes), step)]
            self._sums[sums_key] = (np.concatenate(parts) if isinstance(parts[0], np.ndarray)
                                    else tuple(np.concatenate(p) for p in zip(*parts)))
        shifted = strategy.requantize_sums(qlayer, self._sums[sums_key])
        return np.clip(shifted, INT32_MIN if qlayer.is_last else 0, qlayer.out_max)  # as reference.run_layer

    def error(self, plan: tuple) -> float | None:
        """The output error's score (kan2mcu.quant.output_error, what ``--max-error`` bounds) on the
        calibration data (None without)."""
        if self.calibration is None:
            return None
        q_out = self.outputs(plan) * self.output_scale
        return output_error(self.activations[-1], q_out, classifier=is_classifier(self.model)).score
