"""Accuracy (classification) or R2 and max |error| (regression) of the float and the generated
integer model on labelled data: ``generate --eval-data FILE``, or the held-out rows a checkpoint
trained on your own data keeps.

The integer model is evaluated as the generated C runs it: the rows go through the float input
API's decision (float32 values, the checkpoint's per-column scaling, kan2mcu.quant.input_codec) and the
Python integer reference (bit-exact with the C).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.data import tabular
from kan2mcu.data.datasets import load_dataset
from kan2mcu.model.bspline import model_forward
from kan2mcu.errors import OptionError
from kan2mcu.quant import output_error
from kan2mcu.quant.input_codec import float_api_inputs, float_api_transform
from kan2mcu.quant.reference import quantize_inputs, run_model


def task_of(model) -> tuple[str, bool]:
    """(task, inferred from the output width?), as the output-error metric takes it
    (kan2mcu.quant.output_error.task_of)."""
    task, source = output_error.task_of(model)
    return task, source.startswith("assumed")


def _match_columns(table: tabular.Table, columns: list, option: str) -> np.ndarray:
    """The table's features in the checkpoint's column order (CSV: by name)."""
    if table.columns == tuple(f"x{i}" for i in range(table.x.shape[1])) and len(table.columns) == len(columns):
        return table.x  # arrays carry no names: positional
    missing = [c for c in columns if c not in table.columns]
    extra = [c for c in table.columns if c not in columns]
    if missing or extra:
        parts = ([f"lacks {', '.join(map(repr, missing[:5]))}"] if missing else []) + (
            [f"has columns the model was not trained on: {', '.join(map(repr, extra[:5]))}"] if extra else [])
        raise OptionError(f"{option} {table.source}: {'; '.join(parts)}")
    return table.x[:, [table.columns.index(c) for c in columns]]


def read_rows(path, model, *, option: str, need_target: bool) -> tuple[np.ndarray, tabular.Table]:
    """Raw input rows [N, I] of ``path`` for ``model`` (the columns it was trained on, in order), and
    the table (its ``y`` is the target column: named as at training, else a CSV's last column)."""
    meta = model.metadata
    n_in = model.layers[0].in_features
    columns = meta.get("columns")
    features, _, labels = str(path).partition(",")
    if labels and features.lower().endswith(".npy") and labels.lower().endswith(".npy"):
        table = tabular.read_table(features, labels, option=option, need_target=need_target)  # a .npy pair
    elif Path(path).suffix.lower() == ".npy" and need_target:
        raise OptionError(f"{option} {path}: give a .npy of features with its labels as FEATURES.npy,LABELS.npy")
    elif Path(path).suffix.lower() == ".csv" and not meta.get("target"):
        table = tabular.read_table(path, None, option=option, need_target=False)
        if need_target:  # a checkpoint that does not name its target: the last column is the target
            if table.x.shape[1] < 2:
                raise OptionError(f"{option} {table.source}: needs feature columns and a target column (last)")
            table = tabular.Table(table.x[:, :-1], table.x[:, -1], table.columns[:-1], table.columns[-1],
                                  table.source)
    else:
        table = tabular.read_table(path, meta.get("target"), option=option, need_target=need_target)
    x = _match_columns(table, columns, option) if columns else table.x
    if x.shape[1] != n_in:
        raise OptionError(f"{option} {table.source}: {x.shape[1]} feature columns, the model takes {n_in}")
    return x, table


def model_inputs(model, raw: np.ndarray) -> np.ndarray:
    """The float model's inputs for raw rows (the checkpoint's per-column scaling, if any)."""
    return tabular.apply_transform(raw, model.metadata.get("input_transform") if model.metadata.get("columns")
                                   else None)


def api_codes(model, qmodel, raw: np.ndarray) -> np.ndarray:
    """First-layer codes of raw rows as the C float input API computes them (float32 in)."""
    scale, offset = float_api_transform(model.metadata.get("input_transform"), model.layers[0].in_features)
    with np.errstate(invalid="ignore"):
        return quantize_inputs(qmodel, float_api_inputs(raw, scale, offset))


def encoded_targets(model, y, *, source: str, target: str | None) -> np.ndarray:
    """Targets as the model's class indices (classification) or values (regression); OptionError
    for labels the model does not know, or a regression set too small for R2."""
    task, _ = task_of(model)
    n_out = model.layers[-1].out_features
    labels = tabular.Table(np.zeros((len(y), 0)), np.asarray(y), (), target, source)
    if task == "classify":
        classes = model.metadata.get("classes") or list(range(n_out))
        return tabular.encode_target(labels, task, classes=classes, option="--eval-data").y
    if n_out != 1:
        raise OptionError(f"--eval-data: a regression model needs one output, this one has {n_out}")
    encoded = tabular.encode_target(labels, task, transform={"scale": 1.0, "offset": 0.0}, option="--eval-data").y
    if len(encoded) < 2:
        raise OptionError(f"--eval-data {source}: R2 needs at least 2 rows, got {len(encoded)}")
    return encoded


@dataclass(frozen=True)
class EvalRows:
    """Labelled rows to evaluate on: raw feature rows, their targets (class indices, or regression
    values in the data's units), and where they come from."""

    raw: np.ndarray
    targets: np.ndarray
    source: str
    target: str | None


def eval_rows(imported, model, eval_data: Path | None) -> EvalRows | None:
    """The rows the report evaluates on, read and checked once (columns, cells, labels: OptionError),
    so that ``generate`` fails before its slow work: ``--eval-data``, else an own-data checkpoint's
    held-out split; None without either."""
    if eval_data is not None:
        raw, table = read_rows(eval_data, model, option="--eval-data", need_target=True)
        y, source, target = table.y, table.source, table.target
    elif imported.heldout is not None:
        raw, y = imported.heldout
        if model.metadata.get("classes") is not None:
            y = np.asarray(model.metadata["classes"], dtype=object)[np.asarray(y, np.int64)]
        source, target = "held-out split", model.metadata.get("target")
    else:
        return None
    return EvalRows(raw, encoded_targets(model, y, source=source, target=target), source, target)


def evaluation(model, qmodel, rows: EvalRows | None) -> dict | None:
    """The report's ``evaluation`` block on ``rows`` (None without rows): accuracy, or R2 and max
    |error| in the data's units, of the float model and of the integer model (``qmodel``, if any)."""
    from kan2mcu.training.train import regression_metrics

    if rows is None:
        return None
    task, inferred = task_of(model)
    t = model.metadata.get("target_transform") or {"scale": 1.0, "offset": 0.0}
    float_out = model_forward(model, model_inputs(model, rows.raw))
    q_out = None
    if qmodel is not None:
        q_out = run_model(qmodel, api_codes(model, qmodel, rows.raw)) * qmodel.output_scale
    if task == "regress":
        float_out, q_out = (None if o is None else o * t["scale"] + t["offset"] for o in (float_out, q_out))

    def figures(out):
        if task == "classify":
            return {"accuracy": float((out.argmax(1) == rows.targets).mean())}
        return regression_metrics(out[:, 0], rows.targets)

    return {"data": rows.source, "task": task, "task_inferred": inferred, "target": rows.target,
            "samples": int(len(rows.raw)), "metric": "accuracy" if task == "classify" else "r2",
            "float": figures(float_out), "quantized": None if q_out is None else figures(q_out),
            "max_abs_output_error": None if q_out is None else float(np.abs(q_out - float_out).max())}


def held_out_inputs(model, rows: EvalRows | None) -> tuple[np.ndarray, str] | None:
    """The float model inputs of ``rows`` and what they are (None: no rows)."""
    return None if rows is None else (model_inputs(model, rows.raw), rows.source)


def markdown(ev: dict) -> str:
    """One report.md paragraph of an ``evaluation`` block."""
    task = ev["task"] + (" (inferred from the output width)" if ev["task_inferred"] else "")
    if ev["task"] == "classify":
        def fmt(f):
            return f"accuracy {f['accuracy']:.4f}"
    else:
        def fmt(f):
            return f"R2 {f['r2']:.4f}, max |error| {f['max_abs_error']:.4g}"
    text = (f"Evaluation on {ev['data']} ({ev['samples']} rows, target {ev['target']!s}, task {task}): "
            f"float model {fmt(ev['float'])}")
    if ev["quantized"] is not None:
        text += (f"; generated integer model {fmt(ev['quantized'])} (max |output difference| "
                 f"{ev['max_abs_output_error']:.4g})")
    return text + "."


def dataset_accuracy(model, qmodel, dataset: str) -> dict:
    """Test-split accuracy of the float and the integer model on a bundled data set (the report's
    ``accuracy``), with the largest logit difference between them."""
    data = load_dataset(dataset)
    float_logits = model_forward(model, data.x_test)
    acc = {"dataset": dataset, "split": "test", "samples": int(len(data.y_test)),
           "float": float((float_logits.argmax(1) == data.y_test).mean())}
    if qmodel is not None:
        q_logits = run_model(qmodel, quantize_inputs(qmodel, data.x_test)) * qmodel.output_scale
        acc["quantized"] = float((q_logits.argmax(1) == data.y_test).mean())
        acc["max_abs_logit_error"] = float(np.abs(q_logits - float_logits).max())
    else:
        acc["quantized"] = acc["float"]
        acc["max_abs_logit_error"] = 0.0
    return acc
