"""Build, run, check and report: the ``kan2mcu measure`` pipeline.

For each model folder: write the PlatformIO project, ``pio run`` it (offline for the emulated
boards), read flash/RAM from the ELF, run it under QEMU with the counting plugin (or, for a real
board with ``port``, flash it and read the serial port), and collect one report entry.

Report keys (stable; one entry per model under ``"models"``):

``check``            "PASS" / "FAIL": the firmware's own comparison with test_vectors.json
``instructions``     executed instructions of ONE inference on vector 0 (the call of
                     ``<prefix>_infer_q`` on raw int32 inputs as a user's firmware does, without its
                     input quantization; or of ``<prefix>_infer`` on codes: float models, codes out of
                     the raw API's reach), model code plus the library helpers it calls; start-up and
                     the self-check harness excluded; exact, from QEMU; null on real boards.
                     ``<prefix>_infer`` on caller codes also tests a first edge-table layer's codes
                     (``<prefix>_l0_codes``, about 2 instructions per 4 codes), which
                     ``<prefix>_infer_q``'s codes, in range by construction, skip
``input_instructions`` executed instructions of the raw-input API on the same vector
                     (``<prefix>_quantize_input_q``, called by ``<prefix>_infer_q``); null when the
                     firmware passes codes (float models, codes out of the raw API's reach) or on
                     real boards
``total_instructions`` instructions + input_instructions: raw inputs to outputs
``breakdown``        instructions and flash bytes (code + tables, from the ELF's symbols) per part:
                     ``input_quantization``, one entry per layer (``<prefix>_layerN`` and its
                     ``<prefix>_lN_*`` tables) and ``output`` (the rest of the inference:
                     ``<prefix>_infer``'s own code and the library helpers it calls)
``cycles_estimate``  cycle ESTIMATE of the same instructions (see kan2mcu.firmware.cycles); null on
                     real boards
``cycles_measured``  the board's cycle counter over one inference, when it has one (real boards;
                     on qemu-rv32imac mcycle counts instructions), else null
``flash_bytes``      text + rodata + data of the whole firmware (as ``size -B``: text + data)
``ram_bytes``        data + bss of the whole firmware (static; the stack is ``stack_bytes``)
``stack_bytes``      stack high-water mark of the firmware during one inference (painted stack)
``memory``           flash/RAM split: model code, model tables, model RAM, rest
``functions``        executed instructions per function in the inference
``cycles_detail``    the estimate per instruction class and the conditional-branch taken split
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from kan2mcu.errors import BoardError, ToolchainError
from kan2mcu.firmware.boards import Board, get_board
from kan2mcu.firmware.cycles import ESTIMATE_NOTE, estimate_cycles, mnemonic_histogram
from kan2mcu.firmware.breakdown import INPUT_API_FUNCTIONS, base_name, breakdown
from kan2mcu.firmware.elfinfo import ElfInfo, read_elf
from kan2mcu.firmware.pio import run_pio
from kan2mcu.firmware.project import write_project
from kan2mcu.codegen.model_dir import load_model_folder
from kan2mcu.firmware.qemu import run_elf
from kan2mcu.firmware.toolchain import require_build_tools, require_run_tools

HARNESS_PREFIX = "kan2mcu_"
_OVERFLOW = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")
REPORT_KEYS = ("check", "instructions", "cycles_estimate", "flash_bytes", "ram_bytes")


def step(message: str) -> None:
    """A progress line on stderr for the slow steps (a build takes 10-30 s)."""
    print(f"kan2mcu: {message} ...", file=sys.stderr, flush=True)


def firmware_elf(project_dir: Path, board: Board) -> Path:
    """Where ``pio run`` puts the ELF of ``board`` in ``project_dir``."""
    return Path(project_dir) / ".pio" / "build" / board.name / "firmware.elf"


def _overflow_error(output: str, board: Board, model_name: str) -> BoardError | None:
    overflows = {region: int(amount) for region, amount in _OVERFLOW.findall(output)}
    if not overflows:
        return None
    parts = []
    for region, amount in sorted(overflows.items()):
        capacity = board.flash_bytes if region.upper() == "FLASH" else board.ram_bytes
        label = "flash" if region.upper() == "FLASH" else "RAM"
        parts.append(f"{label} needs {capacity + amount} bytes but has {capacity} (over by {amount})")
    return BoardError(f"model {model_name} does not fit {board.name}: " + "; ".join(parts))


def check_fits(info: ElfInfo, board: Board, model_name: str) -> None:
    """BoardError when the linked firmware plus the minimum stack exceeds the board's memory."""
    if info.flash_bytes > board.flash_bytes:
        raise BoardError(f"model {model_name} does not fit {board.name}: flash needs {info.flash_bytes} "
                         f"bytes but has {board.flash_bytes}")
    needed_ram = info.ram_bytes + board.min_stack_bytes
    if needed_ram > board.ram_bytes:
        raise BoardError(f"model {model_name} does not fit {board.name}: RAM needs {needed_ram} bytes "
                         f"({info.ram_bytes} static + {board.min_stack_bytes} minimum stack) but has "
                         f"{board.ram_bytes}")


def build_firmware(model_dir: Path, board: str, project_dir: Path,
                   vectors_override: dict | None = None, stream=None) -> Path:
    """Write the project and build it with ``pio run``; returns the ELF. BoardError when the
    model does not fit, ToolchainError when a tool is missing or the build fails."""
    board_info = get_board(board)
    require_build_tools(board_info)
    model = load_model_folder(model_dir)
    project_dir = write_project(model_dir, board, project_dir, vectors_override=vectors_override)
    step(f"building the firmware of {model.name} ({model.arith}) for {board_info.name} with PlatformIO")
    completed = run_pio(project_dir, board_info.name, stream=stream)
    if completed.returncode != 0:
        overflow = _overflow_error(completed.stdout or "", board_info, model.name)
        if overflow is not None:
            raise overflow
        tail = [line for line in (completed.stdout or "").splitlines() if line.strip()][-6:]
        raise ToolchainError(f"pio run -e {board_info.name} failed in {project_dir}: " + " | ".join(tail))
    elf = firmware_elf(project_dir, board_info)
    if board_info.is_qemu:
        check_fits(read_elf(elf), board_info, model.name)
    return elf


def _split_trace(trace, info: ElfInfo, prefix: str) -> tuple[list, dict[str, int], dict[str, int], dict[str, int]]:
    """One pass over the trace: the inference's instructions, and counts per function of the
    inference, of the raw-input API and of the self-check harness."""
    functions = info.functions()
    input_api = {f"{prefix}_{name}" for name in INPUT_API_FUNCTIONS}
    inference, model, inputs, harness = [], {}, {}, {}
    for insn in trace.insns.values():
        name = functions.name_at(insn.address)
        if name.startswith(HARNESS_PREFIX):
            harness[name] = harness.get(name, 0) + insn.count
        elif base_name(name) in input_api:
            inputs[name] = inputs.get(name, 0) + insn.count
        else:
            inference.append(insn)
            model[name] = model.get(name, 0) + insn.count
    return inference, _most_first(model), _most_first(inputs), _most_first(harness)


def _most_first(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def measure_model(model_dir: Path, board: str, project_dir: Path, port: str | None = None) -> dict:
    """Report entry of one model on one board (see the module docstring for the keys)."""
    board_info = get_board(board)
    model = load_model_folder(model_dir)
    if not board_info.is_qemu:  # port, platform and toolchain before a long build
        from kan2mcu.firmware.serial_measure import require_real_board  # pylint: disable=import-outside-toplevel

        require_real_board(board_info, port)
    elf = build_firmware(model_dir, board, project_dir, stream=None if board_info.is_qemu else sys.stderr)
    info = read_elf(elf)
    entry = {
        "model": model.name, "arith": model.arith, "model_dir": str(model.path), "board": board_info.name,
        "core": board_info.core, "check": "FAIL", "instructions": None, "cycles_estimate": None,
        "cycles_measured": None, "input_instructions": None, "total_instructions": None,
        "breakdown": breakdown({}, {}, info, model.prefix), "flash_bytes": info.flash_bytes, "ram_bytes": info.ram_bytes,
        "stack_bytes": None, "memory": info.memory_split(model.prefix), "functions": {},
        "project_dir": str(Path(project_dir).resolve()), "firmware_result": None,
    }
    if board_info.is_qemu:
        require_run_tools(board_info)
        step(f"running it under QEMU ({board_info.name}), counting instructions")
        run = run_elf(board_info, elf, count_instructions=True)
        result = run.result
        if run.trace is not None:
            inference, model_counts, input_counts, harness_counts = _split_trace(run.trace, info, model.prefix)
            estimate = estimate_cycles(inference, board_info.core, board_info.arch)
            raw_api = sum(input_counts.values()) if input_counts else None
            entry.update(
                instructions=sum(model_counts.values()),
                input_instructions=raw_api,
                total_instructions=sum(model_counts.values()) + (raw_api or 0),
                input_functions=input_counts,
                breakdown=breakdown(model_counts, input_counts, info, model.prefix),
                cycles_estimate=estimate["cycles_estimate"],
                functions=model_counts,
                harness_instructions=sum(harness_counts.values()),
                cycles_detail=estimate,
                mnemonics=mnemonic_histogram(inference),
            )
        if result is None:
            entry["error"] = (f"no result line (QEMU exit status {run.returncode}"
                              f"{', firmware fault' if run.faulted else ''})")
    else:
        from kan2mcu.firmware.serial_measure import flash_and_read  # pylint: disable=import-outside-toplevel

        result = flash_and_read(Path(project_dir), board_info, port)
    if result is not None:
        entry["firmware_result"] = result
        entry["check"] = "PASS" if result.get("check") == "PASS" else "FAIL"
        entry["stack_bytes"] = result.get("stack_bytes")
        entry["cycles_measured"] = result.get("cycles")
    return entry


def measure(model_dirs: list[Path], board: str, out_dir: Path | None = None,
            port: str | None = None) -> dict:
    """Measure every model in ``model_dirs`` on ``board``. With ``out_dir``, the projects go to
    ``out_dir/<model>-<arith>-<board>/`` and the report to ``out_dir/measure.json`` and ``measure.md``.
    Returns the report (``{"board", "models": [...], "markdown", ...}``)."""
    board_info = get_board(board)
    if port is not None and board_info.is_qemu:  # not silently ignored: the user meant a real board
        raise BoardError(f"--port {port}: {board_info.name} is emulated (QEMU), it takes no serial port; "
                         "leave --port out, or give the real board's name (--board)")
    models = [load_model_folder(model_dir) for model_dir in model_dirs]  # every folder checked before a build
    with tempfile.TemporaryDirectory(prefix="kan2mcu-measure-") as scratch:
        base = Path(out_dir) if out_dir is not None else Path(scratch)
        entries, used = [], set()
        for model_dir, model in zip(model_dirs, models):
            folder = f"{model.name}-{model.arith}-{board_info.name}"
            if folder in used:
                folder = f"{len(used)}-{folder}"
            used.add(folder)
            entries.append(measure_model(model_dir, board_info.name, base / folder, port))
    report = {
        "format": "kan2mcu-measure", "format_version": 1, "board": board_info.name,
        "core": board_info.core, "emulated": board_info.is_qemu, "cycles_estimate_note": ESTIMATE_NOTE,
        "models": entries,
    }
    report["markdown"] = markdown_table(report)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "measure.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(out_dir) / "measure.md").write_text(report["markdown"])
    return report


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def breakdown_table(models: list[dict]) -> list[str]:
    """Markdown lines: instructions and flash bytes per part (input quantization, layers, output)."""
    lines = ["| part | " + " | ".join(f"{m['model']} instructions | flash bytes" for m in models) + " |",
             "|---|" + "---:|---:|" * len(models)]
    parts = []
    for m in models:
        parts += [p["part"] for p in m.get("breakdown", []) if p["part"] not in parts]
    for part in parts:
        cells = []
        for m in models:
            found = next((p for p in m.get("breakdown", []) if p["part"] == part), None)
            cells += [_cell(found and found["instructions"]), _cell(found and found["flash_bytes"])]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(report: dict) -> str:
    """The report as a Markdown table, one column per model."""
    models = report["models"]
    header = "| | " + " | ".join(f"{m['model']} ({m['arith']})" for m in models) + " |"
    rule = "|---|" + "---:|" * len(models)
    rows = [
        ("check", lambda m: m["check"]),
        ("instructions (one inference, exact)", lambda m: m["instructions"]),
        ("  input quantization (raw API)", lambda m: m.get("input_instructions")),
        ("  raw inputs to outputs", lambda m: m.get("total_instructions")),
        ("cycles (ESTIMATE)", lambda m: m["cycles_estimate"]),
        ("cycles (board counter)", lambda m: m["cycles_measured"]),
        ("flash bytes", lambda m: m["flash_bytes"]),
        ("  model code", lambda m: m["memory"]["flash"]["model_code"]),
        ("  model tables", lambda m: m["memory"]["flash"]["model_tables"]),
        ("  rest", lambda m: m["memory"]["flash"]["rest"] + m["memory"]["flash"]["model_data_init"]),
        ("RAM bytes (static)", lambda m: m["ram_bytes"]),
        ("  model RAM", lambda m: m["memory"]["ram"]["model_ram"]),
        ("stack high-water bytes", lambda m: m["stack_bytes"]),
    ]
    lines = [f"### {report['board']} ({report['core']})", "", header, rule]
    for label, getter in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(getter(m)) for m in models) + " |")
    lines += ["", *breakdown_table(models)]
    note = report["cycles_estimate_note"].removeprefix("ESTIMATE: ")
    lines += ["", f"Cycles marked ESTIMATE are not measured: {note}.", ""]
    return "\n".join(lines)
