"""kan2mcu's own checkpoint file: the torch KAN's state dict plus its config and data set."""
from __future__ import annotations

from pathlib import Path

FORMAT = "kan2mcu-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(model, path: Path, *, dataset: str | None, input_transform: dict | None,
                    metrics: dict | None = None) -> Path:
    """Write ``model`` (a :class:`kan2mcu.torch_kan.KAN`) and what it was trained on to ``path``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "dataset": dataset,
        "input_transform": input_transform,
        "metrics": metrics or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path

