"""Compile generated C with the host compiler and run it: through ctypes, or as a sanitized program."""
from __future__ import annotations

import ctypes
import hashlib
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.errors import OptionError, ToolchainError, VerificationError
from kan2mcu.codegen.model_dir import load_model_folder

STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Wshadow",
                "-Wstrict-prototypes", "-pedantic", "-Werror", "-O2"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


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


_BATCH = """/* host-side batch entry point: one ctypes call for many inferences */
#include <stddef.h>
#include "{header}"
int kan2mcu_host_batch(const {in_t} *in, {out_t} *out, int32_t *status, size_t n);
int kan2mcu_host_batch(const {in_t} *in, {out_t} *out, int32_t *status, size_t n)
{{
    size_t r;
    int failed = 0;
    for (r = 0u; r < n; ++r) {{
        status[r] = (int32_t){prefix}_infer(in + r * {n_in}u, out + r * {n_out}u);
        failed |= status[r] != 0;
    }}
    return failed;
}}
"""


_NUMPY_TYPES = {"uint8_t": np.uint8, "uint16_t": np.uint16, "int32_t": np.int32, "float": np.float32}


def _ctypes_of(manifest: dict) -> tuple[str, str]:
    """C types of the model's inputs (codes of its width, or floats) and outputs."""
    if manifest["arith"] == "int":
        return manifest.get("input_ctype", "uint8_t"), "int32_t"
    return "float", "float"


class HostModel:
    """The generated model compiled into a shared library and called through ctypes (batched)."""

    def __init__(self, folder: Path, build_dir: Path) -> None:
        self.manifest = load_model_folder(folder).manifest
        build_dir.mkdir(parents=True, exist_ok=True)
        in_t, out_t = _ctypes_of(self.manifest)
        batch_source = _BATCH.format(header=self.manifest["headers"][0], prefix=self.manifest["prefix"],
                                     in_t=in_t, out_t=out_t, n_in=self.manifest["input_size"],
                                     n_out=self.manifest["output_size"])
        sources = [str(Path(folder) / s) for s in self.manifest["sources"]]
        # named by content: dlopen returns an already-loaded library for a path it has seen, so a
        # second model built into the same folder under the same name would silently run the first
        digest = hashlib.sha256(batch_source.encode())
        for name in sources + [str(Path(folder) / h) for h in self.manifest.get("headers", [])]:
            digest.update(Path(name).read_bytes())
        library = build_dir / f"lib{self.manifest['prefix']}-{digest.hexdigest()[:16]}.so"
        batch = build_dir / f"kan2mcu_host_batch-{digest.hexdigest()[:16]}.c"
        batch.write_text(batch_source)
        api = [f"-D{self.manifest['prefix'].upper()}_WITH_FLOAT_API"]  # verify checks the float API too
        _run([host_compiler(), *STRICT_FLAGS, *api, "-fPIC", "-shared", f"-I{folder}", *sources, str(batch),
              "-o", str(library)], "host compile")
        self._lib = ctypes.CDLL(str(library))
        self._int = self.manifest["arith"] == "int"
        in_type, out_type = _NUMPY_TYPES[in_t], _NUMPY_TYPES[out_t]
        self._in_type, self._out_type = in_type, out_type
        self._batch = self._lib.kan2mcu_host_batch
        self._batch.argtypes = [np.ctypeslib.ndpointer(in_type, flags="C_CONTIGUOUS"),
                                np.ctypeslib.ndpointer(out_type, flags="C_CONTIGUOUS"),
                                np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS"), ctypes.c_size_t]
        self._batch.restype = ctypes.c_int

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs [N, O] and status codes [N] of the C model on every row of ``inputs``."""
        inputs = np.ascontiguousarray(inputs, dtype=self._in_type).reshape(-1, self.manifest["input_size"])
        outputs = np.zeros((len(inputs), self.manifest["output_size"]), dtype=self._out_type)
        status = np.zeros(len(inputs), dtype=np.int32)
        if len(inputs):
            self._batch(inputs, outputs, status, len(inputs))
        return outputs, status

    def quantize(self, inputs: np.ndarray, raw: bool = False) -> np.ndarray:
        """First-layer codes from the C input API: ``<prefix>_quantize_input`` (float32 rows) or,
        with ``raw``, ``<prefix>_quantize_input_q`` (int32 rows). Integer models only."""
        in_type = np.int32 if raw else np.float32
        fn = getattr(self._lib, f"{self.manifest['prefix']}_quantize_input{'_q' if raw else ''}")
        fn.argtypes = [np.ctypeslib.ndpointer(in_type, flags="C_CONTIGUOUS"),
                       np.ctypeslib.ndpointer(self._in_type, flags="C_CONTIGUOUS")]
        fn.restype = ctypes.c_int
        inputs = np.ascontiguousarray(inputs, dtype=in_type)
        codes = np.zeros(inputs.shape, dtype=self._in_type)
        for row in range(len(inputs)):
            if fn(inputs[row], codes[row]) != 0:
                raise VerificationError(f"{fn.__name__} returned a non-zero status")
        return codes

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run the C model on every row of ``inputs``; a non-zero status raises VerificationError."""
        outputs, status = self.run(inputs)
        if np.any(status != 0):
            row = int(np.flatnonzero(status)[0])
            raise VerificationError(f"{self.manifest['prefix']}_infer returned status {status[row]} on input {row}")
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
    in_t, out_t = _ctypes_of(manifest)
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = build_dir / "runner.c"
    runner.write_text(_RUNNER.format(header=manifest["headers"][0], prefix=manifest["prefix"], in_t=in_t, out_t=out_t,
                                     n_in=manifest["input_size"], n_out=manifest["output_size"]))
    exe = build_dir / "runner"
    sources = [str(Path(folder) / s) for s in manifest["sources"]]
    _run([host_compiler(), "-std=c99", "-O1", *SANITIZE_FLAGS, f"-I{folder}", str(runner), *sources, "-o", str(exe)],
         "sanitizer build")
    in_file, out_file = build_dir / "inputs.bin", build_dir / "outputs.bin"
    np.ascontiguousarray(inputs, dtype=_NUMPY_TYPES[in_t]).tofile(in_file)
    result = subprocess.run([str(exe), str(in_file), str(out_file)], capture_output=True, text=True)
    if result.returncode != 0:
        raise VerificationError(f"sanitized run failed (exit {result.returncode}):\n{result.stderr[:4000]}")
    return np.fromfile(out_file, dtype=_NUMPY_TYPES[out_t]).reshape(len(inputs), -1)


_FUZZ_TARGET = """/* libFuzzer target (or, with -DKAN2MCU_RANDOM_LOOP, a seeded random-input loop) */
#ifdef KAN2MCU_RANDOM_LOOP
#define _POSIX_C_SOURCE 199309L /* clock_gettime: the loop runs for wall-clock seconds */
#endif
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "{header}"
static void check(const {in_t} *in)
{{
    {out_t} out[{n_out}];
    int status = {prefix}_infer(in, out);
    if (status != {P}_OK && status != {allowed}) {{
        __builtin_trap();
    }}
}}
#ifndef KAN2MCU_RANDOM_LOOP
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{{
    {in_t} in[{n_in}];
    if (size < sizeof in) {{
        return 0;
    }}
    memcpy(in, data, sizeof in);
    check(in);
    return 0;
}}
#else
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static uint64_t state = 0x9E3779B97F4A7C15u;
static uint32_t next(void)
{{
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (uint32_t)(state >> 16);
}}
static double wall_seconds(void)
{{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}}
/* inputs kept for the differential check: the first KEEP_ALL, then every KEEP_STRIDE-th, up to KEEP_MAX */
#define KEEP_ALL 16384u
#define KEEP_STRIDE 64u
#define KEEP_MAX 65536u
static void keep(FILE *kept, const {in_t} *in, unsigned long long runs, unsigned long long *n_kept)
{{
    if (kept != NULL && *n_kept < KEEP_MAX && (runs < KEEP_ALL || runs % KEEP_STRIDE == 0u)) {{
        *n_kept += fwrite(in, sizeof(in[0]) * {n_in}u, 1u, kept);
    }}
}}
int main(int argc, char **argv)
{{
    {in_t} in[{n_in}];
    unsigned long long runs = 0u, n_kept = 0u;
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    FILE *kept = argc > 2 ? fopen(argv[2], "wb") : NULL;
    double end = wall_seconds() + seconds;
    static const float special[] = {{0.0f, -0.0f, 1.0f, -1.0f, 3.40282347e38f, -1.8e38f, 1e-45f}};
    do {{
        size_t i, j;
        for (j = 0u; j < 64u; ++j, ++runs) {{
            uint32_t mode = next() % 4u;
            for (i = 0u; i < {n_in}u; ++i) {{
                uint32_t bits = next();
                if (sizeof in[0] != sizeof(float)) {{  /* codes: any value of their type */
                    memcpy(&in[i], &bits, sizeof in[i]);
                }} else if (mode == 0u) {{
                    float v = special[next() % (sizeof special / sizeof special[0])];
                    memcpy(&in[i], &v, sizeof in[i]);
                }} else {{
                    memcpy(&in[i], &bits, sizeof in[i]);  /* any bit pattern: NaN, Inf, denormals */
                }}
            }}
            check(in);
            keep(kept, in, runs, &n_kept);
        }}
    }} while (wall_seconds() < end);
    if (kept != NULL) {{
        fclose(kept);
    }}
    printf("stat::number_of_executed_units: %llu\\n", runs);
    return 0;
}}
#endif
"""


MIN_FUZZ_SECONDS = 1.0  # libFuzzer's -max_total_time counts whole seconds


def check_fuzz_seconds(seconds: float) -> None:
    """Refuse a fuzz budget that is not a finite number of seconds, 0 (off) or at least MIN_FUZZ_SECONDS."""
    if not math.isfinite(seconds) or seconds < 0:
        raise OptionError(f"--fuzz must be a finite, non-negative number of seconds, got {seconds:g}")
    if 0 < seconds < MIN_FUZZ_SECONDS:
        raise OptionError(f"--fuzz {seconds:g}: fuzz for at least {MIN_FUZZ_SECONDS:g} s (libFuzzer counts whole "
                          "seconds), or leave --fuzz out")


@dataclass(frozen=True)
class FuzzResult:
    """How a fuzz run went: the engine, how many inputs ran, for how long (measured), and the
    inputs it kept (libFuzzer's corpus, or a sample of the random loop's) for the differential check."""

    engine: str  # "libFuzzer+ASan+UBSan" or "random loop+ASan+UBSan"
    executions: int
    seconds: float  # wall time of the fuzz run, measured
    kept: np.ndarray | None = None  # [K, input_size] inputs in the model's input type
    compared: int | None = None  # kept inputs the C was compared on with the reference (kan2mcu.verify)


def _libfuzzer_works(build_dir: Path) -> bool:
    clang = shutil.which("clang")
    if clang is None:
        return False
    probe = build_dir / "probe.c"
    probe.write_text("#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
                     "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
    result = subprocess.run([clang, "-fsanitize=fuzzer,address,undefined", str(probe), "-o", str(build_dir / "probe")],
                            capture_output=True, text=True)
    return result.returncode == 0


def _seed_corpus(corpus: Path, manifest: dict) -> None:
    """Edge inputs to start from: code extremes, or NaN, +-Inf, -1.8e38 and zeros for floats."""
    corpus.mkdir(parents=True, exist_ok=True)
    n = manifest["input_size"]
    if manifest["arith"] == "int":
        dtype = _NUMPY_TYPES[_ctypes_of(manifest)[0]]
        seeds = [np.zeros(n, dtype), np.full(n, np.iinfo(dtype).max, dtype)]
    else:
        seeds = [np.full(n, v, np.float32) for v in (0.0, np.nan, np.inf, -np.inf, -1.8e38, 3.4e38)]
    for index, seed in enumerate(seeds):
        (corpus / f"seed{index}").write_bytes(seed.tobytes())


def fuzz(folder: Path, seconds: float, build_dir: Path, *, engine: str | None = None) -> FuzzResult:
    """Fuzz the generated C for ``seconds`` (at least MIN_FUZZ_SECONDS) under ASan+UBSan: libFuzzer
    where clang can link it, else a seeded random-input loop; any crash, sanitizer finding or
    unexpected status raises. The result carries the inputs the fuzzer kept (libFuzzer's corpus,
    with value profiling so that it keeps inputs reaching new comparisons; a sample of the loop's
    inputs), which kan2mcu.verify compares with the integer reference."""
    check_fuzz_seconds(seconds)
    if seconds == 0:
        raise OptionError("--fuzz needs a positive number of seconds")
    manifest = load_model_folder(folder).manifest
    build_dir.mkdir(parents=True, exist_ok=True)
    in_t, out_t = _ctypes_of(manifest)
    prefix = manifest["prefix"]
    target = build_dir / "fuzz_target.c"
    allowed = f"{prefix.upper()}_OK" if manifest["arith"] == "int" else f"{prefix.upper()}_ERR_NOT_FINITE"
    target.write_text(_FUZZ_TARGET.format(header=manifest["headers"][0], prefix=prefix, P=prefix.upper(),
                                          in_t=in_t, out_t=out_t, n_in=manifest["input_size"],
                                          n_out=manifest["output_size"], allowed=allowed))
    sources = [str(Path(folder) / s) for s in manifest["sources"]]
    use_libfuzzer = _libfuzzer_works(build_dir) if engine is None else engine == "libfuzzer"
    exe = build_dir / "fuzz"
    if use_libfuzzer:
        _run(["clang", "-std=c99", "-O1", "-g", "-fsanitize=fuzzer,address,undefined,float-cast-overflow",
              "-fno-sanitize-recover=all",
              f"-I{folder}", str(target), *sources, "-o", str(exe)], "fuzz target build")
        corpus = build_dir / "corpus"
        _seed_corpus(corpus, manifest)
        cmd = [str(exe), f"-max_total_time={max(1, int(round(seconds)))}", "-print_final_stats=1",
               "-use_value_profile=1",
               f"-max_len={manifest['input_size'] * np.dtype(_NUMPY_TYPES[in_t]).itemsize}",
               f"-artifact_prefix={build_dir}/", str(corpus)]
        name = "libFuzzer+ASan+UBSan"
    else:
        _run([host_compiler(), "-std=c99", "-O1", *SANITIZE_FLAGS, "-DKAN2MCU_RANDOM_LOOP", f"-I{folder}",
              str(target), *sources, "-o", str(exe)], "fuzz loop build")
        corpus = build_dir / "kept.bin"
        cmd = [str(exe), repr(float(seconds)), str(corpus)]
        name = "random loop+ASan+UBSan"
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    text = result.stdout + result.stderr
    if result.returncode != 0:
        finding = [line for line in text.splitlines() if "ERROR" in line or "runtime error" in line][:3]
        raise VerificationError(f"fuzzing {folder} ({name}) found a problem (exit {result.returncode}): "
                                + ("; ".join(finding) or text.strip()[-2000:]))
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    if not found:
        raise VerificationError(f"fuzzing {folder}: no execution count in the output:\n{text[-2000:]}")
    return FuzzResult(name, int(found.group(1)), elapsed, _kept_inputs(corpus, manifest))


def _kept_inputs(corpus: Path, manifest: dict) -> np.ndarray:
    """The whole inputs in ``corpus``: libFuzzer's folder (one input per file; shorter ones, which
    the target skips, left out) or the random loop's file of consecutive inputs."""
    dtype = np.dtype(_NUMPY_TYPES[_ctypes_of(manifest)[0]])
    n_in = manifest["input_size"]
    size = n_in * dtype.itemsize
    if corpus.is_dir():
        blobs = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()]
        data = b"".join(blob[:size] for blob in blobs if len(blob) >= size)
    else:
        data = corpus.read_bytes() if corpus.is_file() else b""
        data = data[: len(data) // size * size]
    return np.frombuffer(data, dtype=dtype).reshape(-1, n_in).copy()
