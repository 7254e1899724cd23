"""Non-uniform, per-input grids (efficient-kan after update_grid): per-input tables, bit-exact."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from kan2mcu.bspline import model_forward
from kan2mcu.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.quantize import QuantOptions
from kan2mcu.reference import dequantize_outputs, quantize_inputs, run_model
from kan2mcu.verify import verify


def _nonuniform_state_dict(widths, grid_size=5, order=3, seed=0):
    """efficient-kan layout with knots that differ per input and are not evenly spaced."""
    rng = np.random.default_rng(seed)
    state = {}
    for n, (i, o) in enumerate(zip(widths, widths[1:])):
        steps = rng.uniform(0.2, 0.6, size=(i, grid_size + 2 * order))
        knots = -1.5 + np.concatenate([np.zeros((i, 1)), np.cumsum(steps, axis=1)], axis=1)
        state[f"layers.{n}.grid"] = torch.tensor(knots, dtype=torch.float32)
        state[f"layers.{n}.base_weight"] = torch.tensor(rng.normal(0, 0.5, (o, i)), dtype=torch.float32)
        state[f"layers.{n}.spline_weight"] = torch.tensor(rng.normal(0, 0.5, (o, i, grid_size + order)),
                                                          dtype=torch.float32)
        state[f"layers.{n}.spline_scaler"] = torch.tensor(rng.uniform(0.5, 1.5, (o, i)), dtype=torch.float32)
    return state


@pytest.mark.parametrize("bits", [3, 8])
def test_nonuniform_grid_bit_exact_and_close(tmp_path, bits):
    path = tmp_path / "ek.pt"
    torch.save({"state_dict": _nonuniform_state_dict([5, 4, 3])}, path)
    calibration = tmp_path / "calib.npy"
    x = np.random.default_rng(1).uniform(-2.0, 2.5, size=(400, 5))
    np.save(calibration, x)
    result = generate_model(path, tmp_path / "m", options=QuantOptions(act_bits=8, spline_bits=bits, coef_bits=8), strategy="spline",
                            calibration=calibration, quiet=True)
    assert [layer["basis_mode"] for layer in result.report["layers"]] == ["per_input", "per_input"]
    assert result.report["model"]["source_format"] == "efficient-kan"
    # per-input tables cost flash: I * 2^A * (1 + K1 * bits / 8) bytes at least
    assert result.report["layers"][0]["table_bytes"] >= 5 * 256 * (1 + 4 * bits // 8)
    assert verify(tmp_path / "m", calibration=calibration, sanitize=True, build_dir=tmp_path / "b",
                  quiet=True).bit_exact
    if bits == 8:  # accuracy figure, separate from bit-exactness: stated bound 3% of the logit range
        model, qmodel = load_bundle(tmp_path / "m")
        ref = model_forward(model, x)
        out = dequantize_outputs(qmodel, run_model(qmodel, quantize_inputs(qmodel, x)))
        assert np.abs(out - ref).max() < 0.03 * np.ptp(ref)


def test_verify_reuses_the_calibration_data(tmp_path):
    """Without a data set, generate keeps its calibration inputs and verify checks on them by default."""
    path = tmp_path / "ek.pt"
    torch.save(_nonuniform_state_dict([4, 3, 2], seed=3), path)
    calibration = tmp_path / "calib.csv"
    np.savetxt(calibration, np.random.default_rng(2).uniform(-2, 2, size=(64, 4)), delimiter=",")
    generate_model(path, tmp_path / "m", calibration=calibration, quiet=True)
    assert (tmp_path / "m" / "calibration.npy").exists()
    result = verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True)
    assert result.bit_exact and result.inputs_checked >= 1000 + 64
