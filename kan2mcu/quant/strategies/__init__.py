"""Layer strategies: how one KAN layer is computed in integers.

Each strategy is one module with the same surface, so adding one touches one place:

``NAME``, ``TEMPLATE``       its name and its C kernel template (templates/kernels/)
``MAX_CODE_BITS``            the widest input codes its kernel takes
``input_encoding``           how the layer's input codes map to floats (decided by the consumer)
``quantize_layer``           the numeric pass: tables, scales, requantization constants
``run_layer``                the bit-exact integer reference of the kernel
plus its render context (kan2mcu.codegen.render) and its cost-model entry (kan2mcu.quant.costmodel).
"""
from __future__ import annotations

from kan2mcu.errors import OptionError
from kan2mcu.quant.strategies import edge_table, spline

STRATEGIES = {spline.NAME: spline, edge_table.NAME: edge_table}
LAYER_CLASSES = {spline.NAME: spline.SplineLayer, edge_table.NAME: edge_table.EdgeTableLayer}


def get_strategy(name: str):
    """The strategy module called ``name``; OptionError naming the choices otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise OptionError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None
