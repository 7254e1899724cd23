"""The ``kan2mcu`` command line: train, generate, verify (build and measure come from kan2mcu.firmware)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kan2mcu import __version__
from kan2mcu.errors import Kan2mcuError


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
    p.add_argument("--calibration", type=Path, help=".npy or .csv of model inputs for range calibration")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the report")


def _run_generate(args) -> int:
    from kan2mcu.generate import generate_model
    from kan2mcu.quantize import QuantOptions

    options = QuantOptions(act_bits=args.act_bits, spline_bits=args.spline_bits, coef_bits=args.coef_bits,
                           base_bits=args.base_bits, silu_bits=args.silu_bits, table_bits=args.table_bits)
    result = generate_model(args.checkpoint, args.output, name=args.name, arith=args.arith, options=options,
                            calibration=args.calibration, quiet=args.quiet, strategy=args.strategy,
                            optimize=args.optimize, flash_budget=args.flash_budget, board=args.board,
                            max_error=args.max_error)
    print(f"kan2mcu: wrote {', '.join(result.files)} to {result.folder}", file=sys.stderr)
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


def _run_verify(args) -> int:
    from kan2mcu.verify import verify

    verify(args.folder, calibration=args.calibration, sanitize=args.sanitize)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kan2mcu", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kan2mcu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add, run, name in ((_add_train, _run_train, "train"), (_add_generate, _run_generate, "generate"),
                           (_add_verify, _run_verify, "verify")):
        add(sub)
        runners[name] = run
    try:
        from kan2mcu.firmware import cli as firmware_cli
    except ImportError:
        firmware_cli = None
    if firmware_cli is not None:
        firmware_cli.register(sub)  # its sub-commands carry their runner as args.func
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


if __name__ == "__main__":
    sys.exit(main())
