"""Portable PlatformIO projects, `kan2mcu pio`, real-board checks before a build, pure JSON
from `measure --json`, and the tool-scons stand-in following the installed PlatformIO."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool
from kan2mcu.errors import BoardError, ToolchainError
from kan2mcu.firmware import pio
from kan2mcu.firmware.boards import get_board
from kan2mcu.firmware.cli import main as firmware_main
from kan2mcu.firmware.serial_measure import check_port, missing_packages, require_real_board

FIXTURES = Path(__file__).parent / "fixtures"
INT_MODEL = FIXTURES / "tiny_model"


def _kan2mcu(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "kan2mcu", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_copied_project_builds_offline_with_the_printed_command(tmp_path):
    """Build, copy the project elsewhere, point kan2mcu at a brand-new PlatformIO core folder (as
    after recreating the venv or on another machine) and run the command `build` printed."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    built = _kan2mcu("build", str(INT_MODEL), "--board", "qemu-cortex-m4", "-o", str(tmp_path / "p"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    printed = [line for line in built.stdout.splitlines() if line.startswith("run it: ")][0][len("run it: "):]
    assert printed == f"kan2mcu pio -- run -d {tmp_path / 'p'} -e qemu-cortex-m4 -t upload"
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "p", moved, ignore=shutil.ignore_patterns(".pio"))
    ini = (moved / "platformio.ini").read_text()
    assert "/" not in "".join(line for line in ini.splitlines() if not line.startswith(";"))  # no paths at all
    env = dict(os.environ, KAN2MCU_PLATFORMIO_CORE_DIR=str(tmp_path / "fresh-core"))
    args = printed.replace(str(tmp_path / "p"), str(moved)).split()[1:]  # drop "kan2mcu": run it as a module
    run = _kan2mcu(*args, cwd=tmp_path / "elsewhere", env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert '"check":"PASS"' in run.stdout + run.stderr
    assert (tmp_path / "fresh-core" / "platforms" / pio.PLATFORM_NAME / "platform.json").is_file()


def test_pio_wrapper_needs_arguments(capsys):
    assert firmware_main(["pio"]) == 2
    assert "kan2mcu pio needs PlatformIO arguments" in capsys.readouterr().err


def test_platform_mirror_follows_the_source(tmp_path):
    target = pio.install_platform(tmp_path)
    stale = target / "stale.txt"
    stale.write_text("old")
    (target / "platform.json").write_text("{}")
    pio.install_platform(tmp_path)
    assert not stale.exists()
    assert json.loads((target / "platform.json").read_text())["name"] == "kan2mcu-qemu"
    assert json.loads((target / ".piopm").read_text())["name"] == pio.PLATFORM_NAME


def test_tool_scons_stand_in_follows_the_installed_platformio(tmp_path):
    from platformio.dependencies import get_core_dependencies

    wanted = get_core_dependencies()["tool-scons"].lstrip("~^=<> ")
    assert pio.tool_scons_version() == wanted
    core = pio.prepare_core_dir(tmp_path)
    piopm = json.loads((core / "packages" / "tool-scons" / ".piopm").read_text())
    assert piopm["version"] == wanted and piopm["spec"]["owner"] == "platformio"


def test_pyproject_pins():
    import tomllib

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"]
    assert "platformio>=6.1,<7" in deps
    assert any(d.lower().startswith("pyyaml") for d in deps)


def test_real_board_needs_a_port_before_anything(tmp_path):
    pico = get_board("pico")
    with pytest.raises(BoardError, match="give --port PORT.*serial ports here: /dev/ttyACM7"):
        check_port(None, pico, ports=lambda: ["/dev/ttyACM7"])
    with pytest.raises(BoardError, match="serial port /dev/ttyNOPE not found"):
        check_port("/dev/ttyNOPE", pico, ports=lambda: [])
    check_port("rfc2217://host:4000", pico, ports=lambda: [])


def test_missing_platform_offline_is_a_clear_error_at_once(tmp_path):
    pico = get_board("pico")
    assert missing_packages(tmp_path, pico) == ["platform raspberrypi"]
    with pytest.raises(ToolchainError, match="platform raspberrypi of pico not installed.*cannot be reached.*"
                                             "kan2mcu pio -- pkg install -g -p raspberrypi"):
        require_real_board(pico, "/dev/null", core_dir=tmp_path, online=lambda: False)
    # installed platform but not its toolchain
    platform = tmp_path / "platforms" / "raspberrypi"
    platform.mkdir(parents=True)
    (platform / "platform.json").write_text(json.dumps({"packages": {
        "toolchain-rp2040-earlephilhower": {"type": "toolchain", "optional": True},
        "toolchain-gccarmnoneeabi": {"type": "toolchain"}, "framework-arduinopico": {"type": "framework"}}}))
    assert missing_packages(tmp_path, pico) == ["toolchain toolchain-gccarmnoneeabi"]
    (tmp_path / "packages" / "toolchain-gccarmnoneeabi").mkdir(parents=True)
    require_real_board(pico, "/dev/null", core_dir=tmp_path, online=lambda: False)


def test_measure_real_board_without_port_fails_before_building(tmp_path, capsys):
    assert firmware_main(["measure", str(INT_MODEL), "--board", "pico", "-o", str(tmp_path / "m")]) == 2
    assert "give --port PORT" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_measure_json_stdout_is_pure_json(tmp_path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    run = _kan2mcu("measure", str(INT_MODEL), "--board", "qemu-cortex-m3", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)  # the whole of stdout
    assert report["board"] == "qemu-cortex-m3" and report["models"][0]["check"] == "PASS"
    assert "| check |" in run.stderr


def test_a_users_platformio_6_1_is_kept_and_measure_works(tmp_path):
    """kan2mcu's requirement accepts PlatformIO 6.1.18 (pip keeps it), and measure runs with it: the
    tool-scons stand-in carries the version 6.1.18 asks for (4.40801.0, not 6.2's 4.41101.0)."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        from pip._vendor.packaging.specifiers import SpecifierSet
    assert "6.1.18" in SpecifierSet(">=6.1,<7") and "7.0.0" not in SpecifierSet(">=6.1,<7")
    target = tmp_path / "pio61"
    fetched = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              "platformio==6.1.18"], capture_output=True, text=True)
    if fetched.returncode != 0:
        pytest.skip("platformio 6.1.18 cannot be installed here: " + fetched.stderr.strip()[-200:])
    env = dict(os.environ, PYTHONPATH=str(target), KAN2MCU_PLATFORMIO_CORE_DIR=str(tmp_path / "core"))
    version = subprocess.run([sys.executable, "-c", "import platformio; print(platformio.__version__)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "6.1.18"
    run = _kan2mcu("measure", str(INT_MODEL), "--board", "qemu-cortex-m3", "--json", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["models"][0]["check"] == "PASS"
    piopm = json.loads((tmp_path / "core" / "packages" / "tool-scons" / ".piopm").read_text())
    assert piopm["version"] == "4.40801.0"


def test_non_editable_install_builds_runs_and_exports(tmp_path):
    """As a user who ran `pip install kan2mcu`: the wheel's kan2mcu (first on sys.path) writes a
    project whose printed command builds and PASSes offline, and exports a library."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    root = Path(__file__).parents[1]
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(root)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip("cannot build the wheel here (hatchling not installable): " + built.stderr.strip()[-200:])
    wheel = next(wheel_dir.glob("kan2mcu-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(site), KAN2MCU_PLATFORMIO_CORE_DIR=str(tmp_path / "core"))
    where = subprocess.run([sys.executable, "-c", "import kan2mcu.paths as p; print(p.firmware_dir())"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site))
    out = _kan2mcu("build", str(INT_MODEL), "--board", "qemu-cortex-m0", "-o", str(tmp_path / "p"), cwd=tmp_path,
                   env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.splitlines()[-1][len("run it: "):].split()
    shutil.rmtree(tmp_path / "p" / ".pio")
    run = _kan2mcu(*printed[1:], cwd=tmp_path, env=env)
    assert run.returncode == 0 and '"check":"PASS"' in run.stdout + run.stderr, run.stdout[-2000:]
    exported = _kan2mcu("export", str(INT_MODEL.parent / "tiny_model_float"), "--format", "zephyr", "-o",
                        str(tmp_path / "lib"), cwd=tmp_path, env=env)
    assert exported.returncode == 0 and (tmp_path / "lib" / "zephyr" / "tinyf" / "zephyr" / "module.yml").is_file()
