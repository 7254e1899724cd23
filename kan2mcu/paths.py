"""Where the data files shipped with kan2mcu live (source tree or installed wheel)."""
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def templates_dir() -> Path:
    """Folder of the Jinja2 templates (``templates/`` in the repo, ``kan2mcu/templates`` in a wheel)."""
    return _first_existing(_PKG / "templates", _PKG.parent / "templates")


def firmware_dir() -> Path:
    """Folder of the firmware skeleton (``firmware/`` in the repo)."""
    return _first_existing(_PKG / "firmware_skeleton", _PKG.parent / "firmware")
