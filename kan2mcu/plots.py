"""`kan2mcu plot DIR`: each layer's edge functions, float against quantized, pykan-style (PNG).

What is drawn, per edge (input ``i`` -> output ``o``) of an integer model:

* float: ``out_scale[o] * (base_weight[o,i] * silu(x) + sum_m coef[o,i,m] * B_m(x))``, the edge's
  term in the IR's layer formula (docs/arithmetic.md), on a fine grid over the calibrated input
  range (the range the layer's input codes cover);
* quantized: for every input code ``q``, what the C adds into its accumulators for this edge,
  times the layer's float scales. Strategy spline: basis table values times coefficients plus
  SiLU table value times base weight, decoded exactly as the C and the integer reference do
  (``strategies.spline.decode_inputs``). Strategy edge-table: the table entry, unbiased, times
  the entry scale, plus the edge's centre (folded into the bias by the quantizer, recomputed
  here the same way). This is the edge's exact value inside the accumulator; the final
  requantization (one rounding per output, over the sum of all edges) is not part of an edge and
  is not included;
* beneath it, the histogram of the layer's inputs on channel ``i`` over the calibration data
  (the data set's training split, or the folder's calibration.npy).

Layers with more than :data:`MAX_EDGES_SHOWN` edges show edges whose shapes differ (:func:`pick_edges`:
the largest-range edge, then farthest-point sampling of the normalized curves; the figure and
report.md say which) and a heat map of every edge's largest error over all codes. One PNG per layer, linked from a
section appended to report.md. PNGs carry no date or version: same folder, same bytes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from kan2mcu.errors import OptionError

MAX_EDGES_SHOWN = 12
FINE_POINTS = 400
PNG_METADATA = {"Software": None}
REPORT_SECTION = "## Edge functions (kan2mcu plot)"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display); ToolchainError when matplotlib is missing."""
    from kan2mcu.firmware.toolchain import require_python_module  # pylint: disable=import-outside-toplevel

    require_python_module("matplotlib", "kan2mcu[plots]")
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def float_edges(layer, x: np.ndarray) -> np.ndarray:
    """Float edge values [O, N, I] at inputs ``x`` [N, I] (no bias: it belongs to the node)."""
    from kan2mcu.model.bspline import edge_values  # pylint: disable=import-outside-toplevel

    return np.stack([edge_values(layer, i, x[:, i]) for i in range(layer.in_features)], axis=2).transpose(1, 0, 2)


def quantized_edges(qlayer, float_layer) -> np.ndarray:
    """Quantized edge values [O, Q, I] for every input code on every channel (see the module doc)."""
    if qlayer.strategy == "spline":
        return _spline_edges(qlayer, float_layer)
    if qlayer.strategy == "edge-table":
        return _edge_table_edges(qlayer, float_layer)
    raise OptionError(f"layer {qlayer.name}: cannot plot strategy {qlayer.strategy!r}")


def _spline_edges(qlayer, float_layer) -> np.ndarray:
    from kan2mcu.quant.strategies.spline import decode_inputs, live_coefficients  # pylint: disable=import-outside-toplevel

    codes = np.broadcast_to(np.arange(qlayer.codes)[:, None], (qlayer.codes, qlayer.in_features))
    first, basis, silu_q = decode_inputs(qlayer, codes)
    acc_spline = (live_coefficients(qlayer, first) * basis[None]).sum(axis=3)  # [O, Q, I]
    acc_base = qlayer.base_weight[:, None, :] * silu_q[None, :, :]  # [O, Q, I]
    spline_scale = (qlayer.basis_scale * qlayer.coef_scale)[:, None, None]
    base_scale = (qlayer.base_scale * qlayer.silu_scale)[:, None, None]
    return float_layer.out_scale[:, None, None] * (spline_scale * acc_spline + base_scale * acc_base)


def _edge_table_edges(qlayer, float_layer) -> np.ndarray:
    """An edge-table entry is ``round((edge - centre) / entry_scale) + 2^(table_bits-1)``; the
    edge's centre went into the output's bias: the quantizer keeps it (``centre``), added back here."""
    entries = qlayer.table[:, :, : qlayer.out_features].astype(np.float64)  # [I, Q, O]
    signed = entries - (1 << (qlayer.table_bits - 1))
    centre = qlayer.centre.T  # [O, I]
    return qlayer.entry_scale[:, None, None] * signed.transpose(2, 1, 0) + centre[:, None, :]


def code_inputs(qlayer) -> np.ndarray:
    """The float input each code stands for, [Q, I]: ``in_scale * (q - in_zero)`` (held to an
    edge-table layer's ``in_lo``..``in_hi`` where set: inputs on a shared encoder)."""
    q = np.repeat(np.arange(qlayer.codes)[:, None], qlayer.in_features, axis=1)
    if hasattr(qlayer, "code_inputs"):
        return qlayer.code_inputs(q)
    return qlayer.in_scale[None, :] * (q - qlayer.in_zero[None, :])


def _calibration_inputs(folder: Path, manifest: dict, model) -> np.ndarray | None:
    from kan2mcu.model.bspline import model_forward  # pylint: disable=import-outside-toplevel
    from kan2mcu.data.datasets import load_dataset  # pylint: disable=import-outside-toplevel
    from kan2mcu.codegen.model_dir import CALIBRATION_FILE  # pylint: disable=import-outside-toplevel
    from kan2mcu.quant.calibration import load_calibration  # pylint: disable=import-outside-toplevel

    if manifest.get("dataset"):
        x = load_dataset(manifest["dataset"]).x_train
    elif (folder / CALIBRATION_FILE).is_file():
        x = load_calibration(folder / CALIBRATION_FILE, model.layers[0].in_features)
    else:
        return None
    return model_forward(model, x, return_all=True)[1]


FONT = {"title": 10, "label": 9, "tick": 8, "suptitle": 12}


def pick_edges(curves: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` edges (o, i) whose shapes differ: first the edge with the largest output range,
    then, one at a time, the edge whose shape (its curve minus its mean, over its range) is farthest
    from every edge already picked (farthest-point sampling). Edges with equal scores go by index.
    ``curves``: [O, F, I] float edge values on a fine grid."""
    n_out, _, n_in = curves.shape
    flat = curves.transpose(0, 2, 1).reshape(n_out * n_in, -1)  # [E, F], edge e = o * n_in + i
    spread = flat.max(axis=1) - flat.min(axis=1)
    shapes = (flat - flat.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)[:, None]
    picked = [int(np.lexsort((np.arange(len(flat)), -spread))[0])]
    distance = np.sqrt(((shapes - shapes[picked[0]]) ** 2).mean(axis=1))
    while len(picked) < min(count, len(flat)):
        candidate = np.where(np.isin(np.arange(len(flat)), picked), -1.0, distance)
        nxt = int(np.lexsort((np.arange(len(flat)), -candidate))[0])
        picked.append(nxt)
        distance = np.minimum(distance, np.sqrt(((shapes - shapes[nxt]) ** 2).mean(axis=1)))
    return [divmod(e, n_in) for e in picked]


def layer_figure(index: int, layer, qlayer, inputs: np.ndarray | None, path: Path) -> dict:
    """Draw one layer into ``path``; returns what was drawn (edges shown and which, largest error)."""
    plt = pyplot()
    fig, drawn = build_layer_figure(index, layer, qlayer, inputs)
    fig.savefig(path, dpi=90, metadata=PNG_METADATA)
    plt.close(fig)
    return {"file": path.name, **drawn}


def build_layer_figure(index: int, layer, qlayer, inputs: np.ndarray | None):
    """(matplotlib figure, what was drawn) of one layer: per shown edge the float function and the
    quantized one at every code above the histogram of the layer's calibration inputs; for large
    layers, a heat map of every edge's largest error."""
    plt = pyplot()
    from matplotlib.gridspec import GridSpec, GridSpecFromSubplotSpec  # pylint: disable=import-outside-toplevel

    xq = code_inputs(qlayer)  # [Q, I]
    quant = quantized_edges(qlayer, layer)  # [O, Q, I]
    error = np.abs(float_edges(layer, xq) - quant).max(axis=1)  # [O, I]
    lo, hi = xq[0], xq[-1]
    fine = lo[None, :] + (hi - lo)[None, :] * np.linspace(0.0, 1.0, FINE_POINTS)[:, None]  # [F, I]
    curves = float_edges(layer, fine)  # [O, F, I]
    n_out, _, n_in = curves.shape
    large = n_out * n_in > MAX_EDGES_SHOWN
    shown = pick_edges(curves, MAX_EDGES_SHOWN) if large else [divmod(e, n_in) for e in range(n_out * n_in)]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig = plt.figure(figsize=(3.6 * cols + (4.6 if large else 0), 3.4 * rows + 1.0))
    outer = GridSpec(1, 2 if large else 1, figure=fig, width_ratios=[3.6 * cols, 4.6] if large else None)
    edges_grid = GridSpecFromSubplotSpec(rows, cols, subplot_spec=outer[0], hspace=0.75, wspace=0.45)
    for slot, (o, i) in enumerate(shown):
        cell = GridSpecFromSubplotSpec(2, 1, subplot_spec=edges_grid[slot // cols, slot % cols],
                                       height_ratios=[3, 1], hspace=0.08)
        _edge_panel(fig, cell, (o, i), (fine, curves, xq, quant, error), qlayer, inputs, first=slot == 0)
    if large:
        _heat_map(fig, outer[1], error)
    what = (f"{len(shown)} of {n_out * n_in} edges whose shapes differ most (picked from the largest-range edge "
            "on)" if large else f"all {len(shown)} edges")
    fig.suptitle(f"layer {index} ({layer.name}, {n_in}->{n_out}, {qlayer.strategy}): {what}; {_bits_label(qlayer)}\n"
                 "blue: float edge function, red: quantized at every input code; grey: histogram of the "
                 "layer's calibration inputs", fontsize=FONT["suptitle"])
    return fig, {"edges": n_out * n_in, "shown": len(shown), "picked": [[i, o] for o, i in shown],
                 "max_error": float(error.max()), "strategy": qlayer.strategy}


def _edge_panel(fig, cell, edge, data, qlayer, inputs, first: bool) -> None:
    """One edge: float and quantized function above the histogram of its input channel."""
    o, i = edge
    fine, curves, xq, quant, error = data
    ax = fig.add_subplot(cell[0])
    ax.plot(fine[:, i], curves[o, :, i], color="tab:blue", lw=1.2, label="float")
    ax.step(xq[:, i], quant[o, :, i], where="mid", color="tab:red", lw=0.8, label=f"{qlayer.act_bits}-bit codes")
    ax.set_title(f"in {i} -> out {o}  max err {error[o, i]:.3g}", fontsize=FONT["title"])
    ax.set_ylabel(f"edge value phi{o},{i}(x)", fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"], labelbottom=False)
    if first:
        ax.legend(fontsize=FONT["tick"])
    hist_ax = fig.add_subplot(cell[1], sharex=ax)
    lo, hi = xq[0], xq[-1]
    if inputs is not None:
        hist_ax.hist(inputs[:, i], bins=30, range=(lo[i], hi[i]), color="gray")
    else:
        hist_ax.text(0.5, 0.5, "no calibration data", ha="center", va="center", fontsize=FONT["tick"],
                     transform=hist_ax.transAxes)
    hist_ax.set_yticks([])
    hist_ax.set_ylabel("inputs", fontsize=FONT["tick"])
    hist_ax.set_xlabel(f"layer input x{i}", fontsize=FONT["label"])
    hist_ax.tick_params(labelsize=FONT["tick"])


def _heat_map(fig, slot, error: np.ndarray) -> None:
    """Every edge's largest |float - quantized| over all codes, with a labelled colour bar."""
    heat_ax = fig.add_subplot(slot)
    image = heat_ax.imshow(error, aspect="auto", cmap="viridis", interpolation="nearest")
    heat_ax.set_xlabel("layer input i", fontsize=FONT["label"])
    heat_ax.set_ylabel("layer output o", fontsize=FONT["label"])
    heat_ax.set_title("every edge: max |float - quantized|\nover all input codes", fontsize=FONT["title"])
    heat_ax.tick_params(labelsize=FONT["tick"])
    bar = fig.colorbar(image, ax=heat_ax, shrink=0.8)
    bar.set_label("max |float - quantized| (layer output units)", fontsize=FONT["label"])
    bar.ax.tick_params(labelsize=FONT["tick"])


def _bits_label(qlayer) -> str:
    if qlayer.strategy == "edge-table":
        return f"act {qlayer.act_bits} / edge-table entry {qlayer.table_bits} bits"
    return f"act {qlayer.act_bits} / spline table {qlayer.spline_bits} / coef {qlayer.coef_bits} bits"


def plot_model_folder(folder) -> list[str]:
    """Write ``layer<N>_edges.png`` per layer into a generated integer model folder and link them
    from report.md; returns the file names."""
    from kan2mcu.codegen.bundle import load_bundle  # pylint: disable=import-outside-toplevel
    from kan2mcu.codegen.model_dir import load_model_folder  # pylint: disable=import-outside-toplevel

    folder = Path(folder)
    manifest = load_model_folder(folder).manifest
    model, qmodel = load_bundle(folder)
    if qmodel is None:
        raise OptionError(f"{folder}: plots compare float and quantized edges; generate with --arith int")
    inputs = _calibration_inputs(folder, manifest, model)
    drawn = []
    for index, (layer, qlayer) in enumerate(zip(model.layers, qmodel.layers)):
        print(f"kan2mcu plot: layer {index + 1} of {len(model.layers)} ({layer.in_features * layer.out_features} "
              "edges) ...", file=sys.stderr, flush=True)
        drawn.append(layer_figure(index, layer, qlayer, None if inputs is None else inputs[index],
                                  folder / f"layer{index}_edges.png"))
    _link_from_report(folder / "report.md", drawn, inputs is not None)
    return [d["file"] for d in drawn]


def _link_from_report(report: Path, drawn: list[dict], has_data: bool) -> None:
    """Replace (or append) the plots section at the end of report.md: plotting twice changes nothing."""
    text = report.read_text() if report.is_file() else ""
    text = text.split("\n" + REPORT_SECTION)[0].rstrip("\n") + "\n"
    lines = ["", REPORT_SECTION, "",
             "Float edge functions against the quantized ones at every input code (the integer terms of "
             "the edge in the accumulators, times the layer's scales; see kan2mcu/plots.py)"
             + (", the calibration inputs' histogram beneath." if has_data else "; no calibration data known."), ""]
    for d in drawn:
        picked = "" if d["shown"] == d["edges"] else (
            " (shapes that differ most: " + ", ".join(f"in {i} -> out {o}" for i, o in d["picked"]) + ")")
        lines.append(f"- {d['file']} ({d['strategy']}): {d['shown']} of {d['edges']} edges{picked}, largest edge "
                     f"error {d['max_error']:.4g}")
        lines.append(f"  ![{d['file']}]({d['file']})")
    report.write_text(text + "\n".join(lines) + "\n")
