"""Spline-strategy code ranges far from the grid (issue 11, items 3 and 6): SiLU tables never span
the gap between far-apart channels, and an offset that does not fit the C tables is a clear error."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_random_checkpoint
from kan2mcu.errors import QuantizationError
from kan2mcu.generate import generate_model
from kan2mcu.check.verify import verify


def test_far_apart_inputs_get_separate_silu_tables(tmp_path):
    checkpoint, _ = make_random_checkpoint(tmp_path / "far.pt", (2, 3, 1), 5, 3, seed=4)
    rng = np.random.default_rng(4)
    calib = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200) + 4000.0])  # far beyond the grid
    np.save(tmp_path / "calib.npy", calib)
    result = generate_model(checkpoint, tmp_path / "m", calibration=tmp_path / "calib.npy", strategy="spline",
                            quiet=True, allow_saturation=True)
    layer0 = result.report["layers"][0]
    # two windows of 256 positions (8-byte decode words in the halfword layout) plus the small tables;
    # spanning the gap took about 5 MB
    assert layer0["table_bytes"] < 8192, layer0
    assert verify(tmp_path / "m", calibration=tmp_path / "calib.npy", quiet=True).inputs_checked >= 1000


def test_offsets_beyond_int32_are_refused_with_the_input_named(tmp_path):
    checkpoint, _ = make_random_checkpoint(tmp_path / "ts.pt", (2, 3, 1), 5, 3, seed=5)
    rng = np.random.default_rng(5)
    calib = np.column_stack([rng.uniform(-1, 1, 100), 1.7e9 + rng.uniform(0, 1e6, 100)])  # raw Unix timestamps
    np.save(tmp_path / "calib.npy", calib)
    with pytest.raises(QuantizationError, match=r"layers\.0: input 1 ranges over .* does not fit the C tables"):
        generate_model(checkpoint, tmp_path / "m", calibration=tmp_path / "calib.npy", strategy="spline",
                       quiet=True, allow_saturation=True)
    assert not (tmp_path / "m").exists()
