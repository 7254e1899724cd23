"""Shared fixtures: the default digits KAN (trained once per session) and small random KANs.

Optional parts (cross toolchains, QEMU, PlatformIO, pykan and the rest of the test extras) skip a
test where they are missing, except when ``CI=true`` or ``KAN2MCU_REQUIRE_TOOLCHAINS=1``: then a
missing part FAILS the test, so CI never passes by skipping.
"""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REQUIRE_TOOLCHAINS = os.environ.get("CI") == "true" or os.environ.get("KAN2MCU_REQUIRE_TOOLCHAINS") == "1"
# A prepared digits checkpoint (the mutation runner points it at the committed fixtures/hashed/digits.pt).
DIGITS_CHECKPOINT_ENV = "KAN2MCU_TEST_DIGITS_CHECKPOINT"
# Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its own PlatformIO core folder:
# PlatformIO rewrites the platform link there on every build, and builds sharing one folder race.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    _core = os.environ.get("KAN2MCU_PLATFORMIO_CORE_DIR", str(Path.home() / ".cache" / "kan2mcu" / "platformio"))
    os.environ["KAN2MCU_PLATFORMIO_CORE_DIR"] = f"{_core}-{XDIST_WORKER}"


def run_cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in-process: (exit status, stderr)."""
    from kan2mcu import cli

    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    return status, capsys.readouterr().err


def assert_one_error(status: int, err: str, *needles: str, code: int = 1) -> None:
    """Exit ``code``, no traceback, and (for 1) exactly one ``kan2mcu: error:`` line, the last one,
    holding every needle."""
    assert status == code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("kan2mcu: error:")]
    if code == 1:
        assert len(errors) == 1, err
        assert err.rstrip().splitlines()[-1] == errors[0], "the error must be the last line"
    for needle in needles:
        assert needle in err, err


def require_tool(name: str) -> str:
    """Path of a tool; a missing tool skips the test, or fails it in CI (where all must be there)."""
    path = shutil.which(name)
    if path is None:
        if REQUIRE_TOOLCHAINS:
            pytest.fail(f"{name} is required in CI but missing")
        pytest.skip(f"{name} not installed")
    return path


def require_module(name: str, hint: str = ""):
    """Import ``name``; a missing module skips the calling module, or fails it in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"python module {name} missing ({exc}){': ' + hint if hint else ''}"
        if REQUIRE_TOOLCHAINS:
            pytest.fail(f"{message}; it is required in CI", pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """The default [64, 16, 10] KAN trained on digits (the README's embedded default)."""
    from kan2mcu.training.train import train

    prepared = os.environ.get(DIGITS_CHECKPOINT_ENV)
    if prepared:
        return Path(prepared)
    return shared_artefact(tmp_path_factory, "digits_kan.pt", lambda path: train(path, progress=False))


def shared_artefact(tmp_path_factory, name: str, make) -> Path:
    """``make(path)`` once per test run: xdist workers share the file (the first one makes it, under
    a lock, into a temporary name renamed when complete)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if XDIST_WORKER:
        root = root.parent  # the folder all workers' base folders share
    path = root / name
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            partial = path.with_name(path.name + ".partial" + path.suffix)
            make(partial)
            partial.replace(path)
    return path


def digits_after_update_grid(checkpoint: Path):
    """The kan2mcu digits KAN at ``checkpoint`` in float64 after efficient-kan's ``update_grid``,
    layer by layer on the digits training split (each layer on the activations entering it), and
    the data set. Shared by the update_grid fixture and fixtures/hashed/make_fixtures.py."""
    import torch

    from kan2mcu.data.datasets import load_dataset
    from kan2mcu.model.torch_kan import KAN

    payload = torch.load(checkpoint, weights_only=True)
    cfg = payload["config"]
    model = KAN(cfg["widths"], cfg["grid_size"], cfg["spline_order"])
    model.load_state_dict(payload["state_dict"])
    model = model.double()
    data = load_dataset("digits")
    with torch.no_grad():
        h = torch.tensor(data.x_train)
        for layer in model.layers:
            layer.update_grid(h)
            h = layer(h)
    return model, data


@pytest.fixture(scope="session")
def update_grid_checkpoint(digits_checkpoint, tmp_path_factory) -> tuple[Path, Path, float]:
    """The default digits KAN after efficient-kan's ``update_grid`` on the training split (knots at
    data quantiles, per input; coefficients refit by least squares, some at 1e6 on B-splines the
    pixels barely reach), saved as an efficient-kan state dict; with calibration inputs (the
    training split) and its float test accuracy."""
    import torch

    model, data = digits_after_update_grid(digits_checkpoint)
    with torch.no_grad():
        accuracy = float((model(torch.tensor(data.x_test)).argmax(1).numpy() == data.y_test).mean())
    base = tmp_path_factory.mktemp("update_grid")
    torch.save(model.float().state_dict(), base / "ek.pt")
    np.save(base / "calib.npy", data.x_train)
    return base / "ek.pt", base / "calib.npy", accuracy


def make_random_checkpoint(path: Path, widths, grid_size: int, order: int, seed: int) -> tuple[Path, Path]:
    """A randomly initialised KAN (no data set) and a .npy of calibration inputs for it."""
    import torch

    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    torch.manual_seed(seed)
    model = KAN(list(widths), grid_size=grid_size, spline_order=order)
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.normal_(0.0, 0.5)
    save_checkpoint(model, path, dataset=None, input_transform=None)
    calibration = path.with_suffix(".npy")
    rng = np.random.default_rng(seed)
    np.save(calibration, rng.uniform(-1.5, 1.5, size=(256, widths[0])))
    return path, calibration


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory) -> dict:
    """Two shapes besides the default: [8, 5, 3] cubic G=5 and [6, 4, 4, 2] quadratic G=3."""
    base = tmp_path_factory.mktemp("small")
    return {
        "8x5x3-G5-k3": make_random_checkpoint(base / "a.pt", (8, 5, 3), 5, 3, seed=1),
        "6x4x4x2-G3-k2": make_random_checkpoint(base / "b.pt", (6, 4, 4, 2), 3, 2, seed=2),
    }


@pytest.fixture()
def small(small_checkpoints) -> tuple[Path, Path]:
    """The [8, 5, 3] random KAN's checkpoint and calibration inputs."""
    return small_checkpoints["8x5x3-G5-k3"]


@pytest.fixture()
def generated(small, tmp_path) -> Path:
    """A complete model folder of ``small`` (tmp_path/model), to regenerate over or verify."""
    from kan2mcu.generate import generate_model

    checkpoint, calibration = small
    out = tmp_path / "model"
    generate_model(checkpoint, out, calibration=calibration, quiet=True)
    return out


def nonuniform_state_dict(widths, grid_size=5, order=3, seed=0) -> dict:
    """efficient-kan layout with knots that differ per input and are not evenly spaced."""
    import torch

    rng = np.random.default_rng(seed)
    state = {}
    for n, (i, o) in enumerate(zip(widths, widths[1:])):
        steps = rng.uniform(0.2, 0.6, size=(i, grid_size + 2 * order))
        knots = -1.5 + np.concatenate([np.zeros((i, 1)), np.cumsum(steps, axis=1)], axis=1)
        state[f"layers.{n}.grid"] = torch.tensor(knots, dtype=torch.float32)
        state[f"layers.{n}.base_weight"] = torch.tensor(rng.normal(0, 0.5, (o, i)), dtype=torch.float32)
        state[f"layers.{n}.spline_weight"] = torch.tensor(rng.normal(0, 0.5, (o, i, grid_size + order)),
                                                          dtype=torch.float32)
        state[f"layers.{n}.spline_scaler"] = torch.tensor(rng.uniform(0.5, 1.5, (o, i)), dtype=torch.float32)
    return state


@pytest.fixture(scope="session")
def nonuniform_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A [5, 4, 3] efficient-kan state dict with per-input non-uniform knots, and calibration inputs."""
    import torch

    base = tmp_path_factory.mktemp("nonuniform")
    torch.save({"state_dict": nonuniform_state_dict([5, 4, 3])}, base / "ek.pt")
    np.save(base / "calib.npy", np.random.default_rng(1).uniform(-2.0, 2.5, size=(400, 5)))
    return base / "ek.pt", base / "calib.npy"


def assert_c_equals_reference(folder: Path, codes: np.ndarray, build_dir: Path) -> None:
    """Compile the folder's C for the host (strict flags), run every row of ``codes`` and require
    the outputs to equal the Python integer reference's, element for element."""
    from kan2mcu.codegen.bundle import load_bundle
    from kan2mcu.check.hostcc import HostModel
    from kan2mcu.quant.reference import run_model

    _, qmodel = load_bundle(folder)
    c_out = HostModel(folder, build_dir).infer(codes).astype(np.int64)
    np.testing.assert_array_equal(c_out, run_model(qmodel, codes))


def assert_compiles_strict(compiler: list[str], folders: dict[str, Path], build_dir: Path) -> None:
    """Every folder's kan.c compiles for ``compiler`` (the command and its target flags) with -Wall
    -Wextra -Wconversion -Wcast-align -pedantic -Werror at the levels users build at: -O0, -O2, -Os."""
    import subprocess

    for name, folder in folders.items():
        for level in ("-O0", "-O2", "-Os"):
            completed = subprocess.run([*compiler, "-std=c99", level, "-ffreestanding", "-Wall", "-Wextra",
                                        "-Wconversion", "-Wcast-align", "-pedantic", "-Werror", "-c",
                                        str(folder / "kan.c"), "-o", str(build_dir / f"{name}.o")],
                                       capture_output=True, text=True, check=False)
            assert completed.returncode == 0, (name, level, completed.stderr[-2000:])
