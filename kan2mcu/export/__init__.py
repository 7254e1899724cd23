"""`kan2mcu export`: a generated model folder as a library for an embedded build system.

``export_library(model_dir, ["cmake", "arduino"], out)`` writes ``out/<format>/<library>/`` for
each format (the library folder is named like the model, as Arduino and ESP-IDF require):

* ``platformio``: library.json, include/, src/, examples/basic/main.c
* ``arduino``: library.properties, src/, examples/<name>_example/<name>_example.ino
* ``cmake``: CMakeLists.txt (static library ``kan2mcu::<prefix>``), include/, src/, test/ (a
  hosted self-check of the test vectors), cmake/arm-none-eabi.cmake
* ``zephyr``: zephyr/module.yml, Kconfig, CMakeLists.txt, include/, src/
* ``esp-idf``: idf_component.yml, CMakeLists.txt (idf_component_register), include/, src/

Each has a README.md with a minimal calling example. Same input, byte-identical files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kan2mcu.errors import OptionError
from kan2mcu.export.formats import FORMATS

__all__ = ["FORMATS", "export_library", "parse_formats"]


def parse_formats(text: str | list[str]) -> list[str]:
    """``"cmake,arduino"`` (or a list of such) -> ["cmake", "arduino"]; OptionError on unknown names."""
    items = [text] if isinstance(text, str) else list(text)
    names = [part.strip().lower() for item in items for part in item.split(",") if part.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise OptionError(f"--format: unknown format {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(FORMATS)} (several: --format cmake,arduino)")
    return list(dict.fromkeys(names))


def export_library(model_dir, formats, out_dir) -> dict[str, Path]:
    """Write the model in ``model_dir`` as a library for each of ``formats`` under ``out_dir``;
    returns format -> library folder. Nothing is written unless every format rendered."""
    from kan2mcu.export.formats import render_format
    from kan2mcu.codegen.model_dir import load_model_folder

    model = load_model_folder(Path(model_dir))
    out_dir = Path(out_dir)
    trees, folders = {}, {}
    for fmt in parse_formats(formats):
        library, files = render_format(fmt, model)
        for rel, content in files.items():
            trees[f"{fmt}/{library}/{rel}"] = content
        folders[fmt] = out_dir / fmt / library
        _refuse_foreign_files(folders[fmt], set(files))
    _write_libraries(out_dir, trees, folders)
    return folders


BUILD_OUTPUT = ".pio"  # PlatformIO's build folder (the README builds examples/qemu in place): replaced freely


def _refuse_foreign_files(folder: Path, written: set) -> None:
    """Export replaces ``folder`` whole: refuse (OptionError) when it holds files export would not
    write (the user's own), instead of deleting them."""
    if not folder.is_dir():
        if folder.exists():
            raise OptionError(f"-o: {folder} is a file, not a library folder")
        return
    foreign = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                     if not p.is_dir() and BUILD_OUTPUT not in p.relative_to(folder).parts
                     and p.relative_to(folder).as_posix() not in written)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OptionError(f"-o: {folder} holds files kan2mcu export does not write ({shown}); export replaces "
                          "the whole library folder: move them, or pick another -o")


def _write_libraries(out_dir: Path, trees: dict, folders: dict) -> None:
    """Write every file into a staging folder first, then swap each library folder in whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kan2mcu-export-", dir=out_dir))
    try:
        for rel, content in trees.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        for fmt, folder in folders.items():
            folder.parent.mkdir(parents=True, exist_ok=True)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging / fmt / folder.name, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
