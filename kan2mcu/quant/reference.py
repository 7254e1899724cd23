"""The bit-exact integer reference: the executable form of docs/arithmetic.md, mirroring the C.

Each layer strategy (kan2mcu.quant.strategies) computes its requantized outputs; saturation to the
next layer's codes (or to int32 for the last layer) is common to all and done here.
"""
from __future__ import annotations

import numpy as np

from kan2mcu.quant.fixedpoint import code_type_max
from kan2mcu.quant.quantize import QuantModel
from kan2mcu.quant.strategies import get_strategy

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


ELEMENTS_PER_CHUNK = 1 << 23  # rows are processed in chunks of about this many gathered int64 elements


def run_layer(layer, codes: np.ndarray) -> np.ndarray:
    """Integer output of one layer: next-layer codes, or int32 outputs for the last layer.

    Rows go through the strategy in chunks: its gathers grow as rows x outputs x inputs, which
    for a [784, 256] layer would otherwise take gigabytes."""
    per_row = max(1, layer.in_features * layer.out_features * 4)
    step = max(1, ELEMENTS_PER_CHUNK // per_row)
    strategy = get_strategy(layer.strategy)
    if len(codes) <= step:
        shifted = strategy.run_layer(layer, codes)
    else:
        shifted = np.concatenate([strategy.run_layer(layer, codes[start:start + step])
                                  for start in range(0, len(codes), step)])
    low = INT32_MIN if layer.is_last else 0
    return np.clip(shifted, low, layer.out_max)


def run_model(qmodel: QuantModel, codes: np.ndarray) -> np.ndarray:
    """Integer outputs [N, O] (int64 holding int32 values) for input codes [N, I]."""
    x = np.asarray(codes, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != qmodel.in_features:
        raise ValueError(f"codes must be [N, {qmodel.in_features}], got {x.shape}")
    x = np.clip(x, 0, code_type_max(qmodel.layers[0].act_bits))  # what the C API's code type can hold
    for layer in qmodel.layers:
        x = run_layer(layer, x)
    return x


def quantize_inputs(qmodel: QuantModel, x: np.ndarray) -> np.ndarray:
    """Float model inputs [N, I] -> first-layer codes, round half up, saturating at the code range."""
    first = qmodel.layers[0]
    codes = np.floor(x / first.in_scale[None, :] + first.in_zero[None, :] + 0.5)
    codes = np.where(np.isnan(codes), 0.0, codes)  # NaN -> code 0, as the C input API
    return np.clip(codes, 0, first.codes - 1).astype(np.int64)


def dequantize_outputs(qmodel: QuantModel, outputs: np.ndarray) -> np.ndarray:
    """int32 outputs -> float logits."""
    return outputs.astype(np.float64) * qmodel.output_scale
