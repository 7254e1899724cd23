"""Train kan2mcu's own KAN and save a checkpoint: on the embedded default data set (digits), or on
your own table (``--data``: classification or regression, see kan2mcu.data.tabular).

One training loop (:func:`kan2mcu.training.fit.fit`) serves both, and quantization-aware training
(:mod:`kan2mcu.training.qat`) too.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kan2mcu.model.checkpoint import check_checkpoint_path, save_checkpoint
from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import OptionError
from kan2mcu.training.fit import fit, predict

DEFAULT_WIDTHS = (64, 16, 10)
DEFAULT_TEST_FRACTION = 0.2
CALIBRATION_ROWS = 4096  # training rows a checkpoint keeps for generate's range calibration
VALIDATION_FRACTION = 0.15  # share of --data's training rows that early stopping watches
MIN_VALIDATION_TRAIN_ROWS = 20  # fewer training rows: no validation split
PATIENCE_MIN = 10  # epochs without a better validation loss before stopping (at least; epochs // 5)
OVERFIT_GAP = {"accuracy": 0.10, "r2": 0.20}  # train - held-out score beyond which train warns


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoint went and how well the float model does on the training and held-out rows."""

    checkpoint: Path
    train_accuracy: float | None = None  # classification
    test_accuracy: float | None = None
    task: str = "classify"
    metrics: dict = field(default_factory=dict)  # every figure, e.g. test_r2 and test_max_abs_error
    warnings: tuple = ()  # e.g. overfitting: held-out scores far below training ones

    def summary(self) -> str:
        """One line of the float model's figures."""
        m = self.metrics
        if self.task == "regress":
            text = (f"float R2: train {m['train_r2']:.4f}, test {m['test_r2']:.4f}; "
                    f"max |error| on test {m['test_max_abs_error']:.4g}")
        else:
            text = f"float accuracy: train {self.train_accuracy:.4f}, test {self.test_accuracy:.4f}"
        stopped = m.get("validation") or {}
        if stopped.get("rows"):
            text += (f"; kept epoch {stopped['best_epoch']} of {stopped['epochs_run']} run (best loss on "
                     f"{stopped['rows']} validation rows)")
        return text


def check_options(*, epochs: int, batch_size: int, lr: float, grid_size: int, order: int) -> None:
    """Refuse out-of-range training options (OptionError naming the option)."""
    for option, value, ok, need in (("--epochs", epochs, epochs >= 1, "a positive integer"),
                                     ("--batch-size", batch_size, batch_size >= 1, "a positive integer"),
                                     ("--lr", lr, lr > 0, "positive"),
                                     ("--grid-size", grid_size, grid_size >= 1, "a positive integer"),
                                     ("--order", order, 1 <= order <= 5, "an integer in 1..5")):
        if not ok:
            raise OptionError(f"{option} must be {need}, got {value}")


def train(output: Path, *, dataset: str = "digits", hidden: tuple[int, ...] = (16,), grid_size: int = 5,
          order: int = 3, epochs: int = 60, batch_size: int = 64, lr: float = 1e-2, seed: int = 0,
          progress: bool = True, qat=None, qat_epochs: int | None = None) -> TrainResult:
    """Train a KAN ``[inputs, *hidden, classes]`` with Adam and cross-entropy; save it to ``output``.

    ``qat`` (QuantOptions): then fine-tune it for those bit widths (kan2mcu.training.qat) before saving."""
    import torch

    from kan2mcu.model.torch_kan import KAN

    check_options(epochs=epochs, batch_size=batch_size, lr=lr, grid_size=grid_size, order=order)
    if not hidden or any(h < 1 for h in hidden):
        raise OptionError(f"--hidden widths must be positive integers, got {list(hidden)}")
    check_checkpoint_path(Path(output))  # before the training run, not after it
    data = load_dataset(dataset)
    n_classes = int(data.y_train.max()) + 1
    widths = [data.x_train.shape[1], *hidden, n_classes]
    torch.manual_seed(seed)
    model = KAN(widths, grid_size=grid_size, spline_order=order)
    fit(model, data.x_train, data.y_train, torch.nn.functional.cross_entropy, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, progress=progress, desc=f"train KAN {widths}")
    extra = {}
    if qat is not None:  # quantization-aware fine-tuning at qat's widths (kan2mcu/training/qat.py)
        from kan2mcu.training.qat import DEFAULT_EPOCHS, qat_after_training

        extra["qat"] = qat_after_training(model, data, qat, epochs=qat_epochs or DEFAULT_EPOCHS, seed=seed,
                                          progress=progress)
    train_acc = float((predict(model, data.x_train).argmax(1) == data.y_train).mean())
    test_acc = float((predict(model, data.x_test).argmax(1) == data.y_test).mean())
    path = save_checkpoint(model, Path(output), dataset=dataset, input_transform=data.input_transform,
                           metrics={"train_accuracy": train_acc, "test_accuracy": test_acc, **extra}, task="classify")
    return TrainResult(path, train_acc, test_acc, "classify",
                       {"train_accuracy": train_acc, "test_accuracy": test_acc})


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    """R2 and max |error| of predictions ``pred`` [N] against targets ``y`` [N] (same units)."""
    pred, y = np.asarray(pred, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum((y - pred) ** 2))
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return {"r2": r2, "max_abs_error": float(np.abs(pred - y).max()) if len(y) else 0.0}


def parse_widths(text: str) -> tuple[int, ...]:
    """``"8,16,3"`` -> (8, 16, 3); OptionError on anything but two or more positive integers."""
    try:
        widths = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise OptionError(f"--widths must be comma-separated integers, e.g. 8,16,3, got {text!r}") from None
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise OptionError(f"--widths needs two or more positive integers (inputs,...,outputs), got {text!r}")
    return widths


def train_on_data(output: Path, data: Path, *, target: str, task: str | None = None,
                  widths: tuple[int, ...] | None = None, hidden: tuple[int, ...] = (16,), grid_size: int = 5,
                  order: int = 3, epochs: int = 100, batch_size: int = 64, lr: float = 1e-2,
                  seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION, progress: bool = True,
                  qat=None, qat_epochs: int | None = None) -> TrainResult:
    """Train a KAN on your own table ``data`` (kan2mcu.data.tabular.read_table) and save it to ``output``.

    ``task`` None: inferred from the target (kan2mcu.data.tabular.infer_task; the reason is printed).
    Rows are split deterministically (``seed``) into training and held-out rows; a validation share
    of the training rows stops training early (the best epoch's weights are kept); every input column
    is scaled so its training min..max spans the grid [-1, 1]; regression targets are standardized
    (MSE loss) and classification uses cross-entropy. The checkpoint keeps the column names, the
    scaling (the generated C's float input API applies it to raw feature values), the class labels
    or target scaling, training rows for range calibration and the held-out rows for evaluation.
    ``qat`` (QuantOptions): fine-tune for those bit widths (kan2mcu.training.qat) before saving.
    """
    import torch

    from kan2mcu.data import tabular
    from kan2mcu.model.torch_kan import KAN

    if task is not None:
        tabular.check_task(task)
    check_options(epochs=epochs, batch_size=batch_size, lr=lr, grid_size=grid_size, order=order)
    check_checkpoint_path(Path(output))
    table = tabular.read_table(data, target)
    if len(table.x) < 2:
        raise OptionError(f"--data {table.source}: {len(table.x)} data row; need at least 2 data rows "
                          "(training and held-out)")
    inferred = None
    if task is None:
        task, reason = tabular.infer_task(table)
        inferred = (f"--task not given: the target {table.target!r} has {reason}, so this trains "
                    f"{'a classifier' if task == 'classify' else 'a regression'} (--task {task}; pass --task to choose)")
    encoded = tabular.encode_target(table, task)
    widths = _own_widths(widths, hidden, table, task, encoded, Path(data).name)
    train_idx, test_idx = tabular.split(len(table.x), test_fraction, seed,
                                        encoded.y if task == "classify" else None)
    transform = dict(tabular.grid_scaling(table.x[train_idx]), columns=list(table.columns))
    x = tabular.apply_transform(table.x, transform)
    y = encoded.y if task == "classify" else encoded.y[:, None]
    if inferred:
        print(f"kan2mcu: {inferred}", file=sys.stderr)
    torch.manual_seed(seed)
    model = KAN(list(widths), grid_size=grid_size, spline_order=order)
    metrics = {"validation": _fit_with_validation(model, x, y, train_idx, task, seed=seed, epochs=epochs,
                                                   batch_size=batch_size, lr=lr, progress=progress,
                                                   desc=f"train KAN {list(widths)} ({task})")}
    if inferred:
        metrics["task_inferred"] = inferred
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(train_idx)[:CALIBRATION_ROWS]) if len(train_idx) > CALIBRATION_ROWS else train_idx
    calibration = torch.tensor(x[keep], dtype=torch.float32)  # what generate will calibrate on
    if qat is not None:  # quantization-aware fine-tuning at qat's widths (kan2mcu/training/qat.py)
        from kan2mcu.data.datasets import Dataset
        from kan2mcu.training.qat import DEFAULT_EPOCHS, qat_after_training

        split = Dataset(table.source, x[train_idx], y[train_idx], x[test_idx], y[test_idx], transform)
        metrics["qat"] = qat_after_training(model, split, qat, epochs=qat_epochs or DEFAULT_EPOCHS, seed=seed,
                                            progress=progress, calibration=calibration.double().numpy())
    metrics.update(_own_metrics(model, x, table, encoded, task, train_idx, test_idx))
    own = {"task": task, "target": table.target, "columns": list(table.columns), "classes": encoded.classes,
           "target_transform": encoded.transform, "source": table.source,
           "calibration": calibration,
           "heldout_x": torch.tensor(table.x[test_idx], dtype=torch.float64),  # raw feature values
           # held-out targets: class indices, or regression targets in the data's own units
           "heldout_y": torch.tensor(encoded.y[test_idx] if task == "classify" else table.y[test_idx].astype(np.float64))}
    path = save_checkpoint(model, Path(output), dataset=None, input_transform=transform, metrics=metrics, data=own,
                           task=task)
    warnings = tuple(w for w in (overfitting_warning(metrics, task),) if w)
    if task == "classify":
        return TrainResult(path, metrics["train_accuracy"], metrics["test_accuracy"], task, metrics, warnings)
    return TrainResult(path, None, None, task, metrics, warnings)


def _own_widths(widths, hidden, table, task: str, encoded, data_name: str) -> tuple[int, ...]:
    """The layer widths: given (checked against the table) or features, *hidden, outputs."""
    n_features = table.x.shape[1]
    n_outputs = len(encoded.classes) if task == "classify" else 1
    if widths is None:
        if not hidden or any(h < 1 for h in hidden):
            raise OptionError(f"--hidden widths must be positive integers, got {list(hidden)}")
        widths = (n_features, *hidden, n_outputs)
    if widths[0] != n_features or widths[-1] != n_outputs:
        what = f"{n_outputs} classes" if task == "classify" else "1 output (regression)"
        raise OptionError(f"--widths {','.join(map(str, widths))}: {data_name} has {n_features} feature "
                          f"columns and {what}; use e.g. --widths {n_features},16,{n_outputs}")
    return tuple(widths)


def _fit_with_validation(model, x, y, train_idx, task: str, *, seed: int, epochs: int, **kwargs) -> dict:
    """Fit on the training rows less a validation share (VALIDATION_FRACTION), stopping early on the
    validation loss and keeping the best epoch; without enough rows, fit on all of them."""
    import torch

    from kan2mcu.data import tabular

    loss_fn = torch.nn.functional.cross_entropy if task == "classify" else torch.nn.functional.mse_loss
    if len(train_idx) < MIN_VALIDATION_TRAIN_ROWS:
        fit(model, x[train_idx], y[train_idx], loss_fn, epochs=epochs, seed=seed, **kwargs)
        return {"rows": 0, "epochs_run": epochs}
    fit_pos, val_pos = tabular.split(len(train_idx), VALIDATION_FRACTION, seed,
                                     y[train_idx] if task == "classify" else None)
    fit_rows, val_rows = train_idx[fit_pos], train_idx[val_pos]
    stopped = fit(model, x[fit_rows], y[fit_rows], loss_fn, epochs=epochs, seed=seed,
                  validation=(x[val_rows], y[val_rows]), patience=max(PATIENCE_MIN, epochs // 5), **kwargs)
    return {"rows": int(len(val_rows)), **stopped}


def _own_metrics(model, x, table, encoded, task: str, train_idx, test_idx) -> dict:
    """Accuracy, or R2 and max |error| in the data's units, on the training and held-out rows."""
    metrics = {}
    for part, rows in (("train", train_idx), ("test", test_idx)):
        out = predict(model, x[rows])
        if task == "classify":
            metrics[f"{part}_accuracy"] = float((out.argmax(1) == encoded.y[rows]).mean())
        else:
            t = encoded.transform
            figures = regression_metrics(out[:, 0] * t["scale"] + t["offset"], table.y[rows].astype(np.float64))
            metrics.update({f"{part}_{k}": v for k, v in figures.items()})
    return metrics


def overfitting_warning(metrics: dict, task: str) -> str | None:
    """A warning when the held-out score falls far below the training one (OVERFIT_GAP), else None."""
    key = "accuracy" if task == "classify" else "r2"
    train_score, test_score = metrics[f"train_{key}"], metrics[f"test_{key}"]
    if train_score - test_score <= OVERFIT_GAP[key]:
        return None
    name = "accuracy" if key == "accuracy" else "R2"
    return (f"held-out {name} {test_score:.3f} is far below training {name} {train_score:.3f}: the model "
            "overfits its training rows (more rows, fewer --hidden units, a smaller --grid-size or fewer "
            "--epochs help)")
