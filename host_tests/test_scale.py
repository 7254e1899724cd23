"""Large layers: memory grows with edges x codes, not with rows x outputs x inputs x (k+1)
(issue 11, item 8). Peak memory of a real `kan2mcu generate` process, not timed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import make_random_checkpoint


@pytest.mark.parametrize("strategy", ["spline", "auto"])
def test_784x256x10_generates_under_1_gb(tmp_path, strategy):
    checkpoint, calibration = make_random_checkpoint(tmp_path / "big.pt", (784, 256, 10), 5, 3, seed=0)
    # a fresh parent per measurement: RUSAGE_CHILDREN keeps the largest child it ever waited for
    probe = ("import resource, subprocess, sys; run = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(run.returncode)")
    run = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "kan2mcu", "generate", str(checkpoint),
                          "-o", str(tmp_path / "m"), "--calibration", str(calibration), "--strategy", strategy, "-q",
                          "--allow-saturation", "--allow-over-budget"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    peak_kb = int(run.stdout.split()[-1])
    print(f"{strategy}: peak RSS {peak_kb / 1024:.0f} MiB")  # measured: spline 509 MiB, auto 374 MiB
    assert peak_kb < 1024 * 1024, peak_kb
