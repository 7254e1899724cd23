"""Float64 evaluations written independently of kan2mcu, for tests that must not trust its code.

- B-splines: scipy's ``BSpline.basis_element`` (one element per knot span, zero outside).
- SiLU: ``x * expit(x)`` (scipy).
- Whole models: the checkpoint loaded into torch (kan2mcu.model.torch_kan.KAN, efficient-kan semantics)
  and run in float64 by torch, not by kan2mcu's numpy IR.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.interpolate import BSpline
from scipy.special import expit


def bsplines(knots: np.ndarray, order: int, x: np.ndarray) -> np.ndarray:
    """All B-splines of ``order`` on one knot row at ``x`` [N]: [N, len(knots) - order - 1]."""
    knots = np.asarray(knots, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros((len(x), len(knots) - order - 1))
    for m in range(out.shape[1]):
        element = BSpline.basis_element(knots[m:m + order + 2], extrapolate=False)
        out[:, m] = np.nan_to_num(element(x), nan=0.0)  # nan outside the support
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) * expit(x)


def torch_model(checkpoint: Path):
    """The checkpoint (kan2mcu's own or an efficient-kan state dict) as a float64 torch KAN."""
    import torch

    from kan2mcu.model.torch_kan import KAN

    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = payload["state_dict"]
    n_layers = len({key.split(".")[1] for key in state})
    widths = [state[f"layers.{n}.base_weight"].shape[1] for n in range(n_layers)]
    widths.append(state[f"layers.{n_layers - 1}.base_weight"].shape[0])
    n_knots = state["layers.0.grid"].shape[1]
    n_basis = state["layers.0.spline_weight"].shape[2]
    order = n_knots - n_basis - 1
    model = KAN(widths, grid_size=n_basis - order, spline_order=order)
    model.load_state_dict(state)
    return model.double().eval()


def torch_forward(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    """Float64 outputs of the checkpoint's torch model for inputs ``x`` [N, I]."""
    import torch

    with torch.no_grad():
        return torch_model(checkpoint)(torch.tensor(np.asarray(x, dtype=np.float64))).numpy()
