"""kan2mcu's own checkpoint file: the torch KAN's state dict plus its config and data set."""
from __future__ import annotations

from pathlib import Path

from kan2mcu.errors import OptionError
from kan2mcu.fsutil import check_writable

FORMAT = "kan2mcu-checkpoint"
FORMAT_VERSION = 1


def check_checkpoint_path(path: Path) -> None:
    """Refuse a checkpoint path that cannot be written (a folder, under a file, not writable): OptionError."""
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"-o {path}: is a folder; give a checkpoint file name, e.g. {path / 'model.pt'}")
    if path.exists() and not is_own_checkpoint(path):
        raise OptionError(f"-o {path}: exists and is not a kan2mcu checkpoint; not overwriting it (remove it, or "
                          "give another file name)")
    check_writable(path)


def is_own_checkpoint(path: Path) -> bool:
    """True when ``path`` is a checkpoint kan2mcu wrote (a torch zip archive with its format tag)."""
    import warnings

    try:
        with open(path, "rb") as stream:
            if stream.read(4) != b"PK\x03\x04":  # torch.save's zip archive
                return False
    except OSError:
        return False
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def save_checkpoint(model, path: Path, *, dataset: str | None, input_transform: dict | None,
                    metrics: dict | None = None, data: dict | None = None, task: str | None = None) -> Path:
    """Write ``model`` (a :class:`kan2mcu.model.torch_kan.KAN`) and what it was trained on to ``path``.

    ``input_transform``: x_model = raw * scale + offset, scale and offset scalars (digits) or one per
    column (own data). ``data`` (own data, kan2mcu.training.train.train_on_data): task, target, columns,
    classes, target_transform, source, and tensors calibration, heldout_x, heldout_y. ``task``
    ("classify" | "regress", when known): what the outputs are, which the output-error metric
    weighs (kan2mcu.quant.output_error)."""
    import torch

    path = Path(path)
    check_checkpoint_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "dataset": dataset,
        "input_transform": input_transform,
        "metrics": metrics or {},
    }
    if data is not None:
        payload["data"] = data
    if task is not None:
        payload["task"] = task
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint behind
    except OSError as exc:
        raise OptionError(f"cannot write the checkpoint {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # torch wraps file errors of its zip writer in RuntimeError
        raise OptionError(f"cannot write the checkpoint {path}: {str(exc).splitlines()[0][:160]}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

