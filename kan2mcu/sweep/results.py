"""Point results -> rows, Pareto fronts, the paper's finding, sweep.csv / sweep.json / sweep.md.

Everything here is a pure function of the stored point results (sorted by key), so the outputs
do not depend on the executor, the order points finished in, or where the sweep ran.
Keys: docs/sweep-keys.md.
"""
from __future__ import annotations

import csv
import io
import json

FORMAT_VERSION = 1
POINT_COLUMNS = ("key", "act_bits", "spline_bits", "coef_bits", "strategy", "status", "error", "bit_exact",
                 "inputs_checked", "accuracy", "float_accuracy", "max_abs_error", "bitops", "bitops_float32",
                 "bitops_reduction", "flash_bytes", "workspace_bytes")
BOARD_COLUMNS = ("check", "instructions", "cycles_estimate", "firmware_flash_bytes", "ram_bytes", "stack_bytes")
PAPER_TABLE_BITS = (3, 8)  # KANtize: 3-bit B-spline tables against 8-bit ones ...
PAPER_FIXED_BITS = 8  # ... at 8-bit codes and coefficients
WITHIN_POINTS = 1.0  # "within 1.0 accuracy point"
BITOPS_TARGET = 50.0  # "at least 50x fewer BitOps than float32"


def columns(boards: list[str]) -> list[str]:
    """The csv header for ``boards`` (order is part of the stable format)."""
    cols = list(POINT_COLUMNS)
    for board in boards:
        cols += [f"{name}_{board}" for name in BOARD_COLUMNS]
    cols.append("pareto")
    cols += [f"pareto_instructions_{board}" for board in boards]
    return cols


def flatten(result: dict, boards: list[str]) -> dict:
    """One point result -> one flat row (board figures as ``<name>_<board>``)."""
    row = {name: result.get(name) for name in POINT_COLUMNS}
    for board in boards:
        entry = result.get("boards", {}).get(board, {})
        for name in BOARD_COLUMNS:
            row[f"{name}_{board}"] = entry.get(name)
    return row


def quality_key(rows: list[dict]) -> tuple[str, int]:
    """What the fronts maximize: accuracy when the data set is known, else -max_abs_error."""
    ok = [r for r in rows if r["status"] == "ok"]
    if ok and all(r["accuracy"] is not None for r in ok):
        return "accuracy", 1
    return "max_abs_error", -1


def pareto_front(rows: list[dict], cost: str) -> list[str]:
    """Keys of the ok points no other ok point beats: at most the cost and at least the quality,
    better in one. Sorted by cost."""
    metric, sign = quality_key(rows)
    ok = [r for r in rows if r["status"] == "ok" and r.get(cost) is not None and r.get(metric) is not None]
    front = []
    for r in ok:
        q = sign * r[metric]
        dominated = any(o[cost] <= r[cost] and sign * o[metric] >= q and (o[cost] < r[cost] or sign * o[metric] > q)
                        for o in ok)
        if not dominated:
            front.append(r)
    return [r["key"] for r in sorted(front, key=lambda r: (r[cost], r["key"]))]


def findings(rows: list[dict]) -> dict:
    """The KANtize finding on this model, computed from the points (None parts when the grid lacks them)."""
    ok = {r["key"]: r for r in rows if r["status"] == "ok" and r["accuracy"] is not None}
    out = {"table_bits": None, "bitops": None}
    pair = {}
    for r in ok.values():
        if (r["act_bits"] == PAPER_FIXED_BITS and r["coef_bits"] == PAPER_FIXED_BITS and r["strategy"] == "spline"
                and r["spline_bits"] in PAPER_TABLE_BITS):
            pair[r["spline_bits"]] = r
    low, high = PAPER_TABLE_BITS
    if low in pair and high in pair:
        diff = round(100.0 * (pair[high]["accuracy"] - pair[low]["accuracy"]), 4)
        out["table_bits"] = {"act_bits": PAPER_FIXED_BITS, "coef_bits": PAPER_FIXED_BITS, "strategy": "spline",
                             "low_bits": low, "high_bits": high, "accuracy_low": pair[low]["accuracy"],
                             "accuracy_high": pair[high]["accuracy"], "drop_points": diff,
                             "within_1_point": diff <= WITHIN_POINTS}
    spline = [r for r in ok.values() if r["strategy"] == "spline"]  # the paper's method
    if spline:
        float_acc = spline[0]["float_accuracy"]
        near = [r for r in spline if 100.0 * (float_acc - r["accuracy"]) <= WITHIN_POINTS]
        if near:
            best = max(near, key=lambda r: (r["bitops_reduction"], r["accuracy"], r["key"]))
            out["bitops"] = {"float_accuracy": float_acc, "key": best["key"], "accuracy": best["accuracy"],
                             "bitops": best["bitops"], "bitops_float32": best["bitops_float32"],
                             "bitops_reduction": best["bitops_reduction"],
                             "at_least_50x": best["bitops_reduction"] >= BITOPS_TARGET}
    return out


def build_rows(results: list[dict], boards: list[str]) -> tuple[list[dict], dict]:
    """Rows sorted by key with their Pareto flags, and the fronts by name."""
    rows = [flatten(r, boards) for r in sorted(results, key=lambda r: r["key"])]
    fronts = {"flash_bytes": pareto_front(rows, "flash_bytes")}
    for board in boards:
        fronts[f"instructions_{board}"] = pareto_front(rows, f"instructions_{board}")
    for row in rows:
        row["pareto"] = row["key"] in fronts["flash_bytes"]
        for board in boards:
            row[f"pareto_instructions_{board}"] = row["key"] in fronts[f"instructions_{board}"]
    return rows, fronts


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(rows: list[dict], boards: list[str]) -> str:
    """sweep.csv text (empty cell = not measured)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = columns(boards)
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in cols])
    return buffer.getvalue()


def to_json(summary: dict) -> str:
    """sweep.json text."""
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"


def summary(meta: dict, rows: list[dict], fronts: dict, boards: list[str]) -> dict:
    """The sweep.json document."""
    metric, _ = quality_key(rows)
    return {"format": "kan2mcu-sweep", "format_version": FORMAT_VERSION, **meta, "boards": boards,
            "quality_metric": metric, "points": rows, "pareto": fronts, "findings": findings(rows),
            "counts": {"points": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
                       "failed": sum(r["status"] != "ok" for r in rows),
                       "bit_exact": sum(r["bit_exact"] is True for r in rows),
                       "boards_pass": sum(all(r[f"check_{b}"] == "PASS" for b in boards) for r in rows)}}


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _finding_lines(found: dict) -> list[str]:
    lines = ["## The KANtize finding on this model", ""]
    tb = found["table_bits"]
    if tb is None:
        lines.append(f"- Table bits: the grid lacks the {PAPER_TABLE_BITS[0]}- and {PAPER_TABLE_BITS[1]}-bit table "
                     f"points at {PAPER_FIXED_BITS}-bit codes and coefficients (strategy spline); not computed.")
    else:
        verdict = "within" if tb["within_1_point"] else "NOT within"
        lines.append(f"- Table bits: with {tb['act_bits']}-bit codes and {tb['coef_bits']}-bit coefficients, "
                     f"{tb['low_bits']}-bit B-spline tables reach accuracy {tb['accuracy_low']:.4f} against "
                     f"{tb['accuracy_high']:.4f} for {tb['high_bits']}-bit tables: a drop of {tb['drop_points']:.2f} "
                     f"points, {verdict} {WITHIN_POINTS} point.")
    bo = found["bitops"]
    if bo is None:
        lines.append(f"- BitOps: no spline point within {WITHIN_POINTS} point of the float accuracy; not computed.")
    else:
        verdict = "at least" if bo["at_least_50x"] else "LESS than"
        lines.append(f"- BitOps: the float32 model scores {bo['float_accuracy']:.4f}; among the spline points (the "
                     f"paper's method), {bo['key']} scores "
                     f"{bo['accuracy']:.4f} (within {WITHIN_POINTS} point) with {bo['bitops']:,} BitOps against "
                     f"{bo['bitops_float32']:,} for float32: {bo['bitops_reduction']:.1f}x fewer, {verdict} "
                     f"{BITOPS_TARGET:.0f}x.")
    return lines + [""]


def _point_table(rows: list[dict], keys: list[str], boards: list[str], metric: str) -> list[str]:
    by_key = {r["key"]: r for r in rows}
    head = f"| point | act | spline | coef | strategy | {metric} | flash B (model) | BitOps |"
    rule = "|---|---:|---:|---:|---|---:|---:|---:|"
    for board in boards:
        head += f" instructions {board} | cycles ESTIMATE {board} |"
        rule += "---:|---:|"
    lines = [head, rule]
    for key in keys:
        r = by_key[key]
        line = (f"| {key} | {r['act_bits']} | {_fmt(r['spline_bits'])} | {_fmt(r['coef_bits'])} | {r['strategy']} | "
                f"{_fmt(r[metric])} | {_fmt(r['flash_bytes'])} | {_fmt(r['bitops'])} |")
        for board in boards:
            line += f" {_fmt(r[f'instructions_{board}'])} | {_fmt(r[f'cycles_estimate_{board}'])} |"
        lines.append(line)
    return lines


def to_markdown(doc: dict, figures: list[str]) -> str:
    """sweep.md: findings, Pareto fronts, every point, failures, figures."""
    rows, boards, metric = doc["points"], doc["boards"], doc["quality_metric"]
    counts = doc["counts"]
    lines = [f"# kan2mcu sweep: {doc['checkpoint']}", "",
             f"- grid: act bits {doc['grid']['act_bits']}, spline (table) bits {doc['grid']['spline_bits']}, "
             f"coef bits {doc['grid']['coef_bits']}, strategies {doc['grid']['strategies']}; "
             "other bits " + ", ".join(f"{k.removesuffix('_bits')} {v}" for k, v in doc["base_options"].items()),
             f"- boards: {', '.join(boards) if boards else 'none (no firmware measured)'}",
             f"- points: {counts['points']}, ok {counts['ok']}, failed {counts['failed']}, "
             f"bit-exact on the host {counts['bit_exact']}"
             + (f", firmware self-check PASS on every board {counts['boards_pass']}" if boards else ""),
             f"- quality: {metric}" + (" on the test split" if metric == "accuracy" else " against the float model"),
             ""]
    if "edge-table" in doc["grid"]["strategies"]:
        lines[-1:-1] = [f"- edge-table points tabulate whole edges at {doc['base_options'].get('table_bits')}-bit "
                        "entries: they have no spline or coef bits (n/a), one point per act bits"]
    lines += _finding_lines(doc["findings"])
    fronts = [("flash_bytes", "Pareto front: accuracy against model flash (tables + coefficients)")]
    fronts += [(f"instructions_{b}", f"Pareto front: accuracy against instructions per inference on {b}")
               for b in boards]
    for name, title in fronts:
        lines += [f"## {title}", ""] + _point_table(rows, doc["pareto"][name], boards, metric) + [""]
    lines += ["## Every point", ""] + _point_table(rows, [r["key"] for r in rows], boards, metric) + [""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["## Failed points", ""] + [f"- {r['key']}: {r['error']}" for r in failed] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    lines += ["Cycles are an ESTIMATE (per-instruction costs, no wait states); instructions are exact (QEMU). "
              "Regenerate a point with `kan2mcu generate CKPT -o DIR --act-bits A --spline-bits S --coef-bits C`.",
              ""]
    return "\n".join(lines)
