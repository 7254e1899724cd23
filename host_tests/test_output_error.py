"""The one output-error metric (kan2mcu/quant/output_error.py, docs/arithmetic.md section 8), and
that the planner and the guard both judge by it."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.quant.output_error import is_classifier, output_error


def test_rms_and_max_are_over_the_float_output_range():
    float_out = np.array([[0.0, 10.0], [5.0, 2.0]])  # range 10
    quant_out = float_out + np.array([[1.0, 0.0], [0.0, -1.0]])
    figures = output_error(float_out, quant_out, classifier=False)
    assert figures.output_range == 10.0
    assert figures.rms == pytest.approx(np.sqrt(2 / 4) / 10)
    assert figures.max == pytest.approx(0.1)
    assert figures.argmax_agreement is None and figures.score == figures.rms


def test_a_classifier_scores_the_larger_of_rms_and_argmax_disagreement():
    float_out = np.array([[0.51, 0.49], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    quant_out = np.array([[0.49, 0.51], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # one close call flips
    figures = output_error(float_out, quant_out, classifier=True)
    assert figures.argmax_agreement == 0.75
    assert figures.rms < 0.25 and figures.score == 0.25


def test_non_finite_outputs_give_a_non_finite_score():
    figures = output_error(np.array([[0.0], [1.0]]), np.array([[np.nan], [1.0]]), classifier=False)
    assert not np.isfinite(figures.score)


def test_task_decides_classification(small_checkpoints):
    from dataclasses import replace

    from kan2mcu.model.importers import load_checkpoint

    model = load_checkpoint(small_checkpoints["8x5x3-G5-k3"][0]).model
    assert is_classifier(model)  # several outputs, no recorded task
    assert not is_classifier(replace(model, metadata={**model.metadata, "task": "regress"}))


def test_planner_and_guard_report_the_same_score(small_checkpoints, tmp_path):
    from kan2mcu.generate import generate_model

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    report = generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True, strategy="edge-table",
                            max_error=1.0, allow_saturation=True).report
    guard = report["guard"]
    score = guard["rms_error"] if guard["argmax_agreement"] is None else max(guard["rms_error"],
                                                                             1 - guard["argmax_agreement"])
    # the guard rounds its figures to 6 digits; both measure the same calibration rows
    assert report["planner"]["calibration_error"] == pytest.approx(score, abs=2e-6)
