"""`kan2mcu export`: each format is exported from the default digits model and built.

CMake: host gcc (the hosted self-check of the test vectors) and arm-none-eabi-gcc through the
exported toolchain file (a consumer project links the static library into the self-check firmware
and runs it under QEMU). PlatformIO: the library in lib/ of a generated QEMU project, built offline
and PASSing under QEMU. Arduino: the layout and the example sketch compile with arm-none-eabi-g++
against a stub Arduino.h. Zephyr, ESP-IDF: metadata checked against their documented structure.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import require_tool
from kan2mcu.cli import main as cli_main
from kan2mcu.export import FORMATS, export_library
from kan2mcu.firmware.boards import get_board
from kan2mcu.firmware.pio import run_pio
from kan2mcu.firmware.project import write_project
from kan2mcu.generate import generate_model
from kan2mcu.paths import firmware_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("export") / "kan"
    generate_model(digits_checkpoint, folder, quiet=True)
    return folder


@pytest.fixture(scope="module")
def libraries(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("libs")
    return export_library(model, list(FORMATS), out)


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layouts_and_byte_identical_output(model, libraries, tmp_path):
    expected = {
        "platformio": {"library.json", "include/kan.h", "src/kan.c", "examples/basic/main.c", "README.md",
                       "examples/qemu/platformio.ini", "examples/qemu/src/main.c", "examples/qemu/src/kan2mcu_port.h"},
        "arduino": {"library.properties", "src/kan.h", "src/kan.c", "examples/kan_example/kan_example.ino",
                    "README.md"},
        "cmake": {"CMakeLists.txt", "include/kan.h", "src/kan.c", "cmake/arm-none-eabi.cmake", "test/selftest.c",
                  "test/kan_selftest_vectors.h", "README.md", "examples/host/CMakeLists.txt", "examples/host/main.c"},
        "zephyr": {"zephyr/module.yml", "Kconfig", "CMakeLists.txt", "include/kan.h", "src/kan.c", "README.md"},
        "esp-idf": {"idf_component.yml", "CMakeLists.txt", "include/kan.h", "src/kan.c", "README.md"},
    }
    for fmt, folder in libraries.items():
        assert folder.name == "kan" and folder.parent.name == fmt
        assert set(_files(folder)) == expected[fmt], fmt
        assert (folder / ("src/kan.h" if fmt == "arduino" else "include/kan.h")).read_bytes() == (model / "kan.h").read_bytes()
        readme = (folder / "README.md").read_text()
        assert "kan_quantize_input_q(raw, codes)" in readme and "kan_infer(codes, out)" in readme
    again = export_library(model, "cmake,arduino", tmp_path)
    for fmt in ("cmake", "arduino"):
        assert _files(again[fmt]) == _files(libraries[fmt])


def test_cli_formats_and_clean_errors(model, tmp_path, capsys):
    assert cli_main(["export", str(model), "--format", "cmake,zephyr", "--format", "esp-idf", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmake", "esp-idf", "zephyr"]
    assert cli_main(["export", str(model), "--format", "keil", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "kan2mcu: error: --format: unknown format keil" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    assert cli_main(["export", str(tmp_path), "--format", "cmake", "-o", str(tmp_path / "y")]) == 1


def test_cmake_host_gcc_selftest_is_bit_exact(libraries, tmp_path):
    require_tool("cmake")
    require_tool("gcc")
    src, build = libraries["cmake"], tmp_path / "build"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DKAN_BUILD_SELFTEST=ON", "-DKAN_WITH_FLOAT_API=ON",
                    "-DCMAKE_C_COMPILER=gcc", "-DCMAKE_C_FLAGS=-Wall -Wextra -Wconversion -Werror"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    assert (build / "libkan.a").is_file()
    run = subprocess.run([str(build / "kan_selftest")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("PASS: 10 vectors, 0 mismatches"), run.stdout


def test_cmake_selftest_detects_a_wrong_vector(libraries, tmp_path):
    require_tool("cmake")
    src = tmp_path / "kan"
    shutil.copytree(libraries["cmake"], src)
    vectors = src / "test" / "kan_selftest_vectors.h"
    text = vectors.read_text()
    start = text.index("kan_selftest_outputs")
    match = re.compile(r"-?\d+").search(text, text.index("{ ", start))
    vectors.write_text(text[:match.start()] + str(int(match.group()) + 1) + text[match.end():])
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DKAN_BUILD_SELFTEST=ON"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    run = subprocess.run([str(build / "kan_selftest")], capture_output=True, text=True)
    assert run.returncode == 1 and "FAIL: vector 0 output 0" in run.stdout


CONSUMER = """cmake_minimum_required(VERSION 3.13)
project(kan_firmware C)
add_subdirectory({lib} kan)
set(SUPPORT {support})
add_executable(firmware.elf app/main.c ${{SUPPORT}}/common/port_qemu.c ${{SUPPORT}}/common/libc_min.c
               ${{SUPPORT}}/cortexm/startup.c)
set_source_files_properties(${{SUPPORT}}/common/port_qemu.c ${{SUPPORT}}/common/libc_min.c
                            ${{SUPPORT}}/cortexm/startup.c PROPERTIES COMPILE_OPTIONS -fno-tree-loop-distribute-patterns)
target_include_directories(firmware.elf PRIVATE app ${{SUPPORT}}/common {port})
target_compile_options(firmware.elf PRIVATE -O2)
target_link_libraries(firmware.elf PRIVATE kan2mcu::kan gcc)
target_link_options(firmware.elf PRIVATE -nostdlib -nostartfiles -Wl,--gc-sections -L{ld} -L${{CMAKE_CURRENT_SOURCE_DIR}} -Tcortexm.ld)
"""


def test_cmake_arm_toolchain_file_links_the_static_library_and_passes_in_qemu(model, libraries, tmp_path):
    """The CMake static library cross-built with the exported toolchain file, linked into the
    self-check firmware (kan2mcu's main.c and QEMU start-up) and run on an emulated Cortex-M4."""
    require_tool("cmake")
    require_tool("arm-none-eabi-gcc")
    qemu = require_tool("qemu-system-arm")
    board = get_board("qemu-cortex-m4")
    project = write_project(model, board.name, tmp_path / "pio")  # only for its main.c and vectors
    app = tmp_path / "consumer" / "app"
    app.mkdir(parents=True)
    for name in ("main.c", "kan2mcu_test_vectors.h"):
        shutil.copy(project / "src" / name, app / name)
    fw = firmware_dir()
    (tmp_path / "consumer" / "CMakeLists.txt").write_text(CONSUMER.format(
        lib=libraries["cmake"], support=fw / "support", port=fw / "port", ld=fw / "ldscripts"))
    (tmp_path / "consumer" / "memory.ld").write_text(
        "MEMORY\n{\n    FLASH (rx) : ORIGIN = 0x0, LENGTH = 4M\n    RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M\n}\n")
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(tmp_path / "consumer"), "-B", str(build),
         f"-DCMAKE_TOOLCHAIN_FILE={libraries['cmake'] / 'cmake' / 'arm-none-eabi.cmake'}",
         f"-DKAN2MCU_CPU_FLAGS={' '.join(board.cpu_flags)}"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    objdump = subprocess.run(["arm-none-eabi-objdump", "-f", str(build / "kan" / "libkan.a")],
                             capture_output=True, text=True, check=True).stdout
    assert "elf32-littlearm" in objdump
    run = subprocess.run([qemu, *board.qemu_command(build / "firmware.elf")[1:]], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"check":"PASS"' in run.stdout + run.stderr


def test_platformio_library_in_a_qemu_project_builds_offline_and_passes(model, libraries, tmp_path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    project = write_project(model, "qemu-cortex-m4", tmp_path / "proj")
    for name in ("kan.c", "kan.h"):
        (project / "src" / name).unlink()  # the model now comes from lib/ only
    shutil.copytree(libraries["platformio"], project / "lib" / "kan")
    completed = run_pio(project, "qemu-cortex-m4", ("upload",))
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert re.search(r"\|-- kan", completed.stdout), completed.stdout[-3000:]  # LDF found the library
    assert '"check":"PASS"' in completed.stdout


def test_platformio_example_project_builds_and_runs_as_it_is(libraries, tmp_path):
    """The exported PlatformIO library's examples/qemu is a complete firmware project: copied anywhere
    with its library, `kan2mcu pio -- run -d examples/qemu -e qemu-cortex-m4 -t upload` builds it
    offline and runs it under QEMU (its kan2mcu_main prints through kan2mcu_port_write_line)."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    lib = tmp_path / "somewhere" / "kan"
    shutil.copytree(libraries["platformio"], lib)
    readme = (lib / "README.md").read_text()
    assert "int kan2mcu_main(void)" in readme and "kan2mcu_port_write_line" in readme
    assert "kan2mcu pio -- run -d examples/qemu -e qemu-cortex-m4 -t upload" in readme
    status = cli_main(["pio", "--", "run", "-d", str(lib / "examples" / "qemu"), "-e", "qemu-cortex-m4", "-t",
                       "upload"])
    assert status == 0
    completed = run_pio(lib / "examples" / "qemu", "qemu-cortex-m4", ("upload",))  # again, output captured
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "PASS, mismatches: 0" in completed.stdout and completed.stdout.count("largest output: ") == 3


def test_platformio_example_fails_on_a_wrong_expected_output(libraries, tmp_path):
    """The example compares with its vectors for real: one expected output changed, it prints FAIL."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    lib = tmp_path / "kan"
    shutil.copytree(libraries["platformio"], lib)
    main_c = lib / "examples" / "qemu" / "src" / "main.c"
    text = main_c.read_text()
    match = re.compile(r"-?\d+").search(text, text.index("{ ", text.index("example_outputs[N_EXAMPLE]")))
    main_c.write_text(text[:match.start()] + str(int(match.group()) + 1) + text[match.end():])
    completed = run_pio(lib / "examples" / "qemu", "qemu-cortex-m4", ("upload",))
    assert completed.returncode != 0 and "FAIL, mismatches: 1" in completed.stdout, completed.stdout[-2000:]


def test_cmake_example_program_builds_and_runs_on_the_host(libraries, tmp_path):
    """examples/host: a program of one's own using the library (add_subdirectory +
    target_link_libraries) builds with the host compiler and runs as it is."""
    require_tool("cmake")
    require_tool("gcc")
    lib = tmp_path / "kan"
    shutil.copytree(libraries["cmake"], lib)
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(lib / "examples" / "host"), "-B", str(build), "-DCMAKE_C_COMPILER=gcc",
                    "-DCMAKE_C_FLAGS=-Wall -Wextra -Wconversion -Werror"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    run = subprocess.run([str(build / "kan_example")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.endswith("PASS: 3 vectors, 0 mismatches\n"), run.stdout
    assert run.stdout.count("largest output") == 3
    assert "cmake -S examples/host -B build" in (lib / "README.md").read_text()


STUB_ARDUINO = """#pragma once
#include <stdint.h>
struct StubSerial {
    void begin(unsigned long) {}
    void print(const char *) {}
    void print(int) {}
    void print(unsigned long) {}
    void println(const char *) {}
};
extern StubSerial Serial;
unsigned long micros(void);
void delay(unsigned long);
"""


def test_arduino_library_layout_and_sketch_compile(libraries, tmp_path):
    gxx = require_tool("arm-none-eabi-g++")
    lib = libraries["arduino"]
    props = dict(line.split("=", 1) for line in (lib / "library.properties").read_text().splitlines() if line)
    # Arduino library specification 1.5: required fields, a known category, includes that exist
    for key in ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url",
                "architectures"):
        assert props.get(key), key
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.\-]*", props["name"]) and props["name"] == lib.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"])
    assert props["category"] in {"Display", "Communication", "Signal Input/Output", "Sensors", "Device Control",
                                 "Timing", "Data Storage", "Data Processing", "Other"}
    assert (lib / "src" / props["includes"]).is_file()
    sketches = list((lib / "examples").iterdir())
    assert all((s / f"{s.name}.ino").is_file() for s in sketches) and sketches
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "Arduino.h").write_text(STUB_ARDUINO)
    sketch = sketches[0] / f"{sketches[0].name}.ino"
    cpp = tmp_path / "sketch.cpp"  # what the Arduino builder does: Arduino.h first, then the sketch
    cpp.write_text("#include <Arduino.h>\n" + sketch.read_text())
    flags = ["-mcpu=cortex-m0plus", "-mthumb", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{stub}", f"-I{lib / 'src'}"]
    for source, compiler in ((cpp, gxx), (lib / "src" / "kan.c", gxx.replace("g++", "gcc"))):
        result = subprocess.run([compiler, *flags, "-c", str(source), "-o", str(tmp_path / (source.name + ".o"))],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["arm-none-eabi-nm", str(tmp_path / "sketch.cpp.o")], capture_output=True, text=True,
                             check=True).stdout
    assert " U kan_quantize_input_q" in symbols and " U kan_infer" in symbols  # C linkage from C++


def test_zephyr_module_metadata(libraries):
    """zephyr/module.yml per Zephyr's module schema (scripts/zephyr_module.py): name, build.cmake (a
    folder with CMakeLists.txt), build.kconfig (a file); Kconfig symbols used by the CMakeLists."""
    lib = libraries["zephyr"]
    meta = yaml.safe_load((lib / "zephyr" / "module.yml").read_text())
    assert set(meta) <= {"name", "build", "samples", "tests", "boards"}
    assert re.fullmatch(r"[A-Za-z0-9_\-]+", meta["name"])
    assert set(meta["build"]) <= {"cmake", "kconfig", "cmake-ext", "kconfig-ext", "depends", "settings",
                                  "sysbuild-cmake", "sysbuild-kconfig"}
    assert (lib / meta["build"]["cmake"] / "CMakeLists.txt").is_file()
    kconfig = (lib / meta["build"]["kconfig"]).read_text()
    symbols = re.findall(r"^config (\w+)$", kconfig, re.M)
    cmake = (lib / "CMakeLists.txt").read_text()
    assert symbols == ["KAN2MCU_KAN", "KAN2MCU_KAN_FLOAT_API"]
    assert all(f"CONFIG_{s}" in cmake for s in symbols)
    for source in re.findall(r"zephyr_library_sources\(([^)]+)\)", cmake)[0].split():
        assert (lib / source).is_file()
    assert (lib / re.search(r"zephyr_include_directories\((\S+)\)", cmake).group(1) / "kan.h").is_file()


def test_esp_idf_component_metadata(libraries):
    """idf_component.yml per the IDF component manager's manifest format (version a semantic
    version, dependencies a mapping with "idf"), CMakeLists.txt calling idf_component_register with
    existing SRCS and INCLUDE_DIRS."""
    lib = libraries["esp-idf"]
    meta = yaml.safe_load((lib / "idf_component.yml").read_text())
    assert set(meta) <= {"version", "description", "url", "repository", "documentation", "issues", "license",
                         "tags", "dependencies", "targets", "maintainers", "files", "examples", "discussion"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]) and isinstance(meta["description"], str)
    assert isinstance(meta["dependencies"], dict) and meta["dependencies"]["idf"].startswith(">=")
    assert all(isinstance(tag, str) and re.fullmatch(r"[a-z0-9_\-]+", tag) for tag in meta["tags"])
    cmake = (lib / "CMakeLists.txt").read_text()
    call = re.search(r"idf_component_register\((.*?)\)", cmake, re.S).group(1)
    srcs = re.search(r'SRCS\s+((?:"[^"]+"\s*)+)', call).group(1)
    incs = re.search(r'INCLUDE_DIRS\s+((?:"[^"]+"\s*)+)', call).group(1)
    assert all((lib / s).is_file() for s in re.findall(r'"([^"]+)"', srcs))
    assert all((lib / d / "kan.h").is_file() for d in re.findall(r'"([^"]+)"', incs))


def test_platformio_library_json(libraries):
    lib = libraries["platformio"]
    meta = json.loads((lib / "library.json").read_text())
    assert meta["name"] == "kan" and re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert (lib / meta["build"]["srcDir"] / "kan.c").is_file()
    assert (lib / meta["build"]["includeDir"] / "kan.h").is_file()
    assert all((lib / ex["base"] / f).is_file() for ex in meta["examples"] for f in ex["files"])
