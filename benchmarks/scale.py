"""Benchmark at MNIST shape (issue 19, item 6; not a test): one command, one Markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py [--work DIR] [-o benchmarks/scale.md]

Models (benchmarks/scale_data.py makes and caches them): scikit-learn's digits upsampled to
16x16 = 256 and 28x28 = 784 inputs, KANs [256,32,10] and [784,32,10] trained with ``kan2mcu
train --data``, and random KANs [784,64,10] and [784,128,10]. For each case: ``kan2mcu generate``
in a fresh process (wall time and peak RSS of that process), ``kan2mcu verify`` (C == integer
reference on the host, bit for bit), ``kan2mcu measure`` on the M0, M4 and rv32imac QEMU boards
(exact instruction counts of one inference, the firmware's own bit-exact check), and the report's
figures: the plan, the model flash with everything counted (tables, input API, code estimate),
and the accuracy of the float and the integer model on the held-out rows (own-data models) or
the relative output error on the calibration rows (random models).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import synthetic_checkpoint, trained_checkpoint  # noqa: E402

BOARDS = ("qemu-cortex-m0", "qemu-cortex-m4", "qemu-rv32imac")
# (case name, checkpoint key, generate arguments)
CASES = (
    ("digits 16x16, default budget", "digits256", []),
    ("digits 28x28, 64 KiB", "digits784", ["--flash-budget", "65536"]),
    ("digits 28x28, 256 KiB", "digits784", ["--flash-budget", "262144"]),
    ("random [784,64,10], 1 MiB", "synthetic784x64x10", ["--flash-budget", "1048576"]),
    ("random [784,128,10], 1 MiB", "synthetic784x128x10", ["--flash-budget", "1048576"]),
)
_PROBE = ("import resource, subprocess, sys, time; t = time.perf_counter(); run = subprocess.run(sys.argv[1:]); "
          "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(time.perf_counter() - t, u.ru_utime + u.ru_stime, "
          "u.ru_maxrss); "
          "sys.exit(run.returncode)")


def checkpoint_of(work: Path, key: str) -> tuple[Path, list]:
    """The checkpoint of ``key`` and the generate arguments it needs (calibration of random models)."""
    if key.startswith("synthetic"):
        widths = tuple(int(w) for w in key.removeprefix("synthetic").split("x"))
        checkpoint, calibration = synthetic_checkpoint(work, widths)
        return checkpoint, ["--calibration", str(calibration)]
    return trained_checkpoint(work, key), []


def generate(work: Path, name: str, key: str, extra: list) -> dict:
    """Run ``kan2mcu generate`` in a fresh process: the report plus time and peak memory."""
    checkpoint, more = checkpoint_of(work, key)
    folder = work / "models" / name.replace(" ", "_").replace(",", "").replace("[", "").replace("]", "")
    cmd = [sys.executable, "-m", "kan2mcu", "generate", str(checkpoint), "-o", str(folder), "-q", *more, *extra]
    run = subprocess.run([sys.executable, "-c", _PROBE, *cmd], capture_output=True, text=True)
    if run.returncode != 0:
        return {"name": name, "failed": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed"}
    seconds, cpu, peak_kb = run.stdout.split()[-3:]
    report = json.loads((folder / "report.json").read_text())
    verify = subprocess.run([sys.executable, "-m", "kan2mcu", "verify", str(folder), *more[:2]],
                            capture_output=True, text=True)
    return {"name": name, "folder": folder, "report": report, "seconds": float(seconds), "cpu_seconds": float(cpu),
            "peak_mib": int(peak_kb) / 1024, "host_bit_exact": verify.returncode == 0}


def measure_all(work: Path, rows: list) -> None:
    """Instructions of one inference on each board (and the firmware's own check), one model at a
    time: a model that does not fit a board's flash is reported as such, not as a failure of all."""
    for row in (r for r in rows if "folder" in r):
        for board in BOARDS:
            out = work / f"measure-{board}" / row["folder"].name
            run = subprocess.run([sys.executable, "-m", "kan2mcu", "measure", "--board", board, "-o", str(out),
                                  "--json", str(row["folder"])], capture_output=True, text=True)
            models = json.loads(run.stdout)["models"] if run.returncode == 0 and run.stdout.strip() else []
            if models:
                entry = models[0]
                row[board] = (entry["check"], entry["instructions"], entry["memory"]["flash"])
            else:
                reason = (run.stderr.strip().splitlines() or ["failed"])[-1]
                row[board] = ("does not fit" if "does not fit" in reason or "overflowed" in reason else "FAIL",
                              None, None)


def _plan(report: dict) -> str:
    return " + ".join(f"{s['strategy']}:{s['in_bits']}" + (f"/{s['table_bits']}" if s.get("table_bits") else "")
                      + (f"/c{s['coef_bits']}" if s.get("coef_bits") else "") for s in report["plan"])


def _accuracy(report: dict) -> str:
    ev = report.get("evaluation")
    if ev and ev.get("metric") == "accuracy":
        return f"{ev['quantized']['accuracy']:.4f} (float {ev['float']['accuracy']:.4f})"
    return f"output error {report['planner']['calibration_error']:.4f}"


def table(rows: list) -> str:
    """The Markdown table of the README."""
    lines = ["| case | widths | plan (strategy:codes[/entry bits]) | model flash B (tables + input API + code) | "
             + " | ".join(f"{b.removeprefix('qemu-')} instr" for b in BOARDS)
             + " | M4 instr/edge | generate s (CPU) | peak MiB | accuracy (held-out) | bit-exact host/QEMU |",
             "|---|---|---|---:|" + "---:|" * len(BOARDS) + "---:|---:|---:|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['name']} | | refused: {r['failed']} |" + " |" * (len(BOARDS) + 6))
            continue
        rep, t = r["report"], r["report"]["totals"]
        instr = [r.get(b, (None, None, None))[1] for b in BOARDS]
        ran = [r[b][0] for b in BOARDS if b in r and r[b][0] != "does not fit"]
        qemu = bool(ran) and all(check == "PASS" for check in ran)
        m4 = r.get("qemu-cortex-m4", (None, None))[1]
        lines.append(f"| {r['name']} | {rep['model']['widths']} | {_plan(rep)} | {t['model_flash_bytes']:,} "
                     f"({t['flash_bytes'] - t['input_api_bytes']:,} + {t['input_api_bytes']:,} + {t['code_bytes']:,}) | "
                     + " | ".join(f"{i:,}" if i else r.get(b, ("n/a",))[0] for i, b in zip(instr, BOARDS))
                     + (f" | {m4 / t['edges']:.2f} | " if m4 else " | n/a | "))
        lines[-1] += (f"{r['seconds']:.1f} ({r['cpu_seconds']:.1f}) | {r['peak_mib']:.0f} | {_accuracy(rep)} | "
                      f"{'yes' if r['host_bit_exact'] else 'NO'}/{'yes' if qemu else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kan2mcu-scale"))
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, key, extra in CASES:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        rows.append(generate(args.work, name, key, extra))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    measure_all(args.work, rows)
    text = table(rows)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
