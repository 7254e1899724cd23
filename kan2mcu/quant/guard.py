"""Quantization guard: how far the integer model is from the float one, measured before anything is written.

Uses only the public surface of the integer model (``QuantLayer.in_scale/in_zero/codes`` and the
integer reference), so it holds whatever strategy quantized a layer. Two figures per model:

- per layer, the fraction of calibration activations that fall outside the layer's input code
  window ``x = in_scale * (q - in_zero)``, ``q in 0..codes-1`` (they saturate to the end codes);
- the integer model's output error against the float model on the calibration inputs, in the one
  metric of kan2mcu.quant.output_error (RMS and max error over the float output range, argmax
  agreement for classifiers).

``check`` warns when the result changes (argmax agreement below 1 - WARN_ERROR; a one-output model's
RMS error above WARN_ERROR) and refuses (QuantizationError) past REFUSE_ERROR, unless forced;
saturation above WARN_SATURATION and a classifier's logit RMS error are notes for the report.

Calibration rows can be unlike the data the model meets (wider, shifted): when labelled held-out
rows exist (an own-data checkpoint's held-out split, ``--eval-data``), ``check_held_out`` also
refuses a model whose accuracy (or R2) there falls more than REFUSE_HELD_OUT_LOSS below the float
model's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kan2mcu.model.bspline import model_forward
from kan2mcu.errors import QuantizationError
from kan2mcu.quant.output_error import is_classifier, output_error
from kan2mcu.quant.reference import quantize_inputs, run_model

MAX_SAMPLES = 4096  # an evenly spaced subset of the calibration inputs keeps the guard fast
WARN_SATURATION = 0.01  # of one layer's calibration activations outside its code window
# Limits on the output error's score (kan2mcu.quant.output_error: RMS error over the float output range,
# or for a classifier the larger of that and the share of argmax disagreements).
WARN_ERROR = 0.02
REFUSE_ERROR = 0.25
REFUSE_HELD_OUT_LOSS = 0.10  # accuracy (fraction) or R2 lost on held-out rows against the float model
FORCE_HINT = "--allow-saturation"


@dataclass(frozen=True)
class GuardReport:
    """The guard's figures (report.json key ``guard``, documented in docs/report-keys.md)."""

    samples: int
    source: str  # "calibration data" or "random codes" (no calibration data)
    saturation: list  # per layer: fraction of activations outside the code window
    rms_error: float  # RMS |quantized - float| logit / float output range
    max_error: float  # max |quantized - float| logit / float output range
    output_range: float  # max - min of the float outputs
    argmax_agreement: float | None  # None with a single output
    warnings: list  # what changes the user's result: argmax agreement lost, or (one output) the RMS error
    refused: str | None  # the reason when the model is too far from the float one
    notes: list = ()  # figures past a threshold that do not change the result by themselves (saturation, ...)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "source": self.source,
                "saturation": [round(s, 6) for s in self.saturation],
                "rms_error": round(self.rms_error, 6), "max_error": round(self.max_error, 6),
                "output_range": round(self.output_range, 6),
                "argmax_agreement": None if self.argmax_agreement is None else round(self.argmax_agreement, 6),
                "warnings": list(self.warnings), "notes": list(self.notes), "refused": self.refused}

    def summary(self) -> str:
        """One line with the figures."""
        return summary_of(self.as_dict())


def summary_of(figures: dict) -> str:
    """One line with the guard's figures (GuardReport.as_dict() or report.json's ``guard``)."""
    sat = ", ".join(f"{100 * s:.1f}%" for s in figures["saturation"])
    text = (f"saturated activations per layer {sat}; logit error RMS {100 * figures['rms_error']:.2f}%, "
            f"max {100 * figures['max_error']:.2f}% of the float output range")
    if figures["argmax_agreement"] is not None:
        text += f"; argmax agrees with float on {100 * figures['argmax_agreement']:.1f}%"
    return text + f" ({figures['samples']} {figures['source']} samples)"


def _subsample(x: np.ndarray) -> np.ndarray:
    if len(x) <= MAX_SAMPLES:
        return x
    return x[np.linspace(0, len(x) - 1, MAX_SAMPLES).round().astype(np.int64)]


def _outside_window(ql, x: np.ndarray) -> np.ndarray:
    """True where a float activation would round to a code outside 0..codes-1 (and so saturate)."""
    scale, zero = np.asarray(ql.in_scale, np.float64), np.asarray(ql.in_zero, np.float64)
    position = x / scale[None, :] + zero[None, :]
    return (position < -0.5) | (position >= ql.codes - 0.5)


def measure(model, qmodel, calibration: np.ndarray | None, seed: int = 0) -> GuardReport:
    """The guard's figures for ``qmodel`` against the float ``model`` (no data: random input codes)."""
    if calibration is not None and len(calibration):
        x, source = _subsample(np.asarray(calibration, np.float64)), "calibration data"
    else:  # no data: every input code equally likely, dequantized to the float inputs they stand for
        first = qmodel.layers[0]
        q = np.random.default_rng(seed).integers(0, first.codes, size=(MAX_SAMPLES, first.in_features))
        x, source = first.in_scale[None, :] * (q - first.in_zero[None, :]), "random codes"
    with np.errstate(all="ignore"):
        float_out, activations = model_forward(model, x, return_all=True)
        saturation = [float(_outside_window(ql, activations[i]).mean()) for i, ql in enumerate(qmodel.layers)]
        quant_out = run_model(qmodel, quantize_inputs(qmodel, x)).astype(np.float64) * qmodel.output_scale
    figures = output_error(float_out, quant_out, classifier=is_classifier(model))
    rms, worst, out_range, agreement = figures.rms, figures.max, figures.output_range, figures.argmax_agreement
    warnings, notes = [], []
    for i, frac in enumerate(saturation):
        if frac > WARN_SATURATION:
            ql = qmodel.layers[i]
            lo = float(np.min(ql.in_scale * (0 - ql.in_zero)))
            hi = float(np.max(ql.in_scale * (ql.codes - 1 - ql.in_zero)))
            seen = activations[i]
            notes.append(f"layer {i} ({ql.name}): {100 * frac:.1f}% of calibration activations lie outside "
                            f"the {ql.codes}-code input window (about [{lo:.4g}, {hi:.4g}]; they span "
                            f"[{float(seen.min()):.4g}, {float(seen.max()):.4g}]) and saturate")
    if rms > WARN_ERROR:  # for a classifier the argmax agreement says whether it matters: a note
        (warnings if agreement is None else notes).append(f"quantized outputs differ from the float model by {100 * rms:.2f}% RMS "
                        f"(max {100 * worst:.2f}%) of the float output range")
    if agreement is not None and 1.0 - agreement > WARN_ERROR:
        warnings.append(f"argmax agrees with the float model on only {100 * agreement:.1f}% of the samples")
    refused = None
    if not np.isfinite(figures.score) or figures.score > REFUSE_ERROR:
        refused = (f"the quantized model is far from the float model: logit error RMS {100 * rms:.1f}% "
                   f"(limit {100 * REFUSE_ERROR:.0f}%) of the float output range"
                   + ("" if agreement is None else
                      f", argmax agreement {100 * agreement:.1f}% (limit {100 * (1 - REFUSE_ERROR):.0f}%)"))
    return GuardReport(len(x), source, saturation, rms, worst, out_range, agreement, warnings, refused, notes)


def check(report: GuardReport, *, force: bool = False, warn=None) -> None:
    """Print the guard's warnings through ``warn``; raise QuantizationError when refused and not
    forced. Notes (the likely causes: saturation, a classifier's logit RMS) stay in the report."""
    reason = report.refused and (f"{report.refused}; up to {100 * max(report.saturation):.1f}% of a layer's "
                                 "calibration activations saturate")
    if reason and not force:
        raise QuantizationError(f"{reason}; nothing written (pass {FORCE_HINT} to write it anyway)")
    if warn is not None:
        for line in report.warnings:
            warn(line)
        if reason:
            warn(f"{reason}; written anyway ({FORCE_HINT})")


def markdown(figures: dict) -> str:
    """The guard's section of report.md."""
    lines = ["", "## Quantization guard", "", summary_of(figures) + "."]
    lines += [f"- warning: {w}" for w in figures["warnings"]]
    if figures["refused"]:
        lines.append(f"- far from the float model, written with {FORCE_HINT}: {figures['refused']}")
    held = figures.get("held_out")
    if held:
        name = "accuracy" if held["metric"] == "accuracy" else "R2"
        lines.append(f"- on the {held['data']} ({held['samples']} rows): {name} float {held['float']:.4f}, "
                     f"quantized {held['quantized']:.4f} (loss {held['loss']:.4f}, refused above {held['limit']:.2f})"
                     + (f"; written with {FORCE_HINT}" if held["refused"] else ""))
    return "\n".join(lines) + "\n"


def held_out_loss(evaluated: dict) -> dict | None:
    """What the integer model loses against the float one on labelled held-out rows (the report's
    ``evaluation`` block, kan2mcu.evaluate): metric, float, quantized, loss, limit, and ``refused``
    (the reason, or None). None without an integer model."""
    if evaluated is None or evaluated.get("quantized") is None:
        return None
    metric = "accuracy" if evaluated["metric"] == "accuracy" else "r2"
    before, after = float(evaluated["float"][metric]), float(evaluated["quantized"][metric])
    loss = before - after
    refused = None
    if not np.isfinite(after) or loss > REFUSE_HELD_OUT_LOSS:
        name = "accuracy" if metric == "accuracy" else "R2"
        refused = (f"on the {evaluated['data']} ({evaluated['samples']} rows) the quantized model's {name} is "
                   f"{after:.4f} against {before:.4f} for the float model (loss {loss:.4f}, limit "
                   f"{REFUSE_HELD_OUT_LOSS:.2f})")
    return {"data": evaluated["data"], "samples": evaluated["samples"], "metric": metric, "float": round(before, 6),
            "quantized": round(after, 6), "loss": round(loss, 6), "limit": REFUSE_HELD_OUT_LOSS, "refused": refused}


def check_held_out(figures: dict | None, *, force: bool = False, warn=None) -> None:
    """Refuse (QuantizationError) a model that loses more than the limit on held-out rows, unless
    forced (then warn through ``warn``)."""
    if figures is None or not figures["refused"]:
        return
    if not force:
        raise QuantizationError(f"{figures['refused']}; nothing written (pass {FORCE_HINT} to write it anyway)")
    if warn is not None:
        warn(f"{figures['refused']}; written anyway ({FORCE_HINT})")
