"""Does the calibration data cover what the model will see? Two checks with numbers, both in the
report and, past a threshold, as notes in it (what is lost on data is the guard's to warn about):

- a small calibration set: with ``n`` rows, a fresh input leaves one channel's calibrated
  [min, max] with probability up to ``2 / (n + 1)`` (order statistics of i.i.d. data);
- held-out rows (the data set's test split, ``--eval-data``) whose activations leave the code
  range of some layer: those values saturate at code 0 or the top code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kan2mcu.model.bspline import model_forward
from kan2mcu.quant.quantize import sample_ranges

MIN_CALIBRATION_ROWS = 500  # below: up to 0.4% of new inputs per channel leave the calibrated range
NOTE_OUT_OF_RANGE_FRACTION = 0.05  # a note when more than 5% of held-out rows saturate somewhere
# (a calibration set of n rows leaves about 2 / (n + 1) of new rows outside per channel: 1347 digits
# rows and 16 hidden channels put 2% of the test split past a hidden range by a few codes)


def small_calibration(rows: int | None) -> str | None:
    """The note for a calibration set of ``rows`` rows (None: no calibration data), or None when it
    is large enough."""
    if rows is None:
        return ("no calibration data: activation ranges come from the grids only; "
                "pass --calibration FILE (.npy/.csv of model inputs) for better accuracy")
    if rows >= MIN_CALIBRATION_ROWS:
        return None
    return (f"calibration data has only {rows} rows: a new input leaves a channel's calibrated range "
            f"with probability up to {2 / (rows + 1):.1%} per channel and saturates there; pass "
            f"--calibration with at least {MIN_CALIBRATION_ROWS} rows of representative inputs")


@dataclass(frozen=True)
class Coverage:
    """Held-out rows whose activations leave some layer's code range."""

    source: str  # which data, e.g. "digits test split"
    rows: int  # rows checked
    rows_outside: int  # rows with at least one value outside some layer's code range
    layers: tuple  # per layer: {"layer", "rows", "channels", "max_excess_codes"}

    @property
    def fraction(self) -> float:
        return self.rows_outside / max(self.rows, 1)

    def as_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "rows_outside": self.rows_outside,
                "fraction_outside": self.fraction, "layers": list(self.layers)}

    def note(self) -> str | None:
        """A note when more than NOTE_OUT_OF_RANGE_FRACTION of the rows saturate somewhere."""
        if self.fraction <= NOTE_OUT_OF_RANGE_FRACTION:
            return None
        where = ", ".join(f"{row['layer']}: {row['rows']} rows on {row['channels']} channels, up to "
                          f"{row['max_excess_codes']:g} codes beyond" for row in self.layers if row["rows"])
        return (f"{self.rows_outside} of {self.rows} rows of the {self.source} leave the calibrated ranges "
                f"({where}); those values saturate. Pass --calibration with more rows covering such inputs")


def measure(model, qmodel, x: np.ndarray, source: str, calibration: np.ndarray | None = None) -> Coverage:
    """Float activations of ``x`` [N, I] through ``model`` against each layer's calibrated range
    (``calibration``'s activations, widened as the quantizer widens them,
    kan2mcu.quant.quantize.sample_ranges; without calibration data, the code window).
    A value counts when it lies more than half a code step beyond: it would take another code."""
    _, activations = model_forward(model, np.asarray(x, np.float64), return_all=True)
    calibrated = None
    if calibration is not None and len(calibration):
        _, calibrated = model_forward(model, np.asarray(calibration, np.float64), return_all=True)
    outside_any = np.zeros(len(x), dtype=bool)
    layers = []
    for index, (layer, values) in enumerate(zip(qmodel.layers, activations)):
        if calibrated is not None:
            low, high = sample_ranges(calibrated[index])
        else:  # the code window: codes 0 .. codes - 1
            low, high = -layer.in_zero * layer.in_scale, (layer.codes - 1 - layer.in_zero) * layer.in_scale
        excess = np.maximum(values - high[None, :], low[None, :] - values) / layer.in_scale[None, :]  # in codes
        outside = excess > 0.5
        outside_any |= outside.any(axis=1)
        worst = float(excess.max())
        layers.append({"layer": layer.name, "rows": int(outside.any(axis=1).sum()),
                       "channels": int(outside.any(axis=0).sum()),
                       "max_excess_codes": round(worst, 1) if worst > 0 else 0.0})
    return Coverage(source, len(x), int(outside_any.sum()), tuple(layers))


def markdown(calibration_rows: int | None, coverage: dict | None) -> str:
    """The calibration-coverage section of report.md."""
    lines = ["", "## Calibration coverage", ""]
    lines.append(f"Calibration rows: {calibration_rows}." if calibration_rows is not None
                 else "Calibration rows: none (ranges from the grids).")
    if coverage:
        lines.append(f"Rows of the {coverage['source']} outside a calibrated range: {coverage['rows_outside']} of "
                     f"{coverage['rows']} ({coverage['fraction_outside']:.1%}).")
        lines += [f"- {row['layer']}: {row['rows']} rows on {row['channels']} channels, up to "
                  f"{row['max_excess_codes']:g} codes beyond" for row in coverage["layers"] if row["rows"]]
    return "\n".join(lines) + "\n"
