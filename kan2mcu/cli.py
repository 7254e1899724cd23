"""The ``kan2mcu`` command line: train, generate, verify (build and measure come from kan2mcu.firmware)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kan2mcu import __version__
from kan2mcu.errors import Kan2mcuError, OptionError

DESCRIPTION = ("Deploy Kolmogorov-Arnold Networks to microcontrollers as bit-exact integer C: train or import a KAN, "
               "generate C, verify it on the host, build and measure the firmware (QEMU or a real board). "
               "'kan2mcu COMMAND --help' gives each command's options.")


def _bits(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of bits, got {text!r}") from None


def _add_generate(sub) -> None:
    from kan2mcu.quant.planner import DEFAULT_MAX_ERROR  # pylint: disable=import-outside-toplevel

    p = sub.add_parser("generate", help="quantize a KAN checkpoint and generate C")
    p.add_argument("checkpoint", type=Path, help="kan2mcu checkpoint, efficient-kan state dict, or pykan saveckpt prefix")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write the C model into")
    p.add_argument("--name", default="kan", help="model name and C prefix (default: kan)")
    p.add_argument("--arith", choices=("int", "float"), default="int", help="integer (default) or float32 back end")
    p.add_argument("--act-bits", type=_bits, default=8,
                   help="input code bits per layer, 2..12 (default 8; spline layers take at most 8); an upper "
                        "bound for edge-table layers, whose code width the planner picks within the flash budget")
    p.add_argument("--spline-bits", type=_bits, default=8, help="B-spline table value bits, 2..8 (default 8)")
    p.add_argument("--coef-bits", type=_bits, default=8, help="spline coefficient bits, 2..8 (default 8)")
    p.add_argument("--base-bits", type=_bits, default=12, help="SiLU-branch weight bits, 4..16 (default 12)")
    p.add_argument("--silu-bits", type=_bits, default=12, help="SiLU table value bits, 4..16 (default 12)")
    p.add_argument("--table-bits", type=_bits, default=8, help="edge-table entry bits, 2..16 (default 8; 2..4 are nibbles, "
                        "9..16 halfwords: twice the flash of bytes, finer steps)")
    p.add_argument("--strategy", default="auto", choices=("auto", "spline", "edge-table"),
                   help="per-layer kernel: auto (default: the planner weighs both per layer), spline (B-spline "
                        "tables + coefficients, small) or edge-table (whole-edge tables, fastest, bigger)")
    p.add_argument("--optimize", default="speed", choices=("speed", "size"),
                   help="auto/edge-table: the fastest plan within the flash budget (default) or the smallest")
    p.add_argument("--flash-budget", type=int, default=None, metavar="BYTES",
                   help="model flash (tables, input API and code) the plan must fit; default: the --board's flash less 32 KiB, "
                        "else 65536")
    p.add_argument("--allow-over-budget", action="store_true",
                   help="when no plan fits the flash budget (tables, input API and code), write the smallest one "
                        "anyway instead of stopping")
    p.add_argument("--board", default=None, help="target board: its core ranks the options, its flash sets the budget "
                   "(a core without a multiplier, e.g. qemu-rv32ec, implies --no-mul)")
    p.add_argument("--no-mul", action="store_true",
                   help="multiply-free model: edge-table layers only, requantized by threshold compares and "
                        "shifts (no multiply, divide or libgcc call in the model's code)")
    p.add_argument("--max-error", type=float, default=None,
                   help="largest output error against the float model on the calibration data that the planner "
                        "accepts: RMS error over the float output range (classifiers: also the share of samples "
                        f"whose argmax differs); default {DEFAULT_MAX_ERROR}, i.e. 0.5%% of the output range (then "
                        "only noted in the report when the bit widths cannot reach it)")
    p.add_argument("--task", choices=("classify", "regress"), default=None,
                   help="what the outputs are, for the output-error metric (classify: argmax agreement counts "
                        "too); default: the task recorded in the checkpoint, its data set's, else classify for "
                        "several outputs; the report says which")
    p.add_argument("--base-activation", default=None, metavar="NAME",
                   help="base function of an efficient-kan model (its state dict does not record it): silu "
                        "(assumed), gelu, relu, tanh, sigmoid, identity; non-SiLU bases deploy as edge tables")
    p.add_argument("--fold-silu", action="store_true",
                   help="with --strategy spline: refit each layer's SiLU branch into its spline coefficients "
                        "(no SiLU table, weights or accumulator) where that changes the layer's float outputs by "
                        "at most 1%% RMS; the report states the error")
    p.add_argument("--calibration", type=Path,
                   help=".npy or .csv of model inputs for range calibration (a model trained with `train --data`: "
                        "raw feature rows in --data's formats; default: the training rows its checkpoint keeps)")
    p.add_argument("--eval-data", type=Path, metavar="FILE",
                   help="labelled rows (.csv with header, .npz x/y, or FEATURES.npy,LABELS.npy) to report accuracy, or "
                        "R2 and max |error| for regression, of the float and the generated model on; the target "
                        "column is the one named at training (else a CSV's last column)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the report")
    p.add_argument("--plots", action="store_true", help="also draw the edge functions (see `kan2mcu plot`)")
    p.add_argument("--allow-saturation", "--force", dest="allow_saturation", action="store_true",
                   help="write the model even when the quantization guard finds it far from the float model")
    p.add_argument("--prefix", help="which KAN of a state dict holding several (module path before layers.N)")


def _run_generate(args) -> int:
    from kan2mcu.generate import generate_model
    from kan2mcu.quant.quantize import QuantOptions

    options = QuantOptions(act_bits=args.act_bits, spline_bits=args.spline_bits, coef_bits=args.coef_bits,
                           base_bits=args.base_bits, silu_bits=args.silu_bits, table_bits=args.table_bits,
                           mul_free=args.no_mul)
    if args.plots and args.arith != "int":
        raise OptionError("--plots compares float and quantized edges: it needs --arith int")
    _refuse_ignored_options(args)
    result = generate_model(args.checkpoint, args.output, name=args.name, arith=args.arith, options=options,
                            calibration=args.calibration, quiet=args.quiet, strategy=args.strategy,
                            optimize=args.optimize, flash_budget=args.flash_budget, board=args.board,
                            allow_over_budget=args.allow_over_budget,
                            max_error=args.max_error, base_activation=args.base_activation,
                            allow_saturation=args.allow_saturation, prefix=args.prefix, eval_data=args.eval_data,
                            fold_silu=args.fold_silu, task=args.task)
    print(f"kan2mcu: wrote {', '.join(result.files)} to {result.folder}", file=sys.stderr)
    notes = result.report.get("notes")
    if notes:  # what does not change the result is not a warning: one line points to it
        print(f"kan2mcu: {len(notes)} note{'s' if len(notes) > 1 else ''} in {result.folder / 'report.md'}",
              file=sys.stderr)
    if args.plots:
        _plot_folder(result.folder)
    return 0


# generate's options that only the integer back end uses (quantization, planner, budget, guard's board)
INT_ONLY_OPTIONS = ("act_bits", "spline_bits", "coef_bits", "base_bits", "silu_bits", "table_bits", "strategy",
                    "optimize", "flash_budget", "allow_over_budget", "board", "no_mul", "max_error", "fold_silu")
SPLINE_ONLY_OPTIONS = ("spline_bits", "coef_bits", "base_bits", "silu_bits")  # edge tables tabulate whole edges
EDGE_TABLE_ONLY_OPTIONS = ("table_bits",)


def _apply(options: str) -> str:
    """'apply' for a list of options, 'applies' for one."""
    return "apply" if "," in options else "applies"


def _multiply_free(args) -> bool:
    """Whether generate will plan a multiply-free model (--no-mul, or a board without a multiplier)."""
    if args.no_mul:
        return True
    if args.board is None:
        return False
    from kan2mcu.firmware.boards import get_board

    return not get_board(args.board).has_multiplier


def _refuse_ignored_options(args) -> None:
    """Options the chosen back end or strategy would ignore are refused, not silently dropped:
    --arith float with an option of the integer model, --strategy edge-table with a spline layer's
    widths, --strategy spline with an edge table's entry width."""
    sub = argparse.ArgumentParser().add_subparsers()
    _add_generate(sub)
    defaults = sub.choices["generate"]

    def given(dests):
        return ", ".join(f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != defaults.get_default(d))

    int_only, spline_only, table_only = (given(INT_ONLY_OPTIONS), given(SPLINE_ONLY_OPTIONS),
                                         given(EDGE_TABLE_ONLY_OPTIONS))
    if args.arith != "int" and int_only:
        raise OptionError(f"--arith float writes the float32 model: {int_only} only {_apply(int_only)} to the "
                          "integer model (its quantization, plan and flash budget); leave them out, or use --arith int")
    if args.strategy == "edge-table" and spline_only:
        raise OptionError(f"--strategy edge-table tabulates whole edges: {spline_only} only {_apply(spline_only)} to "
                          "spline layers; leave them out, or use --strategy spline or auto (entry width: --table-bits)")
    if args.arith == "int" and spline_only and _multiply_free(args):
        why = "--no-mul" if args.no_mul else f"--board {args.board} (no multiplier)"
        raise OptionError(f"{why} plans edge-table layers only: {spline_only} only {_apply(spline_only)} to spline "
                          "layers; leave them out (entry width: --table-bits)")
    if args.strategy == "spline" and table_only:
        raise OptionError(f"--strategy spline has no edge tables: {table_only} only applies to "
                          "edge-table layers; leave it out, or use --strategy edge-table or auto")


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

    from kan2mcu.fsutil import check_output_folder

    check_output_folder(args.output)
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
    p = sub.add_parser("train", help="train kan2mcu's KAN on your own data (--data) or the default data set (digits)",
                       description="Train kan2mcu's own KAN and save a checkpoint for `generate`. Without --data it "
                                   "trains on scikit-learn's digits; with --data on your table: rows are split "
                                   "deterministically (--seed) into training and held-out rows, each input column "
                                   "is scaled so its training min..max spans the grid [-1, 1] (the scaling is stored "
                                   "and the generated C applies it to raw feature values), classification trains "
                                   "with cross-entropy and regression with MSE on the standardized target.")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--data", type=Path, metavar="FILE",
                   help="your data: .csv with a header row, .npz with arrays x [N, F] and y [N], or a .npy of "
                        "features [N, F] (then --target names the labels .npy)")
    p.add_argument("--target", metavar="COLUMN",
                   help="with --data: the target column of the CSV (every other column is a feature), or the "
                        "labels .npy beside a .npy of features; ignored for .npz (y)")
    p.add_argument("--task", choices=("classify", "regress"), default=None,
                   help="with --data: classify (cross-entropy, accuracy; text labels are mapped to classes and the "
                        "mapping kept) or regress (MSE, R2); default: inferred from the target (text or up "
                        "to 20 distinct whole numbers: classify; fractions or more values: regress)")
    p.add_argument("--widths", default=None, metavar="I,H,...,O",
                   help="with --data: layer widths, inputs first and outputs last, e.g. 8,16,3 "
                        "(default: features,HIDDEN,classes or features,HIDDEN,1)")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths when --widths is not given (default: 16)")
    p.add_argument("--grid-size", type=int, default=5, help="grid intervals per input (default 5)")
    p.add_argument("--order", type=int, default=3, help="B-spline order k (default 3, cubic)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 60 on digits, 100 with --data)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 0.01, cosine schedule)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch rows (default 64)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="with --data: the share of rows held out for evaluation (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and split (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--qat", action="store_true",
                   help="then fine-tune for the bit widths below with quantization-aware training (as `finetune`)")
    _add_qat_knobs(p, epochs_flag="--qat-epochs")


def _add_qat_knobs(p, epochs_flag: str) -> None:
    p.add_argument("--act-bits", type=_bits, help="QAT: input code bits per layer, 2..8 (default 8)")
    p.add_argument("--spline-bits", type=_bits, help="QAT: B-spline table value bits, 2..8 (default 8)")
    p.add_argument("--coef-bits", type=_bits, help="QAT: spline coefficient bits, 2..8 (default 8)")
    p.add_argument("--base-bits", type=_bits, help="QAT: SiLU-branch weight bits, 4..16 (default 12)")
    p.add_argument("--silu-bits", type=_bits, help="QAT: SiLU table value bits, 4..16 (default 12)")
    p.add_argument(epochs_flag, dest="qat_epochs", type=int, default=None, help="QAT epochs (default 10)")


_QAT_KNOBS = ("act_bits", "spline_bits", "coef_bits", "base_bits", "silu_bits")


def _qat_options(args):
    from kan2mcu.errors import OptionError
    from kan2mcu.quant.quantize import QuantOptions
    from kan2mcu.quant.strategies import spline

    options = QuantOptions(**{k: getattr(args, k) for k in _QAT_KNOBS if getattr(args, k) is not None})
    if options.act_bits > spline.MAX_CODE_BITS:  # QAT trains spline layers, whose codes are bytes
        raise OptionError(f"--act-bits must be an integer in 2..{spline.MAX_CODE_BITS}, got {options.act_bits} "
                          "(quantization-aware training trains spline layers, whose codes are bytes)")
    return options


def _run_train(args) -> int:
    from kan2mcu.training.train import parse_widths, train, train_on_data

    given = [f"--{k.replace('_', '-')}" for k in _QAT_KNOBS + ("qat_epochs",) if getattr(args, k) is not None]
    if given and not args.qat:
        raise OptionError(f"{', '.join(given)}: bit widths of quantization-aware training; add --qat")
    qat = _qat_options(args) if args.qat else None  # bits checked before training
    if args.hidden is not None and args.widths is not None:
        raise OptionError("--hidden and --widths both set the hidden widths: give one (--widths lists every layer, "
                          "--hidden only the hidden ones)")
    hidden = tuple(args.hidden) if args.hidden is not None else (16,)
    if args.data is None:
        for option, value in (("--target", args.target), ("--task", args.task), ("--widths", args.widths)):
            if value is not None:
                raise OptionError(f"{option} needs --data FILE (without --data, train uses digits)")
        result = train(args.output, hidden=hidden, grid_size=args.grid_size, order=args.order,
                       epochs=60 if args.epochs is None else args.epochs, seed=args.seed, lr=args.lr,
                       batch_size=args.batch_size, progress=not args.no_progress, qat=qat,
                       qat_epochs=args.qat_epochs)
    else:
        if args.target is None and args.data.suffix.lower() != ".npz":
            raise OptionError("--data needs --target COLUMN (the CSV column to predict, or the labels .npy)")
        result = train_on_data(args.output, args.data, target=args.target, task=args.task,
                               widths=parse_widths(args.widths) if args.widths else None,
                               hidden=hidden, grid_size=args.grid_size,
                               order=args.order, epochs=100 if args.epochs is None else args.epochs, seed=args.seed,
                               lr=args.lr, batch_size=args.batch_size,
                               test_fraction=args.test_fraction, progress=not args.no_progress, qat=qat,
                               qat_epochs=args.qat_epochs)
    print(f"kan2mcu: saved {result.checkpoint} ({result.summary()})")
    for warning in result.warnings:
        print(f"kan2mcu: warning: {warning}", file=sys.stderr)
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="quantization-aware fine-tuning for the spline strategy at given bit widths")
    p.add_argument("checkpoint", type=Path, help="kan2mcu checkpoint, efficient-kan state dict, or pykan saveckpt prefix")
    p.add_argument("-o", "--output", type=Path, required=True, help="kan2mcu checkpoint file to write")
    _add_qat_knobs(p, epochs_flag="--epochs")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default=None,
                   help="data set to fine-tune on (default: the checkpoint's own; efficient-kan and pykan "
                        "checkpoints name none: e.g. digits)")
    p.add_argument("--prefix", help="which KAN of a state dict holding several (module path before layers.N)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_finetune(args) -> int:
    from kan2mcu.training.qat import DEFAULT_EPOCHS, DEFAULT_LR, finetune

    options = _qat_options(args)
    result = finetune(args.checkpoint, args.output, options, dataset=args.dataset,
                      epochs=DEFAULT_EPOCHS if args.qat_epochs is None else args.qat_epochs,
                      lr=DEFAULT_LR if args.lr is None else args.lr, seed=args.seed, prefix=args.prefix,
                      progress=not args.no_progress)
    print(f"kan2mcu: saved {result.checkpoint} ({result.summary(options)}); deploy it with: kan2mcu generate "
          f"{result.checkpoint} -o DIR --strategy spline --act-bits {options.act_bits} --spline-bits "
          f"{options.spline_bits} --coef-bits {options.coef_bits}")
    if result.quantized_after < result.ptq_before:
        print(f"kan2mcu: warning: the fine-tuned integer model scores lower than PTQ of the original "
              f"({result.quantized_after:.4f} < {result.ptq_before:.4f}); keep the original, or try other --epochs/--lr",
              file=sys.stderr)
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="compile generated C on the host and check it bit for bit")
    p.add_argument("folder", type=Path)
    p.add_argument("--calibration", type=Path,
                   help="inputs to compare on, for a model trained on no named data set: model inputs (.npy/.csv); "
                        "for a model trained with `train --data`, raw feature rows as generate --calibration takes")
    p.add_argument("--sanitize", action="store_true", help="also run under AddressSanitizer and UBSan")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="also compare the C with the integer reference on N random input codes")
    p.add_argument("--fuzz", type=float, default=0.0, metavar="SECONDS",
                   help="also fuzz the C for SECONDS, at least 1 (libFuzzer + ASan/UBSan with clang, else a random "
                        "loop), then compare the C with the integer reference on the inputs the fuzzer kept")


def _run_verify(args) -> int:
    from kan2mcu.check.hostcc import check_fuzz_seconds
    from kan2mcu.check.verify import verify

    if args.random < 0:
        raise OptionError("--random must not be negative")
    check_fuzz_seconds(args.fuzz)
    if args.calibration is not None:
        from kan2mcu.codegen.model_dir import load_model_folder

        dataset = load_model_folder(args.folder).manifest.get("dataset")
        if dataset:  # verify would compare on the data set's test split and drop the file without a word
            raise OptionError(f"--calibration {args.calibration}: {args.folder} was trained on the {dataset} data set, "
                              f"which verify compares on (its test split); leave --calibration out")
    verify(args.folder, calibration=args.calibration, sanitize=args.sanitize, random=args.random, fuzz=args.fuzz)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kan2mcu", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kan2mcu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add, run, name in ((_add_train, _run_train, "train"), (_add_generate, _run_generate, "generate"),
                           (_add_finetune, _run_finetune, "finetune"), (_add_verify, _run_verify, "verify"), (_add_plot, _run_plot, "plot"),
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
