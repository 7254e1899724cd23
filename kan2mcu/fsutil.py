"""File system checks run before any long work, so a bad output path fails in a second, not after it."""
from __future__ import annotations

import tempfile
from pathlib import Path

from kan2mcu.errors import OptionError


def existing_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path``'s parent (OptionError when it is a file)."""
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(f"-o {path}: {parent} is a file, not a folder")
    return parent


def check_output_folder(path: Path, option: str = "-o") -> None:
    """An output folder: refused at once when ``path`` is an existing file (not a bare OS error
    after the work started) or when nothing can be created there."""
    if Path(path).exists() and not Path(path).is_dir():
        raise OptionError(f"{option} {path}: is a file, not a folder")
    check_writable(path)


def check_writable(path: Path) -> None:
    """Refuse ``path`` when nothing can be created beside it (read-only, no permission, ...).

    Probes by creating a file: os.access says yes to root even on read-only file systems."""
    folder = existing_ancestor(path)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OptionError(f"-o {path}: {folder} is not writable ({exc.strerror or exc})") from None
