"""The default digits KAN on every emulated board: firmware == Python integer reference == host C."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.firmware.boards import QEMU_BOARDS
from kan2mcu.firmware.measure import measure
from kan2mcu.generate import generate_model
from kan2mcu.verify import verify
from test_firmware_qemu import offline_environment  # noqa: F401  (fresh offline PlatformIO core, dead proxy)


@pytest.fixture(scope="module")
def digits_dirs(digits_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("digits-fw")
    generate_model(digits_checkpoint, base / "kan_int", quiet=True)
    generate_model(digits_checkpoint, base / "kan_float", arith="float", quiet=True)
    assert verify(base / "kan_int", build_dir=base / "host", quiet=True).bit_exact  # host C == reference
    return base


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_digits_int_and_float_on_every_emulated_board(digits_dirs, board):
    report = measure([digits_dirs / "kan_int", digits_dirs / "kan_float"], board, digits_dirs / f"m-{board}")
    by_arith = {m["arith"]: m for m in report["models"]}
    for arith in ("int", "float"):
        entry = by_arith[arith]
        # the firmware compares every output with the Python integer reference's (int: exactly)
        assert entry["check"] == "PASS", entry["firmware_result"]
        assert entry["firmware_result"]["mismatches"] == 0
        assert entry["firmware_result"]["vectors"] >= 8
        assert entry["instructions"] > 0 and entry["cycles_estimate"] >= entry["instructions"] * 0.5
        assert entry["flash_bytes"] > 0 and entry["ram_bytes"] > 0
    # the integer model is cheaper to run than the float32 back end on every core
    assert by_arith["int"]["instructions"] < by_arith["float"]["instructions"]


def test_firmware_outputs_are_the_reference_vectors(digits_dirs):
    """The vectors the firmware checks are the integer reference's outputs for those inputs."""
    import json

    from kan2mcu.bundle import load_bundle
    from kan2mcu.reference import run_model

    vectors = json.loads((digits_dirs / "kan_int" / "test_vectors.json").read_text())
    _, qmodel = load_bundle(digits_dirs / "kan_int")
    np.testing.assert_array_equal(run_model(qmodel, np.array(vectors["inputs"])), np.array(vectors["outputs"]))
    assert vectors["abs_tolerance"] == 0
