"""Running PlatformIO offline.

* ``PLATFORMIO_CORE_DIR`` points at kan2mcu's own folder (``$KAN2MCU_PLATFORMIO_CORE_DIR``, else
  ``~/.cache/kan2mcu/platformio``), never the user's ``~/.platformio``.
* PlatformIO always wants its ``tool-scons`` package; a stand-in package that runs the pip-installed
  SCons (``scons==4.11.1``) is written there with a ``.piopm`` naming owner "platformio" and the
  version the pinned PlatformIO asks for, so nothing is downloaded.
* Telemetry and the upgrade check are off.
* Emulated boards use the development platform ``firmware/`` (``platform = symlink://...``), so
  ``pio run`` reaches no registry. Real-board environments use registry platforms and need a network.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kan2mcu.errors import ToolchainError
from kan2mcu.firmware.toolchain import require_python_module

SCONS_RUNNER = '''"""kan2mcu stand-in for PlatformIO's tool-scons: runs the pip-installed SCons."""
import sys

from SCons.Script import main

if __name__ == "__main__":
    sys.exit(main())
'''


def default_core_dir() -> Path:
    """The PlatformIO core folder kan2mcu uses."""
    configured = os.environ.get("KAN2MCU_PLATFORMIO_CORE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "kan2mcu" / "platformio"


def tool_scons_version() -> str:
    """The tool-scons version the installed PlatformIO requires (e.g. "4.41101.0")."""
    require_python_module("platformio", "platformio==6.2.0")
    from platformio.dependencies import get_core_dependencies  # pylint: disable=import-outside-toplevel

    return get_core_dependencies()["tool-scons"].lstrip("~^=<> ")


def prepare_core_dir(core_dir: Path | None = None) -> Path:
    """Create the core folder with the offline tool-scons stand-in; returns the folder."""
    require_python_module("SCons", "scons==4.11.1")
    core_dir = Path(core_dir) if core_dir is not None else default_core_dir()
    package_dir = core_dir / "packages" / "tool-scons"
    package_dir.mkdir(parents=True, exist_ok=True)
    version = tool_scons_version()
    files = {
        "package.json": json.dumps({"name": "tool-scons", "version": version,
                                    "description": "kan2mcu stand-in: pip-installed SCons"}) + "\n",
        "scons.py": SCONS_RUNNER,
        ".piopm": json.dumps({"type": "tool", "name": "tool-scons", "version": version,
                              "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                                       "requirements": None, "uri": None}}) + "\n",
    }
    for name, text in files.items():
        path = package_dir / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return core_dir


def pio_environment(core_dir: Path) -> dict[str, str]:
    """Environment variables for an offline, quiet ``pio``."""
    env = dict(os.environ)
    env.update({
        "PLATFORMIO_CORE_DIR": str(core_dir),
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
        "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "3650",
        "PLATFORMIO_SETTING_CHECK_PRUNE_SYSTEM_THRESHOLD": "0",
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_NO_ANSI": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def pio_command(*args: str) -> list[str]:
    """``pio`` run through this Python interpreter (the one with the pinned PlatformIO)."""
    return [sys.executable, "-m", "platformio", *args]


def run_pio(project_dir: Path, env_name: str, targets: tuple[str, ...] = (), *,
            core_dir: Path | None = None, extra_args: tuple[str, ...] = (),
            timeout: float = 600.0, capture: bool = True) -> subprocess.CompletedProcess:
    """``pio run -d project_dir -e env_name [-t target ...]``; returns the completed process
    (stdout and stderr merged into ``stdout`` when ``capture``). Never raises on a non-zero exit."""
    core_dir = prepare_core_dir(core_dir)
    command = pio_command("run", "-d", str(project_dir), "-e", env_name)
    for target in targets:
        command += ["-t", target]
    command += list(extra_args)
    try:
        return subprocess.run(command, env=pio_environment(core_dir), timeout=timeout, check=False,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None, text=True)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"pio run -e {env_name} timed out after {timeout:.0f} s") from exc
