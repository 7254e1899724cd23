"""Save and load the IR and the integer model next to the generated C (``model.npz``), so that
``verify`` and ``measure`` need nothing but the generated folder."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from kan2mcu.errors import CheckpointError
from kan2mcu.model.ir import KANLayer, KANModel
from kan2mcu.quant.quantize import QuantModel, QuantOptions
from kan2mcu.quant.strategies import LAYER_CLASSES

BUNDLE = "model.npz"


def bundle_bytes(model: KANModel, qmodel: QuantModel | None) -> bytes:
    """Deterministic npz bytes of the float IR and (for integer models) the integer model."""
    arrays, meta = {}, {"source": model.source, "metadata": model.metadata, "layers": [], "quant": None}
    for i, layer in enumerate(model.layers):
        meta["layers"].append({"name": layer.name, "order": int(layer.order), "base_function": layer.base_function,
                               "symbolic": [e.as_list() for e in layer.symbolic]})
        for key in ("knots", "coef", "base_weight", "out_scale", "out_bias"):
            arrays[f"ir{i}.{key}"] = getattr(layer, key)
    if qmodel is not None:
        qmeta = {"options": qmodel.options.as_dict(), "output_scale": qmodel.output_scale,
                 "calibration": qmodel.calibration, "layers": []}
        for i, ql in enumerate(qmodel.layers):
            scalars = {}
            for f in dataclasses.fields(type(ql)):
                value = getattr(ql, f.name)
                if f.metadata.get("omit_default") and (value is None or value is f.default):
                    continue  # an unused optional field: bundles without it stay byte-identical
                if isinstance(value, np.ndarray):
                    arrays[f"q{i}.{f.name}"] = value
                else:
                    scalars[f.name] = value
            qmeta["layers"].append(scalars)
        meta["quant"] = qmeta
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True, default=_json_default).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # zip entries carry a fixed date: output is byte-identical
    return buffer.getvalue()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


def load_bundle(folder: Path) -> tuple[KANModel, QuantModel | None]:
    """Read ``model.npz`` of a generated folder."""
    path = Path(folder) / BUNDLE
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {BUNDLE}; is this a folder written by `kan2mcu generate`?") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    meta = json.loads(bytes(arrays.pop("meta")).decode())
    layers = [KANLayer(knots=arrays[f"ir{i}.knots"], order=m["order"], coef=arrays[f"ir{i}.coef"],
                       base_weight=arrays[f"ir{i}.base_weight"], out_scale=arrays[f"ir{i}.out_scale"],
                       out_bias=arrays[f"ir{i}.out_bias"], base_function=m["base_function"], name=m["name"],
                       symbolic=tuple(m.get("symbolic", [])))
              for i, m in enumerate(meta["layers"])]
    model = KANModel(tuple(layers), source=meta["source"], metadata=meta["metadata"])
    qmeta = meta["quant"]
    if qmeta is None:
        return model, None
    qlayers = []
    for i, scalars in enumerate(qmeta["layers"]):
        fields = dict(scalars)
        layer_class = LAYER_CLASSES[fields.get("strategy", "spline")]
        for f in dataclasses.fields(layer_class):
            key = f"q{i}.{f.name}"
            if key in arrays:
                fields[f.name] = arrays[key]
        qlayers.append(layer_class(**fields))
    qmodel = QuantModel(tuple(qlayers), QuantOptions(**qmeta["options"]), qmeta["output_scale"], qmeta["calibration"])
    return model, qmodel
