"""The test vectors written beside a generated model (test_vectors.json)."""
from __future__ import annotations

import numpy as np

from kan2mcu.model.bspline import model_forward
from kan2mcu.quant.reference import quantize_inputs, run_model

N_TEST_VECTORS = 8


def test_vectors(model, qmodel, x: np.ndarray | None) -> dict:
    """Inputs and expected outputs the host check and the firmware compare against: integer codes
    (the rows ``x`` plus all-zero and all-top codes) and the reference's exact outputs, or float inputs
    and the float model's outputs with a tolerance."""
    n_in = model.layers[0].in_features
    if qmodel is not None:
        top = qmodel.layers[0].codes - 1
        codes = [np.zeros(n_in, np.int64), np.full(n_in, top)]
        if x is not None:
            codes = list(quantize_inputs(qmodel, x)) + codes
        codes = np.array(codes)
        return {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}
    x = np.zeros((1, n_in)) if x is None else np.asarray(x)
    y = model_forward(model, x)
    tol = 1e-3 * max(1.0, float(np.abs(y).max()))
    return {"inputs": x.astype(np.float32).astype(float).tolist(), "outputs": y.tolist(), "abs_tolerance": tol}
