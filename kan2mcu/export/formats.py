"""One function per export format: the files of the library folder (relative path -> text).

The numbers (test vectors, probe inputs and the codes the Python quantizer gives them) are
prepared here; the templates in templates/export only lay them out.
"""
from __future__ import annotations

import json

import jinja2
import numpy as np

from kan2mcu import __version__
from kan2mcu.codegen.model_dir import ModelFolder
from kan2mcu.paths import firmware_dir, templates_dir

N_RAW_PROBES = 4
N_EXAMPLE_VECTORS = 3  # test vectors the example projects run


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / "export")),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


def _raw_doc(model: ModelFolder) -> str:
    text = (model.path / model.manifest["headers"][0]).read_text()
    if "_INPUT_RAW_FEATURES 1" in text:
        return ("the feature values in Q15.16 fixed point (raw = value * 65536), scaled per column as in "
                "training (the header lists the scaling)")
    if "_INPUT_RAW_Q16 1" in text:
        return "the model inputs x in Q15.16 fixed point (x = raw / 65536)"
    return (f"raw values as the model was trained on them, x = raw * {model.prefix.upper()}_INPUT_RAW_SCALE"
            f" + {model.prefix.upper()}_INPUT_RAW_OFFSET")


def base_context(model: ModelFolder, fmt: str, title: str) -> dict:
    """Template data shared by every format."""
    manifest = model.manifest
    return {
        "name": model.name, "prefix": model.prefix, "P": model.prefix.upper(), "library": model.name,
        "format": fmt, "format_title": title, "version": __version__, "arith": model.arith,
        "model_sha256": manifest.get("model_sha256", "unknown"), "input_size": manifest["input_size"],
        "output_size": manifest["output_size"], "header": manifest["headers"][0], "source": manifest["sources"][0],
        "raw_doc": _raw_doc(model) if model.arith == "int" else "float model inputs",
        "kconfig": f"KAN2MCU_{model.prefix.upper()}",
        "core_flags": core_flags(), "mul_free": bool(manifest.get("options", {}).get("mul_free")),
    }


def core_flags() -> list[dict]:
    """The compiler flags of each core kan2mcu measures on (its emulated boards'), one row per core."""
    from kan2mcu.firmware.boards import BOARDS, QEMU_BOARDS  # pylint: disable=import-outside-toplevel

    return [{"core": BOARDS[name].core, "flags": f"{BOARDS[name].gcc_prefix}gcc {' '.join(BOARDS[name].cpu_flags)}"}
            for name in QEMU_BOARDS]


def _model_files(model: ModelFolder, header_dir: str, source_dir: str) -> dict:
    files = {}
    for name in model.manifest["headers"]:
        files[f"{header_dir}/{name}"] = (model.path / name).read_text()
    for name in model.manifest["sources"]:
        files[f"{source_dir}/{name}"] = (model.path / name).read_text()
    return files


def _readme(env, ctx: dict, usage: str) -> str:
    return env.get_template("README.md.j2").render(ctx, usage=usage)


def selftest_context(model: ModelFolder) -> dict:
    """Test vectors for test/selftest.c; for integer models also int32 probes of the raw quantizer
    with the codes that kan2mcu's Python quantizer gives them."""
    vectors = model.vectors
    ctx = {"input_ctype": model.manifest["input_ctype"], "output_ctype": model.manifest["output_ctype"],
           "tolerance": repr(float(vectors.get("abs_tolerance", 0.0)))}
    if model.arith == "int":
        from kan2mcu.codegen.bundle import load_bundle
        from kan2mcu.quant.input_codec import input_codec, probe_raws, quantize_raw

        ir, qmodel = load_bundle(model.path)
        codec = input_codec(qmodel, ir.metadata.get("input_transform"))
        raws = probe_raws(qmodel, codec, np.random.default_rng(0), N_RAW_PROBES * qmodel.in_features)
        ctx.update(inputs=vectors["inputs"], outputs=vectors["outputs"],
                   raw_inputs=[[_c_int32(v) for v in row] for row in raws.tolist()],
                   raw_codes=quantize_raw(qmodel, codec, raws).tolist())
    else:
        ctx.update(inputs=[[_c_float(v) for v in row] for row in vectors["inputs"]],
                   outputs=[[_c_float(v) for v in row] for row in vectors["outputs"]])
    return ctx


def example_context(model: ModelFolder) -> dict:
    """Template data of the example projects: the first N_EXAMPLE_VECTORS test vectors."""
    vectors = model.vectors
    ctx = {"input_ctype": model.manifest["input_ctype"], "output_ctype": model.manifest["output_ctype"],
           "tolerance": repr(float(vectors.get("abs_tolerance", 0.0)))}
    inputs, outputs = vectors["inputs"][:N_EXAMPLE_VECTORS], vectors["outputs"][:N_EXAMPLE_VECTORS]
    if model.arith == "int":
        return dict(ctx, inputs=inputs, outputs=outputs)
    return dict(ctx, inputs=[[_c_float(v) for v in row] for row in inputs],
                outputs=[[_c_float(v) for v in row] for row in outputs])


def _c_int32(value: int) -> str:
    return "INT32_MIN" if value == -(2**31) else str(value)


def _c_float(value: float) -> str:
    return repr(float(np.float32(value))) + "f"


def platformio(model: ModelFolder, env) -> dict:
    """A PlatformIO library (library.json; use it with lib_deps = <path> or copy it into lib/)."""
    ctx = base_context(model, "platformio", "a PlatformIO library")
    manifest = {
        "name": model.name, "version": __version__,
        "description": f"Kolmogorov-Arnold Network {model.name} ({ctx['input_size']} inputs, {ctx['output_size']} "
                       f"outputs), bit-exact {model.arith} C generated by kan2mcu",
        "keywords": ["kan", "kan2mcu", "neural-network", "fixed-point"],
        "license": "Apache-2.0", "frameworks": "*", "platforms": "*",
        "headers": ctx["header"],
        "build": {"srcDir": "src", "includeDir": "include", "flags": ["-O2"]},
        "examples": [{"name": "basic", "base": "examples/basic", "files": ["main.c"]}],
    }
    files = _model_files(model, "include", "src")
    files["library.json"] = json.dumps(manifest, indent=2) + "\n"
    files["examples/basic/main.c"] = env.get_template("example.c.j2").render(ctx)
    from kan2mcu.firmware.pio import PLATFORM_NAME  # pylint: disable=import-outside-toplevel

    example = dict(ctx, **example_context(model), qemu_platform=PLATFORM_NAME)
    files["examples/qemu/platformio.ini"] = env.get_template("platformio/platformio.ini.j2").render(example)
    files["examples/qemu/src/main.c"] = env.get_template("platformio/main.c.j2").render(example)
    files["examples/qemu/src/kan2mcu_port.h"] = (firmware_dir() / "port" / "kan2mcu_port.h").read_text()
    files["README.md"] = _readme(env, ctx, (
        f"In platformio.ini: `lib_deps = file://<path to this folder>` (or copy the folder into your\n"
        f"project's `lib/`), then `#include \"{ctx['header']}\"`. Float wrappers: "
        f"`build_flags = -D{ctx['P']}_WITH_FLOAT_API`.\n\n"
        "A complete firmware project that builds and runs as it is, on an emulated Cortex-M4:\n"
        "`kan2mcu pio -- run -d examples/qemu -e qemu-cortex-m4 -t upload` (prints PASS). On kan2mcu's\n"
        "emulated (QEMU) boards your firmware's entry point is `int kan2mcu_main(void)` (the start-up\n"
        "code calls it; its return value is the exit status), and `kan2mcu_port_write_line(const char *s)`\n"
        "prints one line (semihosting), both declared in `kan2mcu_port.h` (examples/qemu/src/); on a real\n"
        "board keep your framework's `main()`/`setup()` and call the model the same way."))
    return files


def arduino(model: ModelFolder, env) -> dict:
    """An Arduino library (1.5 format: library.properties, src/, examples/<x>/<x>.ino)."""
    ctx = base_context(model, "arduino", "an Arduino library")
    sketch = f"{model.name}_example"
    files = _model_files(model, "src", "src")
    files["library.properties"] = env.get_template("arduino/library.properties.j2").render(ctx)
    files[f"examples/{sketch}/{sketch}.ino"] = env.get_template("arduino/example.ino.j2").render(ctx)
    files["README.md"] = _readme(env, ctx, (
        "Copy this folder into your sketchbook's `libraries/` (or Sketch > Include Library > Add .ZIP\n"
        f"Library), then open File > Examples > {model.name} > {sketch}."))
    return files


def cmake(model: ModelFolder, env) -> dict:
    """A CMake project with a static library target kan2mcu::<prefix> and a hosted self-check."""
    ctx = base_context(model, "cmake", "a CMake static library")
    files = _model_files(model, "include", "src")
    files["CMakeLists.txt"] = env.get_template("cmake/CMakeLists.txt.j2").render(ctx)
    files["cmake/arm-none-eabi.cmake"] = (templates_dir() / "export" / "cmake" / "arm-none-eabi.cmake").read_text()
    test_ctx = dict(ctx, **selftest_context(model))
    files["test/selftest.c"] = env.get_template("selftest.c.j2").render(test_ctx)
    files[f"test/{model.prefix}_selftest_vectors.h"] = env.get_template("selftest_vectors.h.j2").render(test_ctx)
    example = dict(ctx, **example_context(model))
    files["examples/host/CMakeLists.txt"] = env.get_template("cmake/example_CMakeLists.txt.j2").render(example)
    files["examples/host/main.c"] = env.get_template("cmake/example_main.c.j2").render(example)
    files["README.md"] = _readme(env, ctx, (
        f"`add_subdirectory(<this folder>)` and `target_link_libraries(app PRIVATE kan2mcu::{model.prefix})`.\n"
        f"A program that does this and builds and runs as it is: `cmake -S examples/host -B build &&\n"
        f"cmake --build build && ./build/{model.prefix}_example` (your `main` calls `{model.prefix}_infer`).\n"
        f"Host self-check: `cmake -S . -B build -D{ctx['P']}_BUILD_SELFTEST=ON && cmake --build build &&\n"
        f"./build/{model.prefix}_selftest`. Cross: `-DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake`."))
    return files


def zephyr(model: ModelFolder, env) -> dict:
    """A Zephyr module (zephyr/module.yml, Kconfig, CMakeLists.txt with zephyr_library)."""
    ctx = base_context(model, "zephyr", "a Zephyr module")
    files = _model_files(model, "include", "src")
    files["zephyr/module.yml"] = env.get_template("zephyr/module.yml.j2").render(ctx)
    files["Kconfig"] = env.get_template("zephyr/Kconfig.j2").render(ctx)
    files["CMakeLists.txt"] = env.get_template("zephyr/CMakeLists.txt.j2").render(ctx)
    files["README.md"] = _readme(env, ctx, (
        f"`west build ... -- -DZEPHYR_EXTRA_MODULES=<this folder>` (or list it in your west manifest)\n"
        f"and `CONFIG_{ctx['kconfig']}=y` in prj.conf."))
    return files


def esp_idf(model: ModelFolder, env) -> dict:
    """An ESP-IDF component (idf_component.yml, CMakeLists.txt with idf_component_register)."""
    ctx = base_context(model, "esp-idf", "an ESP-IDF component")
    files = _model_files(model, "include", "src")
    files["idf_component.yml"] = env.get_template("esp-idf/idf_component.yml.j2").render(ctx)
    files["CMakeLists.txt"] = env.get_template("esp-idf/CMakeLists.txt.j2").render(ctx)
    files["README.md"] = _readme(env, ctx, (
        f"Copy this folder to your project's `components/{model.name}` (or add its parent to\n"
        f"EXTRA_COMPONENT_DIRS) and add `{model.name}` to REQUIRES of the component that calls it."))
    return files


FORMATS = {"platformio": platformio, "arduino": arduino, "cmake": cmake, "zephyr": zephyr, "esp-idf": esp_idf}


def render_format(fmt: str, model: ModelFolder) -> tuple[str, dict]:
    """(library folder name, files) of ``model`` in format ``fmt``."""
    return model.name, FORMATS[fmt](model, _environment())
