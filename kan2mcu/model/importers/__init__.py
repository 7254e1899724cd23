"""Front ends: read a checkpoint (own, efficient-kan, pykan), detect its format, return the IR."""
from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.model.checkpoint import FORMAT as OWN_FORMAT
from kan2mcu.errors import CheckpointError
from kan2mcu.model.importers.efficient_kan import ir_from_state_dict, looks_like_efficient_kan, select_kan
from kan2mcu.model.ir import KANModel

# What a checkpoint trained on your own data records about it (kan2mcu.training.train.train_on_data); kept
# in the IR's metadata (and so in the model folder's bundle).
OWN_DATA_KEYS = ("task", "target", "columns", "classes", "target_transform", "source")


@dataclass(frozen=True, eq=False)
class ImportedModel:
    """The IR plus what the checkpoint says about its data."""

    model: KANModel
    format: str  # "kan2mcu" | "efficient-kan" | "pykan"
    dataset: str | None = None  # a name load_dataset() knows, when the checkpoint carries one
    calibration: np.ndarray | None = None  # model inputs shipped with the checkpoint (pykan cache, own data)
    warnings: tuple = ()  # what the importer left out or assumed, for the user
    heldout: tuple | None = None  # own data: (raw features [N, I], targets [N]) of the held-out rows

    @property
    def calibration_source(self) -> str:
        """Where ``calibration`` came from, for the report."""
        if self.format == "pykan":
            return "pykan cached data"
        return f"the checkpoint's training rows ({len(self.calibration)})"


def _load_error_reason(exc: BaseException) -> str:
    """One short line on why torch.load refused a file (torch's own messages span paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    unsupported_global = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported_global:
        return (f"it holds pickled Python objects ({unsupported_global.group(1)}), not plain tensors; "
                "save a state_dict instead")
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        return "not a torch.save file"
    if isinstance(exc, (pickle.UnpicklingError, IndexError)):  # the pickle parser choked on the bytes
        return "not a torch.save file"
    if isinstance(exc, EOFError):
        return "empty or truncated file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):  # e.g. torch seeking past the end of a cut-off zip archive (EINVAL)
        return "corrupt or truncated PyTorch archive"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "corrupt or truncated PyTorch archive"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first_line[:120]}"


def _torch_load(path: Path):
    """torch.load (tensors only); a file torch cannot read is one CheckpointError, and the warnings
    torch printed while failing (e.g. on a plain pickle's protocol) are dropped, not shown before it."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not ours"
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_load_error_reason(exc)})") from None
    for item in caught:  # loaded: torch's warnings still reach the user
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return payload


def load_checkpoint(path, prefix: str | None = None) -> ImportedModel:
    """Read any supported checkpoint file and return its IR; foreign or corrupt files raise CheckpointError.

    ``prefix`` picks one KAN (the module path before ``layers.N``) of a state dict holding several."""
    path = Path(path)
    from kan2mcu.model.importers import pykan as pykan_importer

    if pykan_importer.is_pykan_checkpoint(path):
        if prefix is not None:
            raise CheckpointError(f"{path}: --prefix applies to state dicts, not to pykan checkpoints")
        return pykan_importer.load_pykan_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint")
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == OWN_FORMAT:
        if prefix is not None:  # one KAN at the top level: any other prefix names nothing
            try:
                select_kan(payload.get("state_dict") or {}, prefix)
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: a kan2mcu checkpoint holds one KAN; {exc}") from None
        own = payload.get("data") or {}
        metadata = {"dataset": payload.get("dataset"), "input_transform": payload.get("input_transform")}
        metadata.update({k: own[k] for k in OWN_DATA_KEYS if k in own})
        if payload.get("task") is not None:  # recorded at training (kan2mcu.model.checkpoint.save_checkpoint)
            metadata["task"] = payload["task"]
        trained_for = (payload.get("metrics") or {}).get("qat")
        if trained_for:  # the widths `kan2mcu finetune` / `train --qat` trained for (kan2mcu.training.qat)
            metadata["qat"] = trained_for
        try:
            model = ir_from_state_dict(payload["state_dict"], source="kan2mcu", metadata=metadata)
        except KeyError as exc:
            raise CheckpointError(f"{path}: kan2mcu checkpoint lacks {exc}") from None
        calibration = own.get("calibration")
        heldout = (own["heldout_x"].double().numpy(), own["heldout_y"].numpy()) if "heldout_x" in own else None
        return ImportedModel(model, "kan2mcu", payload.get("dataset"),
                             calibration=None if calibration is None else calibration.double().numpy(),
                             heldout=heldout)
    if isinstance(payload, dict):
        for nested in ("state_dict", "model_state_dict", "model"):
            if isinstance(payload.get(nested), dict) and looks_like_efficient_kan(payload[nested]):
                payload = payload[nested]
                break
        if looks_like_efficient_kan(payload):
            try:
                chosen, warnings = select_kan(payload, prefix)
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
            return ImportedModel(ir_from_state_dict(chosen, source="efficient-kan"), "efficient-kan",
                                 warnings=tuple(warnings))
    if isinstance(payload, dict) and "act_fun.0.coef" in payload:
        raise CheckpointError(f"{path}: a bare pykan state_dict (its config, e.g. the base function, is not in "
                              "it); save the model with model.saveckpt(prefix) and pass the prefix")
    found = ""
    if isinstance(payload, dict):
        keys = [str(k) for k in list(payload)[:5]]
        found = f"; it holds a dict with keys {', '.join(keys)}{', ...' if len(payload) > 5 else ''}"
    elif payload is not None:
        found = f"; it holds a {type(payload).__name__}"
    raise CheckpointError(f"{path}: not a KAN checkpoint kan2mcu knows (kan2mcu, efficient-kan state dict, "
                          f"or pykan saveckpt prefix){found}")
