"""Benchmark: strategies x bit settings x boards on the default digits KAN (not a test).

Trains the default KAN (or takes --checkpoint), generates one model per (strategy, bit setting),
verifies each bit for bit on the host, measures each under QEMU on every board, and writes a
Markdown table (accuracy on the test split, instructions, estimated cycles, model flash) to
stdout and to --output. Instruction counts are exact (QEMU); cycles are an ESTIMATE.

    .venv/bin/python benchmarks/strategies.py [--checkpoint CKPT] [-o benchmarks/results.md]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from kan2mcu.firmware.measure import measure
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.training.train import train
from kan2mcu.check.verify import verify

SETTINGS = [(8, 8, 8), (6, 4, 4), (4, 3, 4), (4, 2, 3)]  # act / spline / coef bits
STRATEGIES = ["spline", "edge-table", "auto"]
BOARDS = ["qemu-cortex-m0", "qemu-cortex-m4", "qemu-cortex-m7", "qemu-rv32imac"]


def _setting(text: str) -> tuple[int, int, int]:
    act, spline, coef = (int(v) for v in text.split("/"))
    return act, spline, coef


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--settings", type=_setting, nargs="+", default=SETTINGS, metavar="ACT/SPLINE/COEF",
                        help="bit settings (default: 8/8/8 6/4/4 4/3/4 4/2/3)")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--boards", nargs="+", default=BOARDS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kan2mcu-bench-"))
    checkpoint = args.checkpoint or train(work / "digits.pt", progress=False).checkpoint
    rows = []
    for act, spline, coef in args.settings:
        for strategy in args.strategies:
            folder = work / f"{strategy}-{act}{spline}{coef}"
            options = QuantOptions(act_bits=act, spline_bits=spline, coef_bits=coef)
            # the default budget and error gate; a plan that cannot meet the gate says so in its report
            result = generate_model(checkpoint, folder, options=options, strategy=strategy, quiet=True,
                                    max_error=1.0 if strategy != "auto" else 0.02)
            verify(folder, build_dir=work / "verify", quiet=True)  # raises on any mismatch
            rows.append({"setting": f"{act}/{spline}/{coef}", "strategy": strategy, "folder": folder,
                         "plan": " + ".join(f"{s['strategy']}:{s['in_bits']}" + (f"/{s['table_bits']}"
                                                                                  if s.get("table_bits") else "")
                                            for s in result.report["plan"]),
                         "accuracy": result.report["accuracy"]["quantized"],
                         "float": result.report["accuracy"]["float"]})
    for board in args.boards:
        report = measure([r["folder"] for r in rows], board, work / f"measure-{board}")
        for row, entry in zip(rows, report["models"]):
            flash = entry["memory"]["flash"]
            row[board] = (entry["check"], entry["instructions"], entry["cycles_estimate"],
                          flash["model_tables"] + flash["model_code"])
    lines = ["| act/spline/coef | strategy | plan (strategy:codes[/entry bits]) | accuracy (float "
             f"{rows[0]['float']:.4f}) | model flash B | "
             + " | ".join(f"{b.removeprefix('qemu-')} instr / cycles est." for b in args.boards) + " |",
             "|---|---|---|---:|---:|" + "---:|" * len(args.boards)]
    for row in rows:
        cells = []
        for board in args.boards:
            check, instructions, cycles, _ = row[board]
            cells.append(f"{instructions:,} / {cycles:,}" + ("" if check == "PASS" else f" ({check})"))
        lines.append(f"| {row['setting']} | {row['strategy']} | {row['plan']} | {row['accuracy']:.4f} | "
                     f"{row[args.boards[0]][3]:,} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
