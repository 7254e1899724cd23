"""Predicted instructions and flash of a plan, per core: each strategy's own cost-model entry
(``estimate`` and ``COSTS`` in kan2mcu/quant/strategies/<name>.py), fitted on QEMU instruction counts by
benchmarks/calibrate_costs.py and checked against QEMU in host_tests/test_costmodel.py."""
from __future__ import annotations

from kan2mcu.errors import OptionError
from kan2mcu.model.ir import KANLayer
from kan2mcu.quant.budget import frame_code_bytes
from kan2mcu.quant.quantize import step_options
from kan2mcu.quant.strategies import get_strategy, mulfree

CORES = ("cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55",
         "rv32imac", "rv32ec")
INFER_OVERHEAD = {"cortex-m0": 20, "cortex-m0plus": 20}  # the infer wrapper and layer calls; others 15


def layer_cost(layer: KANLayer, step, options, core: str, first: bool = False, last: bool = False,
               quantized=None) -> dict:
    """``{"instructions", "flash_bytes"}`` predicted for one layer under ``step`` (a LayerPlan);
    ``first``/``last``: the layer's position in the model (input clamping, output saturation);
    ``quantized``: the layer quantized under ``step``, for what only it tells (exact table sizes)."""
    if core not in CORES:
        raise OptionError(f"no cost model for core {core!r}; known: {', '.join(CORES)}")
    return get_strategy(step.strategy).estimate(layer, step, step_options(options, step), core, first, last,
                                                quantized=quantized)


def model_overhead(core: str) -> int:
    """Instructions outside the layers (argument checks, calls)."""
    return INFER_OVERHEAD.get(core, 15)


def mul_free_extra_bytes(model, plan, options, quantized=None) -> list[int]:
    """Per layer, the flash its own cost leaves out: in a multiply-free model a hidden layer reads 2^b
    thresholds per output (b: the next layer's code bits) instead of 3 requantization numbers.
    ``quantized`` (the plan's quantized layers) makes the entry width exact."""
    n = len(model.layers)
    if not getattr(options, "mul_free", False):
        return [0] * n
    extra = []
    for i, layer in enumerate(model.layers):
        if i == n - 1:
            extra.append(0)
            continue
        if quantized is not None:
            top = int(quantized[i].thresholds.max())
        else:  # thresholds are clipped to the largest sum + 1; entries are unsigned table_bits wide
            table_bits = getattr(plan[i], "table_bits", None) or options.table_bits
            top = layer.in_features * ((1 << table_bits) - 1) + 1
        extra.append(mulfree.threshold_bytes(layer.out_features, plan[i + 1].in_bits, top))
    return extra


def plan_cost(model, plan, options, core: str) -> dict:
    """Predicted instructions and flash of a whole plan on ``core``."""
    n = len(model.layers)
    costs = [layer_cost(layer, step, options, core, i == 0, i == n - 1)
             for i, (layer, step) in enumerate(zip(model.layers, plan))]
    extra = mul_free_extra_bytes(model, plan, options)
    costs = [{**c, "flash_bytes": c["flash_bytes"] + e} for c, e in zip(costs, extra)]
    frame = frame_code_bytes(model.layers[0].in_features, plan[0].in_bits, plan[0].strategy)
    return {"instructions": sum(c["instructions"] for c in costs) + model_overhead(core),
            "flash_bytes": sum(c["flash_bytes"] for c in costs) + frame, "layers": costs}
