"""Smoke tests of the scripts beside the package (benchmarks/, tools/), so that they do not rot:
each runs on one small case and must produce its table or fit. (tools/mutate.py runs in CI as
``make mutants``; tools/generated_hashes.py has host_tests/test_generated_hashes.py.)"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "host_tests" / "fixtures" / "hashed" / "digits.pt"


def _script(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_strategies_benchmark_writes_its_table(tmp_path):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    out = tmp_path / "results.md"
    assert _script("benchmarks/strategies.py").main(
        ["--checkpoint", str(DIGITS), "--settings", "4/3/4", "--strategies", "edge-table",
         "--boards", "qemu-cortex-m4", "-o", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 4/3/4")]
    assert len(rows) == 1 and "FAIL" not in rows[0]
    instructions = int(rows[0].split("|")[-2].split("/")[0].replace(",", ""))
    assert instructions > 1000


def test_cost_calibration_fits_a_core(tmp_path):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    assert _script("benchmarks/calibrate_costs.py").main(
        ["--strategy", "edge-table", "--shapes", "8,4,6", "--boards", "qemu-cortex-m4", "-o", str(tmp_path)]) == 0
    fitted = json.loads((tmp_path / "fitted.json").read_text())
    assert list(fitted) == ["cortex-m4/edge-table"] and all(isinstance(v, float) for v in fitted["cortex-m4/edge-table"].values())


def test_cores_benchmark_measures_a_core(tmp_path):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    out = tmp_path / "cores.md"
    assert _script("benchmarks/cores.py").main(["--checkpoint", str(DIGITS), "--boards", "qemu-cortex-m4",
                                                  "-o", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| cortex-m4 |")]
    assert len(rows) == 1 and int(rows[0].split("|")[6].replace(",", "")) > 500


def test_scale_benchmark_pipeline_on_a_small_model(tmp_path, monkeypatch):
    """scale.py's generate (fresh process, time and peak memory), verify, measure and table on the
    64-input digits fixture (its 784-input models take minutes to train: not in the suite)."""
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    scale = _script("benchmarks/scale.py")
    monkeypatch.setattr(scale, "checkpoint_of", lambda work, key: (DIGITS, []))
    monkeypatch.setattr(scale, "BOARDS", ("qemu-cortex-m4",))
    row = scale.generate(tmp_path, "digits 8x8, 64 KiB", "digits64", ["--flash-budget", "65536"])
    assert row["host_bit_exact"] and row["peak_mib"] > 0 and row["report"]["totals"]["model_flash_bytes"] <= 65536
    scale.measure_all(tmp_path, [row])
    assert row["qemu-cortex-m4"][0] == "PASS"
    refused = scale.generate(tmp_path, "too small", "digits64", ["--flash-budget", "1000"])
    text = scale.table([row, refused])
    assert "| digits 8x8, 64 KiB |" in text and "refused:" in text
