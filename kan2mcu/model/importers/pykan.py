"""pykan front end: live ``kan.KAN`` / ``MultKAN`` objects and ``model.saveckpt(prefix)`` checkpoints.

What pykan computes (pykan 0.2.x, ``MultKAN.forward`` and ``KANLayer.forward``), per layer ``l``,
for input ``i`` and sub-node ``o``::

    edge[o, i] = mask[i, o] * (scale_base[i, o] * base_fun(x[i]) + scale_sp[i, o] * spline_io(x[i]))
               + symbolic branch (only when symbolic_enabled; each edge weighted by symbolic mask)
    s[o]       = subnode_scale[o] * sum_i edge[o, i] + subnode_bias[o]
    (multiplication nodes combine groups of sub-nodes here)
    y[o]       = node_scale[o] * s[o] + node_bias[o]

``spline_io`` uses ``coef[i, o, :]`` on input ``i``'s own knot vector ``grid[i, :]`` (pykan extends
the grid by ``k`` knots on each side, so it has ``G + 2k + 1`` knots and ``G + k`` coefficients;
after ``update_grid`` / ``refine`` the knots follow data quantiles and differ per input).

Without multiplication nodes and with the symbolic branch off, this folds exactly into the IR::

    base_weight[o, i] = mask[i, o] * scale_base[i, o]          (0 when base_fun is pykan's 'zero')
    coef[o, i, :]     = mask[i, o] * scale_sp[i, o] * coef_pykan[i, o, :]
    out_scale[o]      = node_scale[o] * subnode_scale[o]
    out_bias[o]       = node_scale[o] * subnode_bias[o] + node_bias[o]

Active symbolic edges (``auto_symbolic`` / ``fix_symbolic``: ``c * f(a * x + b) + d`` weighted by the
symbolic mask) become IR symbolic terms, and base functions other than SiLU (identity, GELU, ...)
the IR's ``base_function``: the edge-table strategy deploys both. Refused, with
:class:`UnsupportedModelError` naming the layer and the feature: multiplication nodes, a function
outside pykan's symbolic library or the IR's base functions, and knot vectors that repeat a knot without being fully
degenerate. A fully degenerate knot vector (all knots equal) gives an identically zero spline in
pykan (``nan_to_num``), so its coefficients fold to zero.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kan2mcu.errors import CheckpointError, UnsupportedModelError
from kan2mcu.model.bspline import BASE_FUNCTION_VALUES
from kan2mcu.model.ir import BASE_FUNCTIONS, SYMBOLIC_FUNCTIONS, KANLayer, KANModel, SymbolicEdge

CONFIG_SUFFIX = "_config.yml"
STATE_SUFFIX = "_state"
CACHE_SUFFIX = "_cache_data"
_SUFFIXES = (CONFIG_SUFFIX, STATE_SUFFIX, CACHE_SUFFIX)
_CONFIG_MARKERS = ("width", "base_fun_name")  # keys every pykan saveckpt config carries


# --- Checkpoint files ------------------------------------------------------------------------------

def checkpoint_prefix(path) -> Path:
    """The ``saveckpt`` prefix for ``path`` (a prefix, or one of its ``_config.yml``/``_state``/``_cache_data``)."""
    text = str(path)
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            return Path(text[: -len(suffix)])
    return Path(text)


def _sibling(prefix: Path, suffix: str) -> Path:
    return Path(str(prefix) + suffix)


def is_pykan_checkpoint(path) -> bool:
    """True when ``path`` names a pykan ``saveckpt`` prefix (or one of its files) whose config exists.

    The config must look like pykan's (it names ``width`` and ``base_fun_name``), so an unrelated
    ``*_config.yml`` next to another checkpoint is not mistaken for one.
    """
    try:
        config = _sibling(checkpoint_prefix(path), CONFIG_SUFFIX)
        if not config.is_file():
            return False
        with open(config, "r", encoding="utf-8", errors="replace") as stream:
            head = stream.read(1 << 16)
    except OSError:
        return False
    return all(f"{marker}:" in head for marker in _CONFIG_MARKERS)


def _read_config(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise CheckpointError(f"{path}: reading a pykan checkpoint needs PyYAML (pip install pyyaml)") from None
    try:
        with open(path, "r", encoding="utf-8") as stream:
            config = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable pykan config ({first_line[:160]})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a pykan config (expected a mapping of settings)")
    return config


def load_pykan_checkpoint(path):
    """Read a pykan ``saveckpt`` checkpoint (prefix or any of its files) into an :class:`ImportedModel`.

    Needs torch and PyYAML, not pykan itself. pykan's cached inputs (``prefix_cache_data``), when
    present and shaped like the model's inputs, become ``calibration`` ([N, I] float64).
    """
    from kan2mcu.model.importers import ImportedModel, _torch_load

    prefix = checkpoint_prefix(path)
    config_path, state_path = _sibling(prefix, CONFIG_SUFFIX), _sibling(prefix, STATE_SUFFIX)
    if not config_path.is_file():
        raise CheckpointError(f"{prefix}: no pykan config {config_path.name}")
    if not state_path.is_file():
        raise CheckpointError(f"{prefix}: pykan checkpoint lacks its weights file {state_path.name}")
    config = _read_config(config_path)
    state = _torch_load(state_path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path}: not a pykan state dict")
    model = _ir_from_pykan_state(state, config, where=str(prefix))

    calibration = None
    cache_path = _sibling(prefix, CACHE_SUFFIX)
    if cache_path.is_file():
        cache = _torch_load(cache_path)
        calibration = _calibration_from_cache(cache, model.layers[0].in_features, cache_path)
    return ImportedModel(model, "pykan", None, calibration)


def _calibration_from_cache(cache, n_inputs: int, where: Path) -> np.ndarray | None:
    if cache is None:
        return None
    try:
        data = np.asarray(cache.detach().cpu().double().numpy() if hasattr(cache, "detach") else cache,
                          dtype=np.float64)
    except Exception:  # noqa: BLE001 - an unusable cache only loses calibration data
        warnings.warn(f"{where}: pykan cache data is not numeric; ignored", stacklevel=3)
        return None
    if data.ndim != 2 or data.shape[1] != n_inputs or data.shape[0] == 0:
        warnings.warn(f"{where}: pykan cache data has shape {data.shape}, the model takes {n_inputs} "
                      "inputs; ignored as calibration data", stacklevel=3)
        return None
    if not np.all(np.isfinite(data)):
        warnings.warn(f"{where}: pykan cache data holds NaN/Inf; ignored as calibration data", stacklevel=3)
        return None
    return data


def load_pykan_model(path):
    """Rebuild the live pykan model of a ``saveckpt`` checkpoint with pykan's own loader (needs pykan)."""
    try:
        from kan import MultKAN
    except ImportError:
        raise CheckpointError(f"{path}: running the original pykan model needs pykan (pip install pykan)") from None
    prefix = checkpoint_prefix(path)
    if not is_pykan_checkpoint(prefix):
        raise CheckpointError(f"{path}: not a pykan checkpoint")
    try:
        model = MultKAN.loadckpt(str(prefix))
    except Exception as exc:  # noqa: BLE001 - pykan raises anything on a bad checkpoint
        raise CheckpointError(f"{prefix}: pykan could not load it ({type(exc).__name__}: {str(exc)[:160]})") from None
    model.auto_save = False  # never let pykan write history/checkpoints on our behalf
    return model


def _ir_from_pykan_state(state: dict, config: dict, where: str) -> KANModel:
    depth = 0
    while f"act_fun.{depth}.coef" in state:
        depth += 1
    if depth == 0:
        raise CheckpointError(f"{where}: no pykan layers (act_fun.0.coef, ...) in the state dict")

    def get(key: str, ndim: int) -> np.ndarray:
        if key not in state:
            raise CheckpointError(f"{where}: pykan state lacks {key}")
        value = state[key]
        try:
            array = np.asarray(value.detach().cpu().double().numpy() if hasattr(value, "detach") else value,
                               dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - any non-numeric entry is a foreign file
            raise CheckpointError(f"{where}: {key} is not a numeric tensor ({exc})") from None
        if array.ndim != ndim:
            raise CheckpointError(f"{where}: {key} must have {ndim} dimensions, got shape {array.shape}")
        return array

    base = config.get("base_fun_name", "silu")
    base_kind = base if base in BASE_FUNCTIONS else None
    symbolic_enabled = bool(config.get("symbolic_enabled", True))
    width = config.get("width")
    layers = []
    for l in range(depth):
        name = f"act_fun.{l}"
        if base_kind is None:
            raise UnsupportedModelError(
                f"{name}: pykan base function {base!r} is not supported (kan2mcu knows {', '.join(BASE_FUNCTIONS)})")
        node_scale, subnode_scale = get(f"node_scale_{l}", 1), get(f"subnode_scale_{l}", 1)
        n_mult = _mult_nodes_from_width(width, l + 1)
        if n_mult or node_scale.shape != subnode_scale.shape:
            raise UnsupportedModelError(
                f"{name}: multiplication nodes ({n_mult or 'implied by the node/subnode shapes'}) after this "
                "layer are not supported (kan2mcu deploys sum nodes only)")
        symbolic_mask = get(f"symbolic_fun.{l}.mask", 2) if f"symbolic_fun.{l}.mask" in state else None
        symbolic = ()
        if symbolic_enabled and symbolic_mask is not None and np.any(symbolic_mask != 0):
            names = config.get(f"symbolic.funs_name.{l}")
            symbolic = _symbolic_edges(name, symbolic_mask, get(f"symbolic_fun.{l}.affine", 3),
                                       lambda j, i, n=names: _fun_name(n, j, i))
        layers.append(_fold_layer(
            name, grid=get(f"{name}.grid", 2), coef=get(f"{name}.coef", 3), mask=get(f"{name}.mask", 2),
            scale_base=get(f"{name}.scale_base", 2), scale_sp=get(f"{name}.scale_sp", 2),
            subnode_scale=subnode_scale, subnode_bias=get(f"subnode_bias_{l}", 1),
            node_scale=node_scale, node_bias=get(f"node_bias_{l}", 1), base_kind=base_kind, symbolic=symbolic))
    return KANModel(tuple(layers), source="pykan", metadata={"pykan": _config_summary(config)})


def _config_summary(config: dict) -> dict:
    keep = ("width", "grid", "k", "base_fun_name", "grid_eps", "grid_range", "symbolic_enabled")
    return {key: config[key] for key in keep if key in config}


def _fun_name(names, j: int, i: int) -> str:
    try:
        return str(names[j][i])
    except (TypeError, IndexError, KeyError):
        return "?"


def _mult_nodes_from_width(width, index: int) -> int:
    """Number of multiplication nodes pykan's ``width`` gives node layer ``index`` (0 if unknown)."""
    try:
        entry = width[index]
    except (TypeError, IndexError, KeyError):
        return 0
    if isinstance(entry, (list, tuple)) and len(entry) > 1:
        try:
            return int(entry[1])
        except (TypeError, ValueError):
            return 0
    return 0


# --- Live pykan objects ----------------------------------------------------------------------------

def ir_from_pykan(model, *, n_inputs: int | None = None) -> KANModel:
    """Build the IR from a live pykan ``KAN`` / ``MultKAN`` (see the module docstring for the folding).

    A model whose inputs were dropped by ``prune_input`` selects columns ``model.input_id`` of a
    wider input in its forward pass; the IR then takes that wider input (``n_inputs`` columns,
    default ``max(input_id) + 1``), with zero-cost edges for the dropped columns. When only
    trailing inputs were dropped, ``input_id`` is ``0..n-1`` and the model also runs on the narrow
    input: the IR keeps the narrow input unless ``n_inputs`` asks for the original width.
    """
    try:
        act_fun = list(model.act_fun)
        node_scale, node_bias = list(model.node_scale), list(model.node_bias)
        subnode_scale, subnode_bias = list(model.subnode_scale), list(model.subnode_bias)
    except (AttributeError, TypeError):
        raise CheckpointError(f"{type(model).__name__}: not a pykan KAN/MultKAN model") from None
    if not act_fun:
        raise CheckpointError("pykan model has no layers")
    symbolic_fun = list(getattr(model, "symbolic_fun", []) or [])
    symbolic_enabled = bool(getattr(model, "symbolic_enabled", True))
    width = getattr(model, "width", None)

    layers = []
    for l, spb in enumerate(act_fun):
        name = f"act_fun.{l}"
        base_kind = classify_base_function(getattr(spb, "base_fun", None), name)
        n_mult = _mult_nodes_from_width(width, l + 1)
        if n_mult or node_scale[l].numel() != subnode_scale[l].numel():
            raise UnsupportedModelError(
                f"{name}: multiplication nodes ({n_mult or 'implied by the node/subnode sizes'}, mult_arity "
                f"{getattr(model, 'mult_arity', '?')}) after this layer are not supported "
                "(kan2mcu deploys sum nodes only)")
        symbolic = ()
        if symbolic_enabled and l < len(symbolic_fun) and np.any(_np(symbolic_fun[l].mask) != 0):
            sym = symbolic_fun[l]
            names = getattr(sym, "funs_name", None)
            symbolic = _symbolic_edges(name, _np(sym.mask), _np(sym.affine), lambda j, i, n=names: _fun_name(n, j, i))
        layers.append(_fold_layer(
            name, grid=_np(spb.grid), coef=_np(spb.coef), mask=_np(spb.mask), scale_base=_np(spb.scale_base),
            scale_sp=_np(spb.scale_sp), subnode_scale=_np(subnode_scale[l]), subnode_bias=_np(subnode_bias[l]),
            node_scale=_np(node_scale[l]), node_bias=_np(node_bias[l]), base_kind=base_kind, symbolic=symbolic))

    metadata = {"pykan": {"width": _plain(width), "k": _plain(getattr(model, "k", None)),
                          "grid": _plain(getattr(model, "grid", None)),
                          "base_fun_name": _plain(getattr(model, "base_fun_name", None))}}
    input_id = getattr(model, "input_id", None)
    if input_id is not None:
        ids = [int(v) for v in _np(input_id).astype(np.int64).ravel()]
        if ids != list(range(layers[0].in_features)) or (n_inputs is not None and n_inputs != len(ids)):
            layers[0] = _widen_inputs(layers[0], ids, n_inputs)
            metadata["input_id"] = ids
    return KANModel(tuple(layers), source="pykan", metadata=metadata)


def _plain(value):
    """``value`` as plain Python (lists, ints, floats, str) for metadata."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def _np(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):
        return tensor.detach().cpu().double().numpy()
    return np.asarray(tensor, dtype=np.float64)


def classify_base_function(fun, where: str) -> str:
    """The IR name (kan2mcu.model.ir.BASE_FUNCTIONS) of a pykan base function; else UnsupportedModelError.

    Known SiLU objects (``torch.nn.SiLU`` instances that do not override ``forward``,
    ``torch.nn.functional.silu``, ``torch.silu``) are accepted directly. Any other callable is probed
    in float64 on 2,001 points over [-40, 40]: it is SiLU when it matches ``x * sigmoid(x)`` to
    1e-9 relative (so e.g. ``lambda x: x * torch.sigmoid(x)`` is accepted), pykan's ``'zero'``
    (``x * 0``) when it is exactly zero (its base weights then fold to zero), and likewise identity,
    GELU, ReLU, tanh and sigmoid (deployed by the edge-table strategy).
    """
    import torch

    if fun is None:
        raise UnsupportedModelError(f"{where}: pykan layer has no base function")
    if isinstance(fun, torch.nn.SiLU) and type(fun).forward is torch.nn.SiLU.forward:
        return "silu"
    if fun is torch.nn.functional.silu or fun is getattr(torch, "silu", None):
        return "silu"
    described = _describe(fun)
    probe = torch.linspace(-40.0, 40.0, 2001, dtype=torch.float64)[:, None].repeat(1, 2)
    try:
        with torch.no_grad():
            out = fun(probe)
        out = out.detach().cpu().double().numpy() if hasattr(out, "detach") else np.asarray(out, dtype=np.float64)
    except Exception:  # noqa: BLE001 - a function we cannot even evaluate is not SiLU
        out = None
    if out is not None and out.shape == tuple(probe.shape) and np.all(np.isfinite(out)):
        x = probe.numpy()
        if np.all(out == 0.0):
            return "zero"
        for kind in BASE_FUNCTIONS:  # the first that matches to 1e-9 relative
            if np.allclose(out, BASE_FUNCTION_VALUES[kind](x), rtol=1e-9, atol=1e-12):
                return kind
    raise UnsupportedModelError(
        f"{where}: pykan base function {described} is not supported (kan2mcu knows {', '.join(BASE_FUNCTIONS)})")


def _describe(fun) -> str:
    if isinstance(fun, type(lambda: 0)):
        return f"'{fun.__qualname__}'"
    return f"'{type(fun).__name__}'" if hasattr(type(fun), "forward") else repr(fun)[:60]


# --- Folding ---------------------------------------------------------------------------------------

def _symbolic_edges(name: str, symbolic_mask: np.ndarray, affine: np.ndarray, fun_name) -> tuple:
    """The active symbolic terms of a layer (mask [O, I], affine [O, I, 4] = a, b, c, d) as IR edges;
    the mask weight folds into c and d. UnsupportedModelError for a function kan2mcu cannot evaluate."""
    if affine.shape != symbolic_mask.shape + (4,):
        raise CheckpointError(f"{name}: symbolic affine shape {affine.shape}, expected {symbolic_mask.shape + (4,)}")
    edges = []
    for j, i in np.argwhere(symbolic_mask != 0):
        fname = fun_name(j, i)
        if fname == "0":
            continue
        if fname not in SYMBOLIC_FUNCTIONS:
            raise UnsupportedModelError(f"{name}: symbolic function {fname!r} on edge in {i} -> out {j} is not "
                                        f"supported (kan2mcu evaluates pykan's library: {', '.join(SYMBOLIC_FUNCTIONS)})")
        a, b, c, d = (float(v) for v in affine[j, i])
        weight = float(symbolic_mask[j, i])
        edges.append(SymbolicEdge(int(j), int(i), fname, a, b, c * weight, d * weight))
    return tuple(edges)


def _fold_layer(name: str, *, grid, coef, mask, scale_base, scale_sp, subnode_scale, subnode_bias,
                node_scale, node_bias, base_kind: str, symbolic: tuple = ()) -> KANLayer:
    """One pykan KANLayer plus its node affine terms -> one IR layer (arrays in pykan's layout)."""
    if coef.ndim != 3:
        raise CheckpointError(f"{name}: coef must be [in, out, G+k], got shape {coef.shape}")
    n_in, n_out, n_basis = coef.shape
    for label, array in (("mask", mask), ("scale_base", scale_base), ("scale_sp", scale_sp)):
        if array.shape != (n_in, n_out):
            raise CheckpointError(f"{name}: {label} shape {array.shape}, expected {(n_in, n_out)}")
    for label, array in (("subnode_scale", subnode_scale), ("subnode_bias", subnode_bias),
                         ("node_scale", node_scale), ("node_bias", node_bias)):
        if array.shape != (n_out,):
            raise CheckpointError(f"{name}: {label} shape {array.shape}, expected ({n_out},)")
    if grid.ndim != 2 or grid.shape[0] != n_in:
        raise CheckpointError(f"{name}: grid must be [in={n_in}, knots], got shape {grid.shape}")
    order = grid.shape[1] - n_basis - 1
    if order < 1:
        raise CheckpointError(f"{name}: grid of {grid.shape[1]} knots and {n_basis} coefficients imply no "
                              "valid spline order")
    for label, array in (("grid", grid), ("coef", coef), ("mask", mask), ("scale_base", scale_base),
                         ("scale_sp", scale_sp)):
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{name}: {label} holds NaN/Inf")

    knots = grid.copy()
    spline_alive = np.ones(n_in, dtype=bool)
    for i in range(n_in):
        steps = np.diff(knots[i])
        if np.all(steps == 0):
            # pykan: 0/0 -> nan_to_num -> 0 at every order, so this input's splines are identically 0.
            spline_alive[i] = False
            knots[i] = knots[i, 0] + np.linspace(-1.0, 1.0, knots.shape[1])
        elif np.any(steps <= 0):
            raise UnsupportedModelError(
                f"{name}: input {i} has repeated or decreasing knots ({_short(knots[i])}); kan2mcu needs "
                "strictly increasing knots")

    edge = mask * spline_alive[:, None]  # [in, out]
    folded_coef = (coef * (edge * scale_sp)[:, :, None]).transpose(1, 0, 2)  # -> [out, in, G+k]
    base_weight = np.zeros((n_out, n_in)) if base_kind == "zero" else (mask * scale_base).T
    out_scale = node_scale * subnode_scale
    out_bias = node_scale * subnode_bias + node_bias
    return KANLayer(knots=knots, order=int(order), coef=folded_coef, base_weight=base_weight,
                    out_scale=out_scale, out_bias=out_bias, name=name, symbolic=symbolic,
                    base_function="silu" if base_kind == "zero" else base_kind)


def _short(row: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in row[:8]) + (", ..." if row.size > 8 else "") + "]"


def _widen_inputs(layer: KANLayer, input_id: list[int], n_inputs: int | None) -> KANLayer:
    """Layer 0 of a ``prune_input``-ed model, taking all ``n_inputs`` original inputs (dropped ones cost 0)."""
    needed = max(input_id) + 1
    n_inputs = needed if n_inputs is None else int(n_inputs)
    if n_inputs < needed or len(set(input_id)) != len(input_id):
        raise CheckpointError(f"{layer.name}: input_id {input_id} does not fit {n_inputs} inputs")
    n_out, n_basis = layer.out_features, layer.n_basis
    knots = np.empty((n_inputs, layer.knots.shape[1]))
    knots[:] = layer.knots[0]  # any valid knots: the dropped inputs have no weight
    coef = np.zeros((n_out, n_inputs, n_basis))
    base_weight = np.zeros((n_out, n_inputs))
    for column, source in enumerate(input_id):
        knots[source] = layer.knots[column]
        coef[:, source] = layer.coef[:, column]
        base_weight[:, source] = layer.base_weight[:, column]
    symbolic = tuple(SymbolicEdge(e.out, input_id[e.inp], e.name, e.a, e.b, e.c, e.d) for e in layer.symbolic)
    return KANLayer(knots=knots, order=layer.order, coef=coef, base_weight=base_weight,
                    out_scale=layer.out_scale, out_bias=layer.out_bias, name=layer.name,
                    base_function=layer.base_function, symbolic=symbolic)


__all__ = ["checkpoint_prefix", "classify_base_function", "ir_from_pykan", "is_pykan_checkpoint",
           "load_pykan_checkpoint", "load_pykan_model"]
