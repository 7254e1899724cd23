"""``kan2mcu export MODEL_DIR --format FMT[,FMT...] -o OUT``."""
from __future__ import annotations

import sys
from pathlib import Path


def _run(args) -> int:
    from kan2mcu.export import export_library
    from kan2mcu.fsutil import check_output_folder

    check_output_folder(Path(args.output))
    folders = export_library(Path(args.model_dir), args.format, Path(args.output))
    for fmt, folder in folders.items():
        print(f"{fmt}: {folder}")
    print(f"kan2mcu: exported {len(folders)} librar{'y' if len(folders) == 1 else 'ies'}; see README.md in each",
          file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add the ``export`` sub-command (its runner is ``args.func``)."""
    from kan2mcu.export.formats import FORMATS

    p = subparsers.add_parser("export", help="package a generated model as a PlatformIO/Arduino/CMake/Zephyr/"
                                             "ESP-IDF library")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="generated model folder (kan2mcu generate -o ...)")
    p.add_argument("--format", action="append", required=True,
                   help=f"one or more of {', '.join(FORMATS)}, comma-separated or repeated")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to write OUT/<format>/<name>/ into")
    p.set_defaults(func=_run)
