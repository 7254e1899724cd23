"""`kan2mcu sweep`: grid parsing, Pareto fronts, and a real sweep of the default digits KAN under QEMU
(interrupted and resumed, rerun, Ray), with every point bit-exact.

The QEMU tests need arm-none-eabi-gcc, qemu-system-arm and host gcc (skipped when missing, forced
on in CI by conftest.require_tool); the Ray test needs Ray (`pip install 'kan2mcu[ray]'`).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_tool
from kan2mcu.cli import main
from kan2mcu.errors import OptionError, VerificationError
from kan2mcu.sweep import results, run_sweep
from kan2mcu.sweep.grid import SweepPoint, make_grid, parse_int_list, parse_name_list
from kan2mcu.sweep.point import generate_accepts_strategy

BOARD = "qemu-cortex-m4"
GRID = {"act_bits": [8], "spline_bits": [3, 8], "coef_bits": [8]}  # the paper's pair: 3- and 8-bit tables
REQUIRED_COLUMNS = ("act_bits", "spline_bits", "coef_bits", "strategy", "accuracy", "flash_bytes",
                    f"instructions_{BOARD}", f"cycles_estimate_{BOARD}", "bitops", "pareto")
OUTPUTS = ("sweep.csv", "sweep.json", "sweep.md", "pareto_flash.png", f"pareto_instructions_{BOARD}.png",
           "accuracy_vs_table_bits.png")


# ---------------------------------------------------------------------------- grid and results

def test_lists_and_ranges_parse():
    assert parse_int_list("2..8", "--spline-bits") == [2, 3, 4, 5, 6, 7, 8]
    assert parse_int_list("8,4, 6,4", "--act-bits") == [4, 6, 8]
    assert parse_int_list("2..3,8", "--coef-bits") == [2, 3, 8]
    known = ("spline", "edge-table")
    assert parse_name_list("spline,edge-table,spline", "--strategy", known) == ["spline", "edge-table"]
    for bad in ("", "a", "8..2", "2..", "3,,4"):
        with pytest.raises(OptionError):
            parse_int_list(bad, "--act-bits")
    with pytest.raises(OptionError, match="unknown value"):
        parse_name_list("spline,lut", "--strategy", ("spline", "edge-table"))
    with pytest.raises(OptionError, match="2..8"):
        make_grid([9], [8], [8], ["spline"])


def test_edge_table_points_leave_out_the_spline_knobs():
    grid = make_grid([4, 8], [2, 3, 8], [3, 8], ["spline", "edge-table"])
    assert len(grid) == 2 * 3 * 2 + 2  # one edge-table point per act width
    tables = [p for p in grid if p.strategy == "edge-table"]
    assert [p.key for p in tables] == ["a04-edge-table", "a08-edge-table"]
    assert tables[0].as_dict() == {"act_bits": 4, "spline_bits": None, "coef_bits": None, "strategy": "edge-table"}


def test_grid_is_sorted_by_key_and_keys_sort_numerically():
    grid = make_grid([8, 4], [8, 2, 10 - 7], [3], ["spline"])
    assert [p.key for p in grid] == sorted(p.key for p in grid)
    assert grid[0] == SweepPoint(4, 2, 3, "spline") and grid[0].key == "a04-s02-c03-spline"


def _row(key, acc, flash, ins, status="ok", **extra):
    row = {"key": key, "status": status, "accuracy": acc, "flash_bytes": flash, "instructions_b": ins,
           "max_abs_error": 1 - acc if acc is not None else None}
    row.update(extra)
    return row


def test_pareto_front_keeps_exactly_the_undominated_points():
    rows = [_row("a", 0.90, 100, 5), _row("b", 0.95, 200, 4), _row("c", 0.94, 250, 3), _row("d", 0.95, 300, 9),
            _row("e", 0.99, 999, 9, status="error")]
    assert results.pareto_front(rows, "flash_bytes") == ["a", "b"]  # c and d cost more for no more accuracy
    assert results.pareto_front(rows, "instructions_b") == ["c", "b"]  # sorted by cost
    # without accuracy the front trades cost against max_abs_error (lower is better)
    no_acc = [dict(r, accuracy=None) for r in rows[:4]]
    assert results.quality_key(no_acc) == ("max_abs_error", -1)
    assert results.pareto_front(no_acc, "flash_bytes") == ["a", "b"]


def test_findings_are_computed_from_the_rows():
    base = {"act_bits": 8, "coef_bits": 8, "strategy": "spline", "float_accuracy": 0.96}
    rows = [_row("lo", 0.950, 1, 1, spline_bits=3, bitops=10, bitops_float32=1000, bitops_reduction=100.0, **base),
            _row("hi", 0.962, 2, 2, spline_bits=8, bitops=40, bitops_float32=1000, bitops_reduction=25.0, **base)]
    found = results.findings(rows)
    assert found["table_bits"]["drop_points"] == pytest.approx(1.2)
    assert found["table_bits"]["within_1_point"] is False
    assert found["bitops"]["key"] == "hi" and found["bitops"]["at_least_50x"] is False  # "lo" is 1.0+ point off
    rows[0]["accuracy"] = 0.958
    found = results.findings(rows)
    assert found["table_bits"]["within_1_point"] is True
    assert found["bitops"]["key"] == "lo" and found["bitops"]["at_least_50x"] is True


def test_bad_sweep_options_are_one_line_errors(capsys, tmp_path):
    assert main(["sweep", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "s")]) == 1
    assert main(["sweep", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "s"), "--act-bits", "x"]) == 1
    assert main(["sweep", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "s"), "--strategy", "lut"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("kan2mcu: error: ") for line in err)
    assert "Traceback" not in "".join(err)


# ---------------------------------------------------------------------------- real sweeps

def _require_qemu_tools():
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "gcc"):
        require_tool(tool)


@pytest.fixture(scope="module")
def interrupted_then_resumed(digits_checkpoint, tmp_path_factory):
    """Start `kan2mcu sweep` (one job), interrupt it (Ctrl-C to its process group) once the first
    point is stored, then run the same sweep again with two worker processes."""
    _require_qemu_tools()
    out = tmp_path_factory.mktemp("sweep") / "digits"
    command = [sys.executable, "-m", "kan2mcu", "sweep", str(digits_checkpoint), "-o", str(out),
               "--act-bits", "8", "--spline-bits", "3,8", "--coef-bits", "8", "--strategy", "spline",
               "--board", BOARD, "--jobs", "1", "--no-progress"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    points = out / "points"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not list(points.glob("*.json")):
        time.sleep(0.1)
    first = {p.name: p.stat().st_mtime_ns for p in points.glob("*.json")}
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    after_interrupt = sorted(p.name for p in points.glob("*.json"))
    computed: list[str] = []
    doc = run_sweep(digits_checkpoint, out, **GRID, strategies=["spline"], boards=[BOARD], jobs=2, progress=False,
                    on_point=computed.append)
    return {"checkpoint": digits_checkpoint, "out": out, "returncode": proc.returncode, "stderr": stderr,
            "first": first,
            "after_interrupt": after_interrupt, "computed": computed, "doc": doc}


def test_interrupted_sweep_completes_without_recomputing(interrupted_then_resumed):
    run = interrupted_then_resumed
    assert run["returncode"] == 130, run["stderr"]
    assert "kan2mcu: interrupted" in run["stderr"]
    assert len(run["first"]) == 1 and run["after_interrupt"] == sorted(run["first"])  # stopped mid-sweep
    (done,) = run["first"]
    all_keys = {"a08-s03-c08-spline", "a08-s08-c08-spline"}
    assert run["computed"] == sorted(all_keys - {done.removesuffix(".json")})  # only the missing point
    assert (run["out"] / "points" / done).stat().st_mtime_ns == run["first"][done]  # not rewritten


def test_sweep_writes_every_output_with_every_point_bit_exact(interrupted_then_resumed):
    out, doc = interrupted_then_resumed["out"], interrupted_then_resumed["doc"]
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    with open(out / "sweep.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert set(REQUIRED_COLUMNS) <= set(rows[0])
    assert [r["key"] for r in rows] == ["a08-s03-c08-spline", "a08-s08-c08-spline"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["bit_exact"] == "true" and r[f"check_{BOARD}"] == "PASS"  # host C and firmware under QEMU
        assert int(r[f"instructions_{BOARD}"]) > 1000 and int(r[f"cycles_estimate_{BOARD}"]) > 0
        assert int(r["flash_bytes"]) > 0 and int(r["bitops"]) > 0
    assert any(r["pareto"] == "true" for r in rows)
    assert doc["counts"]["boards_pass"] == 2
    assert "firmware self-check PASS on every board 2" in (out / "sweep.md").read_text()
    assert json.loads((out / "sweep.json").read_text())["points"] == doc["points"]
    text = (out / "sweep.csv").read_text() + (out / "sweep.json").read_text()
    assert str(out) not in text and "seconds" not in text  # no paths, no timings


def test_sweep_md_states_the_papers_finding(interrupted_then_resumed):
    """KANtize: 3-bit tables within 1.0 point of 8-bit ones (8-bit codes and coefficients), and at
    least 50x fewer BitOps than float32 within 1.0 point of float accuracy, on this model."""
    out = interrupted_then_resumed["out"]
    rows = {r["key"]: r for r in json.loads((out / "sweep.json").read_text())["points"]}
    drop = 100 * (rows["a08-s08-c08-spline"]["accuracy"] - rows["a08-s03-c08-spline"]["accuracy"])
    md = (out / "sweep.md").read_text()
    assert f"a drop of {drop:.2f} points, within 1.0 point" in md
    assert drop <= 1.0
    close = [r for r in rows.values() if 100 * (r["float_accuracy"] - r["accuracy"]) <= 1.0]
    best = max(r["bitops_float32"] / r["bitops"] for r in close)
    assert best >= 50
    assert f"{best:.1f}x fewer, at least 50x" in md


def test_rerun_reuses_every_point_and_writes_identical_files(interrupted_then_resumed):
    out = interrupted_then_resumed["out"]
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    computed: list[str] = []
    run_sweep(interrupted_then_resumed["checkpoint"], out, **GRID, strategies=["spline"], boards=[BOARD], jobs=2,
              progress=False, on_point=computed.append)
    assert computed == []
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert json.loads((out / "timings.json").read_text())["reused"] == 2


def test_ray_executor_gives_the_same_rows(interrupted_then_resumed, tmp_path):
    """The same grid on a local Ray instance (2 CPUs, 127.0.0.1) gives the same csv, byte for byte."""
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'kan2mcu[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        out = tmp_path / "ray"
        run_sweep(interrupted_then_resumed["checkpoint"], out, **GRID, strategies=["spline"], boards=[BOARD],
                  executor="ray", progress=False)
    finally:
        ray.shutdown()
    local = interrupted_then_resumed["out"]
    assert (out / "sweep.csv").read_text() == (local / "sweep.csv").read_text()
    assert (out / "sweep.json").read_text() == (local / "sweep.json").read_text()
    assert json.loads((out / "timings.json").read_text())["executor"] == "ray"


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(digits_checkpoint, tmp_path, monkeypatch):
    """One point's verification fails (injected); it is recorded with its error, the others finish,
    and running again retries only that point."""
    import kan2mcu.check.verify

    real_verify = kan2mcu.check.verify.verify

    def failing_verify(folder, **kwargs):
        options = json.loads((Path(folder) / "kan2mcu.json").read_text())["options"]
        if options["spline_bits"] == 2:
            raise VerificationError(f"{folder}: C differs from the integer reference (injected)")
        return real_verify(folder, **kwargs)

    monkeypatch.setattr(kan2mcu.check.verify, "verify", failing_verify)
    out = tmp_path / "s"
    grid = dict(act_bits=[8], spline_bits=[2, 8], coef_bits=[8], strategies=["spline"], boards=[])
    doc = run_sweep(digits_checkpoint, out, **grid, jobs=1, progress=False)  # in-process: the patch applies
    rows = {r["key"]: r for r in doc["points"]}
    assert rows["a08-s02-c08-spline"]["status"] == "error"
    assert rows["a08-s02-c08-spline"]["error"] == "<scratch>/kan: C differs from the integer reference (injected)"
    assert rows["a08-s08-c08-spline"]["status"] == "ok" and rows["a08-s08-c08-spline"]["bit_exact"] is True
    assert doc["counts"] == {"points": 2, "ok": 1, "failed": 1, "bit_exact": 1, "boards_pass": 2}  # no boards
    assert "- a08-s02-c08-spline: <scratch>/kan: C differs" in (out / "sweep.md").read_text()
    monkeypatch.setattr(kan2mcu.check.verify, "verify", real_verify)
    computed: list[str] = []
    doc = run_sweep(digits_checkpoint, out, **grid, jobs=1, progress=False, on_point=computed.append)
    assert computed == ["a08-s02-c08-spline"] and doc["counts"]["failed"] == 0


@pytest.mark.skipif(generate_accepts_strategy(), reason="this kan2mcu has per-layer strategies "
                                                          "(see test_edge_table_strategy_points)")
def test_unknown_strategy_is_a_point_error_without_strategies(digits_checkpoint, tmp_path):
    doc = run_sweep(digits_checkpoint, tmp_path / "s", act_bits=[8], spline_bits=[8], coef_bits=[8],
                    strategies=["spline", "edge-table"], boards=[], jobs=1, progress=False)
    rows = {r["key"]: r for r in doc["points"]}
    assert rows["a08-edge-table"]["error"] == "strategy edge-table not supported by this kan2mcu"
    assert rows["a08-s08-c08-spline"]["status"] == "ok"


# NEEDS STRATEGIES: runs once generate_model(..., strategy=...) exists (issue 7).
@pytest.mark.skipif(not generate_accepts_strategy(), reason="needs strategies")
def test_edge_table_strategy_points(digits_checkpoint, tmp_path):
    _require_qemu_tools()
    doc = run_sweep(digits_checkpoint, tmp_path / "s", act_bits=[8], spline_bits=[8], coef_bits=[8],
                    strategies=["spline", "edge-table"], boards=[BOARD], jobs=2, progress=False)
    assert [r["key"] for r in doc["points"]] == ["a08-edge-table", "a08-s08-c08-spline"]
    rows = {r["strategy"]: r for r in doc["points"]}
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert row["bit_exact"] is True and row[f"check_{BOARD}"] == "PASS"
    # edge tables trade flash for speed: the two strategies must not be the same program
    assert rows["edge-table"]["flash_bytes"] != rows["spline"]["flash_bytes"]
