"""Accuracy of the quantized digits KAN against its float model (a separate figure from bit-exactness)."""
from __future__ import annotations

import pytest

from kan2mcu.generate import generate_model
from kan2mcu.quantize import QuantOptions


@pytest.mark.parametrize("spline_bits,allowed_drop", [(8, 0.005), (3, 0.010)])
def test_digits_accuracy_within_budget(digits_checkpoint, tmp_path, spline_bits, allowed_drop):
    result = generate_model(digits_checkpoint, tmp_path / "m", options=QuantOptions(spline_bits=spline_bits), strategy="spline",
                            quiet=True)
    acc = result.report["accuracy"]
    assert acc["float"] > 0.9, "the default KAN should learn digits"
    assert acc["quantized"] >= acc["float"] - allowed_drop, acc


def test_integer_reference_tracks_float_logits(digits_checkpoint, tmp_path):
    """At 8 bits the dequantized outputs stay close to the float logits (stated bound: 5% of their range)."""
    result = generate_model(digits_checkpoint, tmp_path / "m", quiet=True)
    import numpy as np

    from kan2mcu.bspline import model_forward
    from kan2mcu.bundle import load_bundle
    from kan2mcu.datasets import load_dataset

    model, _ = load_bundle(tmp_path / "m")
    logits = model_forward(model, load_dataset("digits").x_test)
    spread = float(np.ptp(logits))
    assert result.report["accuracy"]["max_abs_logit_error"] < 0.05 * spread
