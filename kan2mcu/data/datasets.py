"""Data sets kan2mcu knows by name: the embedded default is scikit-learn's bundled digits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kan2mcu.errors import OptionError

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DATASET_TASKS = {"digits": "classify"}  # what each named data set's models do (kan2mcu.data.tabular.TASKS)


@dataclass(frozen=True)
class Dataset:
    """A split data set. Inputs are the model's float inputs (after ``input_transform``)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_transform: dict  # x_model = raw * scale + offset


def load_dataset(name: str) -> Dataset:
    """Load a named data set with its fixed split (``digits``: 8x8 images, 64 inputs, 10 classes)."""
    if name != "digits":
        raise OptionError(f"unknown data set {name!r} (known: digits)")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    scale, offset = 1.0 / 8.0, -1.0  # pixels 0..16 -> [-1, 1], the default grid range
    x = raw.data.astype(np.float64) * scale + offset
    y = raw.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y)
    return Dataset("digits", x_train, y_train, x_test, y_test, {"scale": scale, "offset": offset})
