"""Choosing a strategy and bit widths per layer (``generate --strategy auto``).

Every layer has options: ``spline`` with coefficients of ``--coef-bits`` down to 2 bits, or
``edge-table`` with input codes of ``--act-bits`` down to 2 and entries of ``--table-bits`` down
to 2. An option that costs exactly what a wider one of the same strategy costs (2- and 3-bit
entries are stored as nibbles like 4-bit ones) is weighed and dropped: it could only lose
accuracy. The cost model (kan2mcu.quant.costmodel) predicts each plan's instructions and flash; the
flash adds the C input API's tables (kan2mcu.quant.budget: the same count as report.json and the budget
check). Plans over the flash budget are out; if none is left, generate stops, naming the smallest
plan and its cost (``--allow-over-budget`` writes that one anyway).

The budget is a ceiling, not a target. ``--optimize speed``: the fastest plan whose output error
score on the calibration data (kan2mcu.quant.output_error) meets ``max_error`` sets the pace; among the plans within
the cost model's error (``COST_MODEL_ERROR``) of its instructions that meet the error, the
smallest wins, and the report says what the larger ones would have added. ``--optimize size``:
the smallest plan that meets the error. When the user's bit widths cannot reach ``max_error`` at
all, the best full-width plan's error is the limit instead (and the report says so).

Plans are scored lazily, in rank order, with every layer quantization and every layer output
shared between plans (kan2mcu.quant.plansearch): the choice is the one an exhaustive search over all
fitting plans makes, at the cost of the plans the ranking reaches.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from kan2mcu.quant import costmodel
from kan2mcu.quant.budget import (DEFAULT_FLASH_BUDGET, FIRMWARE_RESERVE, Budget, flash_budget,  # noqa: F401
                                  frame_code_bytes, over_budget_message)
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.model.ir import KANModel
from kan2mcu.quant.plansearch import PlanSearch
from kan2mcu.quant.planscore import Scores, describe, larger_plans, search_plans
from kan2mcu.quant.quantize import LayerPlan, QuantModel, QuantOptions, step_options
from kan2mcu.quant.strategies import get_strategy

STRATEGY_CHOICES = ("auto", "spline", "edge-table")
OBJECTIVES = ("speed", "size")
MIN_BITS = 2  # the narrowest codes, entries and coefficients the planner weighs
DEFAULT_MAX_ERROR = 0.005  # output error score (RMS over the output range; classifiers: argmax too)
MAX_COMBINATIONS = 50000


@dataclass(frozen=True)
class Choice:
    """The chosen plan, why, and the alternatives that were weighed."""

    plan: tuple[LayerPlan, ...]
    qmodel: QuantModel
    instructions: int  # predicted, on ``core``
    flash_bytes: int  # predicted model flash (tables + code + input API)
    error: float | None  # output error score on the calibration data (None without data)
    core: str
    budget: int
    objective: str
    considered: int  # plans scored (quantized and run on the calibration data)
    layers: tuple[dict, ...]  # per layer: strategy, widths, predicted instructions/flash, alternative
    tolerance: float = DEFAULT_MAX_ERROR  # the error the plan had to stay under
    warning: str | None = None  # set when no plan within the budget met the tolerance, or over budget
    note: str | None = None  # the default tolerance is out of reach of the widths or the budget (no --max-error)
    budget_source: str = "the default flash budget"
    input_api_bytes: int = 0  # predicted flash of the input API (included in flash_bytes)
    fitting: int = 0  # plans within the budget
    weighed: dict | None = None  # widths weighed per kind, options dropped as costing the same as wider ones
    larger: tuple[dict, ...] = ()  # acceptable plans as fast as the choice but larger: what they would add

    def as_dict(self) -> dict:
        return {"core": self.core, "objective": self.objective, "flash_budget": self.budget,
                "flash_budget_source": self.budget_source,
                "predicted_instructions": self.instructions, "predicted_flash_bytes": self.flash_bytes,
                "predicted_input_api_bytes": self.input_api_bytes,
                "calibration_error": self.error, "error_tolerance": self.tolerance, "warning": self.warning,
                "note": self.note,
                "plans_considered": self.considered, "plans_within_budget": self.fitting,
                "widths_weighed": self.weighed, "larger_plans": list(self.larger), "layers": list(self.layers)}


def flash_budget_for(board: str | None, budget: int | None) -> int:
    """The flash budget in bytes (kan2mcu.quant.budget.flash_budget without its source)."""
    return flash_budget(board, budget).bytes


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
    """Per layer, every plan to weigh for ``strategy`` ("auto" weighs both strategies)."""
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
            bits = min(options.act_bits, spline_top)
            opts += [LayerPlan("spline", bits, None, None if c == options.coef_bits else c)
                     for c in range(options.coef_bits, MIN_BITS - 1, -1)]
            # the compact coefficient layout (nibble words), weighed for when the budget needs its flash
            opts += [LayerPlan("spline", bits, None, None if c == options.coef_bits else c, "compact")
                     for c in range(options.coef_bits, MIN_BITS - 1, -1)
                     if get_strategy("spline").compact_differs(layer.order, c, layer.out_features)]
            # the aligned layout (two halfword copies, LDRD on DSP cores): faster, twice the coefficients' flash
            if layer.uniform_grid() is not None and get_strategy("spline").aligned_fits(
                    layer.order, layer.in_features, layer.out_features, layer.n_basis):
                opts += [LayerPlan("spline", bits, None, None if c == options.coef_bits else c, "aligned")
                         for c in range(options.coef_bits, MIN_BITS - 1, -1)]
            # the pair layout (two outputs per word, 16-bit lanes: cores without SIMD)
            if layer.uniform_grid() is not None and get_strategy("spline").pair_fits(
                    layer.order, layer.n_basis - layer.order - 1):
                opts += [LayerPlan("spline", bits, None, None if c == options.coef_bits else c, "pair")
                         for c in range(options.coef_bits, MIN_BITS - 1, -1)]
        if strategy in ("auto", "edge-table"):
            opts += [LayerPlan("edge-table", b, t) for t in range(options.table_bits, MIN_BITS - 1, -1)
                     for b in range(options.act_bits, MIN_BITS - 1, -1)]
        per_layer.append(opts)
    return per_layer


def _widths(step: LayerPlan, options: QuantOptions) -> tuple:
    return (step.in_bits, step.table_bits or options.table_bits, step.coef_bits or options.coef_bits)


def _wider(other: LayerPlan, step: LayerPlan, options: QuantOptions) -> bool:
    """``other`` is at least as wide as ``step`` in every width, and wider in one."""
    mine, theirs = _widths(step, options), _widths(other, options)
    return theirs != mine and all(t >= m for t, m in zip(theirs, mine))


def _group_key(index: int, step: LayerPlan, costs: dict) -> tuple:
    cost = costs[(index, step)]
    return (step.strategy, step.in_bits if index == 0 else None, cost["flash_bytes"], cost["instructions"])


def candidate_options(model: KANModel, options: QuantOptions, strategy: str, core: str):
    """Per layer: the options left once those costing exactly what a wider one costs are dropped,
    their predicted costs ``{(index, step): cost}``, and how many were dropped."""
    per_layer, costs, dropped = [], {}, 0
    n = len(model.layers)
    for index, opts in enumerate(layer_options(model, options, strategy)):
        groups = {}
        for step in opts:
            cost = costmodel.layer_cost(model.layers[index], step, step_options(options, step), core,
                                        index == 0, index == n - 1)
            costs[(index, step)] = cost
            groups.setdefault(_group_key(index, step, costs), []).append(step)
        kept = [step for step in opts if not any(_wider(other, step, options) for other in groups[_group_key(
            index, step, costs)])]
        dropped += len(opts) - len(kept)
        per_layer.append(kept)
    return per_layer, costs, dropped


def _predict(model, combos, costs, options, core, search: PlanSearch, budget: Budget) -> dict:
    """Predicted instructions and flash of every combination; the input API is counted for those
    whose layers alone fit the budget (or for all when none does)."""
    predicted = {}
    for combo in combos:
        layers = [costs[(i, step)] for i, step in enumerate(combo)]
        extra = sum(costmodel.mul_free_extra_bytes(model, combo, options)) + _frame(model, combo)
        predicted[combo] = {"instructions": sum(c["instructions"] for c in layers) + costmodel.model_overhead(core),
                            "layer_flash": sum(c["flash_bytes"] for c in layers) + extra, "layers": layers}
    if not any(p["layer_flash"] <= budget.bytes for p in predicted.values()):
        for combo, p in predicted.items():  # none fits: the smallest needs every input API's size
            p["api"] = search.api_bytes(combo[0])
    for combo, p in predicted.items():
        if "api" not in p:
            p["api"] = search.api_bytes(combo[0]) if p["layer_flash"] <= budget.bytes else 0
        _add_input_api(p, p["api"])
    return predicted


def _frame(model, combo) -> int:
    """Code bytes of the frame around the layers (budget.frame_code_bytes) for ``combo``'s first layer."""
    return frame_code_bytes(model.layers[0].in_features, combo[0].in_bits, combo[0].strategy)


def _add_input_api(p: dict, api: int) -> None:
    """A prediction's total: its layers and the input API (``api`` bytes)."""
    p["api"] = api
    p["flash_bytes"] = p["layer_flash"] + p["api"]


def choose(model: KANModel, options: QuantOptions, calibration, *, strategy: str = "auto",
           objective: str = "speed", budget: Budget | int | None = None, core: str = "cortex-m4",
           max_error: float | None = None, allow_over_budget: bool = False,
           input_transform: dict | None = None) -> Choice:
    """The best plan under the budget (see the module docstring). When no plan fits: OptionError
    naming the smallest plan, or with ``allow_over_budget`` that plan with a warning. ``max_error``
    None is the default limit: out of reach, it is a note in the report, not a warning."""
    given, max_error = max_error is not None, DEFAULT_MAX_ERROR if max_error is None else max_error
    if objective not in OBJECTIVES:
        raise OptionError(f"--optimize must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if not isinstance(budget, Budget):
        budget = flash_budget(None, budget)
    per_layer, costs, dropped = candidate_options(model, options, strategy, core)
    n_combos = 1
    for opts in per_layer:
        n_combos *= len(opts)
    if n_combos > MAX_COMBINATIONS:
        raise OptionError(f"{n_combos} plans to weigh; pass --strategy spline or edge-table")
    combos = list(itertools.product(*per_layer))
    search = PlanSearch(model, options, calibration, input_transform)
    predicted = _predict(model, combos, costs, options, core, search, budget)
    fitting = [c for c in combos if predicted[c]["flash_bytes"] <= budget.bytes]
    over = None
    if not fitting:
        smallest = min(combos, key=lambda c: (predicted[c]["flash_bytes"], predicted[c]["instructions"]))
        message = over_budget_message(budget, predicted[smallest]["flash_bytes"], describe(smallest))
        if not allow_over_budget:
            raise OptionError(message)
        over, fitting = f"{message.split(': ', 1)[1].split('; ')[0]}; written anyway (--allow-over-budget)", [smallest]
    scores = Scores(search)
    while True:  # the winner's quantized layers may need more than predicted: then the next one
        combo, tolerance, warning, unreachable = search_plans(model, options, strategy, scores, fitting, predicted,
                                                              objective, max_error, budget)
        _count_quantized(model, combo, options, core, search, predicted)
        if predicted[combo]["flash_bytes"] <= budget.bytes or over is not None or len(fitting) == 1:
            break
        fitting = [c for c in fitting if c != combo]
    # an error limit out of reach: the user's --max-error is warned about; the default one is noted
    # (what the model loses on data is the guard's to warn about)
    missed = (unreachable and f"the default {unreachable}", warning)
    note = None if given else "; ".join(w for w in missed if w) or None
    warning = "; ".join(w for w in (over, warning, unreachable) if w) if given else over
    weighed = {"codes": [options.act_bits, MIN_BITS], "entries": [options.table_bits, MIN_BITS],
               "coefficients": [options.coef_bits, MIN_BITS], "options_dropped_as_no_cheaper": dropped,
               "quantized_layers": search.quantized_layers}
    return Choice(tuple(combo), search.qmodel(combo), predicted[combo]["instructions"],
                  predicted[combo]["flash_bytes"], scores.errors.get(combo), core, budget.bytes, objective,
                  len(scores.errors), _layer_rows(model, combo, predicted, per_layer, costs), tolerance, warning,
                  note, budget.source, predicted[combo]["api"], len(fitting), weighed,
                  larger_plans(combo, scores, {c: predicted[c] for c in fitting}, tolerance, objective))


def _count_quantized(model, combo, options, core: str, search: PlanSearch, predicted: dict) -> None:
    """``combo``'s predicted flash recounted with its quantized layers (a spline layer's decode
    positions depend on where its inputs' codes lie, a multiply-free layer's threshold width on its
    largest sum: only quantization tells)."""
    n, qmodel = len(model.layers), search.qmodel(combo)
    layers = [costmodel.layer_cost(model.layers[i], step, options, core, i == 0, i == n - 1, quantized=qmodel.layers[i])
              for i, step in enumerate(combo)]
    p = predicted[combo]
    p["layers"] = layers
    p["layer_flash"] = (sum(c["flash_bytes"] for c in layers)
                        + sum(costmodel.mul_free_extra_bytes(model, combo, options, qmodel.layers))
                        + _frame(model, combo))
    _add_input_api(p, search.api_bytes(combo[0]))


def _layer_rows(model, combo, predicted, per_layer, costs) -> tuple:
    rows = []
    for index, (step, cost) in enumerate(zip(combo, predicted[combo]["layers"])):
        row = {"layer": index, **step.as_dict(), "predicted_instructions": cost["instructions"],
               "predicted_flash_bytes": cost["flash_bytes"]}
        others = [(o, costs[(index, o)]) for o in per_layer[index] if o.strategy != step.strategy]
        if others:  # the other strategy's smallest option, for the report's "why"
            alt_step, alt = min(others, key=lambda item: item[1]["flash_bytes"])
            row["alternative"] = {**alt_step.as_dict(), "predicted_instructions": alt["instructions"],
                                  "predicted_flash_bytes": alt["flash_bytes"]}
        rows.append(row)
    return tuple(rows)


def _predicted(row: dict, markdown: bool) -> str:
    """A row's predicted flash and instructions: exact in report.md, rounded on the console."""
    if markdown:
        return f"{row['predicted_flash_bytes']} bytes, about {row['predicted_instructions']} instructions"
    return f"{row['predicted_flash_bytes'] / 1024:.1f} KB, {row['predicted_instructions'] / 1000:.1f}k instr"


def layer_line(row: dict, *, markdown: bool = False, core: str = "") -> str:
    """One layer of the plan (a ``Choice.layers`` row, as in report.json ``planner.layers``): what was
    chosen, its predicted cost (on ``core``) and what the other strategy would have cost. ``markdown``:
    report.md's list item; else the line generate prints."""
    entries = f", {row['table_bits']}-bit entries" if row.get("table_bits") else ""
    entries += f", {row['coef_layout']} coefficient layout" if row.get("coef_layout") else ""
    if markdown:
        text = (f"- layer {row['layer']}: **{row['strategy']}**, {row['in_bits']}-bit input codes{entries}: "
                f"{_predicted(row, markdown)}")
    else:
        coefficients = f", {row['coef_bits']}-bit coefficients" if row.get("coef_bits") else ""
        text = (f"layer {row['layer']}: {row['strategy']} ({row['in_bits']}-bit codes{entries}{coefficients}): "
                f"{_predicted(row, markdown)} on {core}")
    alt = row.get("alternative")
    if alt:
        text += f"; {alt['strategy']} ({alt['in_bits']}-bit codes) would be {_predicted(alt, markdown)}"
    return text


def larger_plan_line(alt: dict, *, markdown: bool = False) -> str:
    """One of ``Choice.larger`` (report.json ``planner.larger_plans``): what a larger plan would add."""
    return (f"{'- ' if markdown else ''}a larger plan ({alt['plan']}) would add {alt['extra_bytes']} bytes for "
            f"{alt['instructions_saved']} fewer instructions ({'predicted; ' if markdown else ''}within the cost "
            "model's error)")


def explain(choice: Choice) -> list[str]:
    """One line per layer (what was chosen, what the alternative would have cost), then the total."""
    lines = [layer_line(row, core=choice.core) for row in choice.layers]
    lines.append(f"plan: about {choice.flash_bytes} bytes (layers {choice.flash_bytes - choice.input_api_bytes}, "
                 f"input API {choice.input_api_bytes}) within {choice.budget_source} of {choice.budget} bytes; "
                 f"{choice.fitting} plans fit, {choice.considered} scored; widths weighed from the options down to "
                 f"{MIN_BITS} bits")
    return lines + [larger_plan_line(alt) for alt in choice.larger]
