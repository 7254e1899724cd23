"""Non-uniform, per-input grids (efficient-kan after update_grid): per-input tables, bit-exact.

Accuracy of the per-input mode is tested with tight bounds in test_accuracy.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_c_equals_reference
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import run_sanitized
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.reference import run_model
from kan2mcu.check.verify import N_RANDOM, verification_codes, verify


@pytest.mark.parametrize("bits", [3, 8])
def test_nonuniform_grid_bit_exact(nonuniform_checkpoint, tmp_path, bits):
    path, calibration = nonuniform_checkpoint
    result = generate_model(path, tmp_path / "m", options=QuantOptions(act_bits=8, spline_bits=bits, coef_bits=8),
                            calibration=calibration, quiet=True, strategy="spline")
    assert [layer["basis_mode"] for layer in result.report["layers"]] == ["per_input", "per_input"]
    assert result.report["model"]["source_format"] == "efficient-kan"
    _, qmodel = load_bundle(tmp_path / "m")
    codes = verification_codes(qmodel, np.load(calibration))
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "b")
    sanitized = run_sanitized(tmp_path / "m", codes, tmp_path / "san")
    np.testing.assert_array_equal(sanitized.astype(np.int64), run_model(qmodel, codes))


def test_verify_reuses_the_calibration_data(tmp_path):
    """Without a data set, generate keeps its calibration inputs and verify checks on them by default."""
    import torch

    from conftest import nonuniform_state_dict

    path = tmp_path / "ek.pt"
    torch.save(nonuniform_state_dict([4, 3, 2], seed=3), path)
    calibration = tmp_path / "calib.csv"
    np.savetxt(calibration, np.random.default_rng(2).uniform(-2, 2, size=(64, 4)), delimiter=",")
    generate_model(path, tmp_path / "m", calibration=calibration, quiet=True, strategy="spline")
    assert (tmp_path / "m" / "calibration.npy").exists()
    result = verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True)
    # the 64 calibration rows, the random codes, 3 extreme rows, 32 corner rows and every code (256)
    assert result.inputs_checked == 64 + N_RANDOM + 3 + 32 + 256
