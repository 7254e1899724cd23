"""`kan2mcu generate`: checkpoint -> IR -> quantized model -> C sources, report and test vectors.

The pipeline is a named list of stages (:data:`STAGES`) over one :class:`Generation` state; each
stage does one job and lives beside the code it drives:

    load -> calibrate -> plan -> guard -> render -> report -> write

``kan2mcu generate``, ``sweep`` and the demo all run them through :func:`generate_model`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kan2mcu import __version__
from kan2mcu.codegen.bundle import BUNDLE, bundle_bytes
from kan2mcu.codegen.identity import banner, check_name
from kan2mcu.codegen.model_dir import (CALIBRATION_FILE, MANIFEST, build_manifest, check_output_folder,
                                       write_model_folder)
from kan2mcu.codegen.render import render_float, render_int
from kan2mcu.codegen.report import build_report, layer_report, markdown
from kan2mcu.codegen.vectors import N_TEST_VECTORS, test_vectors
from kan2mcu.data.datasets import load_dataset
from kan2mcu.data.tabular import TASKS
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.model.importers import ImportedModel, load_checkpoint
from kan2mcu.model.ir import BASE_FUNCTIONS
from kan2mcu.quant import coverage, guard
from kan2mcu.quant.calibration import calibration_data, load_calibration
from kan2mcu.quant.evaluate import dataset_accuracy, eval_rows, evaluation, held_out_inputs
from kan2mcu.quant.fixedpoint import code_ctype
from kan2mcu.quant.foldsilu import fold_silu as fold_silu_model
from kan2mcu.quant.budget import check_written_total, code_bytes, flash_budget as budget_of
from kan2mcu.quant.output_error import task_of
from kan2mcu.quant.planner import board_options, choose, core_for, explain
from kan2mcu.quant.quantize import QuantOptions, quantize

ARITHMETICS = ("int", "float")
# Re-exported: verify, plots and sweep read calibration the way generate wrote it.
__all__ = ["generate_model", "GenerateRequest", "GenerateResult", "STAGES", "CALIBRATION_FILE", "MANIFEST",
           "N_TEST_VECTORS", "load_calibration"]


@dataclass(frozen=True)
class GenerateResult:
    """Where the files went and the report written with them."""

    folder: Path
    files: list
    report: dict


@dataclass(frozen=True)
class GenerateRequest:
    """What the user asked for (the arguments of :func:`generate_model`), checked by :meth:`check`."""

    checkpoint: Path
    output: Path
    name: str = "kan"
    arith: str = "int"
    options: QuantOptions = field(default_factory=QuantOptions)
    calibration: Path | None = None
    quiet: bool = False
    plan: tuple | None = None
    strategy: str = "auto"
    optimize: str = "speed"
    flash_budget: int | None = None
    board: str | None = None
    max_error: float | None = None  # None: the planner's default, only noted when out of reach
    base_activation: str | None = None
    allow_saturation: bool = False
    prefix: str | None = None
    eval_data: Path | None = None
    fold_silu: bool = False
    allow_over_budget: bool = False
    task: str | None = None  # None: the checkpoint's (kan2mcu.quant.output_error.task_of)

    def check(self) -> None:
        """Refuse, before any work, what cannot be generated (OptionError)."""
        if self.arith not in ARITHMETICS:
            raise OptionError(f"--arith must be one of {ARITHMETICS}, got {self.arith!r}")
        check_max_error(self.max_error)
        if self.task is not None and self.task not in TASKS:
            raise OptionError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        check_name(self.name)
        check_output_folder(Path(self.output))


def check_max_error(max_error: float | None) -> None:
    """Refuse a --max-error that is not a positive finite fraction (OptionError); None: the default."""
    if max_error is not None and (not math.isfinite(max_error) or max_error <= 0):
        raise OptionError(f"--max-error must be a positive number (an output error over the output range, e.g. 0.005), got {max_error:g}")


@dataclass
class Generation:
    """The state the stages fill in, in order."""

    request: GenerateRequest
    imported: ImportedModel | None = None
    model: object = None  # the float IR the report, the guard and verify compare with
    target: object = None  # the float IR the integer model is quantized from (after --fold-silu)
    activation: str = ""
    calib: np.ndarray | None = None
    calib_how: str = "none"
    evaluated_rows: object = None
    fold_report: dict | None = None
    choice: object = None
    qmodel: object = None
    guard_report: object = None
    evaluated: dict | None = None  # the report's evaluation block, once the guard computed it
    held_out: dict | None = None  # the guard's figures on labelled held-out rows (kan2mcu.quant.guard)
    rendered: object = None
    report: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    written: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # what does not change the result by itself: for the report

    def say(self, msg: str) -> None:
        if not self.request.quiet:
            print(msg, file=sys.stderr)

    def note(self, msg: str | None) -> None:
        """Keep ``msg`` for the report's notes (never printed as a warning); None: nothing to note."""
        if msg:
            self.notes.append(msg)


ACCURACY_LOSS_WARN = 0.01  # accuracy (or R2) points lost on data against the float model that generate warns about


def result_loss_warnings(report: dict) -> list[str]:
    """Warnings for what the user loses on data: accuracy on the data set's test split, or the
    figures on --eval-data / held-out rows, more than ACCURACY_LOSS_WARN below the float model's."""
    lines = []
    acc = report.get("accuracy")
    if acc and acc["float"] - acc["quantized"] > ACCURACY_LOSS_WARN:
        lines.append(f"the generated model's accuracy on the {acc['dataset']} {acc['split']} split is "
                     f"{acc['quantized']:.4f}, the float model's {acc['float']:.4f}")
    ev = report.get("evaluation")
    held = (report.get("guard") or {}).get("held_out") or {}
    if ev and ev.get("quantized") and not held.get("refused"):  # a forced refusal already said it
        metric = "accuracy" if "accuracy" in ev["quantized"] else "r2"
        lost = ev["float"][metric] - ev["quantized"][metric]
        if lost > ACCURACY_LOSS_WARN:
            lines.append(f"the generated model's {'accuracy' if metric == 'accuracy' else 'R2'} on {ev['data']} "
                         f"is {ev['quantized'][metric]:.4f}, the float model's {ev['float'][metric]:.4f}")
    return lines


def _warn(msg: str) -> None:
    print(f"kan2mcu: warning: {msg}", file=sys.stderr)


def with_base_activation(imported: ImportedModel, name: str):
    """The imported efficient-kan model with base function ``name`` on every layer."""
    if name not in BASE_FUNCTIONS:
        raise OptionError(f"--base-activation must be one of {', '.join(BASE_FUNCTIONS)}, got {name!r}")
    if imported.format != "efficient-kan":
        raise OptionError(f"--base-activation applies to efficient-kan state dicts; this {imported.format} "
                          "checkpoint records its own base function")
    layers = tuple(dataclasses.replace(layer, base_function=name) for layer in imported.model.layers)
    return dataclasses.replace(imported.model, layers=layers)


def with_task(model, task: str):
    """``model`` with ``task`` recorded (the output-error metric and the bundle take it from there);
    a checkpoint trained on your data keeps its own: its targets are what they are."""
    recorded = model.metadata.get("task")
    if model.metadata.get("target") is not None and recorded != task:
        raise OptionError(f"--task {task}: this checkpoint was trained on your data as {recorded}; its "
                          "targets decide the task")
    return dataclasses.replace(model, metadata={**model.metadata, "task": task})


def describe_base_activation(imported: ImportedModel, model, given: str | None) -> str:
    """The model's base activation, and whether it was assumed rather than read from the file."""
    text = "/".join(sorted({layer.base_function for layer in model.layers}))
    if imported.format == "efficient-kan" and given is None:
        text += " (assumed: efficient-kan state dicts do not record it; --base-activation NAME for another)"
    return text


@contextlib.contextmanager
def _numeric_errors(model):
    """Quantization's numeric and memory failures as one-line errors."""
    try:
        yield
    except OverflowError as exc:
        raise QuantizationError(f"weights or activations too large for fixed point ({exc}); "
                                "check the checkpoint's magnitudes") from None
    except MemoryError:
        raise QuantizationError(f"out of memory while quantizing the KAN {model.widths}; "
                                "try a smaller model or fewer --act-bits") from None


# --- the stages ---------------------------------------------------------------------------------

def load(g: Generation) -> None:
    """Read the checkpoint into the IR (importers), with the base activation the user named."""
    req = g.request
    checkpoint = Path(req.checkpoint)
    g.imported = load_checkpoint(checkpoint, prefix=req.prefix)
    g.model = g.imported.model
    for warning in g.imported.warnings:
        _warn(warning)
    if req.base_activation is not None:
        g.model = with_base_activation(g.imported, req.base_activation)
    if req.task is not None:
        g.model = with_task(g.model, req.task)
    g.activation = describe_base_activation(g.imported, g.model, req.base_activation)
    g.say(f"kan2mcu: read {checkpoint.name}: {g.imported.format} KAN {g.model.widths}, "
          f"base activation {g.activation}")


def calibrate(g: Generation) -> None:
    """Pick the calibration rows and read the evaluation rows (before the slow work: a bad file
    fails fast); with --fold-silu, refit the SiLU branches into the splines."""
    req = g.request
    g.calib, g.calib_how = calibration_data(g.imported, req.calibration)
    g.evaluated_rows = eval_rows(g.imported, g.model, req.eval_data)
    if req.arith == "int":  # the float back end has no ranges to calibrate
        g.note(coverage.small_calibration(None if g.calib is None else len(g.calib)))
    g.target = g.model
    if req.fold_silu:
        _fold_silu(g)


def _fold_silu(g: Generation) -> None:
    req = g.request
    if req.arith != "int" or req.strategy != "spline" or (
            req.plan is not None and any(s.strategy != "spline" for s in req.plan)):
        raise OptionError("--fold-silu folds the SiLU branch of spline layers: use it with --arith int "
                          "--strategy spline")
    g.target, g.fold_report = fold_silu_model(g.model, g.calib)
    for row in g.fold_report["layers"]:
        if row["folded"]:
            g.say(f"kan2mcu: --fold-silu: {row['layer']} folded (its outputs change by "
                  f"{100 * row['rms_error']:.3g}% RMS of their range)")
        else:
            g.note(f"--fold-silu: {row['layer']} keeps its SiLU branch: the refit would change its outputs by "
                  f"{100 * row['rms_error']:.2f}% RMS of their range ({100 * row['inside_grid']:.0f}% of its "
                  f"inputs inside the grid)")


def plan(g: Generation) -> None:
    """Quantize: the user's per-layer plan, or the planner's choice within the flash budget."""
    req = g.request
    if req.arith != "int":
        return
    with _numeric_errors(g.model):
        if req.plan is not None:
            g.qmodel = quantize(g.target, req.options, g.calib, plan=req.plan)
        else:
            g.choice = choose(g.target, req.options, g.calib, strategy=req.strategy, objective=req.optimize,
                              budget=budget_of(req.board, req.flash_budget), core=core_for(req.board),
                              max_error=req.max_error, allow_over_budget=req.allow_over_budget,
                              input_transform=g.model.metadata.get("input_transform"))
            g.qmodel = g.choice.qmodel
            for line in explain(g.choice):
                g.say(f"kan2mcu: {line}")
            if g.choice.warning:
                _warn(g.choice.warning)
            g.note(g.choice.note)
    trained_for = g.model.metadata.get("qat")  # kan2mcu finetune / train --qat
    if trained_for:
        from kan2mcu.training.qat import deployment_warning  # pylint: disable=import-outside-toplevel

        mismatch = deployment_warning(trained_for, req.options, g.qmodel.plan)
        if mismatch:
            _warn(mismatch)


def guard_stage(g: Generation) -> None:
    """Refuse an integer model far from the float one (kan2mcu.quant.guard) unless allowed."""
    if g.qmodel is not None:
        # calibration rows may be unlike the data: labelled held-out rows, when there are, weigh too,
        # and first (they say what the user will see on real data)
        g.evaluated = evaluation(g.model, g.qmodel, g.evaluated_rows)
        g.held_out = guard.held_out_loss(g.evaluated)
        guard.check_held_out(g.held_out, force=g.request.allow_saturation, warn=_warn)
        g.guard_report = guard.measure(g.model, g.qmodel, g.calib)
        guard.check(g.guard_report, force=g.request.allow_saturation, warn=_warn)
        g.notes.extend(g.guard_report.notes)


def render(g: Generation) -> None:
    """Render the C sources (integer or float back end) under the banner."""
    req = g.request
    options = req.options.as_dict() if req.arith == "int" else {}
    head = banner(req.name, g.imported, Path(req.checkpoint), req.arith, options, g.model.sha256())
    if req.arith == "int":
        g.rendered = render_int(g.qmodel, req.name, head, input_transform=g.model.metadata.get("input_transform"))
    else:
        g.rendered = render_float(g.model, req.name, head)


def report(g: Generation) -> None:
    """Assemble report.json: costs per layer, plan, guard, accuracy, evaluation and coverage."""
    req, model, qmodel = g.request, g.model, g.qmodel
    trained_for = model.metadata.get("qat")
    task, task_source = task_of(model)
    model_info = {"name": req.name, "source_format": g.imported.format, "widths": model.widths,
                  "sha256": model.sha256(), "base_activation": g.activation, "task": task,
                  "task_source": "--task" if req.task else task_source}
    if trained_for:
        model_info["qat"] = {k: trained_for.get(k) for k in ("strategy", "act_bits", "spline_bits", "coef_bits",
                                                             "base_bits", "silu_bits")}
    dataset = g.imported.dataset
    covered = _coverage(g)
    g.report = build_report(
        version=__version__, arith=req.arith, model_info=model_info,
        options=req.options.as_dict() if req.arith == "int" else {}, calibration=g.calib_how,
        rows=layer_report(model, qmodel, g.rendered), rendered=g.rendered,
        sections={"plan": [step.as_dict() for step in qmodel.plan] if qmodel is not None else None,
                  "planner": g.choice.as_dict() if g.choice is not None else None,
                  "guard": g.guard_report.as_dict() if g.guard_report is not None else None,
                  "evaluation": g.evaluated if g.evaluated is not None else evaluation(model, qmodel,
                                                                                        g.evaluated_rows),
                  "fold_silu": g.fold_report,
                  "accuracy": dataset_accuracy(model, qmodel, dataset) if dataset else None,
                  "coverage": covered.as_dict() if covered is not None else None,
                  "notes": list(g.notes)},
        code_bytes=code_bytes(qmodel, core_for(req.board)) if qmodel is not None else 0)
    if g.choice is not None:  # the written model, counted as the budget counts it
        _check_budget(g.report["totals"], budget_of(req.board, req.flash_budget), req.allow_over_budget, g.say)
    if qmodel is not None:
        g.report["calibration_rows"] = None if g.calib is None else int(len(g.calib))
    if g.held_out is not None:
        g.report["guard"]["held_out"] = g.held_out
    for line in result_loss_warnings(g.report):
        _warn(line)


def _check_budget(t: dict, budget, allow: bool, say) -> None:
    """Refuse a planned model whose counted flash exceeds the budget (unless ``allow``); say the count."""
    over = check_written_total(t["model_flash_bytes"], budget, allow)
    if over:
        _warn(over)
    say(f"kan2mcu: model flash {t['model_flash_bytes']} bytes = tables {t['flash_bytes'] - t['input_api_bytes']} + "
        f"input API {t['input_api_bytes']} + code {t['code_bytes']} (estimated); {budget.describe()}")


def _coverage(g: Generation):
    """How much of the held-out inputs the integer model's ranges cover (a note when too little)."""
    dataset = g.imported.dataset
    held_out = ((load_dataset(dataset).x_test, f"{dataset} test split") if dataset
                else held_out_inputs(g.model, g.evaluated_rows))
    if g.qmodel is None or held_out is None:
        return None
    covered = coverage.measure(g.model, g.qmodel, *held_out, calibration=g.calib)
    g.note(covered.note())
    return covered


def write(g: Generation) -> None:
    """Write the model folder atomically: C, manifest, test vectors, report, bundle, calibration."""
    req, model, qmodel = g.request, g.model, g.qmodel
    dataset = g.imported.dataset
    vectors_x = (load_dataset(dataset).x_test[:N_TEST_VECTORS] if dataset
                 else g.calib[:N_TEST_VECTORS] if g.calib is not None else None)
    options = req.options.as_dict() if req.arith == "int" else {}
    manifest = build_manifest(name=req.name, arith=req.arith, model=model, imported=g.imported,
                              input_ctype=code_ctype(qmodel.layers[0].act_bits) if req.arith == "int" else "float",
                              options=options, sha=model.sha256())
    files = dict(g.rendered.files)
    files["test_vectors.json"] = json.dumps(test_vectors(model, qmodel, vectors_x), sort_keys=True) + "\n"
    files["report.json"] = json.dumps(g.report, indent=2, sort_keys=True) + "\n"
    files["report.md"] = markdown(g.report)
    files[BUNDLE] = bundle_bytes(model, qmodel)
    if g.calib is not None and not dataset:  # `verify` checks on the same data by default
        buffer = io.BytesIO()
        np.save(buffer, g.calib, allow_pickle=False)
        files[CALIBRATION_FILE] = buffer.getvalue()
    manifest["files"] = sorted([*files, MANIFEST])  # what the folder may hold: regenerating replaces only these
    files[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    g.files = files
    g.written = write_model_folder(Path(req.output), files)
    if not req.quiet:
        print(files["report.md"])


STAGES = (("load", load), ("calibrate", calibrate), ("plan", plan), ("guard", guard_stage),
          ("render", render), ("report", report), ("write", write))


def run_stages(request: GenerateRequest, stages=STAGES) -> Generation:
    """Check the request, then run ``stages`` in order over one :class:`Generation`."""
    request.check()
    state = Generation(request)
    for _name, stage in stages:
        stage(state)
    return state


def generate_model(checkpoint, output, *, name: str = "kan", arith: str = "int",
                   options: QuantOptions | None = None, calibration: Path | None = None,
                   quiet: bool = False, plan=None, strategy: str = "auto", optimize: str = "speed",
                   flash_budget: int | None = None, board: str | None = None,
                   max_error: float | None = None, base_activation: str | None = None,
                   allow_saturation: bool = False, prefix: str | None = None,
                   eval_data: Path | None = None, fold_silu: bool = False,
                   allow_over_budget: bool = False, task: str | None = None) -> GenerateResult:
    """Generate the C model for ``checkpoint`` into folder ``output`` (written only when all succeeded).

    The integer model's per-layer strategies come from ``plan`` (a LayerPlan per layer) when given,
    else from the planner (kan2mcu.quant.planner): ``strategy`` "auto" weighs spline and edge-table per
    layer, ``optimize`` "speed" or "size", within ``flash_budget`` bytes (default: ``board``'s flash
    less a firmware reserve, or 64 KiB), keeping the output error under ``max_error`` (None: the planner's
    default, DEFAULT_MAX_ERROR, which the report only notes when the bit widths cannot reach it).
    ``base_activation`` names the base function of an efficient-kan model (its state dict does not
    record it; SiLU is assumed otherwise).
    The quantization guard (kan2mcu.quant.guard) then refuses an integer model far from the float one
    unless ``allow_saturation``; ``prefix`` picks one KAN of a state dict holding several.
    ``eval_data`` (kan2mcu.quant.evaluate): labelled rows whose accuracy, or R2 and max |error|, the
    report gives for the float and the generated model (own-data checkpoints: their held-out rows
    by default).
    ``fold_silu`` (spline layers only) refits SiLU branches into the splines (kan2mcu.quant.foldsilu); the
    float model the report, the guard and ``verify`` compare with stays the unfolded one.
    A planned model over the flash budget (tables, input API and code, kan2mcu.quant.budget; whichever
    way the budget was given) is refused unless ``allow_over_budget``.
    ``task`` ("classify" | "regress") sets what the outputs are for the output-error metric the
    planner and the guard use (default: the checkpoint's, kan2mcu.quant.output_error.task_of).
    """
    options = options or QuantOptions()
    if arith == "int":
        options = board_options(options, board)  # a core without a multiplier: multiply-free layers
    request = GenerateRequest(
        checkpoint=Path(checkpoint), output=Path(output), name=name, arith=arith, options=options,
        calibration=calibration, quiet=quiet, plan=plan, strategy=strategy, optimize=optimize,
        flash_budget=flash_budget, board=board, max_error=max_error, base_activation=base_activation,
        allow_saturation=allow_saturation, prefix=prefix, eval_data=eval_data, fold_silu=fold_silu,
        allow_over_budget=allow_over_budget, task=task)
    state = run_stages(request)
    return GenerateResult(Path(output), state.written, state.report)
