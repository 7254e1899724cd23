"""Writing a complete PlatformIO project around a generated model folder (docs/model-dir.md).

Layout of the project folder::

    platformio.ini             the one environment of the board (no absolute paths; emulated
                               boards use the platform "kan2mcu-qemu" that `kan2mcu pio` installs)
    kan2mcu_project.json       what was built (board, model, files) for `measure`
    src/main.c                 self-check firmware (templates/firmware/main.c.j2)
    src/kan2mcu_test_vectors.h the model's test vectors (templates/firmware/test_vectors.h.j2)
    src/kan2mcu_port.h         board port interface (firmware/port)
    src/port_arduino.cpp       the real-board port (excluded from emulated builds)
    src/kan2mcu_counter.[ch]   wrap-safe cycle counter arithmetic of the real-board port
    src/<model files>          copied from the model folder

Numbers are prepared here (float vectors as IEEE-754 binary32 bit patterns); the templates only
lay them out.
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np

from kan2mcu.errors import OptionError
from kan2mcu.firmware.boards import Board, get_board
from kan2mcu.codegen.model_dir import ModelFolder, load_model_folder
from kan2mcu.paths import firmware_dir, templates_dir

MONITOR_SPEED = 115200
PROJECT_MANIFEST = "kan2mcu_project.json"
_INT_RANGES = {
    "uint8_t": (0, 2**8 - 1), "int8_t": (-(2**7), 2**7 - 1),
    "uint16_t": (0, 2**16 - 1), "int16_t": (-(2**15), 2**15 - 1),
    "int32_t": (-(2**31), 2**31 - 1),
}


def _float_bits(rows: list[list[float]]) -> list[list[int]]:
    return np.asarray(rows, dtype=np.float32).view(np.uint32).astype(np.int64).tolist()


def _checked_ints(rows: list[list[int]], ctype: str, what: str) -> list[list[int]]:
    low, high = _INT_RANGES.get(ctype, _INT_RANGES["int32_t"])
    values = [[int(v) for v in row] for row in rows]
    if any(v < low or v > high for row in values for v in row):
        raise OptionError(f"test vector {what} out of range for {ctype} ({low}..{high})")
    return values


def raw_vector_inputs(model: ModelFolder) -> list[list[int]] | None:
    """Integer models: int32 raw inputs that the model's raw-input API maps to the test vectors'
    codes (kan2mcu.quant.input_codec.raw_for_codes), so the firmware calls ``<prefix>_quantize_input_q``
    as a user's firmware does; None for float models, folders without model.npz or codes out of
    the raw API's reach (the firmware then passes the codes to ``<prefix>_infer`` directly)."""
    if model.arith != "int" or not (model.path / "model.npz").exists():
        return None
    from kan2mcu.codegen.bundle import load_bundle  # pylint: disable=import-outside-toplevel
    from kan2mcu.quant.input_codec import input_codec, raw_for_codes  # pylint: disable=import-outside-toplevel

    ir, qmodel = load_bundle(model.path)
    codec = input_codec(qmodel, ir.metadata.get("input_transform"))
    raw = raw_for_codes(qmodel, codec, np.asarray(model.vectors["inputs"], np.int64))
    return None if raw is None else raw.astype(np.int64).tolist()


def vector_header_context(model: ModelFolder, raw_inputs: list[list[int]] | None = None) -> dict:
    """Template data of ``kan2mcu_test_vectors.h`` (``raw_inputs``: see :func:`raw_vector_inputs`)."""
    manifest, vectors = model.manifest, model.vectors
    context = {
        "model_name": model.name,
        "model_sha256": manifest.get("model_sha256", "unknown"),
        "source_file": "test_vectors.json",
        "arith": model.arith,
        "n_vectors": len(vectors["inputs"]),
        "input_size": manifest["input_size"],
        "output_size": manifest["output_size"],
        "input_ctype": manifest["input_ctype"],
    }
    if model.arith == "float":
        tolerance = float(vectors.get("abs_tolerance", 0.0))
        context.update(
            inputs=_float_bits(vectors["inputs"]),
            outputs=_float_bits(vectors["outputs"]),
            abs_tolerance_bits=int(np.float32(tolerance).view(np.uint32)),
            abs_tolerance_text=repr(tolerance),
        )
    else:
        context.update(
            inputs=_checked_ints(vectors["inputs"], manifest["input_ctype"], "input"),
            outputs=_checked_ints(vectors["outputs"], "int32_t", "output"),
            raw_inputs=[["INT32_MIN" if v == -(2**31) else str(v) for v in row] for row in raw_inputs or []],
        )
    return context


def main_context(model: ModelFolder, raw_inputs: bool = False) -> dict:
    """Template data of ``main.c`` (``raw_inputs``: the vectors carry raw inputs for the raw API)."""
    manifest = model.manifest
    return {
        "model_name": model.name,
        "arith": model.arith,
        "prefix": model.prefix,
        "prefix_upper": model.prefix.upper(),
        "header": manifest["headers"][0],
        "input_ctype": manifest["input_ctype"],
        "output_ctype": manifest["output_ctype"],
        "line_buffer_size": 512,
        "raw_inputs": bool(raw_inputs),
    }


def _board_context(board: Board) -> dict:
    return {
        "name": board.name, "description": board.description, "counter": board.counter,
        "pio_platform": board.pio_platform, "pio_board": board.pio_board,
        "pio_framework": board.pio_framework,
        "ini_extra": sorted(board.extra.get("platformio_ini", {}).items()),
    }


def ini_context(model: ModelFolder, board: Board) -> dict:
    """Template data of ``platformio.ini``: the environment of ``board`` only."""
    from kan2mcu.firmware.pio import PLATFORM_NAME, printed_command  # pylint: disable=import-outside-toplevel

    targets = ("upload",)
    return {
        "model_name": model.name,
        "arith": model.arith,
        "model_sha256": model.manifest.get("model_sha256", "unknown"),
        "default_env": board.name,
        "qemu_platform": PLATFORM_NAME,
        "monitor_speed": MONITOR_SPEED,
        "common_defines": [f"KAN2MCU_MODEL_{model.prefix.upper()}"],
        "command": printed_command(Path("."), board.name, targets),
        "qemu_envs": [_board_context(board)] if board.is_qemu else [],
        "real_envs": [] if board.is_qemu else [_board_context(board)],
    }


def template_environment() -> jinja2.Environment:
    """Jinja2 environment of ``templates/firmware`` (StrictUndefined, no autoescape)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "firmware")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _refuse_foreign_project(project_dir: Path) -> None:
    """A folder with files but no kan2mcu_project.json is someone's own project: writing into it
    would overwrite their platformio.ini and src/main.c (OptionError, nothing written)."""
    if project_dir.is_dir() and any(project_dir.iterdir()) and not (project_dir / PROJECT_MANIFEST).is_file():
        raise OptionError(f"-o {project_dir}: holds files and is not a project kan2mcu wrote (no {PROJECT_MANIFEST}); "
                          "kan2mcu would overwrite its platformio.ini and src/main.c: pick a new or empty folder")


def write_project(model_dir: Path, board: str, project_dir: Path,
                  vectors_override: dict | None = None) -> Path:
    """Write a complete PlatformIO project for the model in ``model_dir`` and ``board`` into
    ``project_dir``; returns ``project_dir``. ``vectors_override`` replaces test_vectors.json
    (tests use it to plant a wrong expected value). Files are only rewritten when they change, so
    repeated builds are incremental."""
    board_info = get_board(board)
    model = load_model_folder(model_dir)
    if vectors_override is not None:
        model = ModelFolder(model.path, model.manifest, vectors_override)
    project_dir = Path(project_dir).resolve()
    _refuse_foreign_project(project_dir)
    src_dir = project_dir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    templates = template_environment()

    _write_if_changed(project_dir / "platformio.ini",
                      templates.get_template("platformio.ini.j2").render(ini_context(model, board_info)))
    raw_inputs = raw_vector_inputs(model)
    _write_if_changed(src_dir / "main.c",
                      templates.get_template("main.c.j2").render(main_context(model, raw_inputs is not None)))
    _write_if_changed(src_dir / "kan2mcu_test_vectors.h",
                      templates.get_template("test_vectors.h.j2").render(vector_header_context(model, raw_inputs)))
    port_dir = firmware_dir() / "port"
    for name in ("kan2mcu_port.h", "port_arduino.cpp", "kan2mcu_counter.h", "kan2mcu_counter.c"):
        _write_if_changed(src_dir / name, (port_dir / name).read_text())
    model_files = list(model.manifest["sources"]) + list(model.manifest["headers"])
    for name in model_files:
        _write_if_changed(src_dir / name, (model.path / name).read_text())
    project_manifest = {
        "format": "kan2mcu-firmware-project", "format_version": 1,
        "board": board_info.name, "model_dir": str(model.path), "model_name": model.name,
        "prefix": model.prefix, "arith": model.arith, "model_files": model_files,
        "model_sha256": model.manifest.get("model_sha256", "unknown"),
    }
    _write_if_changed(project_dir / PROJECT_MANIFEST, json.dumps(project_manifest, indent=2) + "\n")
    return project_dir

