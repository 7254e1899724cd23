"""The integer model's optional float API (``<PREFIX>_WITH_FLOAT_API``): compiled and called.

``kan_quantize_input`` must give exactly the codes of the Python quantizer
(``kan2mcu.quant.reference.quantize_inputs``: round half up, saturating; docs/arithmetic.md section 1)
on ordinary inputs, exact ties, values beyond the range, +-Inf and NaN; ``kan_dequantize_output``
must give ``output_scale * output`` to float32 precision.
"""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from conftest import require_tool
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.generate import generate_model
from kan2mcu.check.hostcc import STRICT_FLAGS, host_compiler
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.reference import dequantize_outputs, quantize_inputs

FLOAT_API = "-DKAN_WITH_FLOAT_API"


@pytest.fixture(scope="module", params=[8, 4], ids=["act8", "act4"])
def model_dir(request, small_checkpoints, tmp_path_factory) -> Path:
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    folder = tmp_path_factory.mktemp(f"float_api_{request.param}")
    generate_model(checkpoint, folder, options=QuantOptions(act_bits=request.param), calibration=calibration,
                   quiet=True, strategy="spline")
    return folder


@pytest.fixture(scope="module")
def api(model_dir, tmp_path_factory):
    """The model with its float API, compiled for the host under the strict flags."""
    library = tmp_path_factory.mktemp("float_api_lib") / "libkan.so"
    subprocess.run([host_compiler(), *STRICT_FLAGS, FLOAT_API, "-fPIC", "-shared", str(model_dir / "kan.c"),
                    "-o", str(library)], check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(library))
    _, qmodel = load_bundle(model_dir)
    n_in, n_out = qmodel.in_features, qmodel.out_features
    lib.kan_quantize_input.argtypes = [np.ctypeslib.ndpointer(np.float32, shape=(n_in,), flags="C_CONTIGUOUS"),
                                       np.ctypeslib.ndpointer(np.uint8, shape=(n_in,), flags="C_CONTIGUOUS")]
    lib.kan_dequantize_output.argtypes = [np.ctypeslib.ndpointer(np.int32, shape=(n_out,), flags="C_CONTIGUOUS"),
                                          np.ctypeslib.ndpointer(np.float32, shape=(n_out,), flags="C_CONTIGUOUS")]
    return lib, qmodel


def _quantize_c(lib, x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape, np.uint8)
    for row in range(len(x)):
        assert lib.kan_quantize_input(np.ascontiguousarray(x[row], np.float32), out[row]) == 0
    return out.astype(np.int64)


def _probe_inputs(qmodel) -> dict[str, np.ndarray]:
    """float32 inputs by kind (the C API takes float; the Python quantizer gets the same values)."""
    first = qmodel.layers[0]
    scale, zero, top = first.in_scale, first.in_zero, first.codes - 1
    lo, hi = scale * (0 - zero), scale * (top - zero)
    rng = np.random.default_rng(0)
    n_in = first.in_features
    ties = scale * (rng.integers(0, top, size=(200, n_in)) + 0.5 - zero)  # exactly between two codes
    return {
        "in range": rng.uniform(lo, hi, size=(500, n_in)),
        "ties": ties,
        "beyond the range": np.concatenate([rng.uniform(hi, hi + 10 * (hi - lo), size=(50, n_in)),
                                            rng.uniform(lo - 10 * (hi - lo), lo, size=(50, n_in)),
                                            np.full((1, n_in), 3e38), np.full((1, n_in), -3e38)]),
        "infinities": np.array([[np.inf] * n_in, [-np.inf] * n_in]),
        "nan": np.full((1, n_in), np.nan),
    }


def test_quantize_input_equals_the_python_quantizer(api):
    """Exact on every kind of input (issue 10: threshold tables; the old float32 formula was one
    code off on 707 of 1,600 exact ties at 8-bit codes)."""
    lib, qmodel = api
    mismatches = {}
    for kind, x in _probe_inputs(qmodel).items():
        x32 = x.astype(np.float32)
        expected = quantize_inputs(qmodel, x32.astype(np.float64))
        got = _quantize_c(lib, x32)
        if not np.array_equal(got, expected):
            mismatches[kind] = int((got != expected).sum())
    assert not mismatches, f"C codes differ from the Python quantizer: {mismatches}"


def test_quantize_input_saturates_and_maps_nan_to_zero(api):
    """The documented behaviour outside the range, checked against the spec (not the Python code)."""
    lib, qmodel = api
    top = qmodel.layers[0].codes - 1
    probes = _probe_inputs(qmodel)
    assert np.all(_quantize_c(lib, probes["infinities"].astype(np.float32)) == np.array([[top], [0]]))
    assert np.all(_quantize_c(lib, probes["nan"].astype(np.float32)) == 0)
    beyond = _quantize_c(lib, probes["beyond the range"].astype(np.float32))
    assert np.all(beyond[:50] == top) and np.all(beyond[50:100] == 0)
    assert np.all(beyond[100] == top) and np.all(beyond[101] == 0)


def test_dequantize_output_is_the_output_scale_times_the_code(api):
    lib, qmodel = api
    rng = np.random.default_rng(1)
    outputs = np.concatenate([rng.integers(-2**31, 2**31, size=(200, qmodel.out_features)),
                              [[0] * qmodel.out_features, [2**31 - 1] * qmodel.out_features,
                               [-2**31] * qmodel.out_features]]).astype(np.int32)
    expected = dequantize_outputs(qmodel, outputs.astype(np.int64))
    got = np.zeros(outputs.shape, np.float32)
    for row in range(len(outputs)):
        assert lib.kan_dequantize_output(outputs[row], got[row]) == 0
    # float32: the scale literal, the int->float conversion and the product each round (<= 2^-24 each)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=4 * 2.0**-24, atol=0)


def test_null_pointers_are_refused(api):
    lib, _ = api
    for function in (lib.kan_quantize_input, lib.kan_dequantize_output):
        typed, function.argtypes = function.argtypes, None  # ndpointer refuses None
        try:
            assert function(None, None) == -1  # KAN_ERR_NULL_POINTER
        finally:
            function.argtypes = typed


def _defined_functions(obj: Path) -> set[str]:
    with open(obj, "rb") as handle:
        symtab = ELFFile(handle).get_section_by_name(".symtab")
        return {s.name for s in symtab.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_info"]["bind"] == "STB_GLOBAL"
                and isinstance(s["st_shndx"], int)}


@pytest.mark.parametrize("compiler,flags", [
    ("cc", []),
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding"]),
    ("arm-none-eabi-gcc", ["-mcpu=cortex-m0plus", "-mthumb", "-ffreestanding"]),
    ("riscv64-unknown-elf-gcc", ["-march=rv32imac_zicsr", "-mabi=ilp32", "-ffreestanding"]),
], ids=["host", "cortex-m4f", "cortex-m0plus", "rv32imac"])
def test_float_api_compiles_warning_free(model_dir, tmp_path, compiler, flags):
    tool = host_compiler() if compiler == "cc" else require_tool(compiler)
    obj = tmp_path / "kan.o"
    run = subprocess.run([tool, *STRICT_FLAGS, *flags, FLOAT_API, "-c", str(model_dir / "kan.c"), "-o", str(obj)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    assert _defined_functions(obj) == {"kan_infer", "kan_infer_q", "kan_quantize_input_q", "kan_quantize_input",
                                       "kan_dequantize_output"}
