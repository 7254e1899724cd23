"""Benchmark: the digits KAN's default plan on every emulated core (not a test).

Trains the default digits KAN (or takes --checkpoint), generates the default plan (``kan2mcu
generate`` with no options) and measures it under QEMU on every emulated board that has a
multiplier; cores without one (rv32ec) get the plan ``generate --board <board>`` picks for their
budget (multiply-free, 16 KiB flash). Writes a Markdown table (instructions, exact; cycles, an
ESTIMATE; firmware flash and model flash; static RAM and stack; accuracy of the plan on the
digits test split) to stdout and to --output.

    .venv/bin/python benchmarks/cores.py [--checkpoint CKPT] [-o benchmarks/cores.md]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from kan2mcu.firmware.boards import QEMU_BOARDS, get_board
from kan2mcu.firmware.measure import measure
from kan2mcu.generate import generate_model
from kan2mcu.training.train import train
from kan2mcu.check.verify import verify


def _plan(folder: Path) -> tuple[str, float, float]:
    report = json.loads((folder / "report.json").read_text())
    plan = " + ".join(f"{s['in_bits']}/{s.get('table_bits')}" if s["strategy"] == "edge-table" else f"spline:{s['in_bits']}"
                      for s in report["plan"])
    return plan, report["accuracy"]["quantized"], report["accuracy"]["float"]


def _row(board: str, folder: Path, work: Path) -> dict:
    entry = measure([folder], board, work / f"measure-{board}")["models"][0]
    if entry["check"] != "PASS":
        raise SystemExit(f"{board}: self-check {entry['check']}: {entry.get('firmware_result')}")
    flash = entry["memory"]["flash"]
    plan, accuracy, _ = _plan(folder)
    return {"core": get_board(board).core, "board": board, "plan": plan, "accuracy": accuracy,
            "instructions": entry["instructions"], "cycles": entry["cycles_estimate"],
            "flash": entry["flash_bytes"], "model_flash": flash["model_tables"] + flash["model_code"],
            "ram": entry["ram_bytes"], "stack": entry["stack_bytes"]}


def table(rows: list[dict], float_accuracy: float) -> list[str]:
    lines = ["| core | board | plan from `generate` | plan (codes/entry bits per layer) | accuracy (float "
             f"{float_accuracy:.4f}) | instructions | cycles (ESTIMATE) | firmware flash B | model flash B | "
             "static RAM B | stack B |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['core']} | {r['board']} | {r['source']} | {r['plan']} | {r['accuracy']:.4f} | {r['instructions']:,} | "
                     f"{r['cycles']:,} | {r['flash']:,} | {r['model_flash']:,} | {r['ram']:,} | {r['stack']:,} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--boards", nargs="+", default=list(QEMU_BOARDS), choices=list(QEMU_BOARDS),
                        help="emulated boards to measure (default: all)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kan2mcu-cores-"))
    checkpoint = args.checkpoint or train(work / "digits.pt", progress=False).checkpoint
    default = work / "default"
    generate_model(checkpoint, default, quiet=True)
    verify(default, build_dir=work / "verify", quiet=True)  # host C == reference, raises otherwise
    rows = []
    for board in args.boards:
        folder = work / f"for-{board}"
        generate_model(checkpoint, folder, quiet=True, board=board)
        if _plan(folder)[0] == _plan(default)[0]:
            rows.append({**_row(board, default, work), "source": "no options = --board"})
            continue
        verify(folder, build_dir=work / f"verify-{board}", quiet=True)
        rows.append({**_row(board, folder, work / "board"), "source": "--board"})
        if get_board(board).has_multiplier:  # the no-option plan on the same board, for comparison
            rows.append({**_row(board, default, work), "source": "no options"})
    lines = table(rows, _plan(default)[2])
    lines += ["", "Instructions: one inference, exact (QEMU TCG plugin, `kan2mcu measure`); cycles: ESTIMATE from "
              "per-core cost tables (kan2mcu.firmware.cycles). Firmware flash: the whole self-check firmware "
              "(model, test vectors, start-up); static RAM: .data + .bss; stack: high-water mark. Plan from: "
              "`--board` is the plan `kan2mcu generate --board <board>` picks (the board's core cost model and flash "
              "budget; multiply-free on cores without a multiplier), \"no options\" the plan of `kan2mcu generate` "
              "without options (costs predicted for the default core), shown on a board whose own plan differs."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
