"""efficient-kan state dicts (``layers.N.base_weight``, ``spline_weight``, ``spline_scaler``, ``grid``)."""
from __future__ import annotations

import re

import numpy as np

from kan2mcu.errors import CheckpointError
from kan2mcu.ir import KANLayer, KANModel

_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(base_weight|spline_weight|spline_scaler|grid)$")


def looks_like_efficient_kan(state_dict: dict) -> bool:
    """True when ``state_dict`` has at least one efficient-kan layer key."""
    return any(isinstance(k, str) and _KEY.match(k) for k in state_dict)


def _to_numpy(value, key: str) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu().double().numpy() if hasattr(value, "detach") else value,
                          dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any non-numeric entry is a foreign file
        raise CheckpointError(f"{key}: not a numeric tensor ({exc})") from None


def ir_from_state_dict(state_dict: dict, *, source: str = "efficient-kan", metadata: dict | None = None) -> KANModel:
    """Build the IR from an efficient-kan-layout state dict; order and grid size come from the shapes."""
    by_layer: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        match = _KEY.match(key) if isinstance(key, str) else None
        if match:
            by_layer.setdefault(int(match.group(1)), {})[match.group(2)] = _to_numpy(value, key)
    if not by_layer:
        raise CheckpointError("no efficient-kan layer keys (layers.N.base_weight, ...) in the state dict")
    if sorted(by_layer) != list(range(len(by_layer))):
        raise CheckpointError(f"layer indices {sorted(by_layer)} are not 0..{len(by_layer) - 1}")
    layers = []
    for index in range(len(by_layer)):
        entry, name = by_layer[index], f"layers.{index}"
        for needed in ("base_weight", "spline_weight", "grid"):
            if needed not in entry:
                raise CheckpointError(f"{name}: missing {needed}")
        spline_weight, grid = entry["spline_weight"], entry["grid"]
        if spline_weight.ndim != 3 or grid.ndim != 2:
            raise CheckpointError(f"{name}: spline_weight must be [O,I,G+k] and grid [I,G+2k+1], "
                                  f"got {spline_weight.shape} and {grid.shape}")
        order = grid.shape[1] - spline_weight.shape[2] - 1
        if order < 1:
            raise CheckpointError(f"{name}: grid of {grid.shape[1]} knots and {spline_weight.shape[2]} "
                                  "coefficients imply no valid spline order")
        scaler = entry.get("spline_scaler")
        coef = spline_weight * (scaler[..., None] if scaler is not None else 1.0)
        layers.append(KANLayer(knots=grid, order=int(order), coef=coef, base_weight=entry["base_weight"],
                               name=name))
    return KANModel(tuple(layers), source=source, metadata=dict(metadata or {}))
