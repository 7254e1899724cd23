"""The one output-error metric (docs/arithmetic.md, "Output error"): how far the integer model's
outputs are from the float model's, in the terms users check.

- ``rms``: RMS |quantized - float| over all outputs, divided by the float outputs' range
  (max - min over the samples and outputs): "0.5% of the output range";
- ``max``: the largest |quantized - float|, over the same range;
- ``argmax_agreement``: for classifiers, the share of samples whose top output is the float
  model's.

``score`` is the single figure the planner's ``--max-error`` bounds and the guard warns and refuses
on: ``rms``, or for a classifier the larger of ``rms`` and the share of samples whose argmax differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kan2mcu.data.datasets import DATASET_TASKS
from kan2mcu.data.tabular import TASKS


@dataclass(frozen=True)
class OutputError:
    """The output error of one integer model against the float model, on one set of inputs."""

    rms: float
    max: float
    output_range: float
    argmax_agreement: float | None  # None for a regression model

    @property
    def score(self) -> float:
        """The figure limits apply to: ``rms``, or max(rms, 1 - argmax agreement) for a classifier."""
        if self.argmax_agreement is None:
            return self.rms
        return max(self.rms, 1.0 - self.argmax_agreement)


def task_of(model) -> tuple[str, str]:
    """("classify" | "regress", where that comes from): the task recorded in ``model``'s metadata
    (at training, or ``generate --task``), else its data set's, else assumed from the output width
    (several outputs: class scores)."""
    metadata = getattr(model, "metadata", None) or {}
    if metadata.get("task") in TASKS:
        return metadata["task"], "recorded in the checkpoint"
    if metadata.get("dataset") in DATASET_TASKS:
        return DATASET_TASKS[metadata["dataset"]], f"the {metadata['dataset']} data set"
    outputs = model.layers[-1].out_features
    return ("classify" if outputs > 1 else "regress"), f"assumed from the {outputs} output(s)"


def is_classifier(model) -> bool:
    """Whether ``model``'s outputs are class scores (:func:`task_of`)."""
    return task_of(model)[0] == "classify"


def output_error(float_out: np.ndarray, quant_out: np.ndarray, *, classifier: bool) -> OutputError:
    """The figures of ``quant_out`` against ``float_out`` ([N, outputs] each)."""
    float_out = np.asarray(float_out, np.float64)
    diff = np.abs(np.asarray(quant_out, np.float64) - float_out)
    out_range = float(float_out.max() - float_out.min()) if float_out.size else 0.0
    denom = out_range if out_range > 0 else max(float(np.abs(float_out).max(initial=0.0)), 1e-12)
    with np.errstate(all="ignore"):
        rms = float(np.sqrt(np.mean(diff ** 2)) / denom)
        worst = float(diff.max(initial=0.0) / denom)
    agreement = None
    if classifier and float_out.shape[1] > 1:
        agreement = float((np.asarray(quant_out).argmax(1) == float_out.argmax(1)).mean())
    return OutputError(rms, worst, out_range, agreement)
