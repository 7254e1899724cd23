"""The self-check firmware runs what a user's firmware runs (raw int32 inputs through
``<prefix>_quantize_input_q``, then ``<prefix>_infer``) on M0, M4 and rv32imac, compares the codes
and the outputs bit for bit, and ``measure`` reports the input quantization next to the layers."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.firmware.boards import get_board
from kan2mcu.firmware.measure import build_firmware, measure
from kan2mcu.firmware.qemu import run_elf
from kan2mcu.generate import generate_model
from kan2mcu.quant.quantize import LayerPlan, QuantOptions
from kan2mcu.quant.reference import run_model
from test_firmware_qemu import offline_environment  # noqa: F401  (fresh offline PlatformIO core, dead proxy)

BOARDS = ["qemu-cortex-m0", "qemu-cortex-m4", "qemu-rv32imac"]


@pytest.fixture(scope="module")
def rule_model(small_checkpoints, tmp_path_factory):
    """8 inputs, raw = Q15.16, 8-bit codes: the raw API in the rule layout, 3 rows or more (inputs
    on 3 calibrated ranges 30x apart, too unlike to share one encoder) found by a row per channel."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    base = tmp_path_factory.mktemp("rawfw")
    unlike = base / "unlike.npy"
    np.save(unlike, np.load(calibration) * np.array([1.0, 30.0, 900.0] * 2 + [1.0, 30.0]))
    folder = base / "small"
    # the plan pinned at 8-bit codes (the planner may narrow them): every code 0..255 is a vector below
    generate_model(checkpoint, folder, name="small", options=QuantOptions(act_bits=8), calibration=unlike,
                   quiet=True, plan=[LayerPlan("edge-table", 8, 8)] * 2)
    source = (folder / "small.c").read_text()
    rows = int(re.search(r"small_raw_rules\[(\d+)\]", source).group(1))
    assert rows >= 3 and "small_raw_row[SMALL_INPUT_SIZE]" in source
    return folder


def _every_code(folder):
    _, qmodel = load_bundle(folder)
    codes = np.repeat(np.arange(256)[:, None], qmodel.in_features, axis=1)
    return {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}


def _run(folder, board, project, vectors=None) -> dict:
    run = run_elf(get_board(board), build_firmware(folder, board, project, vectors_override=vectors))
    assert run.result is not None, run.output[-2000:]
    return run.result


@pytest.mark.parametrize("board", BOARDS)
def test_measure_reports_input_quantization_per_layer_and_output(rule_model, board, tmp_path):
    entry = measure([rule_model], board, tmp_path / "m")["models"][0]
    result = entry["firmware_result"]
    assert (entry["check"], result["raw_inputs"], result["code_mismatches"], result["mismatches"]) == ("PASS", True, 0, 0)
    assert entry["input_instructions"] > 0
    assert entry["total_instructions"] == entry["instructions"] + entry["input_instructions"]
    assert not any(name.startswith("small_quantize") or name.startswith("small_raw") for name in entry["functions"])
    parts = {part["part"]: part for part in entry["breakdown"]}
    assert list(parts) == ["input quantization", "layer 0", "layer 1", "output"]
    assert parts["input quantization"]["instructions"] == entry["input_instructions"]
    assert sum(parts[p]["instructions"] for p in ("layer 0", "layer 1", "output")) == entry["instructions"]
    assert min(parts["layer 0"]["instructions"], parts["layer 1"]["instructions"]) > 0
    api_tables = json.loads((rule_model / "report.json").read_text())["totals"]["input_api_bytes"]
    assert parts["input quantization"]["flash_bytes"] > api_tables  # the tables plus the API's code
    report = json.loads((tmp_path / "m" / "measure.json").read_text())
    assert "| input quantization |" in report["markdown"]


@pytest.mark.parametrize("board", BOARDS)
def test_every_code_through_the_raw_api_on_firmware(rule_model, board, tmp_path):
    """256 vectors: every code of every input, from the middle of its raw interval (even vectors)
    and from its smallest raw value (odd vectors, the thresholds themselves)."""
    result = _run(rule_model, board, tmp_path / "p", _every_code(rule_model))
    assert (result["check"], result["raw_inputs"], result["code_mismatches"], result["vectors"]) == ("PASS", True, 0, 256)


def test_a_threshold_off_by_one_fails_the_firmware(rule_model, tmp_path):
    """One rule's base one key higher: the smallest raw of each code of that row now gets the code
    below, and the firmware's code comparison fails (the outputs alone might not show it)."""
    broken = tmp_path / "small"
    shutil.copytree(rule_model, broken)
    source = (broken / "small.c").read_text()
    start = re.search(r"small_raw_rules\[\d+\] = \{", source).start()
    line_start = source.index("{ 0x", start)
    base = int(source[line_start + 4:line_start + 12], 16)
    (broken / "small.c").write_text(source[:line_start + 2] + f"0x{base + 1:08X}" + source[line_start + 12:])
    result = _run(broken, "qemu-cortex-m4", tmp_path / "p", _every_code(rule_model))
    assert result["check"] == "FAIL" and result["code_mismatches"] > 0
