"""Compile generated C with the host compiler and run it: through ctypes, or as a sanitized program."""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kan2mcu.errors import ToolchainError, VerificationError
from kan2mcu.model_dir import load_model_folder

STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Wshadow",
                "-Wstrict-prototypes", "-pedantic", "-Werror", "-O2"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def host_compiler() -> str:
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolchainError("no host C compiler found (install one: apt-get install -y --no-install-recommends gcc)")


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise VerificationError(f"{what} failed:\n{result.stderr.strip()[:4000]}")


def compile_check(folder: Path, compiler: str, flags: list[str]) -> None:
    """Compile the model's sources to an object file with ``compiler`` and ``flags`` (errors raise)."""
    manifest = load_model_folder(folder).manifest
    with tempfile.TemporaryDirectory() as tmp:
        for source in manifest["sources"]:
            _run([compiler, *flags, "-c", str(Path(folder) / source), "-o", str(Path(tmp) / "model.o")],
                 f"{Path(compiler).name} {' '.join(flags)}")


class HostModel:
    """The generated model compiled into a shared library and called through ctypes."""

    def __init__(self, folder: Path, build_dir: Path) -> None:
        self.manifest = load_model_folder(folder).manifest
        build_dir.mkdir(parents=True, exist_ok=True)
        sources = [str(Path(folder) / s) for s in self.manifest["sources"]]
        # named by content: dlopen returns an already-loaded library for a path it has seen, so a
        # second model built into the same folder under the same name would silently run the first
        digest = hashlib.sha256()
        for name in sources + [str(Path(folder) / h) for h in self.manifest.get("headers", [])]:
            digest.update(Path(name).read_bytes())
        library = build_dir / f"lib{self.manifest['prefix']}-{digest.hexdigest()[:16]}.so"
        api = [f"-D{self.manifest['prefix'].upper()}_WITH_FLOAT_API"]  # verify checks the float API too
        _run([host_compiler(), *STRICT_FLAGS, *api, "-fPIC", "-shared", *sources, "-o", str(library)], "host compile")
        self._lib = ctypes.CDLL(str(library))
        self._infer = getattr(self._lib, f"{self.manifest['prefix']}_infer")
        self._int = self.manifest["arith"] == "int"
        in_type, out_type = (np.uint8, np.int32) if self._int else (np.float32, np.float32)
        self._in_type, self._out_type = in_type, out_type
        self._infer.argtypes = [np.ctypeslib.ndpointer(in_type, flags="C_CONTIGUOUS"),
                                np.ctypeslib.ndpointer(out_type, flags="C_CONTIGUOUS")]
        self._infer.restype = ctypes.c_int

    def quantize(self, inputs: np.ndarray, raw: bool = False) -> np.ndarray:
        """First-layer codes from the C input API: ``<prefix>_quantize_input`` (float32 rows) or,
        with ``raw``, ``<prefix>_quantize_input_q`` (int32 rows). Integer models only."""
        in_type = np.int32 if raw else np.float32
        fn = getattr(self._lib, f"{self.manifest['prefix']}_quantize_input{'_q' if raw else ''}")
        fn.argtypes = [np.ctypeslib.ndpointer(in_type, flags="C_CONTIGUOUS"),
                       np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")]
        fn.restype = ctypes.c_int
        inputs = np.ascontiguousarray(inputs, dtype=in_type)
        codes = np.zeros(inputs.shape, dtype=np.uint8)
        for row in range(len(inputs)):
            if fn(inputs[row], codes[row]) != 0:
                raise VerificationError(f"{fn.__name__} returned a non-zero status")
        return codes

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run the C model on every row of ``inputs``."""
        inputs = np.ascontiguousarray(inputs, dtype=self._in_type)
        outputs = np.zeros((len(inputs), self.manifest["output_size"]), dtype=self._out_type)
        for row in range(len(inputs)):
            status = self._infer(inputs[row], outputs[row])
            if status != 0:
                raise VerificationError(f"{self.manifest['prefix']}_infer returned status {status}")
        return outputs


_RUNNER = """#include <stdio.h>
#include "{header}"
int main(int argc, char **argv) {{
    {in_t} in[{n_in}]; {out_t} out[{n_out}];
    FILE *fi, *fo;
    if (argc != 3) return 2;
    fi = fopen(argv[1], "rb"); fo = fopen(argv[2], "wb");
    if (!fi || !fo) return 3;
    while (fread(in, sizeof in, 1, fi) == 1) {{
        if ({prefix}_infer(in, out) != 0) return 4;
        fwrite(out, sizeof out, 1, fo);
    }}
    fclose(fi); fclose(fo);
    return 0;
}}
"""


def run_sanitized(folder: Path, inputs: np.ndarray, build_dir: Path) -> np.ndarray:
    """Run the model under AddressSanitizer and UndefinedBehaviorSanitizer in a separate program."""
    manifest = load_model_folder(folder).manifest
    is_int = manifest["arith"] == "int"
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = build_dir / "runner.c"
    runner.write_text(_RUNNER.format(header=manifest["headers"][0], prefix=manifest["prefix"],
                                     in_t="uint8_t" if is_int else "float", out_t="int32_t" if is_int else "float",
                                     n_in=manifest["input_size"], n_out=manifest["output_size"]))
    exe = build_dir / "runner"
    sources = [str(Path(folder) / s) for s in manifest["sources"]]
    _run([host_compiler(), "-std=c99", "-O1", *SANITIZE_FLAGS, f"-I{folder}", str(runner), *sources, "-o", str(exe)],
         "sanitizer build")
    in_file, out_file = build_dir / "inputs.bin", build_dir / "outputs.bin"
    np.ascontiguousarray(inputs, dtype=np.uint8 if is_int else np.float32).tofile(in_file)
    result = subprocess.run([str(exe), str(in_file), str(out_file)], capture_output=True, text=True)
    if result.returncode != 0:
        raise VerificationError(f"sanitized run failed (exit {result.returncode}):\n{result.stderr[:4000]}")
    return np.fromfile(out_file, dtype=np.int32 if is_int else np.float32).reshape(len(inputs), -1)
