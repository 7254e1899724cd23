"""Your own data: read a table (.csv with a header, .npz with x and y, or a .npy pair), encode
the target, scale the inputs onto the grid, split deterministically.

Every failure is one OptionError line naming the file, and the row and column where it can.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.errors import OptionError

TASKS = ("classify", "regress")
FORMATS = ".csv (header row), .npz (arrays x and y) or .npy (features; --target names the labels .npy)"
OPTION_FORMATS = {  # options whose .npy form differs from --data's
    "--eval-data": ".csv (header row), .npz (arrays x and y) or FEATURES.npy,LABELS.npy",
    "--calibration": ".csv (header row), .npz (array x) or .npy (features)",
}


@dataclass(frozen=True)
class Table:
    """Raw feature values and the raw target column of one file."""

    x: np.ndarray  # [N, F] float64, finite
    y: np.ndarray | None  # [N] float64 or str (class names), None when the file has no target
    columns: tuple  # feature names (CSV header; "x0".. for arrays)
    target: str | None  # the target column's name ("y" for arrays)
    source: str  # the file's name, for reports


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path, target: str | None, option: str, need_target: bool) -> Table:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise OptionError(f"{option} {path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise OptionError(f"{option} {path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise OptionError(f"{option} {path}: empty file")
    header = [c.strip() for c in rows[0]]
    if all(_number(c) is not None for c in header):
        raise OptionError(f"{option} {path}: the first row must be a header of column names, got numbers")
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise OptionError(f"{option} {path}: column {dup!r} appears twice in the header")
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise OptionError(f"{option} {path}: line {number} has {len(row)} cells, the header {len(header)}")
    if target is not None and target not in header and not need_target:
        target = None  # calibration rows: the target column may be left out
    if target is not None and target not in header:
        raise OptionError(f"{option} {path}: no column {target!r} (columns: {', '.join(header[:12])}"
                          f"{', ...' if len(header) > 12 else ''})")
    if target is None and need_target:
        raise OptionError(f"{option} {path}: name the target column with --target")
    t_index = header.index(target) if target is not None else None
    feature_index = [i for i in range(len(header)) if i != t_index]
    if not feature_index:
        raise OptionError(f"{option} {path}: no feature columns besides the target {target!r}")
    cells = np.char.strip(np.array(body, dtype=str).reshape(len(body), len(header)))
    x = _feature_values(cells[:, feature_index], [header[i] for i in feature_index], path, option)
    y = None
    if t_index is not None:
        try:
            y = cells[:, t_index].astype(np.float64)
        except ValueError:  # text class labels
            y = np.array(cells[:, t_index].tolist(), dtype=object)
    return Table(x, y, tuple(header[i] for i in feature_index), target, path.name)


def _feature_values(cells: np.ndarray, names: list, path: Path, option: str) -> np.ndarray:
    """Feature cells (stripped text [N, F]) as float64, converted by numpy; the first cell that is
    not a finite number is named by line and column."""
    try:
        x = cells.astype(np.float64)
    except ValueError:  # some cell numpy cannot read: Python's float() decides, cell by cell
        x = np.vectorize(lambda c: math.nan if _number(c) is None else _number(c), otypes=[np.float64])(cells)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        value = _number(cells[r, c])
        what = "not a number" if value is None else "not finite"
        raise OptionError(f"{option} {path}: line {r + 2}, column {names[c]!r}: {str(cells[r, c])!r} is "
                          f"{what} (feature cells must be finite numbers)")
    return x


def _load_array(path: Path, option: str):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds for a bad file
        raise OptionError(f"{option} {path}: not a readable numpy file ({str(exc).splitlines()[0][:120]})") from None


def _from_arrays(x, y, path: Path, option: str) -> Table:
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise OptionError(f"{option} {path}: features must be a 2-D numeric array, got shape {x.shape} {x.dtype}")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        raise OptionError(f"{option} {path}: row {bad[0][0]}, column {bad[0][1]} is not finite (NaN or inf)")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x):
            raise OptionError(f"{option} {path}: the target must be one value per row ({len(x)}), got shape {y.shape}")
        y = y.astype(object) if y.dtype.kind in "US" else y.astype(np.float64)
    return Table(x, y, tuple(f"x{i}" for i in range(x.shape[1])), None if y is None else "y", path.name)


def read_table(path, target: str | None = None, *, option: str = "--data", need_target: bool = True) -> Table:
    """Read ``path``: a .csv with a header row (``target`` names the target column; every other
    column is a feature), a .npz holding ``x`` [N, F] and ``y`` [N], or a .npy of features with
    ``target`` naming a .npy of labels. ``need_target`` False: the target may be absent
    (calibration rows). Refuses NaN, inf and non-numeric feature cells naming the line and column."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{option} {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _read_csv(path, target, option, need_target)
    elif suffix == ".npz":
        archive = _load_array(path, option)
        if not hasattr(archive, "files") or "x" not in archive.files:
            raise OptionError(f"{option} {path}: a .npz needs arrays named x (features) and y (targets)")
        if "y" not in archive.files and need_target:
            raise OptionError(f"{option} {path}: a .npz needs arrays named x (features) and y (targets)")
        table = _from_arrays(archive["x"], archive["y"] if "y" in archive.files else None, path, option)
    elif suffix == ".npy":
        labels = None
        if target is not None and str(target).lower().endswith(".npy"):
            label_path = Path(target) if Path(target).is_absolute() or Path(target).exists() else path.parent / target
            if not label_path.is_file():
                raise OptionError(f"{target}: no such labels file (beside a .npy of features, the labels .npy)")
            labels = _load_array(label_path, option)
        elif need_target:
            raise OptionError(f"{option} {path}: with a .npy of features, --target must name the labels .npy file")
        table = _from_arrays(_load_array(path, option), labels, path, option)
    else:
        raise OptionError(f"{option} {path}: unknown format {suffix or '(no suffix)'}; "
                          f"use {OPTION_FORMATS.get(option, FORMATS)}")
    if len(table.x) == 0:
        raise OptionError(f"{option} {path}: no data rows")
    return table


@dataclass(frozen=True)
class Target:
    """The encoded target: class indices (classify) or scaled values (regress)."""

    y: np.ndarray  # int64 class indices, or float64 values in model units
    classes: list | None  # class labels in index order (classify)
    transform: dict | None  # regress: y_raw = y_model * scale + offset


def check_task(task: str) -> str:
    """``task`` if kan2mcu knows it, else OptionError."""
    if task not in TASKS:
        raise OptionError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


MAX_INFERRED_CLASSES = 20  # without --task: whole-number targets with more distinct values are regression


def infer_task(table: Table, option: str = "--data") -> tuple[str, str]:
    """(task, reason) for ``table``'s target when --task is not given: text labels or at most
    MAX_INFERRED_CLASSES distinct whole numbers -> classify; fractional values or more distinct
    whole numbers -> regress. OptionError (with the reason) when neither fits."""
    y, name = table.y, table.target
    if y is None:
        raise OptionError(f"{option} {table.source}: no target column")
    distinct = len(set(y.tolist()))
    if distinct < 2:
        raise OptionError(f"{option} {table.source}: the target column {name!r} holds one value only; nothing to learn")
    if y.dtype == object:
        if distinct > MAX_INFERRED_CLASSES and distinct * 2 > len(y):
            raise OptionError(f"{option} {table.source}: the target column {name!r} has {distinct} distinct text "
                              f"values in {len(y)} rows (an identifier?); pass --task classify to train on them anyway")
        return "classify", f"{distinct} text classes"
    if not np.all(np.isfinite(y)):
        raise OptionError(f"{option} {table.source}: the target column {name!r} has NaN or inf")
    if np.any(y != np.round(y)):
        return "regress", "fractional values"
    if distinct <= MAX_INFERRED_CLASSES:
        return "classify", f"{distinct} distinct whole numbers"
    return "regress", f"{distinct} distinct whole numbers (more than {MAX_INFERRED_CLASSES} classes)"


def encode_target(table: Table, task: str, *, classes: list | None = None, transform: dict | None = None,
                  option: str = "--data") -> Target:
    """Class indices (labels sorted; strings allowed, their mapping kept) or regression targets.
    With ``classes``/``transform`` (from a checkpoint) the same encoding is applied again."""
    check_task(task)
    y = table.y
    if y is None:
        raise OptionError(f"{option} {table.source}: no target column")
    if task == "regress":
        if y.dtype == object:
            raise OptionError(f"{option} {table.source}: --task regress needs numbers in the target column "
                              f"{table.target!r}, got {str(y[0])!r}")
        if not np.all(np.isfinite(y)):
            raise OptionError(f"{option} {table.source}: the target column {table.target!r} has NaN or inf")
        if transform is None:
            std = float(np.std(y))
            transform = {"scale": std if std > 0 else 1.0, "offset": float(np.mean(y))}
        return Target((y - transform["offset"]) / transform["scale"], None, transform)
    labels = [_label(v) for v in y]
    if any(isinstance(v, float) and not math.isfinite(v) for v in labels):
        raise OptionError(f"{option} {table.source}: the target column {table.target!r} has NaN or inf")
    if any(isinstance(v, float) for v in labels):
        raise OptionError(f"{option} {table.source}: --task classify needs whole-number or text class labels "
                          f"in {table.target!r}, got {next(v for v in labels if isinstance(v, float))!r}; "
                          "use --task regress for continuous targets")
    if classes is None:
        classes = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
        if len(classes) < 2:
            raise OptionError(f"{option} {table.source}: --task classify needs at least 2 classes in "
                              f"{table.target!r}, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [v for v in labels if v not in index]
    if unknown:
        raise OptionError(f"{option} {table.source}: class {unknown[0]!r} was not seen in training "
                          f"(known: {', '.join(map(str, classes[:10]))})")
    return Target(np.array([index[v] for v in labels], dtype=np.int64), list(classes), None)


def _label(value):
    """Class labels as int (whole numbers) or str; other floats are returned as float (refused)."""
    if isinstance(value, str):
        return value
    value = float(value)
    return int(value) if math.isfinite(value) and value == int(value) else value


def grid_scaling(x_train: np.ndarray, grid_range=(-1.0, 1.0)) -> dict:
    """Per-column scale and offset that map the training split's min..max onto ``grid_range``
    (x_model = raw * scale + offset; scikit-learn's MinMaxScaler); a constant column maps to the
    range's middle (MinMaxScaler would put it at the range's lower end)."""
    from sklearn.preprocessing import MinMaxScaler

    x_train = np.asarray(x_train, dtype=np.float64)
    scaler = MinMaxScaler(feature_range=tuple(grid_range)).fit(x_train)
    constant = scaler.data_range_ == 0
    scale = np.where(constant, 1.0, scaler.scale_)
    offset = np.where(constant, 0.5 * (grid_range[0] + grid_range[1]) - scaler.data_min_, scaler.min_)
    return {"scale": [float(v) for v in scale], "offset": [float(v) for v in offset]}


def apply_transform(raw: np.ndarray, transform: dict | None) -> np.ndarray:
    """Model inputs of raw feature rows: raw * scale + offset per column (float64)."""
    raw = np.asarray(raw, dtype=np.float64)
    if not transform:
        return raw
    return raw * np.asarray(transform["scale"], np.float64) + np.asarray(transform["offset"], np.float64)


def split(n: int, test_fraction: float, seed: int, stratify: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out row indices; stratified by class when every class has 2+ rows."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise OptionError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    n_test = int(math.ceil(n * test_fraction))
    if n < 2 or n - n_test < 1:
        raise OptionError(f"need at least 2 data rows for a training and a held-out split, got {n}")
    if stratify is not None:
        counts = np.bincount(stratify)
        if counts.min() < 2 or n_test < len(counts) or n - n_test < len(counts):
            stratify = None
    train_idx, test_idx = train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=stratify)
    return np.sort(train_idx), np.sort(test_idx)
