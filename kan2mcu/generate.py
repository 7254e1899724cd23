"""`kan2mcu generate`: checkpoint -> IR -> quantized model -> C sources, report and test vectors."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import keyword
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu import __version__
from kan2mcu.bundle import BUNDLE, bundle_bytes
from kan2mcu.bspline import model_forward
from kan2mcu.datasets import load_dataset
from kan2mcu import coverage, guard
from kan2mcu.errors import OptionError, QuantizationError
from kan2mcu.evaluate import eval_rows, evaluation, held_out_inputs, model_inputs, read_rows
from kan2mcu.fixedpoint import code_ctype
from kan2mcu.foldsilu import fold_silu as fold_silu_model
from kan2mcu.fsutil import check_writable
from kan2mcu.importers import ImportedModel, load_checkpoint
from kan2mcu.ir import BASE_FUNCTIONS
from kan2mcu.budget import check_written_total, code_bytes, flash_budget as budget_of
from kan2mcu.planner import DEFAULT_MAX_ERROR, choose, core_for, explain
from kan2mcu.quantize import QuantOptions, quantize
from kan2mcu.reference import quantize_inputs, run_model
from kan2mcu.render import c_prefix, render_float, render_int
from kan2mcu.report import layer_report, markdown, totals

ARITHMETICS = ("int", "float")
N_TEST_VECTORS = 8
CALIBRATION_FILE = "calibration.npy"  # calibration inputs kept beside the C when no data set is known
MANIFEST = "kan2mcu.json"

# Names the generated files or symbols would collide with (the firmware harness, C, its headers).
_C_KEYWORDS = ("auto break case char const continue default do double else enum extern float for goto if "
               "inline int long register restrict return short signed sizeof static struct switch typedef "
               "union unsigned void volatile while bool true false asm").split()
_C_HEADERS = ("assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal stdalign "
              "stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string tgmath threads time "
              "uchar wchar wctype arduino").split()
_HARNESS_FILES = ("main", "port_arduino", "kan2mcu_port", "kan2mcu_test_vectors")


@dataclass(frozen=True)
class GenerateResult:
    """Where the files went and the report written with them."""

    folder: Path
    files: list
    report: dict


def reserved_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be a model name (its files and C symbols would collide), or None."""
    if name == "kan2mcu" or name.startswith("kan2mcu_"):
        return "the firmware harness uses the prefix kan2mcu_ for its own symbols"
    if name in _HARNESS_FILES:
        return f"the firmware harness has its own {name}.c/{name}.h"
    if name in _C_KEYWORDS or keyword.iskeyword(name):
        return "it is a C keyword"
    if name in _C_HEADERS:
        return f"{name}.h would shadow the C library header <{name}.h>"
    return None


def check_name(name: str) -> None:
    """Refuse model names that are not C identifiers or would collide (OptionError with the reason)."""
    if c_prefix(name) != name:
        raise OptionError(f"--name must be a lower-case C identifier, e.g. {c_prefix(name)!r}")
    reason = reserved_name_reason(name)
    if reason:
        suggestion = "kan_model" if reserved_name_reason(f"{name}_model") else f"{name}_model"
        raise OptionError(f"--name {name}: reserved name ({reason}); pick another, e.g. {suggestion}")


def check_output_folder(folder: Path) -> None:
    """Refuse, before any work, an output path that cannot become a model folder (OptionError)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"-o {folder}: is a file, not a folder")
    check_writable(folder)
    if folder.is_dir():
        entries = [p.name for p in folder.iterdir()]
        if entries and MANIFEST not in entries:
            raise OptionError(f"-o {folder}: holds other files and is not a kan2mcu model folder; "
                              "pick a new or empty folder (generate replaces the whole folder)")


def load_calibration(path: Path, n_inputs: int) -> np.ndarray:
    """Model inputs from a .npy or .csv file ([N, n_inputs] floats)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            data = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise OptionError(f"--calibration: {path} must be .npy or .csv")
    except OptionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise OptionError(f"--calibration: cannot read {path} ({str(exc).splitlines()[0][:160]})") from None
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != n_inputs or not np.all(np.isfinite(data)):
        raise OptionError(f"--calibration: need finite [N, {n_inputs}] inputs, got shape {data.shape}")
    return data


def calibration_data(imported: ImportedModel, calibration: Path | None) -> tuple[np.ndarray | None, str]:
    """Pick calibration inputs: an explicit file, the checkpoint's data set, the rows the checkpoint
    carries (pykan's cache; the training rows of a model trained on your own data), or none.

    For a checkpoint trained on your own data ``--calibration`` takes the formats of ``--data``
    (raw feature values, CSV columns matched by name, the target column optional)."""
    n_inputs = imported.model.layers[0].in_features
    if calibration is not None:
        if imported.model.metadata.get("columns"):
            raw, _ = read_rows(calibration, imported.model, option="--calibration", need_target=False)
            return model_inputs(imported.model, raw), f"file {Path(calibration).name}"
        return load_calibration(calibration, n_inputs), f"file {Path(calibration).name}"
    if imported.dataset:
        return load_dataset(imported.dataset).x_train, f"{imported.dataset} training split"
    if imported.calibration is not None:
        return np.asarray(imported.calibration, dtype=np.float64), imported.calibration_source
    return None, "none"


def with_base_activation(imported: ImportedModel, name: str):
    """The imported efficient-kan model with base function ``name`` on every layer."""
    if name not in BASE_FUNCTIONS:
        raise OptionError(f"--base-activation must be one of {', '.join(BASE_FUNCTIONS)}, got {name!r}")
    if imported.format != "efficient-kan":
        raise OptionError(f"--base-activation applies to efficient-kan state dicts; this {imported.format} "
                          "checkpoint records its own base function")
    layers = tuple(dataclasses.replace(layer, base_function=name) for layer in imported.model.layers)
    return dataclasses.replace(imported.model, layers=layers)


def _banner(name: str, imported: ImportedModel, checkpoint: Path, arith: str, options: dict, sha: str) -> str:
    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    return "\n".join([
        f" * {name}: generated by kan2mcu {__version__}. Do not edit.",
        f" * source: {checkpoint.name} ({imported.format}), widths {imported.model.widths}",
        f" * model sha256: {sha}",
        f" * options: --arith {arith} {opts}".rstrip(),
    ])


def describe_base_activation(imported: ImportedModel, model, given: str | None) -> str:
    """The model's base activation, and whether it was assumed rather than read from the file."""
    text = "/".join(sorted({layer.base_function for layer in model.layers}))
    if imported.format == "efficient-kan" and given is None:
        text += " (assumed: efficient-kan state dicts do not record it; --base-activation NAME for another)"
    return text


def _warn(msg: str) -> None:
    print(f"kan2mcu: warning: {msg}", file=sys.stderr)


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


def generate_model(checkpoint, output, *, name: str = "kan", arith: str = "int",
                   options: QuantOptions | None = None, calibration: Path | None = None,
                   quiet: bool = False, plan=None, strategy: str = "auto", optimize: str = "speed",
                   flash_budget: int | None = None, board: str | None = None,
                   max_error: float = DEFAULT_MAX_ERROR, base_activation: str | None = None,
                   allow_saturation: bool = False, prefix: str | None = None,
                   eval_data: Path | None = None, fold_silu: bool = False,
                   allow_over_budget: bool = False) -> GenerateResult:
    """Generate the C model for ``checkpoint`` into folder ``output`` (written only when all succeeded).

    The integer model's per-layer strategies come from ``plan`` (a LayerPlan per layer) when given,
    else from the planner (kan2mcu.planner): ``strategy`` "auto" weighs spline and edge-table per
    layer, ``optimize`` "speed" or "size", within ``flash_budget`` bytes (default: ``board``'s flash
    less a firmware reserve, or 64 KiB), keeping the output error under ``max_error``.
    ``base_activation`` names the base function of an efficient-kan model (its state dict does not
    record it; SiLU is assumed otherwise).
    The quantization guard (kan2mcu.guard) then refuses an integer model far from the float one
    unless ``allow_saturation``; ``prefix`` picks one KAN of a state dict holding several.
    ``eval_data`` (kan2mcu.evaluate): labelled rows whose accuracy, or R2 and max |error|, the
    report gives for the float and the generated model (own-data checkpoints: their held-out rows
    by default).
    ``fold_silu`` (spline layers only) refits SiLU branches into the splines (kan2mcu.foldsilu); the
    float model the report, the guard and ``verify`` compare with stays the unfolded one.
    A planned model over the flash budget (tables, input API and code, kan2mcu.budget; whichever
    way the budget was given) is refused unless ``allow_over_budget``.
    """
    if arith not in ARITHMETICS:
        raise OptionError(f"--arith must be one of {ARITHMETICS}, got {arith!r}")
    options = options or QuantOptions()
    check_name(name)
    check_output_folder(Path(output))
    checkpoint = Path(checkpoint)
    imported = load_checkpoint(checkpoint, prefix=prefix)
    model = imported.model
    say = (lambda *_: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    for warning in imported.warnings:
        _warn(warning)
    if base_activation is not None:
        model = with_base_activation(imported, base_activation)
    activation = describe_base_activation(imported, model, base_activation)
    say(f"kan2mcu: read {checkpoint.name}: {imported.format} KAN {model.widths}, base activation {activation}")
    calib, calib_how = calibration_data(imported, calibration)
    evaluated_rows = eval_rows(imported, model, eval_data)  # read before the slow work: a bad file fails fast
    if calib is None:
        _warn("no calibration data: activation ranges come from the grids only; "
              "pass --calibration FILE (.npy/.csv of model inputs) for better accuracy")
    elif arith == "int" and coverage.small_calibration(len(calib)):
        _warn(coverage.small_calibration(len(calib)))
    sha = model.sha256()
    choice = None
    fold_report, target = None, model  # target: the float model the integer one is quantized from
    if fold_silu:
        if arith != "int" or strategy != "spline" or (plan is not None and any(s.strategy != "spline" for s in plan)):
            raise OptionError("--fold-silu folds the SiLU branch of spline layers: use it with --arith int "
                              "--strategy spline")
        target, fold_report = fold_silu_model(model, calib)
        for row in fold_report["layers"]:
            if row["folded"]:
                say(f"kan2mcu: --fold-silu: {row['layer']} folded (its outputs change by "
                    f"{100 * row['rms_error']:.3g}% RMS of their range)")
            else:
                _warn(f"--fold-silu: {row['layer']} keeps its SiLU branch: the refit would change its outputs by "
                      f"{100 * row['rms_error']:.2f}% RMS of their range ({100 * row['inside_grid']:.0f}% of its "
                      f"inputs inside the grid)")
    with _numeric_errors(model):
        if arith != "int":
            qmodel = None
        elif plan is not None:
            qmodel = quantize(target, options, calib, plan=plan)
        else:
            choice = choose(target, options, calib, strategy=strategy, objective=optimize,
                            budget=budget_of(board, flash_budget), core=core_for(board), max_error=max_error,
                            allow_over_budget=allow_over_budget,
                            input_transform=model.metadata.get("input_transform"))
            qmodel = choice.qmodel
            for line in explain(choice):
                say(f"kan2mcu: {line}")
            if choice.warning:
                _warn(choice.warning)
    trained_for = model.metadata.get("qat")  # kan2mcu finetune / train --qat
    if trained_for and qmodel is not None:
        from kan2mcu.qat import deployment_warning

        mismatch = deployment_warning(trained_for, options, qmodel.plan)
        if mismatch:
            _warn(mismatch)
    guard_report = None
    if qmodel is not None:
        guard_report = guard.measure(model, qmodel, calib)
        guard.check(guard_report, force=allow_saturation, warn=_warn)
    opt_dict = options.as_dict() if arith == "int" else {}
    banner = _banner(name, imported, checkpoint, arith, opt_dict, sha)
    rendered = render_int(qmodel, name, banner, input_transform=model.metadata.get("input_transform")) if arith == "int" else render_float(model, name, banner)

    rows = layer_report(model, qmodel, rendered)
    report = {"kan2mcu_version": __version__, "arith": arith,
              "model": {"name": name, "source_format": imported.format, "widths": model.widths, "sha256": sha,
                        "base_activation": activation},
              "options": opt_dict, "calibration": calib_how, "layers": rows,
              "totals": totals(rows, rendered, code_bytes(qmodel) if qmodel is not None else 0)}
    if choice is not None:  # the written model, counted as the budget counts it
        _check_budget(report["totals"], budget_of(board, flash_budget), allow_over_budget, say)
    if trained_for:
        report["model"]["qat"] = {k: trained_for.get(k) for k in ("strategy", "act_bits", "spline_bits", "coef_bits",
                                                                   "base_bits", "silu_bits")}
    if qmodel is not None:
        report["plan"] = [step.as_dict() for step in qmodel.plan]
    if choice is not None:
        report["planner"] = choice.as_dict()
    if qmodel is not None:
        report["calibration_rows"] = None if calib is None else int(len(calib))
    if guard_report is not None:
        report["guard"] = guard_report.as_dict()
    evaluated = evaluation(model, qmodel, evaluated_rows)
    if evaluated is not None:
        report["evaluation"] = evaluated
    if fold_report is not None:
        report["fold_silu"] = fold_report
    vectors_x = None
    if imported.dataset:
        data = load_dataset(imported.dataset)
        float_logits = model_forward(model, data.x_test)
        acc = {"dataset": imported.dataset, "split": "test", "samples": int(len(data.y_test)),
               "float": float((float_logits.argmax(1) == data.y_test).mean())}
        if qmodel is not None:
            q_logits = run_model(qmodel, quantize_inputs(qmodel, data.x_test)) * qmodel.output_scale
            acc["quantized"] = float((q_logits.argmax(1) == data.y_test).mean())
            acc["max_abs_logit_error"] = float(np.abs(q_logits - float_logits).max())
        else:
            acc["quantized"] = acc["float"]
            acc["max_abs_logit_error"] = 0.0
        report["accuracy"] = acc
        vectors_x = data.x_test[:N_TEST_VECTORS]
    elif calib is not None:
        vectors_x = calib[:N_TEST_VECTORS]
    held_out = ((data.x_test, f"{imported.dataset} test split") if imported.dataset
                else held_out_inputs(model, evaluated_rows))
    if qmodel is not None and held_out is not None:
        covered = coverage.measure(model, qmodel, *held_out, calibration=calib)
        report["coverage"] = covered.as_dict()
        if covered.warning():
            _warn(covered.warning())
    vectors = _test_vectors(model, qmodel, vectors_x)
    manifest = {"format": "kan2mcu-model", "format_version": 1, "name": name, "prefix": name, "arith": arith,
                "input_size": model.layers[0].in_features, "output_size": model.layers[-1].out_features,
                "input_ctype": code_ctype(qmodel.layers[0].act_bits) if arith == "int" else "float",
                "output_ctype": "int32_t" if arith == "int" else "float",
                "sources": [f"{name}.c"], "headers": [f"{name}.h"], "options": opt_dict,
                "source_format": imported.format, "dataset": imported.dataset, "model_sha256": sha,
                "kan2mcu_version": __version__}
    own = {k: model.metadata[k] for k in ("task", "target", "columns", "classes", "target_transform")
           if model.metadata.get(k) is not None}
    if own:  # a checkpoint trained on your own data: what its inputs and outputs mean
        manifest["data"] = own
    files = dict(rendered.files)
    files[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    files["test_vectors.json"] = json.dumps(vectors, sort_keys=True) + "\n"
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True) + "\n"
    files["report.md"] = markdown(report)
    files[BUNDLE] = bundle_bytes(model, qmodel)
    if calib is not None and not imported.dataset:  # `verify` checks on the same data by default
        buffer = io.BytesIO()
        np.save(buffer, calib, allow_pickle=False)
        files[CALIBRATION_FILE] = buffer.getvalue()
    written = _write_all(Path(output), files)
    if not quiet:
        print(files["report.md"])
    return GenerateResult(Path(output), written, report)


def _check_budget(t: dict, budget, allow: bool, say) -> None:
    """Refuse a planned model whose counted flash exceeds the budget (unless ``allow``); say the count."""
    over = check_written_total(t["model_flash_bytes"], budget, allow)
    if over:
        _warn(over)
    say(f"kan2mcu: model flash {t['model_flash_bytes']} bytes = tables {t['flash_bytes'] - t['input_api_bytes']} + "
        f"input API {t['input_api_bytes']} + code {t['code_bytes']} (estimated); {budget.describe()}")


def _test_vectors(model, qmodel, x: np.ndarray | None) -> dict:
    n_in = model.layers[0].in_features
    if qmodel is not None:
        top = qmodel.layers[0].codes - 1
        codes = [np.zeros(n_in, np.int64), np.full(n_in, top)]
        if x is not None:
            codes = list(quantize_inputs(qmodel, x)) + codes
        codes = np.array(codes)
        return {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}
    x = np.zeros((1, n_in)) if x is None else np.asarray(x)
    y = model_forward(model, x)
    tol = 1e-3 * max(1.0, float(np.abs(y).max()))
    return {"inputs": x.astype(np.float32).astype(float).tolist(), "outputs": y.tolist(), "abs_tolerance": tol}


def _write_all(folder: Path, files: dict) -> list:
    """Write the whole model folder atomically: every file goes into a temporary folder beside
    ``folder``, which is then renamed into place; an older model folder is moved aside first and
    removed only once the new one is in place, so no stale file survives and an interrupted write
    (error, Ctrl-C) leaves the old folder untouched."""
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is not
        for fname, content in files.items():
            target = staging / fname
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old)  # replaces the empty placeholder folder
        os.replace(staging, folder)
    except OSError as exc:
        raise OptionError(f"cannot write the model folder {folder}: {exc.strerror or exc}") from None
    finally:
        if old is not None and not folder.exists():
            os.replace(old, folder)  # interrupted between the two renames: put the old model back
            old = None
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return sorted(files)
