"""Bad input gets one clear line and a non-zero exit: no traceback, no partial output."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from kan2mcu.errors import QuantizationError
from kan2mcu.quant.quantize import QuantOptions


def _kan2mcu(*args):
    return subprocess.run([sys.executable, "-m", "kan2mcu", *map(str, args)], capture_output=True, text=True)


def _assert_clean_failure(run, *needles):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    for needle in needles:
        assert needle in run.stderr, run.stderr


def _nan_checkpoint(path, value):
    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    model = KAN([4, 3, 2])
    with torch.no_grad():
        model.layers[1].spline_weight[0, 0, 0] = value
    save_checkpoint(model, path, dataset=None, input_transform=None)
    return path


@pytest.mark.parametrize("case", ["missing", "text", "random-bytes", "foreign-dict", "nan", "inf"])
def test_bad_checkpoints(tmp_path, case):
    path = tmp_path / "ckpt.pt"
    if case == "text":
        path.write_text("hello, not a model\n")
    elif case == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "foreign-dict":
        torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    elif case in ("nan", "inf"):
        _nan_checkpoint(path, float("nan") if case == "nan" else float("inf"))
    out = tmp_path / "out"
    run = _kan2mcu("generate", path, "-o", out)
    expected = {"missing": "no such file", "nan": "NaN/Inf", "inf": "NaN/Inf"}.get(case, "ckpt.pt")
    _assert_clean_failure(run, "kan2mcu: error:", expected)
    assert not out.exists() or not any(out.iterdir()), "partial output written"


@pytest.mark.parametrize("option,value", [("--act-bits", 1), ("--spline-bits", 9), ("--coef-bits", 0),
                                          ("--base-bits", 17), ("--act-bits", "x"), ("--table-bits", 1),
                                          ("--table-bits", 17)])
def test_bits_out_of_range(small_checkpoints, tmp_path, option, value):
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    out = tmp_path / "out"
    run = _kan2mcu("generate", checkpoint, "-o", out, "--calibration", calibration, option, value)
    _assert_clean_failure(run, option)
    assert not out.exists()


def test_unsupported_option(small_checkpoints, tmp_path):
    checkpoint, _ = small_checkpoints["8x5x3-G5-k3"]
    _assert_clean_failure(_kan2mcu("generate", checkpoint, "-o", tmp_path / "o", "--arith", "fixed16"), "--arith")
    _assert_clean_failure(_kan2mcu("generate", checkpoint, "-o", tmp_path / "o", "--tables", "huge"),
                          "unrecognized arguments")


def test_bad_calibration_file(small_checkpoints, tmp_path):
    checkpoint, _ = small_checkpoints["8x5x3-G5-k3"]
    bad = tmp_path / "calib.npy"
    np.save(bad, np.zeros((10, 3)))
    _assert_clean_failure(_kan2mcu("generate", checkpoint, "-o", tmp_path / "o", "--calibration", bad),
                          "--calibration")


def test_no_calibration_is_noted(small_checkpoints, tmp_path):
    """No calibration data: a note in the report, counted on stderr (the guard warns if it costs accuracy)."""
    checkpoint, _ = small_checkpoints["8x5x3-G5-k3"]
    run = _kan2mcu("generate", checkpoint, "-o", tmp_path / "o", "-q")
    assert run.returncode == 0, run.stderr
    assert "warning: no calibration data" not in run.stderr and "note" in run.stderr
    assert "- no calibration data: activation ranges come from the grids" in (tmp_path / "o" / "report.md").read_text()


def test_verify_on_a_foreign_folder(tmp_path):
    _assert_clean_failure(_kan2mcu("verify", tmp_path), "kan2mcu.json")


def test_accumulator_overflow_is_refused():
    """16-bit SiLU values times 16-bit weights over 64 inputs could overflow int32: refused at generation."""
    from kan2mcu.model.ir import KANLayer, KANModel
    from kan2mcu.quant.quantize import quantize

    rng = np.random.default_rng(0)
    knots = np.tile(np.linspace(-2.2, 2.2, 12), (64, 1))
    layer = KANLayer(knots=knots, order=3, coef=rng.normal(size=(4, 64, 8)), base_weight=np.ones((4, 64)))
    with pytest.raises(QuantizationError, match="overflow"):
        quantize(KANModel((layer,)), QuantOptions(base_bits=16, silu_bits=16), rng.uniform(-3, 3, (50, 64)))
