"""efficient-kan state dicts (``layers.N.base_weight``, ``spline_weight``, ``spline_scaler``, ``grid``)."""
from __future__ import annotations

import re

import numpy as np

from kan2mcu.errors import CheckpointError
from kan2mcu.model.ir import KANLayer, KANModel

_KEY = re.compile(r"^(?:(.*)\.)?layers\.(\d+)\.(base_weight|spline_weight|spline_scaler|grid)$")
_MAX_NAMED = 5


def looks_like_efficient_kan(state_dict: dict) -> bool:
    """True when ``state_dict`` has at least one efficient-kan layer key."""
    return any(isinstance(k, str) and _KEY.match(k) for k in state_dict)


def _to_numpy(value, key: str) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu().double().numpy() if hasattr(value, "detach") else value,
                          dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any non-numeric entry is a foreign file
        raise CheckpointError(f"{key}: not a numeric tensor ({exc})") from None


def _shown(prefix: str) -> str:
    return repr(prefix) if prefix else "'' (top level)"


def kan_prefixes(state_dict: dict) -> list[str]:
    """The distinct module prefixes in front of ``layers.N.*`` keys ('' for top-level layers)."""
    return sorted({m.group(1) or "" for k in state_dict if isinstance(k, str) and (m := _KEY.match(k))})


def select_kan(state_dict: dict, prefix: str | None) -> tuple[dict, list[str]]:
    """The keys of one KAN (``layers.N.*`` under ``prefix``), and warnings naming the tensors left out.

    Several KANs in one file and no ``prefix``: CheckpointError listing them."""
    found = kan_prefixes(state_dict)
    if prefix is None:
        if len(found) > 1:
            raise CheckpointError(f"the state dict holds {len(found)} KANs (layer prefixes "
                                  f"{', '.join(_shown(p) for p in found)}); pick one with --prefix")
        prefix = found[0] if found else ""
    elif prefix not in found:
        raise CheckpointError(f"--prefix {prefix!r}: no layers.N.* keys under it; the state dict has "
                              f"{', '.join(_shown(p) for p in found) or 'none'}")
    chosen, foreign, other_kans = {}, [], set()
    for key, value in state_dict.items():
        match = _KEY.match(key) if isinstance(key, str) else None
        if match and (match.group(1) or "") == prefix:
            chosen[key] = value
        elif match:
            other_kans.add(match.group(1) or "")
        else:
            foreign.append(str(key))
    warnings = []
    if foreign:
        names = ", ".join(foreign[:_MAX_NAMED]) + (f" and {len(foreign) - _MAX_NAMED} more"
                                                  if len(foreign) > _MAX_NAMED else "")
        warnings.append(f"{len(foreign)} tensor(s) are not part of the KAN and are ignored: {names} "
                        "(layers before or after the KAN are not deployed)")
    if other_kans:
        warnings.append(f"deploying the KAN {_shown(prefix)} only; ignored the KAN(s) "
                        f"{', '.join(_shown(p) for p in sorted(other_kans))}")
    return chosen, warnings


def ir_from_state_dict(state_dict: dict, *, source: str = "efficient-kan", metadata: dict | None = None) -> KANModel:
    """Build the IR from an efficient-kan-layout state dict holding one KAN (see select_kan);
    order and grid size come from the shapes."""
    by_layer: dict[int, dict[str, np.ndarray]] = {}
    prefixes = kan_prefixes(state_dict)
    if len(prefixes) > 1:
        raise CheckpointError(f"layers of {len(prefixes)} KANs ({', '.join(_shown(p) for p in prefixes)}) "
                              "in one state dict; pick one with --prefix")
    for key, value in state_dict.items():
        match = _KEY.match(key) if isinstance(key, str) else None
        if match:
            by_layer.setdefault(int(match.group(2)), {})[match.group(3)] = _to_numpy(value, key)
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
        if scaler is not None and scaler.shape != spline_weight.shape[:2]:
            raise CheckpointError(f"{name}: spline_scaler shape {scaler.shape} does not match spline_weight "
                                  f"{spline_weight.shape} (expected {spline_weight.shape[:2]})")
        if entry["base_weight"].shape != spline_weight.shape[:2]:
            raise CheckpointError(f"{name}: base_weight shape {entry['base_weight'].shape} does not match "
                                  f"spline_weight {spline_weight.shape} (expected {spline_weight.shape[:2]})")
        if grid.shape[0] != spline_weight.shape[1]:
            raise CheckpointError(f"{name}: grid for {grid.shape[0]} inputs, spline_weight has "
                                  f"{spline_weight.shape[1]}")
        coef = spline_weight * (scaler[..., None] if scaler is not None else 1.0)
        layers.append(KANLayer(knots=grid, order=int(order), coef=coef, base_weight=entry["base_weight"],
                               name=name))
    return KANModel(tuple(layers), source=source, metadata=dict(metadata or {}))
