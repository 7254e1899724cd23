"""Input codes that land exactly on the levels of discrete data (pixel values, ADC counts): shared
by the strategies whose tables are evaluated per code (edge-table, spline per-input mode)."""
from __future__ import annotations

import numpy as np


def on_levels(values: np.ndarray, max_levels: int = 256, levels: np.ndarray | None = None) -> bool:
    """True when ``values`` take 2..``max_levels`` distinct values on one common step."""
    levels = np.unique(values) if levels is None else levels
    if len(levels) < 2 or len(levels) > max_levels:
        return False
    step = float(np.min(np.diff(levels)))
    ratios = (levels - levels[0]) / step
    return bool(step > 0 and np.max(np.abs(ratios - np.round(ratios))) <= 1e-6)


def level_aligned(values: np.ndarray, qmax: int, lo: float | None = None, hi: float | None = None,
                  max_levels: int = 256) -> tuple[float, float] | None:
    """``(scale, zero)`` putting every distinct value of ``values`` exactly on a code, when they are
    at most ``qmax + 1`` levels on one step and fit; None otherwise.

    The lattice of levels is extended on the same step to cover ``[lo, hi]`` (the grid range) when
    that still fits: a pixel that is 0 or 1 in every calibration row may be 16 in the field, and
    must not saturate at 1."""
    levels = np.unique(values)
    if len(levels) > qmax + 1 or not on_levels(values, max_levels, levels):
        return None
    step = float(np.min(np.diff(levels)))
    ratios = (levels - levels[0]) / step
    first, span = float(levels[0]), int(round(ratios[-1]))
    below = int(np.ceil((levels[0] - lo) / step - 1e-6)) if lo is not None and lo < levels[0] else 0
    above = int(np.ceil((hi - levels[-1]) / step - 1e-6)) if hi is not None and hi > levels[-1] else 0
    if span + below + above <= qmax:
        first, span = first - below * step, span + below + above
    per_step = qmax // span
    if per_step < 1:
        return None
    scale = step / per_step
    spare = qmax - span * per_step  # unused codes, split around the levels
    return scale, -first / scale + spare // 2
