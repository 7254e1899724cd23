"""The planner's search: score plans lazily in rank order, pick the winner (kan2mcu.quant.planner).

Scoring a plan quantizes it and runs it on the calibration data (kan2mcu.quant.plansearch shares the
work between plans). Plans are reached in rank order, so only the plans the decision depends on
are scored: for ``speed``, every plan faster than the fastest acceptable one, then the plans
within ``COST_MODEL_ERROR`` of its instructions that are smaller than it; for ``size``, every plan
smaller than the smallest acceptable one. Only when no plan meets the error limit is every
fitting plan scored (to take the most accurate).
"""
from __future__ import annotations

from kan2mcu.errors import QuantizationError
from kan2mcu.quant.quantize import TABLE_BITS_RANGE, LayerPlan
from kan2mcu.quant.strategies import get_strategy

# Plans whose predicted instructions are within this share of the fastest acceptable plan's count as
# equally fast: the cost model's per-layer fits are within 6.5% on M3/M4/rv32 and 7.8% on M0/M7
# (kan2mcu/strategies/*.py), and differences between options of one strategy are closer than that.
COST_MODEL_ERROR = 0.05
MAX_LARGER = 3  # larger plans the report lists
_REFUSED = object()


class Scores:
    """Errors of the plans scored so far (and the ones that cannot be quantized)."""

    def __init__(self, search):
        self.search = search
        self.errors: dict = {}
        self.refused: dict = {}

    def score(self, combo):
        """The plan's output error score (None without calibration data), or _REFUSED."""
        if combo in self.errors:
            return self.errors[combo]
        if combo in self.refused:
            return _REFUSED
        try:
            self.search.qmodel(combo)
            error = self.search.error(combo)
        except QuantizationError as exc:  # this plan cannot be built (e.g. a requantization that fits
            self.refused[combo] = str(exc)  # no int32): weigh the others
            return _REFUSED
        self.errors[combo] = error
        return error

    def acceptable(self, combo, tolerance: float) -> bool:
        error = self.score(combo)
        return error is not _REFUSED and (error is None or error <= tolerance)


def describe(combo) -> str:
    """A plan in words, layer by layer."""
    parts = []
    for i, s in enumerate(combo):
        text = f"layer {i}: {s.strategy} {s.in_bits}-bit codes"
        text += f" {s.table_bits}-bit entries" if s.table_bits else ""
        text += f" {s.coef_bits}-bit coefficients" if s.coef_bits else ""
        text += f" ({s.coef_layout} layout)" if getattr(s, "coef_layout", None) else ""
        parts.append(text)
    return ", ".join(parts)


def _rank(prediction: dict, objective: str) -> tuple:
    instructions, flash = prediction["instructions"], prediction["flash_bytes"]
    return (instructions, flash) if objective == "speed" else (flash, instructions)


def _first_acceptable(scores: Scores, ordered: list, tolerance: float):
    return next((c for c in ordered if scores.acceptable(c, tolerance)), None)


def _full_width_step(strategy: str, options) -> LayerPlan:
    """A layer at the user's own widths."""
    if strategy == "edge-table":
        return LayerPlan(strategy, options.act_bits, options.table_bits)
    return LayerPlan(strategy, min(options.act_bits, get_strategy(strategy).MAX_CODE_BITS))


def _floor(model, options, strategy: str, scores: Scores) -> float | None:
    """The best error the user's full widths reach (plans of one strategy throughout)."""
    errors = []
    for name in ("spline", "edge-table"):
        if (strategy not in ("auto", name) or (options.mul_free and name == "spline")
                or any(get_strategy(name).unsupported(layer) for layer in model.layers)):
            continue
        error = scores.score(tuple(_full_width_step(name, options) for _ in model.layers))
        if error is not _REFUSED and error is not None:
            errors.append(error)
    return min(errors) if errors else None


def _unreachable(max_error: float, floor: float, strategy: str) -> str:
    return (f"--max-error {max_error:g} is below what these bit widths reach (output error {floor:.3g} at best, "
            "on the calibration data); taking the most accurate plan"
            + (f"; edge-table layers go further with wider codes (--act-bits up to "
               f"{get_strategy('edge-table').MAX_CODE_BITS}) and entries (--table-bits up to {TABLE_BITS_RANGE[1]})"
               if strategy in ("auto", "edge-table") else ""))


def search_plans(model, options, strategy: str, scores: Scores, fitting: list, predicted: dict, objective: str,
                 max_error: float, budget) -> tuple:
    """The winning plan among ``fitting``, the error limit it met, a warning (or None) and, apart, why
    ``max_error`` was out of reach of the user's widths (or None)."""
    ordered = sorted(fitting, key=lambda c: _rank(predicted[c], objective))
    if scores.search.calibration is None:  # nothing tells the plans' accuracy apart: the best-ranked one
        combo = _first_acceptable(scores, ordered, max_error)
        if combo is None:
            raise QuantizationError(f"no plan can be quantized ({len(scores.refused)} tried); first reason: "
                                    f"{next(iter(scores.refused.values()))}")
        return combo, max_error, None, None
    tolerance, unreachable = max_error, None
    first = _first_acceptable(scores, ordered, tolerance)
    if first is None:  # never ask for more than the user's widths allow: the best full-width plan sets a floor
        floor = _floor(model, options, strategy, scores)
        if floor is not None and floor > max_error:
            tolerance, unreachable = floor, _unreachable(max_error, floor, strategy)
            first = _first_acceptable(scores, ordered, tolerance)
    scored = [c for c in ordered if c in scores.errors]
    if not scored:
        raise QuantizationError(f"no plan can be quantized ({len(scores.refused)} tried); first reason: "
                                f"{next(iter(scores.refused.values()))}")
    if first is None:  # the budget is the hard limit: take the most accurate plan within it, and say so
        combo = min(scored, key=lambda c: (scores.errors[c], _rank(predicted[c], objective)))
        warning = (f"no plan within {budget.describe()} keeps the output error under {tolerance:.3g}; the "
                   f"most accurate one within it has {scores.errors[combo]:.3g} ({describe(combo)}); check the "
                   "accuracy in the report, or raise the budget")
        return combo, tolerance, warning, unreachable
    combo = first
    if objective == "speed":  # a ceiling, not a target: the smallest plan as fast as the fastest acceptable
        limit = predicted[first]["instructions"] * (1 + COST_MODEL_ERROR)
        window = sorted((c for c in fitting if predicted[c]["instructions"] <= limit),
                        key=lambda c: (predicted[c]["flash_bytes"], predicted[c]["instructions"]))
        combo = _first_acceptable(scores, window, tolerance)
    return combo, tolerance, None, unreachable


def larger_plans(combo, scores: Scores, predicted: dict, tolerance: float, objective: str) -> tuple:
    """Acceptable plans that were scored, larger than ``combo`` and at most as slow as the cost
    model's error allows: what choosing them would have added (the most instructions saved first)."""
    mine = predicted[combo]
    limit = mine["instructions"] * (1 + COST_MODEL_ERROR) if objective == "speed" else mine["instructions"]
    rows = []
    for other, error in scores.errors.items():
        p = predicted.get(other)
        if p is None or other == combo or (error is not None and error > tolerance):
            continue
        if p["flash_bytes"] > mine["flash_bytes"] and p["instructions"] <= limit:
            rows.append({"plan": describe(other), "flash_bytes": p["flash_bytes"],
                         "extra_bytes": p["flash_bytes"] - mine["flash_bytes"], "instructions": p["instructions"],
                         "instructions_saved": mine["instructions"] - p["instructions"], "error": error})
    rows.sort(key=lambda r: (-r["instructions_saved"], r["extra_bytes"]))
    return tuple(rows[:MAX_LARGER])
