"""Calibration inputs: the rows whose ranges the quantizer fits (an explicit file, the checkpoint's
data set, or the rows the checkpoint carries)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import OptionError
from kan2mcu.model.importers import ImportedModel
from kan2mcu.quant.evaluate import model_inputs, read_rows


def load_calibration(path: Path, n_inputs: int) -> np.ndarray:
    """Model inputs from a .npy or .csv file ([N, n_inputs] floats)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            data = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise OptionError(f"--calibration: {path} must be .npy or .csv")
    except OptionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise OptionError(f"--calibration: cannot read {path} ({str(exc).splitlines()[0][:160]})") from None
    try:
        data = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"--calibration: {path} must hold numbers, it holds {data.dtype}") from None
    if data.ndim != 2 or data.shape[1] != n_inputs:
        raise OptionError(f"--calibration: need finite [N, {n_inputs}] inputs, got shape {data.shape}")
    bad = np.argwhere(~np.isfinite(data))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise OptionError(f"--calibration {path}: row {row}, column {column} (counting from 0) is "
                          f"{data[row, column]} ({len(bad)} non-finite cell{'s' if len(bad) > 1 else ''} in all); "
                          "inputs must be finite numbers")
    return data


def user_calibration(model, calibration: Path) -> np.ndarray:
    """Model inputs of a ``--calibration`` file the user gives (generate and verify alike): for a
    model trained on your own data, raw feature rows in ``--data``'s formats (CSV columns matched
    by name, the target column optional), scaled as the model scales them; else model inputs."""
    if model.metadata.get("columns"):
        raw, _ = read_rows(calibration, model, option="--calibration", need_target=False)
        return model_inputs(model, raw)
    return load_calibration(calibration, model.layers[0].in_features)


def calibration_data(imported: ImportedModel, calibration: Path | None) -> tuple[np.ndarray | None, str]:
    """Pick calibration inputs: an explicit file, the checkpoint's data set, the rows the checkpoint
    carries (pykan's cache; the training rows of a model trained on your own data), or none.

    For a checkpoint trained on your own data ``--calibration`` takes the formats of ``--data``
    (raw feature values, CSV columns matched by name, the target column optional)."""
    if calibration is not None:
        return user_calibration(imported.model, calibration), f"file {Path(calibration).name}"
    if imported.dataset:
        return load_dataset(imported.dataset).x_train, f"{imported.dataset} training split"
    if imported.calibration is not None:
        return np.asarray(imported.calibration, dtype=np.float64), imported.calibration_source
    return None, "none"
