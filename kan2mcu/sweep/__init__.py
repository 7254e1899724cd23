"""`kan2mcu sweep`: a grid of precision settings and strategies, each point generated, verified bit
for bit, scored and measured under QEMU; Pareto fronts, the KANtize finding, figures.

Layout of the output folder ``DIR`` (keys: docs/sweep-keys.md):

``points/<key>.json``  one finished point each (written atomically when it finishes; a sweep run
                       again skips every point whose file records success for the same
                       checkpoint, base options and boards; failed points are tried again)
``sweep.csv``, ``sweep.json``, ``sweep.md``, ``*.png``  written from the point files, sorted by key
``timings.json``       seconds per point of this run (kept apart: the rest is reproducible)
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from kan2mcu.errors import OptionError
from kan2mcu.sweep import results
from kan2mcu.sweep.executors import run_tasks
from kan2mcu.sweep.grid import SweepPoint, make_grid
from kan2mcu.sweep.point import InputFile, PointTask

POINTS_DIR = "points"


def checkpoint_files(checkpoint: Path) -> tuple[tuple[InputFile, ...], str]:
    """The files that make up ``checkpoint`` (one file, or a pykan prefix's siblings) and its name."""
    from kan2mcu.model.importers import pykan  # pylint: disable=import-outside-toplevel

    checkpoint = Path(checkpoint)
    if pykan.is_pykan_checkpoint(checkpoint):
        prefix = pykan.checkpoint_prefix(checkpoint)
        suffixes = (pykan.CONFIG_SUFFIX, pykan.STATE_SUFFIX, pykan.CACHE_SUFFIX)
        files = sorted(p for p in prefix.parent.glob(prefix.name + "_*")
                       if p.is_file() and p.name[len(prefix.name):] in suffixes)
        return tuple(InputFile.read(p) for p in files), checkpoint.name
    if not checkpoint.is_file():
        raise OptionError(f"{checkpoint}: no such checkpoint file")
    return (InputFile.read(checkpoint),), checkpoint.name


def _digest(files: tuple[InputFile, ...]) -> str:
    h = hashlib.sha256()
    for item in files:
        h.update(item.name.encode() + b"\0" + hashlib.sha256(item.data).digest())
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)


def _stored(path: Path, identity: dict, boards: list[str]) -> dict | None:
    """The stored result at ``path`` when it is a success for this sweep's identity and boards."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    result = doc.get("result", {})
    if doc.get("identity") != identity or result.get("status") != "ok":
        return None
    if not set(boards) <= set(result.get("boards", {})):
        return None
    return result


def run_sweep(checkpoint, out, *, act_bits=(8,), spline_bits=(3, 8), coef_bits=(8,), strategies=("spline",),
              boards=("qemu-cortex-m4",), base_bits: int = 12, silu_bits: int = 12, table_bits: int = 8,
              calibration=None, jobs: int = 2, executor: str = "local", address: str | None = None,
              progress: bool = True, on_point=None) -> dict:
    """Run the sweep into folder ``out``; returns the sweep.json document.

    ``base_bits``, ``silu_bits`` and ``table_bits`` (edge-table entries) are the same at every
    point. ``on_point(key)`` is called in this process after each newly computed point is stored.
    """
    from kan2mcu.firmware.boards import get_board  # pylint: disable=import-outside-toplevel
    from kan2mcu.firmware.toolchain import (  # pylint: disable=import-outside-toplevel
        require_build_tools, require_python_module, require_run_tools)
    from kan2mcu.quant.calibration import load_calibration  # pylint: disable=import-outside-toplevel
    from kan2mcu.model.importers import load_checkpoint  # pylint: disable=import-outside-toplevel
    from kan2mcu.quant.quantize import QuantOptions  # pylint: disable=import-outside-toplevel

    if executor == "local" and jobs < 1:  # before any folder is made
        raise OptionError(f"--jobs must be at least 1, got {jobs}")
    require_python_module("matplotlib", "kan2mcu[plots]")  # before hours of work, not after
    grid = make_grid(list(act_bits), list(spline_bits), list(coef_bits), list(strategies))
    for board in map(get_board, boards):
        if not board.is_qemu:
            raise OptionError(f"sweep measures on emulated boards only (qemu-*), not {board.name}; measure a "
                              "chosen point on the real board with `kan2mcu measure --port`")
        require_build_tools(board)  # a missing tool is one error now, not one per point
        require_run_tools(board)
    boards = [get_board(b).name for b in boards]
    base_options = QuantOptions(base_bits=base_bits, silu_bits=silu_bits, table_bits=table_bits).as_dict()
    base_options = {k: v for k, v in base_options.items() if k not in ("act_bits", "spline_bits", "coef_bits")}
    files, name = checkpoint_files(Path(checkpoint))
    imported = load_checkpoint(Path(checkpoint))  # a bad checkpoint is one error now, not one per point
    calib = None
    if calibration is not None:
        load_calibration(Path(calibration), imported.model.layers[0].in_features)  # checked here, once
        calib = InputFile.read(Path(calibration))
    identity = {"checkpoint_sha256": _digest(files), "base_options": base_options,
                "calibration_sha256": hashlib.sha256(calib.data).hexdigest() if calib else None}

    out = Path(out)
    points_dir = out / POINTS_DIR
    points_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    todo: list[PointTask] = []
    for point in grid:
        stored = _stored(points_dir / f"{point.key}.json", identity, boards)
        if stored is not None:
            done[point.key] = stored
        else:
            todo.append(PointTask(point.key, point.as_dict(), base_options, tuple(boards), files, name,
                                  len(imported.model.layers), calib))
    timings = {}
    bar = _progress(len(grid), len(done), progress)
    started = time.monotonic()
    try:
        for item in run_tasks(todo, executor, jobs, address):
            key = item["key"]
            _write_atomic(points_dir / f"{key}.json",
                          json.dumps({"identity": identity, "result": item["result"], "seconds": item["seconds"]},
                                     indent=2, sort_keys=True) + "\n")
            done[key] = item["result"]
            timings[key] = item["seconds"]
            _advance(bar, key, item)
            if on_point is not None:
                on_point(key)
    finally:
        if bar is not None:
            bar.close()
    wall = round(time.monotonic() - started, 3)
    meta = {"checkpoint": name, **identity, "grid": {"act_bits": sorted(set(act_bits)),
                                                      "spline_bits": sorted(set(spline_bits)),
                                                      "coef_bits": sorted(set(coef_bits)),
                                                      "strategies": list(dict.fromkeys(strategies))}}
    doc = write_outputs(out, [done[p.key] for p in grid], boards, meta)
    _write_atomic(out / "timings.json", json.dumps(
        {"executor": executor, "jobs": jobs if executor == "local" else None, "computed": len(timings),
         "reused": len(grid) - len(timings),
         "wall_seconds": wall, "point_seconds": dict(sorted(timings.items()))}, indent=2) + "\n")
    return doc


def write_outputs(out: Path, point_results: list[dict], boards: list[str], meta: dict) -> dict:
    """sweep.csv, sweep.json, sweep.md and the figures, from the point results."""
    from kan2mcu.sweep.figures import write_figures  # pylint: disable=import-outside-toplevel

    rows, fronts = results.build_rows(point_results, boards)
    doc = results.summary(meta, rows, fronts, boards)
    figures = write_figures(out, rows, fronts, boards, doc["quality_metric"])
    doc["figures"] = figures
    _write_atomic(out / "sweep.csv", results.to_csv(rows, boards))
    _write_atomic(out / "sweep.json", results.to_json(doc))
    _write_atomic(out / "sweep.md", results.to_markdown(doc, figures))
    return doc


def _advance(bar, key: str, item: dict) -> None:
    """One point done: its warnings above the bar, then the bar one step on."""
    _print_warnings(bar, key, item.get("warnings", ()))
    if bar is not None:
        bar.set_postfix_str(f"{key} {item['result']['status']}", refresh=False)
        bar.update(1)


def _print_warnings(bar, key: str, warnings) -> None:
    """A point's warnings on stderr, above the progress bar (tqdm.write), not through it."""
    for line in warnings:
        text = f"kan2mcu: warning: point {key}: {line}"
        if bar is not None:
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, initial=initial, desc="sweep", unit="point", file=sys.stderr, dynamic_ncols=True)


__all__ = ["SweepPoint", "make_grid", "run_sweep", "write_outputs"]
