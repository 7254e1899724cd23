"""Running PlatformIO offline, from any folder, for a user who installed kan2mcu with pip.

* ``PLATFORMIO_CORE_DIR`` points at kan2mcu's own folder (``$KAN2MCU_PLATFORMIO_CORE_DIR``, else
  ``~/.cache/kan2mcu/platformio``), never the user's ``~/.platformio``.
* PlatformIO always wants its ``tool-scons`` package; a stand-in package that runs the pip-installed
  SCons is written there with a ``.piopm`` naming owner "platformio" and the version that the
  installed PlatformIO asks for (read from its own dependency list at run time), so nothing is
  downloaded and any PlatformIO 6.1/6.x works.
* The emulated boards' development platform (``firmware/`` of kan2mcu) is installed there as the
  package ``kan2mcu-qemu`` and refreshed on every call, so generated projects say
  ``platform = kan2mcu-qemu``: no absolute path, and they keep working when copied elsewhere or
  when the venv is recreated.
* Telemetry and the upgrade check are off.

Users run projects with ``kan2mcu pio -- run -d PROJECT ...`` (:func:`pio_main`), which does all of
the above and then runs ``python -m platformio`` with the remaining arguments.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kan2mcu.errors import ToolchainError
from kan2mcu.firmware.toolchain import PLATFORMIO_SPEC, require_python_module
from kan2mcu.paths import firmware_dir

PLATFORM_NAME = "kan2mcu-qemu"

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
    require_python_module("platformio", PLATFORMIO_SPEC)
    try:  # PlatformIO >= 6.1.?: platformio/dependencies.py; older 6.1.x: platformio.__core_packages__
        from platformio.dependencies import get_core_dependencies  # pylint: disable=import-outside-toplevel

        wanted = get_core_dependencies()["tool-scons"]
    except ImportError:
        from platformio import __core_packages__  # pylint: disable=import-outside-toplevel,no-name-in-module

        wanted = __core_packages__["tool-scons"]
    return wanted.lstrip("~^=<> ")


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
    install_platform(core_dir)
    return core_dir


def install_platform(core_dir: Path) -> Path:
    """Mirror kan2mcu's development platform into ``core_dir/platforms/kan2mcu-qemu`` (only changed
    files are written; stale ones removed) with the ``.piopm`` that makes PlatformIO use it by name."""
    source = firmware_dir().resolve()
    target = Path(core_dir) / "platforms" / PLATFORM_NAME
    _mirror(source, target)
    version = json.loads((source / "platform.json").read_text())["version"]
    piopm = json.dumps({"type": "platform", "name": PLATFORM_NAME, "version": version,
                        "spec": {"owner": None, "id": None, "name": PLATFORM_NAME, "requirements": None,
                                 "uri": None}}) + "\n"
    if not (target / ".piopm").is_file() or (target / ".piopm").read_text() != piopm:
        (target / ".piopm").write_text(piopm)
    return target


def _mirror(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in source.iterdir() if p.name != "__pycache__"}
    for item in target.iterdir():
        if item.name not in wanted and item.name != ".piopm":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    for name in sorted(wanted):
        src, dst = source / name, target / name
        if src.is_dir():
            if dst.exists() and not dst.is_dir():
                dst.unlink()
            _mirror(src, dst)
        elif not dst.is_file() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copyfile(src, dst)


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


def printed_command(project_dir: Path, env_name: str, targets: tuple[str, ...] = ()) -> str:
    """The command a user types to build (and run/flash) a project: works from any folder."""
    target_args = "".join(f" -t {t}" for t in targets)
    return f"kan2mcu pio -- run -d {project_dir} -e {env_name}{target_args}"


def run_pio(project_dir: Path, env_name: str, targets: tuple[str, ...] = (), *,
            core_dir: Path | None = None, extra_args: tuple[str, ...] = (),
            timeout: float = 600.0, capture: bool = True, stream=None) -> subprocess.CompletedProcess:
    """``pio run -d project_dir -e env_name [-t target ...]``; returns the completed process
    (stdout and stderr merged into ``stdout`` when ``capture``). With ``stream`` (a text file such as
    sys.stderr) every output line is also echoed there as it comes. Never raises on a non-zero exit."""
    core_dir = prepare_core_dir(core_dir)
    command = pio_command("run", "-d", str(project_dir), "-e", env_name)
    for target in targets:
        command += ["-t", target]
    command += list(extra_args)
    try:
        if stream is None:
            return subprocess.run(command, env=pio_environment(core_dir), timeout=timeout, check=False,
                                  stdout=subprocess.PIPE if capture else None,
                                  stderr=subprocess.STDOUT if capture else None, text=True)
        return _run_streamed(command, pio_environment(core_dir), timeout, stream)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"pio run -e {env_name} timed out after {timeout:.0f} s") from exc


def _run_streamed(command: list[str], env: dict, timeout: float, stream) -> subprocess.CompletedProcess:
    lines = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as process:
        for line in process.stdout:
            lines.append(line)
            stream.write(line)
            stream.flush()
        returncode = process.wait(timeout=timeout)
    return subprocess.CompletedProcess(command, returncode, "".join(lines), None)


def pio_main(args: list[str], core_dir: Path | None = None) -> int:
    """``kan2mcu pio -- ARGS``: PlatformIO with kan2mcu's offline core folder; its exit status."""
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise ToolchainError("kan2mcu pio needs PlatformIO arguments, e.g. kan2mcu pio -- run -d PROJECT")
    core_dir = prepare_core_dir(core_dir)
    return subprocess.run(pio_command(*args), env=pio_environment(core_dir), check=False).returncode
