"""Shared fixtures: the default digits KAN (trained once per session) and small random KANs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REQUIRE_TOOLCHAINS = os.environ.get("CI") == "true" or os.environ.get("KAN2MCU_REQUIRE_TOOLCHAINS") == "1"


def require_tool(name: str) -> str:
    """Path of a tool; a missing tool skips the test, or fails it in CI (where all must be there)."""
    path = shutil.which(name)
    if path is None:
        if REQUIRE_TOOLCHAINS:
            pytest.fail(f"{name} is required in CI but missing")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """The default [64, 16, 10] KAN trained on digits (the README's embedded default)."""
    from kan2mcu.train import train

    path = tmp_path_factory.mktemp("digits") / "digits_kan.pt"
    train(path, progress=False)
    return path


def make_random_checkpoint(path: Path, widths, grid_size: int, order: int, seed: int) -> tuple[Path, Path]:
    """A randomly initialised KAN (no data set) and a .npy of calibration inputs for it."""
    import torch

    from kan2mcu.checkpoint import save_checkpoint
    from kan2mcu.torch_kan import KAN

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
