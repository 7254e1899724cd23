"""The ``kan2mcu`` command line: train, generate, verify (build and measure come from kan2mcu.firmware)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kan2mcu import __version__
from kan2mcu.errors import Kan2mcuError, OptionError


def _bits(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of bits, got {text!r}") from None


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="quantize a KAN checkpoint and generate C")
    p.add_argument("checkpoint", type=Path, help="kan2mcu checkpoint, efficient-kan state dict, or pykan saveckpt prefix")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write the C model into")
    p.add_argument("--name", default="kan", help="model name and C prefix (default: kan)")
    p.add_argument("--arith", choices=("int", "float"), default="int", help="integer (default) or float32 back end")
    p.add_argument("--act-bits", type=_bits, default=8,
                   help="input code bits per layer, 2..8 (default 8); an upper bound for edge-table layers, "
                        "whose code width the planner picks within the flash budget")
    p.add_argument("--spline-bits", type=_bits, default=8, help="B-spline table value bits, 2..8 (default 8)")
    p.add_argument("--coef-bits", type=_bits, default=8, help="spline coefficient bits, 2..8 (default 8)")
    p.add_argument("--base-bits", type=_bits, default=12, help="SiLU-branch weight bits, 4..16 (default 12)")
    p.add_argument("--silu-bits", type=_bits, default=12, help="SiLU table value bits, 4..16 (default 12)")
    p.add_argument("--table-bits", type=_bits, default=8, help="edge-table entry bits, 2..8 (default 8)")
    p.add_argument("--strategy", default="auto", choices=("auto", "spline", "edge-table"),
                   help="per-layer kernel: auto (default: the planner weighs both per layer), spline (B-spline "
                        "tables + coefficients, small) or edge-table (whole-edge tables, fastest, bigger)")
    p.add_argument("--optimize", default="speed", choices=("speed", "size"),
                   help="auto/edge-table: the fastest plan within the flash budget (default) or the smallest")
    p.add_argument("--flash-budget", type=int, default=None, metavar="BYTES",
                   help="model flash (tables + code) the plan must fit; default: the --board's flash less 32 KiB, "
                        "else 65536")
    p.add_argument("--board", default=None, help="target board: its core ranks the options, its flash sets the budget")
    p.add_argument("--max-error", type=float, default=0.02,
                   help="largest relative RMS output error against the float model on the calibration data that "
                        "the planner accepts (default 0.02)")
    p.add_argument("--base-activation", default=None, metavar="NAME",
                   help="base function of an efficient-kan model (its state dict does not record it): silu "
                        "(assumed), gelu, relu, tanh, sigmoid, identity; non-SiLU bases deploy as edge tables")
    p.add_argument("--fold-silu", action="store_true",
                   help="with --strategy spline: refit each layer's SiLU branch into its spline coefficients "
                        "(no SiLU table, weights or accumulator) where that changes the layer's float outputs by "
                        "at most 1%% RMS; the report states the error")
    p.add_argument("--calibration", type=Path, help=".npy or .csv of model inputs for range calibration")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the report")
    p.add_argument("--plots", action="store_true", help="also draw the edge functions (see `kan2mcu plot`)")
    p.add_argument("--allow-saturation", "--force", dest="allow_saturation", action="store_true",
                   help="write the model even when the quantization guard finds it far from the float model")
    p.add_argument("--prefix", help="which KAN of a state dict holding several (module path before layers.N)")


def _run_generate(args) -> int:
    from kan2mcu.generate import generate_model
    from kan2mcu.quantize import QuantOptions

    options = QuantOptions(act_bits=args.act_bits, spline_bits=args.spline_bits, coef_bits=args.coef_bits,
                           base_bits=args.base_bits, silu_bits=args.silu_bits, table_bits=args.table_bits)
    if args.plots and args.arith != "int":
        from kan2mcu.errors import OptionError

        raise OptionError("--plots compares float and quantized edges: it needs --arith int")
    result = generate_model(args.checkpoint, args.output, name=args.name, arith=args.arith, options=options,
                            calibration=args.calibration, quiet=args.quiet, strategy=args.strategy,
                            optimize=args.optimize, flash_budget=args.flash_budget, board=args.board,
                            max_error=args.max_error, base_activation=args.base_activation,
                            allow_saturation=args.allow_saturation, prefix=args.prefix, fold_silu=args.fold_silu)
    print(f"kan2mcu: wrote {', '.join(result.files)} to {result.folder}", file=sys.stderr)
    if args.plots:
        _plot_folder(result.folder)
    return 0


def _plot_folder(folder: Path) -> None:
    from kan2mcu.plots import plot_model_folder

    written = plot_model_folder(folder)
    print(f"kan2mcu: wrote {len(written)} plots to {folder} (linked from report.md)", file=sys.stderr)


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw each layer's edge functions, float against quantized (PNG)")
    p.add_argument("folder", type=Path, help="a folder written by `kan2mcu generate` (integer back end)")


def _run_plot(args) -> int:
    _plot_folder(args.folder)
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="generate, verify and measure a grid of bit widths and strategies")
    p.add_argument("checkpoint", type=Path, help="checkpoint (as for generate)")
    p.add_argument("-o", "--output", type=Path, required=True, help="sweep folder (resumable: rerun to complete)")
    p.add_argument("--act-bits", default="4,6,8", help="activation code bits, list/range (default 4,6,8)")
    p.add_argument("--spline-bits", default="2,3,4,8", help="B-spline table bits, e.g. 2..8 (default 2,3,4,8)")
    p.add_argument("--coef-bits", default="3,4,8", help="coefficient bits (default 3,4,8)")
    p.add_argument("--strategy", default="spline",
                   help="strategies, comma list of spline, edge-table, auto (the planner) (default spline)")
    p.add_argument("--board", default="qemu-cortex-m4",
                   help="QEMU boards to measure on, comma list, or 'none' (default qemu-cortex-m4)")
    p.add_argument("--base-bits", type=_bits, default=12, help="SiLU-branch weight bits of every point (default 12)")
    p.add_argument("--silu-bits", type=_bits, default=12, help="SiLU table bits of every point (default 12)")
    p.add_argument("--table-bits", type=_bits, default=8, help="edge-table entry bits of every point (default 8)")
    p.add_argument("--calibration", type=Path, help=".npy or .csv of model inputs (as for generate)")
    p.add_argument("--jobs", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local process pool (default) or a Ray cluster (pip install 'kan2mcu[ray]')")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_sweep(args) -> int:
    from kan2mcu.sweep import run_sweep
    from kan2mcu.sweep.grid import STRATEGIES, parse_int_list, parse_name_list

    boards = [] if args.board.strip() == "none" else parse_name_list(args.board, "--board")
    doc = run_sweep(args.checkpoint, args.output, act_bits=parse_int_list(args.act_bits, "--act-bits"),
                    spline_bits=parse_int_list(args.spline_bits, "--spline-bits"),
                    coef_bits=parse_int_list(args.coef_bits, "--coef-bits"),
                    strategies=parse_name_list(args.strategy, "--strategy", STRATEGIES), boards=boards,
                    base_bits=args.base_bits, silu_bits=args.silu_bits, table_bits=args.table_bits,
                    calibration=args.calibration, jobs=args.jobs, executor=args.executor, address=args.address, progress=not args.no_progress)
    counts = doc["counts"]
    print(f"kan2mcu: sweep of {counts['points']} points: {counts['ok']} ok, {counts['failed']} failed; wrote "
          f"sweep.csv, sweep.json, sweep.md and {len(doc['figures'])} figures to {args.output}", file=sys.stderr)
    if counts["failed"]:
        from kan2mcu.sweep.point import PointError

        raise PointError(f"{counts['failed']} of {counts['points']} sweep points failed; their errors are in "
                         f"{args.output / 'sweep.md'}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train kan2mcu's KAN on the embedded default data set (digits)")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--hidden", type=int, nargs="+", default=[16], help="hidden widths (default: 16)")
    p.add_argument("--grid-size", type=int, default=5)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)


def _run_train(args) -> int:
    from kan2mcu.train import train

    result = train(args.output, hidden=tuple(args.hidden), grid_size=args.grid_size, order=args.order,
                   epochs=args.epochs, seed=args.seed)
    print(f"kan2mcu: saved {result.checkpoint} (float accuracy: train {result.train_accuracy:.4f}, "
          f"test {result.test_accuracy:.4f})")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="compile generated C on the host and check it bit for bit")
    p.add_argument("folder", type=Path)
    p.add_argument("--calibration", type=Path, help="model inputs (.npy/.csv) when the checkpoint has no data set")
    p.add_argument("--sanitize", action="store_true", help="also run under AddressSanitizer and UBSan")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="also compare the C with the integer reference on N random input codes")
    p.add_argument("--fuzz", type=float, default=0.0, metavar="SECONDS",
                   help="also fuzz the C for SECONDS (libFuzzer + ASan/UBSan with clang, else a random loop)")


def _run_verify(args) -> int:
    from kan2mcu.verify import verify

    if args.random < 0 or args.fuzz < 0:
        raise OptionError("--random and --fuzz must not be negative")
    verify(args.folder, calibration=args.calibration, sanitize=args.sanitize, random=args.random, fuzz=args.fuzz)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kan2mcu", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kan2mcu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add, run, name in ((_add_train, _run_train, "train"), (_add_generate, _run_generate, "generate"),
                           (_add_verify, _run_verify, "verify"), (_add_plot, _run_plot, "plot"),
                           (_add_sweep, _run_sweep, "sweep")):
        add(sub)
        runners[name] = run
    try:
        from kan2mcu.firmware import cli as firmware_cli
    except ImportError:
        firmware_cli = None
    if firmware_cli is not None:
        firmware_cli.register(sub)  # its sub-commands carry their runner as args.func
    from kan2mcu.export import cli as export_cli

    export_cli.register(sub)
    from kan2mcu import demo

    runners.update(demo.register(sub))
    parser.set_defaults(_runners=runners)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors and exit status 1 for every kan2mcu error, no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run = getattr(args, "func", None) or args._runners[args.command]
        return int(run(args) or 0)
    except Kan2mcuError as exc:
        print(f"kan2mcu: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kan2mcu: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("kan2mcu: error: out of memory (the model is too large for this machine)", file=sys.stderr)
        return 1
    except OSError as exc:  # a file system failure the commands did not anticipate: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kan2mcu: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
