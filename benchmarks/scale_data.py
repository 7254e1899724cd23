"""Data and checkpoints of benchmarks/scale.py: digits at MNIST shape, and a synthetic wide KAN.

scikit-learn's 8x8 digits upsampled with ``scipy.ndimage.zoom`` (cubic, clipped to 0..16) to
16x16 = 256 and 28x28 = 784 inputs, written as .npz (``x``, ``y``) and trained with
``kan2mcu train --data`` (its deterministic held-out split is the accuracy reference); the
synthetic [784,128,10] KAN is random (as host_tests' make_random_checkpoint) with random
calibration inputs. Everything is cached in the work folder: a second run reuses it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

TRAINED = {"digits256": (16, "256,32,10"), "digits784": (28, "784,32,10")}
EPOCHS = 60


def digits_at(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits images zoomed from 8x8 to ``side`` x ``side`` (rows of side^2 pixels), labels."""
    from scipy.ndimage import zoom  # pylint: disable=import-outside-toplevel
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    images = np.stack([np.clip(zoom(im, side / 8.0, order=3), 0.0, 16.0) for im in digits.images])
    return np.round(images.reshape(len(images), side * side), 4), digits.target.astype(np.int64)


def trained_checkpoint(work: Path, key: str) -> Path:
    """``kan2mcu train --data`` on the upsampled digits (cached)."""
    side, widths = TRAINED[key]
    checkpoint = work / f"{key}.pt"
    if checkpoint.exists():
        return checkpoint
    data = work / f"{key}.npz"
    x, y = digits_at(side)
    np.savez(data, x=x, y=y)
    subprocess.run([sys.executable, "-m", "kan2mcu", "train", "--data", str(data), "--widths", widths,
                    "--epochs", str(EPOCHS), "--no-progress", "-o", str(checkpoint)], check=True)
    return checkpoint


def synthetic_checkpoint(work: Path, widths=(784, 128, 10), seed: int = 0) -> tuple[Path, Path]:
    """A random KAN and random calibration inputs in -1.5..1.5 (cached)."""
    import torch  # pylint: disable=import-outside-toplevel

    from kan2mcu.model.checkpoint import save_checkpoint  # pylint: disable=import-outside-toplevel
    from kan2mcu.model.torch_kan import KAN  # pylint: disable=import-outside-toplevel

    name = "synthetic" + "x".join(map(str, widths))
    checkpoint, calibration = work / f"{name}.pt", work / f"{name}.npy"
    if checkpoint.exists() and calibration.exists():
        return checkpoint, calibration
    torch.manual_seed(seed)
    model = KAN(list(widths), grid_size=5, spline_order=3)
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.normal_(0.0, 0.5)
    save_checkpoint(model, checkpoint, dataset=None, input_transform=None)
    np.save(calibration, np.random.default_rng(seed).uniform(-1.5, 1.5, size=(256, widths[0])))
    return checkpoint, calibration


if __name__ == "__main__":  # prepare everything: python benchmarks/scale_data.py WORK
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kan2mcu-scale")
    folder.mkdir(parents=True, exist_ok=True)
    for k in TRAINED:
        print(trained_checkpoint(folder, k))
    print(synthetic_checkpoint(folder))
