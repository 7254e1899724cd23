"""Fit the cost-model coefficients (COSTS in kan2mcu/quant/strategies/*.py) on QEMU instruction counts.

Generates random KANs of several shapes with every strategy, measures each layer's executed
instructions on every emulated board (exact, QEMU TCG plugin; layers are separate functions),
fits the linear cost formula of each strategy per core by least squares of the relative errors and prints the
coefficients and the relative error of every prediction. Not a test: run it after changing a
kernel, then paste the printed COSTS into the strategy module.

    .venv/bin/python benchmarks/calibrate_costs.py [-o OUT_DIR] [--strategy edge-table] [--term NAME ...]

``--term`` fits only the named terms and holds the others at their current COSTS (a new kernel
variant gets its own term without moving the fit of the existing ones).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host_tests"))
from conftest import make_random_checkpoint  # noqa: E402  (the tests' random-KAN maker)

from kan2mcu.errors import BoardError  # noqa: E402
from kan2mcu.firmware.boards import QEMU_BOARDS, get_board  # noqa: E402
from kan2mcu.firmware.measure import measure  # noqa: E402
from kan2mcu.generate import generate_model  # noqa: E402
from kan2mcu.model.importers import load_checkpoint  # noqa: E402
from kan2mcu.quant.quantize import LayerPlan, QuantOptions  # noqa: E402
from kan2mcu.quant.strategies import edge_table, spline  # noqa: E402

SHAPES = [(8, 4, 6), (16, 10, 3), (64, 16, 10), (32, 20, 12), (80, 6, 3)]  # 80 inputs: looped asm on DSP cores
VARIANTS = {  # name: (strategy, options)
    "edge-table": ("edge-table", QuantOptions(act_bits=4)),
    "edge-table-3bit": ("edge-table", QuantOptions(act_bits=3)),  # code widths: the asm kernels' rows per step
    "edge-table-6bit": ("edge-table", QuantOptions(act_bits=6)),
    "edge-table-nibbles": ("edge-table", QuantOptions(act_bits=4, table_bits=4)),
    "edge-table-halfwords": ("edge-table", QuantOptions(act_bits=4, table_bits=12)),
    # multiply-free layers (threshold requantization): measured on cores without a multiplier only
    "edge-table-mulfree": ("edge-table", QuantOptions(act_bits=4, mul_free=True)),
    "edge-table-mulfree-3bit": ("edge-table", QuantOptions(act_bits=3, mul_free=True)),
    "edge-table-mulfree-nibbles": ("edge-table", QuantOptions(act_bits=4, table_bits=4, mul_free=True)),
    "edge-table-mulfree-3bit-nibbles": ("edge-table", QuantOptions(act_bits=3, table_bits=4, mul_free=True)),
    "spline8": ("spline", QuantOptions()),
    "spline4": ("spline", QuantOptions(coef_bits=4)),
    "spline434": ("spline", QuantOptions(act_bits=4, spline_bits=3, coef_bits=4)),
    "spline685": ("spline", QuantOptions(act_bits=6, spline_bits=8, coef_bits=5)),
    # the compact coefficient layout (nibble words), which the planner weighs when the budget needs it
    "spline4-compact": ("spline", QuantOptions(coef_bits=4), "compact"),
    "spline434-compact": ("spline", QuantOptions(act_bits=4, spline_bits=3, coef_bits=4), "compact"),
    # the pair layout (two outputs per word), which the planner takes on cores without DSP (term hw_pair_edge)
    "spline8-pair": ("spline", QuantOptions(), "pair"),
    "spline434-pair": ("spline", QuantOptions(act_bits=4, spline_bits=3, coef_bits=4), "pair"),
}


def features(strategy: str, n_in: int, n_out: int, core: str, options: QuantOptions, first: bool,
             last: bool, layout: str | None = None) -> list[float]:
    """The terms of a strategy's cost formula, in the order of its COSTS keys."""
    if strategy == "edge-table":
        return list(edge_table.cost_terms(n_in, n_out, options.table_bits, options.act_bits, core, first,
                                          last).values())
    terms = spline.cost_terms(n_in, n_out, options.coef_bits, last, core, layout=layout)
    return [terms[key] for key in spline.COSTS[core]]


def _mul_free(model_dir: Path) -> bool:
    return "-mulfree" in model_dir.name


def _measured(dirs: list[Path], board: str, work: Path, skip_misfits: bool) -> list[tuple[Path, dict]]:
    """(model folder, measure entry) of every model; with ``skip_misfits`` one at a time, leaving out
    those whose firmware does not fit the board (rv32ec: 16 KiB of flash)."""
    if not skip_misfits:
        return list(zip(dirs, measure(dirs, board, work)["models"]))
    pairs = []
    for model_dir in dirs:
        try:
            pairs.append((model_dir, measure([model_dir], board, work / model_dir.name)["models"][0]))
        except BoardError:
            print(f"{board}: {model_dir.name} does not fit, left out")
    return pairs


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--strategy", choices=("edge-table", "spline"), default=None,
                        help="refit one strategy only (after changing its kernel)")
    parser.add_argument("--term", action="append", default=[], metavar="NAME",
                        help="fit only this COSTS term (repeatable); the others keep their current values")
    parser.add_argument("--shapes", type=_shape, nargs="+", default=SHAPES, metavar="I,H,O",
                        help="random KAN shapes to measure (default: four shapes from 8 to 64 inputs)")
    parser.add_argument("--boards", nargs="+", default=list(QEMU_BOARDS), choices=list(QEMU_BOARDS),
                        help="boards to measure and fit (default: every emulated board)")
    args = parser.parse_args(argv)
    strategies = (args.strategy,) if args.strategy else ("edge-table", "spline")
    variants = {name: v for name, v in VARIANTS.items() if v[0] in strategies}
    work = Path(args.output or tempfile.mkdtemp(prefix="kan2mcu-costs-"))
    work.mkdir(parents=True, exist_ok=True)
    samples = []  # (variant, n_in, n_out, model_dir, layer index)
    dirs = []
    for shape in args.shapes:
        ckpt, calib = make_random_checkpoint(work / f"{'x'.join(map(str, shape))}.pt", shape, 5, 3, seed=7)
        model = load_checkpoint(ckpt).model
        for variant, (strategy, options, *layout) in variants.items():
            if options.mul_free and all(get_board(b).has_multiplier for b in args.boards):
                continue
            if not options.mul_free and not any(get_board(b).has_multiplier for b in args.boards):
                continue
            out = work / f"{variant}-{'x'.join(map(str, shape))}"
            plan = [LayerPlan(strategy, options.act_bits, None, None, *layout) for _ in model.layers]
            generate_model(ckpt, out, options=options, calibration=calib, plan=plan, quiet=True,
                           allow_saturation=True)  # instructions only: the accuracy guard is not the subject
            dirs.append(out)
            for index, layer in enumerate(model.layers):
                samples.append((variant, layer.in_features, layer.out_features, out, index, index == 0,
                                index == len(model.layers) - 1))
    counts = {}
    for board in args.boards:
        # cores without a multiplier run multiply-free models only, and only those that fit the board
        mul_free = not get_board(board).has_multiplier
        board_dirs = [d for d in dirs if _mul_free(d) == mul_free]
        for model_dir, entry in _measured(board_dirs, board, work / f"measure-{board}", skip_misfits=mul_free):
            for function, n in entry["functions"].items():
                match = re.search(r"_layer(\d+)", function)
                if match:
                    counts[(board, str(model_dir), int(match.group(1)))] = n
    fitted = {}
    for board in args.boards:
        core = get_board(board).core
        for strategy in strategies:
            rows, targets, names = [], [], []
            for variant, n_in, n_out, model_dir, index, first, last in samples:
                if VARIANTS[variant][0] != strategy or (board, str(model_dir), index) not in counts:
                    continue
                rows.append(features(strategy, n_in, n_out, core, VARIANTS[variant][1], first, last,
                                     *VARIANTS[variant][2:]))
                targets.append(counts[(board, str(model_dir), index)])
                names.append(f"{variant} {n_in}->{n_out}")
            current = (edge_table.COSTS if strategy == "edge-table" else spline.COSTS)[core]
            free = [k in args.term for k in current] if args.term else [True] * len(current)
            coef = np.array([float(v) for v in current.values()])
            held = np.array(rows)[:, ~np.array(free)] @ coef[~np.array(free)]
            # least squares of the RELATIVE errors (each row divided by its count): small layers count as
            # much as large ones (plain least squares left 24-42% on the smallest layers of M3/M4)
            weight = 1.0 / np.array(targets, float)
            coef[np.array(free)], *_ = np.linalg.lstsq(np.array(rows)[:, np.array(free)] * weight[:, None],
                                                     (np.array(targets, float) - held) * weight, rcond=None)
            predicted = np.array(rows) @ coef
            worst = float(np.max(np.abs(predicted - targets) / np.array(targets)))
            fitted[(core, strategy)] = dict(zip(current, (round(float(c), 2) for c in coef)))
            print(f"{core:10s} {strategy:10s} worst error {worst:.1%} COSTS {fitted[(core, strategy)]}")
            for name, p, t in zip(names, predicted, targets):
                print(f"    {name:22s} measured {t:7d} predicted {p:9.1f}")
    (work / "fitted.json").write_text(json.dumps({f"{c}/{s}": v for (c, s), v in fitted.items()}, indent=1))
    print(f"written {work / 'fitted.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
