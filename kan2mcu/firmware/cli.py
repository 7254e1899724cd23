"""``kan2mcu build`` and ``kan2mcu measure``.

The main CLI calls :func:`register` with its ``add_subparsers()`` object; every sub-command sets
``func`` (``args.func(args) -> int`` exit status) and raises :class:`kan2mcu.errors.Kan2mcuError`
with a one-line message on user errors. ``python -m kan2mcu.firmware.cli`` runs them stand-alone.

Python API: :func:`build` and :func:`measure`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kan2mcu.errors import Kan2mcuError
from kan2mcu.fsutil import check_output_folder
from kan2mcu.firmware import measure as measure_module
from kan2mcu.firmware.boards import BOARDS, get_board
from kan2mcu.firmware.elfinfo import read_elf
from kan2mcu.firmware.pio import pio_main, printed_command
from kan2mcu.firmware.project import write_project
from kan2mcu.codegen.model_dir import load_model_folder


def default_project_dir(model_dir: Path, board: str) -> Path:
    """``./build/<model name>-<board>`` (the model folder itself is never written to)."""
    return Path.cwd() / "build" / f"{load_model_folder(model_dir).name}-{board}"


def build(model_dir: Path, board: str, project_dir: Path | None = None) -> Path:
    """Write the PlatformIO project of ``model_dir`` for ``board`` (default ``./build/<model>-<board>``)
    and, for an emulated board, compile it offline. Returns the project folder."""
    board_info = get_board(board)
    project_dir = Path(project_dir) if project_dir is not None else default_project_dir(model_dir, board)
    if board_info.is_qemu:
        measure_module.build_firmware(model_dir, board, project_dir)
    else:
        write_project(model_dir, board, project_dir)
    return Path(project_dir).resolve()


def measure(model_dirs: list[Path], board: str, out_dir: Path | None = None, port: str | None = None) -> dict:
    """Build, run, check and report (see :mod:`kan2mcu.firmware.measure`)."""
    return measure_module.measure([Path(d) for d in model_dirs], board, out_dir, port)


def _run_build(args: argparse.Namespace) -> int:
    board = get_board(args.board)
    if args.output:
        check_output_folder(Path(args.output))
    project_dir = build(Path(args.model_dir), args.board, Path(args.output) if args.output else None)
    print(f"project: {project_dir}")
    if board.is_qemu:
        elf = measure_module.firmware_elf(project_dir, board)
        info = read_elf(elf)
        print(f"firmware: {elf} (flash {info.flash_bytes} bytes, RAM {info.ram_bytes} bytes)")
        print(f"run it: {printed_command(project_dir, board.name, ('upload',))}")
    else:
        print(f"build and flash it (network needed once for the {board.pio_platform} platform): "
              f"{printed_command(project_dir, board.name, ('upload',))} --upload-port PORT")
    return 0


def _run_pio(args: argparse.Namespace) -> int:
    return pio_main(list(args.pio_args))


def _run_measure(args: argparse.Namespace) -> int:
    if args.output:
        check_output_folder(Path(args.output))
    report = measure([Path(d) for d in args.model_dirs], args.board,
                     Path(args.output) if args.output else None, args.port)
    if args.json:  # stdout is pure JSON; the table goes to stderr
        print(report["markdown"], file=sys.stderr)
        print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2))
    else:
        print(report["markdown"])
    failed = [m["model"] for m in report["models"] if m["check"] != "PASS"]
    if failed:
        print(f"self-check FAILED for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    """Add the ``build`` and ``measure`` sub-commands to an argparse sub-parser group."""
    boards_help = "board: " + ", ".join(BOARDS)
    build_parser = subparsers.add_parser("build", help="write (and for qemu-* boards compile) the firmware project")
    build_parser.add_argument("model_dir", metavar="DIR", help="generated model folder")
    build_parser.add_argument("--board", required=True, help=boards_help)
    build_parser.add_argument("-o", "--output", metavar="PROJECT_DIR", help="project folder (default ./build/<model>-<board>)")
    build_parser.set_defaults(func=_run_build)

    measure_parser = subparsers.add_parser(
        "measure", help="build, run and check the firmware; report instructions, cycle ESTIMATE, flash, RAM")
    measure_parser.add_argument("model_dirs", metavar="DIR", nargs="+", help="generated model folder(s), side by side")
    measure_parser.add_argument("--board", required=True, help=boards_help)
    measure_parser.add_argument("-o", "--output", metavar="OUT", help="folder for the projects, measure.json and measure.md")
    measure_parser.add_argument("--port", help="serial port of a real board (flash with pio, read the result line)")
    measure_parser.add_argument("--json", action="store_true",
                                help="print the report as JSON on stdout (the table goes to stderr)")
    measure_parser.set_defaults(func=_run_measure)

    pio_parser = subparsers.add_parser(
        "pio", help="run PlatformIO offline with kan2mcu's core folder and platform: kan2mcu pio -- run -d PROJECT")
    pio_parser.add_argument("pio_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                            help="arguments for PlatformIO, after --")
    pio_parser.set_defaults(func=_run_pio)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m kan2mcu.firmware.cli``)."""
    parser = argparse.ArgumentParser(prog="kan2mcu-firmware")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Kan2mcuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
