"""Choosing a strategy and an input code width per layer (``generate --strategy auto``).

Every layer has a few options: ``spline`` at the user's bit widths, or ``edge-table`` with input
codes of ``act_bits`` down to ``MIN_EDGE_TABLE_BITS`` (fewer codes: a smaller table, the same
speed). The cost model (kan2mcu.quant.costmodel) predicts each option's instructions and flash; every
combination within the flash budget is quantized for real and its output error against the
float model measured on the calibration data (kan2mcu.quant.output_error: RMS error over the
output range, and argmax agreement for classifiers); the fastest (``--optimize speed``) or smallest
(``--optimize size``) combination whose error stays within ``max_error`` (or, when the user's bit
widths cannot reach that, within the error of the best full-width plan) wins. With a
handful of layers and options the search is exhaustive (each fitting combination is quantized
whole: 1-3 s for the digits model), so the choice is exact, not greedy.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from kan2mcu.quant import costmodel
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.model.ir import KANModel
from kan2mcu.quant.quantize import TABLE_BITS_RANGE, LayerPlan, QuantModel, QuantOptions, calibrate, quantize
from kan2mcu.quant.output_error import is_classifier, output_error
from kan2mcu.quant.reference import quantize_inputs, run_model
from kan2mcu.quant.strategies import get_strategy

STRATEGY_CHOICES = ("auto", "spline", "edge-table")
OBJECTIVES = ("speed", "size")
MIN_EDGE_TABLE_BITS = 3
NIBBLE_TABLE_BITS = 4  # edge-table entries packed 8 per word
DEFAULT_FLASH_BUDGET = 64 * 1024  # no board given: a typical share of a small MCU's flash for a model
FIRMWARE_RESERVE = 32 * 1024  # with --board: flash kept for the firmware around the model
DEFAULT_MAX_ERROR = 0.005  # output error score (RMS over the output range; classifiers: argmax too)
MAX_COMBINATIONS = 4096


@dataclass(frozen=True)
class Choice:
    """The chosen plan, why, and the alternatives that were weighed."""

    plan: tuple[LayerPlan, ...]
    qmodel: QuantModel
    instructions: int  # predicted, on ``core``
    flash_bytes: int  # predicted model flash (tables + code)
    error: float | None  # output error score on the calibration data (None without data)
    core: str
    budget: int
    objective: str
    considered: int
    layers: tuple[dict, ...]  # per layer: strategy, in_bits, predicted instructions/flash, alternative
    tolerance: float = DEFAULT_MAX_ERROR  # the error the plan had to stay under
    warning: str | None = None  # set when no plan within the budget met the tolerance
    note: str | None = None  # the default tolerance is below what the bit widths reach (no --max-error given)

    def as_dict(self) -> dict:
        return {"core": self.core, "objective": self.objective, "flash_budget": self.budget,
                "predicted_instructions": self.instructions, "predicted_flash_bytes": self.flash_bytes,
                "calibration_error": self.error, "error_tolerance": self.tolerance, "warning": self.warning,
                "note": self.note,
                "plans_considered": self.considered, "layers": list(self.layers)}


def flash_budget_for(board: str | None, budget: int | None) -> int:
    """The flash budget: explicit, else the board's flash less the firmware reserve, else the default."""
    if budget is not None:
        if budget <= 0:
            raise OptionError(f"--flash-budget must be a positive number of bytes, got {budget}")
        return int(budget)
    if board is not None:
        from kan2mcu.firmware.boards import get_board  # pylint: disable=import-outside-toplevel

        flash = get_board(board).flash_bytes
        return max(flash - FIRMWARE_RESERVE, flash // 2)
    return DEFAULT_FLASH_BUDGET


def core_for(board: str | None) -> str:
    """The core whose costs rank the options (the board's, else Cortex-M4)."""
    if board is None:
        return "cortex-m4"
    from kan2mcu.firmware.boards import get_board  # pylint: disable=import-outside-toplevel

    return get_board(board).core


def board_options(options: QuantOptions, board: str | None) -> QuantOptions:
    """``options`` with ``mul_free`` set when ``board``'s core has no multiplier (RV32EC)."""
    if board is None or options.mul_free:
        return options
    from kan2mcu.firmware.boards import get_board  # pylint: disable=import-outside-toplevel

    return options if get_board(board).has_multiplier else dataclasses.replace(options, mul_free=True)


def layer_options(model: KANModel, options: QuantOptions, strategy: str) -> list[list[LayerPlan]]:
    """Per layer, the plans to weigh for ``strategy`` ("auto" weighs both strategies)."""
    if strategy not in STRATEGY_CHOICES:
        raise OptionError(f"--strategy must be one of {', '.join(STRATEGY_CHOICES)}, got {strategy!r}")
    spline_top = get_strategy("spline").MAX_CODE_BITS
    if strategy == "spline" and options.act_bits > spline_top:
        raise OptionError(f"--strategy spline takes --act-bits up to {spline_top}, got {options.act_bits}; wider codes "
                          "need edge-table layers (--strategy edge-table or auto)")
    if options.mul_free and strategy == "spline":
        raise OptionError("--no-mul (or a board without a multiplier) needs edge-table layers: use --strategy "
                          "edge-table or auto")
    per_layer = []
    for layer in model.layers:
        opts = []
        why_not = get_strategy("spline").unsupported(layer)
        if strategy == "spline" and why_not:
            raise OptionError(f"{layer.name}: --strategy spline cannot deploy {why_not}; use --strategy edge-table "
                              "or auto")
        if strategy in ("auto", "spline") and not why_not and not options.mul_free:
            opts.append(_full_width_step("spline", options))
        if strategy in ("auto", "edge-table"):
            low = min(MIN_EDGE_TABLE_BITS, options.act_bits)
            # entries at --table-bits (bytes, or halfwords above 8 bits), and nibble entries (half the
            # flash of bytes) when that is narrower
            widths = [options.table_bits] + ([NIBBLE_TABLE_BITS] if options.table_bits > NIBBLE_TABLE_BITS else [])
            opts += [LayerPlan("edge-table", b, t) for t in widths for b in range(options.act_bits, low - 1, -1)]
        per_layer.append(opts)
    return per_layer


def plan_error(model: KANModel, qmodel: QuantModel, x: np.ndarray, float_out: np.ndarray) -> float:
    """The output error's score (kan2mcu.quant.output_error) of ``qmodel`` on inputs ``x``: what
    ``--max-error`` bounds."""
    q_out = run_model(qmodel, quantize_inputs(qmodel, x)) * qmodel.output_scale
    return output_error(float_out, q_out, classifier=is_classifier(model)).score


def choose(model: KANModel, options: QuantOptions, calibration: np.ndarray | None, *, strategy: str = "auto",
           objective: str = "speed", budget: int = DEFAULT_FLASH_BUDGET, core: str = "cortex-m4",
           max_error: float | None = None, hard_budget: bool = True) -> Choice:
    """The best plan under the budget (module docstring; ``max_error`` None: the default, only noted when out of reach).
    No plan fits: OptionError naming the smallest model for a ``hard_budget``, else the smallest, with a warning."""
    given, max_error = max_error is not None, DEFAULT_MAX_ERROR if max_error is None else max_error
    if objective not in OBJECTIVES:
        raise OptionError(f"--optimize must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    per_layer = layer_options(model, options, strategy)
    combos = list(itertools.product(*per_layer))
    if len(combos) > MAX_COMBINATIONS:
        raise OptionError(f"{len(combos)} plans to weigh; pass --strategy spline or edge-table")
    predicted = {combo: costmodel.plan_cost(model, combo, options, core) for combo in combos}
    fitting = [c for c in combos if predicted[c]["flash_bytes"] <= budget]
    over_budget = None
    if not fitting:
        smallest = min(combos, key=lambda c: predicted[c]["flash_bytes"])
        over_budget = (f"no plan fits the default flash budget of {budget} bytes; using the smallest, about "
                       f"{predicted[smallest]['flash_bytes']} bytes ({_describe(smallest)}); pass --flash-budget "
                       "or --board")
        fitting = [smallest]
    if over_budget and hard_budget:
        raise OptionError(f"no plan fits --flash-budget {budget} bytes: the smallest model possible with these bit "
                          f"widths needs about {predicted[smallest]['flash_bytes']} bytes ({_describe(smallest)}); "
                          "raise the budget or lower --act-bits/--coef-bits")
    activations = calibrate(model, calibration)
    x, float_out = calibration, activations[-1]
    errors, results, refused = {}, [], []  # errors: combination -> score on the calibration data (quantized once)
    for combo in sorted(fitting, key=lambda c: _rank(predicted[c], objective)):
        try:
            qmodel = quantize(model, options, calibration, plan=combo, activations=activations)
        except QuantizationError as exc:  # this combination cannot be built (e.g. a requantization
            refused.append(str(exc))      # that fits no int32): weigh the others
            continue
        if x is not None:
            errors[combo] = plan_error(model, qmodel, x, float_out)
        results.append((combo, qmodel, errors.get(combo)))
        if x is None:
            break  # without data nothing can tell the plans' accuracy apart: take the best-ranked one
    tolerance, unreachable = max_error, None
    if x is not None:  # never ask for more than the user's bit widths allow: the best full-width plan sets a floor
        full_width = [tuple(_full_width_step(name, options) for _ in model.layers)
                      for name in ("spline", "edge-table") if strategy in ("auto", name)
                      and not (options.mul_free and name == "spline")
                      and not any(get_strategy(name).unsupported(layer) for layer in model.layers)]
        for plan in full_width:
            if plan not in errors:
                errors[plan] = plan_error(
                    model, quantize(model, options, calibration, plan=plan, activations=activations), x, float_out)
        floor = min(errors[plan] for plan in full_width)
        tolerance = max(max_error, floor)
        if floor > max_error:  # say so: more was asked than these widths can give
            unreachable = _unreachable(max_error, floor, given, strategy)
    if not results:
        raise QuantizationError(f"no plan can be quantized ({len(refused)} tried); first reason: {refused[0]}")
    acceptable = [r for r in results if r[2] is None or r[2] <= tolerance]
    warning = None
    if acceptable:
        combo, qmodel, error = min(acceptable, key=lambda r: (_rank(predicted[r[0]], objective), r[2] or 0.0))
    else:  # the budget is the hard limit: take the most accurate plan within it, and say so
        combo, qmodel, error = min(results, key=lambda r: r[2])
        warning = (f"no plan within the flash budget of {budget} bytes keeps the output error under "
                   f"{tolerance:.3g}; the most accurate one within it has {error:.3g} ({_describe(combo)}); "
                   "check the accuracy in the report, or raise the budget")
    instructions, flash = predicted[combo]["instructions"], predicted[combo]["flash_bytes"]
    layers = []
    for index, (step, cost) in enumerate(zip(combo, predicted[combo]["layers"])):
        row = {"layer": index, **step.as_dict(), "predicted_instructions": cost["instructions"],
               "predicted_flash_bytes": cost["flash_bytes"]}
        position = (index == 0, index == len(combo) - 1)
        others = [(o, costmodel.layer_cost(model.layers[index], o, options, core, *position))
                  for o in per_layer[index] if o.strategy != step.strategy]
        if others:  # the other strategy's smallest option, for the report's "why"
            alt_step, alt = min(others, key=lambda item: item[1]["flash_bytes"])
            row["alternative"] = {**alt_step.as_dict(), "predicted_instructions": alt["instructions"],
                                  "predicted_flash_bytes": alt["flash_bytes"]}
        layers.append(row)
    warning, note = _warning_and_note(over_budget, warning, unreachable, given)
    return Choice(tuple(combo), qmodel, instructions, flash, error, core, budget, objective, len(results),
                  tuple(layers), tolerance, warning, note)


def _unreachable(max_error: float, floor: float, given: bool, strategy: str) -> str:
    """What to say when ``max_error`` is below the best full-width plan's error ``floor``."""
    return (f"{'--max-error' if given else 'the default --max-error'} {max_error:g} is below what these bit "
            f"widths reach (output error {floor:.3g} at best, on the calibration data); taking the most accurate "
            "plan" + (f"; edge-table layers go further with wider codes (--act-bits up to "
                      f"{get_strategy('edge-table').MAX_CODE_BITS}) and entries (--table-bits up to "
                      f"{TABLE_BITS_RANGE[1]})" if strategy in ("auto", "edge-table") else ""))


def _warning_and_note(over_budget, warning, unreachable, given: bool) -> tuple:
    """(warning, note): an unreachable tolerance is a warning only when the user gave --max-error."""
    parts = [w for w in (over_budget, warning, unreachable if given else None) if w]
    return ("; ".join(parts) or None), (unreachable if unreachable and not given else None)


def _rank(prediction: dict, objective: str) -> tuple:
    instructions, flash = prediction["instructions"], prediction["flash_bytes"]
    return (instructions, flash) if objective == "speed" else (flash, instructions)


def _full_width_step(strategy: str, options: QuantOptions) -> LayerPlan:
    """A layer at the user's own widths, spelled as layer_options spells it."""
    if strategy == "edge-table":
        return LayerPlan(strategy, options.act_bits, options.table_bits)
    return LayerPlan(strategy, min(options.act_bits, get_strategy(strategy).MAX_CODE_BITS))


def _describe(combo) -> str:
    return ", ".join(f"layer {i}: {s.strategy} {s.in_bits}-bit codes"
                     + (f" {s.table_bits}-bit entries" if s.table_bits else "") for i, s in enumerate(combo))


def explain(choice: Choice) -> list[str]:
    """One line per layer: what was chosen and what the alternative would have cost."""
    lines = []
    for row in choice.layers:
        entries = f", {row['table_bits']}-bit entries" if row.get("table_bits") else ""
        text = (f"layer {row['layer']}: {row['strategy']} ({row['in_bits']}-bit codes{entries}): "
                f"{row['predicted_flash_bytes'] / 1024:.1f} KB, {row['predicted_instructions'] / 1000:.1f}k instr "
                f"on {choice.core}")
        alt = row.get("alternative")
        if alt:
            text += (f"; {alt['strategy']} ({alt['in_bits']}-bit codes) would be "
                     f"{alt['predicted_flash_bytes'] / 1024:.1f} KB, {alt['predicted_instructions'] / 1000:.1f}k instr")
        lines.append(text)
    return lines
