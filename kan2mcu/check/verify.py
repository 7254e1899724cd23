"""`kan2mcu verify DIR`: the generated C against the integer reference (bit-exact) and the float model."""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.model.bspline import model_forward
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import VerificationError
from kan2mcu.quant.fixedpoint import code_type_max
from kan2mcu.codegen.model_dir import CALIBRATION_FILE
from kan2mcu.quant.calibration import load_calibration, user_calibration
from kan2mcu.codegen.model_dir import load_model_folder
from kan2mcu.quant import guard
from kan2mcu.check.hostcc import FuzzResult, HostModel, fuzz as fuzz_c, run_sanitized
from kan2mcu.quant.quantize import QuantModel
from kan2mcu.quant.reference import quantize_inputs, run_model

N_RANDOM = 1000
RANDOM_CHUNK = 2048  # rows per reference/C batch in --random (bounds the reference's memory)


@dataclass(frozen=True)
class VerifyResult:
    """What was compared and how it came out."""

    arith: str
    inputs_checked: int
    bit_exact: bool | None  # None for the float back end (no integer contract)
    max_abs_error_vs_float: float | None  # C outputs (as float logits) vs the float64 IR forward; None: no data
    accuracy: dict | None  # float and quantized accuracy on the test split, when the data set is known
    guard: dict | None = None  # kan2mcu.quant.guard figures (integer models), as in report.json
    random_checked: int = 0  # extra random codes compared by --random
    random_seconds: float = 0.0
    fuzz: FuzzResult | None = None
    sanitized: bool = False  # the C also ran under AddressSanitizer + UndefinedBehaviorSanitizer

    def summary(self) -> str:
        parts = [f"{self.inputs_checked} inputs"]
        if self.sanitized:
            parts.append(f"ASan+UBSan: the same {self.inputs_checked} inputs, no finding"
                         + (", outputs identical" if self.bit_exact else ""))
        if self.bit_exact is not None:
            parts.append("C == integer reference: " + ("bit-exact" if self.bit_exact else "MISMATCH"))
            if self.bit_exact:
                parts.append("C input quantizers == Python quantizer")
        if self.random_checked:
            parts.append(f"{self.random_checked} random codes bit-exact in {self.random_seconds:.1f} s")
        if self.max_abs_error_vs_float is None:
            parts.append("no model inputs to compare with the float model (pass --calibration FILE)")
        else:
            parts.append(f"max |C - float model| = {self.max_abs_error_vs_float:.4g}")
        if self.accuracy:
            parts.append(f"accuracy float {self.accuracy['float']:.4f}, C {self.accuracy['c']:.4f} "
                         f"({self.accuracy['samples']} test samples)")
        if self.guard:
            parts.append("guard: " + guard.summary_of(self.guard))
        if self.fuzz:
            parts.append(f"fuzz ({self.fuzz.engine}): {self.fuzz.executions} executions in "
                         f"{self.fuzz.seconds:.1f} s, no crash or sanitizer finding")
            if self.fuzz.compared is not None and self.bit_exact is not None:
                parts.append(f"C == integer reference on the {self.fuzz.compared} inputs the fuzzer kept")
            elif self.fuzz.compared is not None:
                parts.append(f"C within tolerance of the float model on the {self.fuzz.compared} kept inputs "
                             "inside the grid range +-50%")
        return "; ".join(parts)


def verification_codes(qmodel: QuantModel, x_float: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Test-split codes, N_RANDOM seeded random codes, and the extremes (every code 0, max, >max)."""
    first = qmodel.layers[0]
    n_in, top = first.in_features, first.codes - 1
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, top + 1, size=(N_RANDOM, n_in)),
             np.zeros((1, n_in), np.int64), np.full((1, n_in), top),
             np.full((1, n_in), code_type_max(first.act_bits)),
             rng.choice([0, top], size=(32, n_in)),
             np.repeat(np.arange(top + 1)[:, None], n_in, axis=1)]  # every code on every input
    if x_float is not None:
        parts.insert(0, quantize_inputs(qmodel, x_float))
    return np.concatenate(parts).astype(np.int64)


def _first_mismatch(actual: np.ndarray, expected: np.ndarray) -> str:
    bad = np.argwhere(actual != expected)[0]
    return f"first mismatch at input {bad[0]}, output {bad[1]}: C {actual[tuple(bad)]}, reference {expected[tuple(bad)]}"


_WORKER_QMODEL = None


def _init_worker(qmodel: QuantModel) -> None:
    global _WORKER_QMODEL
    _WORKER_QMODEL = qmodel


def random_code_limit(qmodel: QuantModel) -> int:
    """Random codes are drawn from ``0 .. limit - 1``: every value of a byte code, else twice the
    code range (half of them above the top code, which the kernel must clamp)."""
    bits = qmodel.layers[0].act_bits
    return code_type_max(bits) + 1 if bits <= 8 else 2 << bits


def _reference_chunk(args: tuple[int, int, int]) -> tuple[int, np.ndarray, np.ndarray]:
    seed, rows, n_in = args
    codes = np.random.default_rng(seed).integers(0, random_code_limit(_WORKER_QMODEL), size=(rows, n_in))
    return seed, codes, run_model(_WORKER_QMODEL, codes)


def random_check(host: HostModel, qmodel: QuantModel, n: int, seed: int = 1) -> tuple[int, float]:
    """Compare the C with the integer reference on ``n`` seeded random input codes (see
    :func:`random_code_limit`: codes above the maximum are exercised too); returns (n, seconds). The reference, the slow side, runs
    in chunks on every core; the C runs batched through ctypes."""
    import concurrent.futures
    import multiprocessing
    import os

    start = time.perf_counter()
    jobs = [(seed * 1_000_003 + k, min(RANDOM_CHUNK, n - done), qmodel.in_features)
            for k, done in enumerate(range(0, n, RANDOM_CHUNK))]
    workers = max(1, min(os.cpu_count() or 1, len(jobs)))
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                initargs=(qmodel,)) as pool:
        for chunk_seed, codes, expected in pool.map(_reference_chunk, jobs, chunksize=4):
            actual = host.infer(codes).astype(np.int64)
            if not np.array_equal(actual, expected):
                raise VerificationError(f"C differs from the integer reference on random codes (chunk seed "
                                        f"{chunk_seed}); " + _first_mismatch(actual, expected))
    return n, time.perf_counter() - start


def fuzz_differential(folder: Path, host: HostModel, model, qmodel: QuantModel | None, seconds: float,
                      build_dir: Path) -> FuzzResult:
    """Fuzz the C (kan2mcu.hostcc.fuzz: crashes, sanitizers, status), then check its answers on every
    input the fuzzer kept, so a wrong answer is a finding too: integer models against the integer
    reference (bit for bit), float models against the float model (verify's tolerance, on the kept
    inputs inside the grid range +-50%; NaN/Inf inputs must be refused)."""
    result = fuzz_c(folder, seconds, build_dir)
    if result.kept is None:
        return result
    if qmodel is None:
        return dataclasses.replace(result, compared=_compare_kept_float(folder, host, model, result))
    codes = result.kept.astype(np.int64)
    for start in range(0, len(codes), RANDOM_CHUNK):
        chunk = codes[start:start + RANDOM_CHUNK]
        actual, expected = host.infer(chunk).astype(np.int64), run_model(qmodel, chunk)
        if not np.array_equal(actual, expected):
            row, out = (int(i) for i in np.argwhere(actual != expected)[0])
            raise VerificationError(f"fuzzing {folder} ({result.engine}) found a wrong answer: on kept input "
                                    f"{start + row} (codes {chunk[row].tolist()}) output {out} is "
                                    f"{actual[row, out]} in C, {expected[row, out]} in the integer reference")
    return dataclasses.replace(result, compared=len(codes))


def _float_window(model) -> tuple[np.ndarray, np.ndarray]:
    """The float inputs verify draws its random rows from: the first layer's grid range +-50%."""
    lo, hi = model.layers[0].grid_range()
    return lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)


def _compare_kept_float(folder: Path, host: HostModel, model, result: FuzzResult) -> int:
    """Float C on the fuzzer's kept inputs: a row with NaN/Inf must return an error status, a row
    inside the window must match the float model within verify's tolerance; returns the rows compared."""
    outputs, status = host.run(result.kept)
    with np.errstate(invalid="ignore"):  # signalling NaN bit patterns
        x = result.kept.astype(np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    accepted = np.flatnonzero(~finite & (status == 0))
    if len(accepted):
        raise VerificationError(f"fuzzing {folder} ({result.engine}) found a wrong answer: kept input "
                                f"{int(accepted[0])} holds NaN or Inf, yet {host.manifest['prefix']}_infer returned OK")
    lo, hi = _float_window(model)
    with np.errstate(invalid="ignore"):
        inside = np.flatnonzero(finite & np.all((x >= lo) & (x <= hi), axis=1))
    if not len(inside):
        return 0
    expected = model_forward(model, x[inside])
    error = np.abs(outputs[inside].astype(np.float64) - expected)
    tol = 1e-3 * max(1.0, float(np.abs(expected).max()))
    if error.max() > tol:
        row, out = (int(i) for i in np.argwhere(error == error.max())[0])
        raise VerificationError(f"fuzzing {folder} ({result.engine}) found a wrong answer: on kept input "
                                f"{int(inside[row])} output {out} is {float(outputs[inside[row], out]):.6g} in C, "
                                f"{float(expected[row, out]):.6g} in the float model (tolerance {tol:.3g})")
    return len(inside)


def _check_input_api(folder: Path, host: HostModel, model, qmodel: QuantModel, x_eval: np.ndarray | None) -> None:
    """The C input API (``<prefix>_quantize_input`` and ``_quantize_input_q``) against the Python
    quantizer: the evaluation inputs, stress inputs (rounding ties, NaN, +-inf) and int32 raw values."""
    from kan2mcu.quant.input_codec import (input_codec, model_input_to_float, probe_floats, probe_raws, quantize_float,
                                     quantize_raw)

    codec = input_codec(qmodel, model.metadata.get("input_transform"))
    rng = np.random.default_rng(1)
    floats = probe_floats(qmodel, rng, N_RANDOM * qmodel.in_features, codec)
    if x_eval is not None:  # as the float API takes them (raw feature values for own-data models)
        floats = np.concatenate([model_input_to_float(x_eval, codec), floats])
    expected = quantize_float(qmodel, codec, floats)
    actual = host.quantize(floats).astype(np.int64)
    if not np.array_equal(actual, expected):
        raise VerificationError(f"{folder}: {host.manifest['prefix']}_quantize_input differs from the Python "
                                "quantizer; " + _first_mismatch(actual, expected))
    raws = probe_raws(qmodel, codec, rng, N_RANDOM * qmodel.in_features)
    actual, expected = host.quantize(raws, raw=True).astype(np.int64), quantize_raw(qmodel, codec, raws)
    if not np.array_equal(actual, expected):
        raise VerificationError(f"{folder}: {host.manifest['prefix']}_quantize_input_q differs from the Python "
                                "quantizer; " + _first_mismatch(actual, expected))


def verify(folder, *, calibration: Path | None = None, sanitize: bool = False, build_dir: Path | None = None,
           quiet: bool = False, random: int = 0, fuzz: float = 0.0) -> VerifyResult:
    """Compile the folder's C (strict flags), run it and compare; raises VerificationError on a mismatch.

    ``random``: also compare N random codes with the reference; ``fuzz``: also fuzz the C for that
    many seconds (kan2mcu.check.hostcc.fuzz)."""
    folder = Path(folder)
    step = (lambda *_: None) if quiet else (lambda msg: print(f"kan2mcu verify: {msg}", file=sys.stderr, flush=True))
    manifest = load_model_folder(folder).manifest
    model, qmodel = load_bundle(folder)
    dataset = manifest.get("dataset")
    data = load_dataset(dataset) if dataset else None
    if data is not None:
        x_eval = data.x_test
    elif calibration is not None:  # the user's file, in generate --calibration's formats
        x_eval = user_calibration(model, calibration)
    elif (folder / CALIBRATION_FILE).exists():  # the model inputs generate calibrated on
        x_eval = load_calibration(folder / CALIBRATION_FILE, model.layers[0].in_features)
    else:
        x_eval = None
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(build_dir) if build_dir else Path(tmp)
        step("compiling the C on the host (strict flags)")
        host = HostModel(folder, build / "host")
        if sanitize:
            step("compiling and running it again under AddressSanitizer + UndefinedBehaviorSanitizer")
        if manifest["arith"] == "int":
            codes = verification_codes(qmodel, x_eval)
            c_out = host.infer(codes).astype(np.int64)
            ref = run_model(qmodel, codes)
            if not np.array_equal(c_out, ref):
                raise VerificationError(f"{folder}: C differs from the integer reference; " + _first_mismatch(c_out, ref))
            if sanitize:
                san = run_sanitized(folder, codes, build / "sanitize").astype(np.int64)
                if not np.array_equal(san, ref):
                    raise VerificationError(f"{folder}: sanitized C differs; " + _first_mismatch(san, ref))
            _check_input_api(folder, host, model, qmodel, x_eval)
            checked, exact = len(codes), True
            if random:
                step(f"comparing {random} random input codes with the integer reference")
            random_n, random_s = random_check(host, qmodel, random) if random else (0, 0.0)
            if x_eval is not None:
                c_logits = host.infer(quantize_inputs(qmodel, x_eval)) * qmodel.output_scale
            else:
                c_logits = None
        else:
            rng = np.random.default_rng(0)
            lo, hi = _float_window(model)
            x_rand = rng.uniform(lo, hi, size=(N_RANDOM, len(lo)))
            x_all = np.concatenate([x_eval, x_rand]) if x_eval is not None else x_rand
            c_all = host.infer(x_all.astype(np.float32)).astype(np.float64)
            if sanitize:
                run_sanitized(folder, x_all.astype(np.float32), build / "sanitize")
            ref_all = model_forward(model, x_all.astype(np.float32).astype(np.float64))
            err = float(np.abs(c_all - ref_all).max())
            tol = 1e-3 * max(1.0, float(np.abs(ref_all).max()))
            if err > tol:
                raise VerificationError(f"{folder}: float C differs from the float model by {err:.3g} (> {tol:.3g})")
            checked, exact = len(x_all), None
            c_logits = c_all[: len(x_eval)] if x_eval is not None else None
            random_n, random_s = 0, 0.0
        if fuzz:
            step(f"fuzzing the C for {fuzz:g} s, then comparing its answers on the inputs the fuzzer kept")
        fuzz_result = fuzz_differential(folder, host, model, qmodel, fuzz, build / "fuzz") if fuzz else None
    max_err, accuracy = None, None
    if x_eval is not None:
        float_logits = model_forward(model, x_eval)
        max_err = float(np.abs(c_logits - float_logits).max())
        if data is not None:
            accuracy = {"samples": int(len(data.y_test)),
                        "float": float((float_logits.argmax(1) == data.y_test).mean()),
                        "c": float((c_logits.argmax(1) == data.y_test).mean())}
    guard_figures = None
    if qmodel is not None:  # on the data generate calibrated on, so the figures equal report.json's
        guard_figures = guard.measure(model, qmodel, data.x_train if data is not None else x_eval).as_dict()
    result = VerifyResult(manifest["arith"], checked, exact, max_err, accuracy, guard_figures,
                          random_n, random_s, fuzz_result, sanitize)
    if not quiet:
        print(f"kan2mcu verify {folder}: {result.summary()}")
    return result
