"""Front ends: read a checkpoint (own, efficient-kan, pykan), detect its format, return the IR."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kan2mcu.checkpoint import FORMAT as OWN_FORMAT
from kan2mcu.errors import CheckpointError
from kan2mcu.importers.efficient_kan import ir_from_state_dict, looks_like_efficient_kan
from kan2mcu.ir import KANModel


@dataclass(frozen=True, eq=False)
class ImportedModel:
    """The IR plus what the checkpoint says about its data and how to run the original."""

    model: KANModel
    format: str  # "kan2mcu" | "efficient-kan" | "pykan"
    dataset: str | None = None  # a name load_dataset() knows, when the checkpoint carries one
    calibration: np.ndarray | None = None  # model inputs shipped with the checkpoint (pykan cache)
    payload: dict = field(default_factory=dict)  # the raw checkpoint content, for the torch model


def _torch_load(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not ours"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line[:160]})") from None


def load_checkpoint(path) -> ImportedModel:
    """Read any supported checkpoint file and return its IR; foreign or corrupt files raise CheckpointError."""
    path = Path(path)
    from kan2mcu.importers import pykan as pykan_importer

    if pykan_importer.is_pykan_checkpoint(path):
        return pykan_importer.load_pykan_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint")
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == OWN_FORMAT:
        try:
            model = ir_from_state_dict(payload["state_dict"], source="kan2mcu",
                                       metadata={"dataset": payload.get("dataset"),
                                                 "input_transform": payload.get("input_transform")})
        except KeyError as exc:
            raise CheckpointError(f"{path}: kan2mcu checkpoint lacks {exc}") from None
        return ImportedModel(model, "kan2mcu", payload.get("dataset"), None, payload)
    if isinstance(payload, dict):
        for nested in ("state_dict", "model_state_dict", "model"):
            if isinstance(payload.get(nested), dict) and looks_like_efficient_kan(payload[nested]):
                payload = payload[nested]
                break
        if looks_like_efficient_kan(payload):
            return ImportedModel(ir_from_state_dict(payload, source="efficient-kan"), "efficient-kan")
    raise CheckpointError(f"{path}: not a KAN checkpoint kan2mcu knows (kan2mcu, efficient-kan state dict, "
                          "or pykan saveckpt prefix)")
