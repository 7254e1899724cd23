"""One flash budget, honestly counted, and a planner that reuses work (issue 19, items 2 and 5).

Tiny synthetic models only: the decisions are the same at any size (benchmarks/scale.py measures
the big ones)."""
from __future__ import annotations

import itertools
import json
import types

import numpy as np
import pytest

from conftest import make_random_checkpoint
from kan2mcu.quant import budget as budget_module
from kan2mcu.quant import costmodel
from kan2mcu.quant.budget import Budget, input_api_bytes
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.planner import DEFAULT_MAX_ERROR, candidate_options, choose
from kan2mcu.quant.planscore import COST_MODEL_ERROR, describe
from kan2mcu.quant.quantize import QuantOptions, calibrate, quantize
from kan2mcu.quant.reference import quantize_inputs, run_model

OPTIONS = QuantOptions(act_bits=4, table_bits=4, coef_bits=4)  # a few options per layer: quick exhaustive search
TINY = 600  # bytes: no plan of the 8x5x3 model fits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An [8, 5, 3] KAN, its IR and calibration inputs."""
    checkpoint, calibration = make_random_checkpoint(tmp_path_factory.mktemp("tiny") / "t.pt", (8, 5, 3), 5, 3, seed=1)
    return checkpoint, calibration, load_checkpoint(checkpoint).model, np.load(calibration)


def _error(model, qmodel, x) -> float:
    """The output error score, computed the plain way: whole-model quantize + reference run."""
    from kan2mcu.quant.output_error import is_classifier, output_error

    float_out = calibrate(model, x)[-1]
    q_out = run_model(qmodel, quantize_inputs(qmodel, x)) * qmodel.output_scale
    return output_error(float_out, q_out, classifier=is_classifier(model)).score


def _exhaustive(model, x, options, max_error, budget_bytes, core="cortex-m4"):
    """Every combination quantized whole and scored, then the documented rule applied."""
    per_layer, _, _ = candidate_options(model, options, "auto", core)
    rows = {}
    for combo in itertools.product(*per_layer):
        cost = costmodel.plan_cost(model, combo, options, core)
        try:
            qmodel = quantize(model, options, x, plan=combo)
        except QuantizationError:
            continue
        flash = cost["flash_bytes"] + input_api_bytes(qmodel, None)
        if flash <= budget_bytes:
            rows[combo] = (cost["instructions"], flash, _error(model, qmodel, x))
    good = {c: r for c, r in rows.items() if r[2] <= max_error}
    fastest = min(good, key=lambda c: (good[c][0], good[c][1]))
    window = [c for c in good if good[c][0] <= good[fastest][0] * (1 + COST_MODEL_ERROR)]
    return min(window, key=lambda c: (good[c][1], good[c][0])), rows


@pytest.mark.parametrize("quantile", [0.2, 0.6])
def test_planner_matches_the_exhaustive_search(tiny, quantile):
    """The lazy, shared-work search picks the plan the exhaustive search picks, with the same error
    and the same predicted flash (input API included), quantizing fewer layers than plans x layers."""
    _, _, model, x = tiny
    _, rows = _exhaustive(model, x, OPTIONS, 1.0, 10**9)
    max_error = float(np.quantile([r[2] for r in rows.values()], quantile))  # a limit that binds
    expected, rows = _exhaustive(model, x, OPTIONS, max_error, 10**9)
    choice = choose(model, OPTIONS, x, max_error=max_error, budget=Budget(10**9, "--flash-budget"))
    assert choice.plan == expected, (describe(choice.plan), describe(expected))
    assert choice.error == pytest.approx(rows[expected][2], rel=1e-12, abs=1e-15)
    assert (choice.instructions, choice.flash_bytes) == rows[expected][:2]
    assert choice.weighed["quantized_layers"] < choice.considered * len(model.layers)


def test_the_budget_is_a_ceiling(tiny):
    """A larger budget never buys a larger plan of the same speed: with every plan fitting either
    budget, the choice is the same."""
    _, _, model, x = tiny
    small = choose(model, OPTIONS, x, max_error=0.05, budget=Budget(64 * 1024, "--flash-budget"))
    large = choose(model, OPTIONS, x, max_error=0.05, budget=Budget(2**20, "--flash-budget"))
    assert small.plan == large.plan
    for alt in large.larger:  # what the larger plans would have added is stated, and positive
        assert alt["extra_bytes"] > 0 and alt["flash_bytes"] == large.flash_bytes + alt["extra_bytes"]


def _source_kwargs(source: str, monkeypatch, bytes_: int) -> dict:
    """generate_model keywords giving a budget of ``bytes_`` from ``source``."""
    if source == "default":
        monkeypatch.setattr(budget_module, "DEFAULT_FLASH_BUDGET", bytes_)
        return {}
    if source == "board":
        fake = types.SimpleNamespace(flash_bytes=2 * bytes_, core="cortex-m4", has_multiplier=True)
        monkeypatch.setattr("kan2mcu.firmware.boards.get_board", lambda name: fake)
        return {"board": "qemu-cortex-m4"}
    return {"flash_budget": bytes_}


@pytest.mark.parametrize("source", ["default", "board", "flash-budget"])
def test_over_budget_is_refused_whatever_the_source(tiny, tmp_path, monkeypatch, source):
    """The default budget, --board's and --flash-budget all refuse a model over them, naming the
    smallest plan and its cost; --allow-over-budget writes exactly that plan, and says so."""
    checkpoint, calibration, _, _ = tiny
    kwargs = _source_kwargs(source, monkeypatch, TINY)
    with pytest.raises(OptionError, match=rf"no plan fits .* of {TINY} bytes: the smallest model possible "
                                          r"\((layer \d: [^)]+)\) needs about (\d+) bytes .*--allow-over-budget") as info:
        generate_model(checkpoint, tmp_path / "m", calibration=calibration, options=OPTIONS, quiet=True, **kwargs)
    assert not (tmp_path / "m").exists()
    named = str(info.value).split("possible (")[1].split(") needs")[0]
    result = generate_model(checkpoint, tmp_path / "m", calibration=calibration, options=OPTIONS, quiet=True,
                            allow_over_budget=True, max_error=10.0, **kwargs)
    planner = result.report["planner"]
    assert "written anyway (--allow-over-budget)" in planner["warning"]
    steps = [f"layer {i}: {s['strategy']} {s['in_bits']}-bit codes" for i, s in enumerate(result.report["plan"])]
    assert all(step in named for step in steps), (named, steps)
    assert result.report["totals"]["model_flash_bytes"] > TINY


def test_budget_sources_give_the_same_plan(tiny, tmp_path, monkeypatch):
    """Equal budgets from the three sources: byte-identical model sources."""
    checkpoint, calibration, _, _ = tiny
    texts = []
    for source in ("default", "board", "flash-budget"):
        with monkeypatch.context() as patch:
            kwargs = _source_kwargs(source, patch, 2000)
            generate_model(checkpoint, tmp_path / source, calibration=calibration, options=OPTIONS, quiet=True,
                           max_error=10.0, **kwargs)
        texts.append((tmp_path / source / "kan.c").read_text())
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("budget_bytes", [1500, 2500])
def test_written_model_is_counted_as_budgeted(tiny, tmp_path, budget_bytes):
    """report.json: the model flash is the sum of its parts (layers' tables, input API, code), it is
    what the planner predicted (edge-table layers: exact), and it is within the budget."""
    checkpoint, calibration, _, _ = tiny
    result = generate_model(checkpoint, tmp_path / "m", calibration=calibration, options=OPTIONS, quiet=True,
                            strategy="edge-table", flash_budget=budget_bytes, max_error=10.0)
    totals, planner = result.report["totals"], result.report["planner"]
    layers = sum(row["flash_bytes"] for row in result.report["layers"])
    assert totals["flash_bytes"] == layers + totals["input_api_bytes"]
    assert totals["model_flash_bytes"] == totals["flash_bytes"] + totals["code_bytes"]
    assert planner["predicted_flash_bytes"] == totals["model_flash_bytes"] <= budget_bytes
    assert planner["predicted_input_api_bytes"] == totals["input_api_bytes"] > 0
    assert json.loads((tmp_path / "m" / "report.json").read_text())["totals"] == totals


def test_planner_weighs_widths_down_to_two_bits(tiny):
    """Codes, entries and coefficients from the options' widths down to 2 bits; the 2-bit-code
    edge-table plan is there to be chosen when only it fits."""
    _, _, model, x = tiny
    options = QuantOptions()
    from kan2mcu.quant.planner import layer_options

    weighed = layer_options(model, options, "auto")[0]
    assert {s.coef_bits or options.coef_bits for s in weighed if s.strategy == "spline"} == set(range(8, 1, -1))
    assert {s.table_bits for s in weighed if s.strategy == "edge-table"} == set(range(8, 1, -1))
    per_layer, costs, _ = candidate_options(model, options, "auto", "cortex-m4")
    codes = {s.in_bits for s in per_layer[0] if s.strategy == "edge-table"}
    assert codes == set(range(8, 1, -1))
    spline = [s for s in per_layer[0] if s.strategy == "spline"]  # kept: only widths that cost less than wider ones
    assert len({(costs[(0, s)]["flash_bytes"], costs[(0, s)]["instructions"]) for s in spline}) == len(spline)
    choice = choose(model, options, x, max_error=10.0, objective="size", budget=Budget(10**6, "--flash-budget"))
    assert choice.plan[0].in_bits == 2 and choice.weighed["codes"] == [8, 2]


@pytest.mark.parametrize("strategy", ["spline", "edge-table"])
def test_shared_work_equals_whole_quantization(tiny, strategy):
    """A layer requantized for another consumer, and the shared accumulators, give the layer and the
    outputs a whole-plan quantize + reference run gives (every consumer encoding)."""
    from kan2mcu.quant.plansearch import PlanSearch
    from kan2mcu.quant.quantize import LayerPlan

    _, _, model, x = tiny
    search = PlanSearch(model, OPTIONS, x)
    first = LayerPlan(strategy, 4, 4 if strategy == "edge-table" else None)
    for consumer in (LayerPlan("edge-table", 2, 4), LayerPlan("spline", 4), LayerPlan("edge-table", 4, 4)):
        plan = (first, consumer)
        whole = quantize(model, OPTIONS, x, plan=plan)
        shared = search.qmodel(plan)
        for mine, theirs in zip(shared.layers, whole.layers):
            for name in ("mult", "mult_spline", "mult_base", "rounding", "shift"):
                if hasattr(theirs, name):
                    np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name))
        np.testing.assert_array_equal(search.outputs(plan), run_model(whole, quantize_inputs(whole, x)))
    assert search.quantized_layers == 1 + 3  # the first layer once, each consumer once


def test_measure_counts_the_reported_tables(tiny, tmp_path):
    """`kan2mcu measure` reads the model's tables and code from the linked ELF: never more than the
    report counts (the compiler may fold a small constant table into code, and the firmware links
    the input API's tables only if it calls the raw-input API), and the code estimate is not below
    the linked code."""
    from conftest import require_tool
    from kan2mcu.firmware.boards import get_board
    from kan2mcu.firmware.measure import measure

    info = get_board("qemu-cortex-m4")
    require_tool(info.gcc_prefix + "gcc")
    require_tool(info.qemu_system)
    checkpoint, calibration, _, _ = tiny
    result = generate_model(checkpoint, tmp_path / "m", calibration=calibration, options=OPTIONS, quiet=True,
                            strategy="edge-table", flash_budget=2500, max_error=10.0)
    totals = result.report["totals"]
    entry = measure([tmp_path / "m"], "qemu-cortex-m4", tmp_path / "measure")["models"][0]
    assert entry["check"] == "PASS"
    flash = entry["memory"]["flash"]
    layers = totals["flash_bytes"] - totals["input_api_bytes"]
    print("measured", flash, "reported", totals)
    linked_api = totals["input_api_bytes"] if flash["model_tables"] > layers else 0
    assert flash["model_tables"] <= layers + linked_api
    assert flash["model_tables"] >= layers - 9 * 3  # at most the last layer's requantization constants folded
    assert flash["model_code"] <= totals["code_bytes"]
    assert flash["model_tables"] + flash["model_code"] <= totals["model_flash_bytes"]


class _StubSearch:
    """Plan errors given outright (the decision rule alone, without quantizing)."""

    calibration = np.zeros((1, 1))

    def __init__(self, errors: dict):
        self._errors = errors

    def qmodel(self, combo):
        return combo

    def error(self, combo):
        return self._errors[combo]


@pytest.mark.parametrize("objective", ["speed", "size"])
def test_ceiling_rule_takes_the_smallest_of_the_equally_fast(objective):
    """Speed: the fastest acceptable plan sets the pace; an acceptable plan within the cost model's
    error of its instructions and smaller wins, one just outside does not, an unacceptable smaller
    one never; the larger plan is reported with what it would add. Size: the smallest acceptable."""
    from kan2mcu.quant.planscore import Scores, larger_plans, search_plans

    from kan2mcu.quant.quantize import LayerPlan

    fast, near, far, bad = ((LayerPlan("edge-table", bits, 8),) for bits in (8, 6, 4, 2))
    predicted = {fast: {"instructions": 1000, "flash_bytes": 9000},
                 near: {"instructions": int(1000 * (1 + COST_MODEL_ERROR)), "flash_bytes": 5000},
                 far: {"instructions": int(1000 * (1 + COST_MODEL_ERROR)) + 1, "flash_bytes": 3000},
                 bad: {"instructions": 1000, "flash_bytes": 1000}}
    scores = Scores(_StubSearch({fast: 0.01, near: 0.015, far: 0.01, bad: 0.5}))
    combo, tolerance, warning, _ = search_plans(None, OPTIONS, "auto", scores, list(predicted), predicted, objective,
                                             0.02, Budget(10**6, "--flash-budget"))
    assert (tolerance, warning) == (0.02, None)
    assert combo == (near if objective == "speed" else far)
    if objective == "speed":
        (alt,) = larger_plans(combo, scores, predicted, tolerance, objective)
        assert (alt["extra_bytes"], alt["instructions_saved"]) == (4000, predicted[near]["instructions"] - 1000)


def test_a_default_limit_the_budget_keeps_out_of_reach_is_a_note(tiny):
    """2000 bytes hold no plan within the default --max-error: the most accurate plan that fits, and
    a note (what it loses on data is the guard's to warn about); the same limit given is a warning."""
    _, _, model, x = tiny
    default = choose(model, QuantOptions(), x, budget=2000)
    assert default.warning is None and default.note.startswith("no plan within --flash-budget of 2000 bytes")
    given = choose(model, QuantOptions(), x, budget=2000, max_error=DEFAULT_MAX_ERROR)
    assert given.note is None and given.warning.startswith("no plan within --flash-budget of 2000 bytes")
    assert given.plan == default.plan
