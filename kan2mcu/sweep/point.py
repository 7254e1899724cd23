"""One sweep point, start to finish, in its own scratch folder: generate, verify, measure.

:func:`run_point` is what every executor runs (a process-pool worker or a Ray task), so it takes
and returns plain data: the checkpoint travels as bytes (a worker needs only kan2mcu and the
toolchains, no shared file system), and the result holds no path and no timing.
"""
from __future__ import annotations

import inspect
import io
import json
import os
import tempfile
import time
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

from kan2mcu.errors import Kan2mcuError

MODEL_NAME = "kan"


class PointError(Kan2mcuError):
    """A sweep point cannot be computed (recorded in the point's result, the sweep goes on)."""


@dataclass(frozen=True)
class InputFile:
    """A file the point needs, carried by value (name kept: generate writes it into the C banner)."""

    name: str
    data: bytes

    @classmethod
    def read(cls, path: Path) -> "InputFile":
        path = Path(path)
        return cls(path.name, path.read_bytes())

    def write(self, folder: Path) -> Path:
        target = Path(folder) / self.name
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class PointTask:
    """Everything one worker needs for one point."""

    key: str
    settings: dict  # act_bits, spline_bits, coef_bits, strategy
    base_options: dict  # base_bits, silu_bits, table_bits: the same at every point
    boards: tuple[str, ...]
    checkpoint_files: tuple[InputFile, ...]  # the checkpoint (several files for a pykan prefix)
    checkpoint_name: str  # what to pass to generate, relative to where the files are written
    n_layers: int
    calibration: InputFile | None = None


def _generate_parameters() -> set[str]:
    from kan2mcu.generate import generate_model  # pylint: disable=import-outside-toplevel

    return set(inspect.signature(generate_model).parameters)


def generate_accepts_strategy() -> bool:
    """Whether this kan2mcu's ``generate_model`` has per-layer strategies (``strategy`` or ``plan``)."""
    return bool({"strategy", "plan"} & _generate_parameters())


def strategy_kwargs(strategy: str, act_bits: int, n_layers: int) -> dict:
    """Keyword arguments of generate_model that build this point exactly.

    A sweep explores the design space itself, so a fixed strategy goes in as an explicit plan
    (every layer ``strategy`` with ``act_bits`` input codes), which bypasses the planner (it
    could change the input bits or refuse a point over its error limit). "auto" asks the planner.
    A kan2mcu without strategies evaluates splines from basis tables and coefficients, which is
    the "spline" strategy: nothing to pass; any other strategy there is a clear per-point error.
    """
    params = _generate_parameters()
    if strategy != "auto" and "plan" in params:
        from kan2mcu.quant.quantize import LayerPlan  # pylint: disable=import-outside-toplevel

        return {"plan": tuple(LayerPlan(strategy, act_bits) for _ in range(n_layers))}
    if "strategy" in params:
        return {"strategy": strategy}
    if strategy == "spline":
        return {}
    raise PointError(f"strategy {strategy} not supported by this kan2mcu")


def _clean_message(exc: BaseException, scratch: str) -> str:
    """One line, no scratch paths (they differ between runs and executors)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, Kan2mcuError):
        text = f"{type(exc).__name__}: {text}"
    return text.replace(str(Path(scratch).resolve()), "<scratch>").replace(scratch, "<scratch>")[:500]


def run_point(task: PointTask) -> dict:
    """Compute one point; returns ``{"key", "result", "seconds", "warnings"}``. Never raises for a
    failing point: the error goes into ``result["error"]`` (status "error"). What generate and verify
    print on stderr is caught (it would break the sweep's progress bar); their warning lines are
    returned for the sweep to print above the bar."""
    started = time.monotonic()
    result = {"key": task.key, **task.settings, "status": "error", "error": None, "bit_exact": None,
              "inputs_checked": None, "accuracy": None, "float_accuracy": None, "max_abs_error": None,
              "bitops": None, "bitops_float32": None, "bitops_reduction": None, "flash_bytes": None,
              "workspace_bytes": None, "boards": {}}
    with tempfile.TemporaryDirectory(prefix=f"kan2mcu-sweep-{task.key}-") as scratch, \
            _own_platformio_core(Path(scratch) / "platformio-core"):
        printed = io.StringIO()
        try:
            with redirect_stderr(printed):
                _compute(task, Path(scratch), result)
        except Exception as exc:  # noqa: BLE001 - any failure is this point's result
            result["error"] = _clean_message(exc, scratch)
    warnings = [line.partition("warning: ")[2] for line in printed.getvalue().splitlines() if "warning: " in line]
    return {"key": task.key, "result": result, "seconds": round(time.monotonic() - started, 3),
            "warnings": warnings}


@contextmanager
def _own_platformio_core(core_dir: Path):
    """Give this point its own PlatformIO core folder. PlatformIO records the development
    platform as a link in the core folder and rewrites it on every build: parallel builds sharing
    one core folder (other points, or other checkouts of kan2mcu) race on it ("UnknownPlatform").
    kan2mcu.firmware.pio sets the folder up on first use (offline, about a second)."""
    name = "KAN2MCU_PLATFORMIO_CORE_DIR"
    saved = os.environ.get(name)
    os.environ[name] = str(core_dir)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _compute(task: PointTask, scratch: Path, result: dict) -> None:
    from kan2mcu.generate import generate_model
    from kan2mcu.quant.quantize import QuantOptions
    from kan2mcu.check.verify import verify

    inputs = scratch / "inputs"
    inputs.mkdir()
    for item in task.checkpoint_files:
        item.write(inputs)
    checkpoint = inputs / task.checkpoint_name
    calibration = task.calibration.write(inputs) if task.calibration is not None else None
    act_bits = task.settings["act_bits"]
    knobs = {k: task.settings[k] for k in ("spline_bits", "coef_bits") if task.settings[k] is not None}
    options = QuantOptions(act_bits=act_bits, **knobs, **task.base_options)  # unused knobs: kan2mcu's defaults
    model_dir = scratch / MODEL_NAME
    generate_model(checkpoint, model_dir, name=MODEL_NAME, options=options, calibration=calibration, quiet=True,
                   **strategy_kwargs(task.settings["strategy"], act_bits, task.n_layers))
    report = json.loads((model_dir / "report.json").read_text())
    totals = report["totals"]
    result.update(bitops=totals["bitops"], bitops_float32=totals["bitops_float32"],
                  bitops_reduction=totals["bitops_reduction"], flash_bytes=totals["flash_bytes"],
                  workspace_bytes=totals["workspace_bytes"])
    checked = verify(model_dir, calibration=calibration, build_dir=scratch / "verify", quiet=True)
    result.update(bit_exact=checked.bit_exact, inputs_checked=checked.inputs_checked,
                  max_abs_error=checked.max_abs_error_vs_float)
    if checked.accuracy:
        result.update(accuracy=checked.accuracy["c"], float_accuracy=checked.accuracy["float"])
    errors = []
    for board in task.boards:
        entry = _measure_board(model_dir, board, scratch / f"fw-{board}")
        result["boards"][board] = entry
        if entry["error"]:
            errors.append(f"{board}: {entry['error']}")
    if errors:
        raise PointError("; ".join(errors))
    result["status"] = "ok"


def _measure_board(model_dir: Path, board: str, project_dir: Path) -> dict:
    """Firmware figures of one board; a failure is kept in ``error`` (the other boards still run)."""
    from kan2mcu.firmware.measure import measure_model

    entry = {"check": None, "instructions": None, "cycles_estimate": None, "firmware_flash_bytes": None,
             "ram_bytes": None, "stack_bytes": None, "error": None}
    try:
        measured = measure_model(model_dir, board, project_dir)
    except Exception as exc:  # noqa: BLE001
        entry["error"] = _clean_message(exc, str(project_dir.parent))
        return entry
    entry.update(check=measured["check"], instructions=measured["instructions"],
                 cycles_estimate=measured["cycles_estimate"], firmware_flash_bytes=measured["flash_bytes"],
                 ram_bytes=measured["ram_bytes"], stack_bytes=measured["stack_bytes"])
    if measured["check"] != "PASS":
        entry["error"] = measured.get("error") or "firmware self-check FAIL (C on the board != test vectors)"
    return entry
