"""The default digits KAN on every emulated board: firmware == Python integer reference == host C."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import assert_c_equals_reference
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.data.datasets import load_dataset
from kan2mcu.firmware.boards import QEMU_BOARDS, get_board
from kan2mcu.firmware.measure import build_firmware, measure
from kan2mcu.firmware.qemu import run_elf
from kan2mcu.generate import generate_model
from kan2mcu.quant.reference import run_model
from kan2mcu.check.verify import verification_codes
from test_firmware_qemu import offline_environment  # noqa: F401  (fresh offline PlatformIO core, dead proxy)


@pytest.fixture(scope="module")
def digits_dirs(digits_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("digits-fw")
    generate_model(digits_checkpoint, base / "kan_int", quiet=True)
    generate_model(digits_checkpoint, base / "kan_float", arith="float", quiet=True)
    _, qmodel = load_bundle(base / "kan_int")
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    assert_c_equals_reference(base / "kan_int", codes, base / "host")  # host C == reference
    return base


@pytest.mark.parametrize("board", [b for b in QEMU_BOARDS if get_board(b).has_multiplier])  # rv32ec: test_cores.py
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


def _reference_vectors(folder: Path, codes: np.ndarray) -> dict:
    _, qmodel = load_bundle(folder)
    return {"inputs": codes.tolist(), "outputs": run_model(qmodel, codes).tolist(), "abs_tolerance": 0}


def _run_vectors(folder: Path, board: str, vectors: dict, project: Path) -> dict:
    """Build the firmware with these vectors, run it under QEMU, return its result line."""
    run = run_elf(get_board(board), build_firmware(folder, board, project, vectors_override=vectors))
    assert run.result is not None, run.output[-2000:]
    return run.result


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_firmware_outputs_equal_the_reference_on_many_inputs(digits_dirs, board, tmp_path):
    """The firmware itself runs 160 inputs (test-split codes, random codes, all-zero and all-max)
    and compares every output with the Python integer reference's."""
    _, qmodel = load_bundle(digits_dirs / "kan_int")
    codes = verification_codes(qmodel, load_dataset("digits").x_test)
    codes = np.concatenate([codes[:80], codes[450:528], codes[1450:1452]])  # test split, random, extremes
    result = _run_vectors(digits_dirs / "kan_int", board, _reference_vectors(digits_dirs / "kan_int", codes),
                          tmp_path / "p")
    assert (result["check"], result["mismatches"], result["vectors"]) == ("PASS", 0, 160)


@pytest.mark.parametrize("strategy", ["spline", "edge-table"])
@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_generated_small_model_on_firmware(small_checkpoints, board, strategy, tmp_path):
    """A small cubic model at 8 bits (on M4: the SMLAD spline path, the UXTAB16 edge-table path;
    on M0 the Armv6-M asm loop of the edge-table kernel): 300 random codes and every code of every input, run by the
    firmware; one deliberately wrong expected output must be caught."""
    from kan2mcu.quant.quantize import LayerPlan

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True,
                   plan=[LayerPlan(strategy, 8), LayerPlan(strategy, 8)])
    rng = np.random.default_rng(3)
    codes = np.concatenate([rng.integers(0, 256, size=(300, 8)), np.repeat(np.arange(256)[:, None], 8, axis=1)])
    vectors = _reference_vectors(tmp_path / "m", codes)
    result = _run_vectors(tmp_path / "m", board, vectors, tmp_path / "p")
    assert (result["check"], result["mismatches"], result["vectors"]) == ("PASS", 0, len(codes))
    if board == "qemu-cortex-m4":
        vectors["outputs"][123][2] += 1
        result = _run_vectors(tmp_path / "m", board, vectors, tmp_path / "wrong")
        assert (result["check"], result["mismatches"]) == ("FAIL", 1)
        assert (result["first_mismatch"]["vector"], result["first_mismatch"]["index"]) == (123, 2)


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-cortex-m7", "qemu-rv32imac"])
def test_halfword_edge_tables_on_firmware(small_checkpoints, board, tmp_path):
    """Halfword edge-table entries, 12 bits in layer 0 (5 outputs: a padded tail word) and 16 bits
    in layer 1 (on M0 the C loop): 300 random codes and every code of every input, run by the
    firmware, equal the Python integer reference's outputs."""
    from kan2mcu.quant.quantize import LayerPlan

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", calibration=calibration, quiet=True,
                   plan=[LayerPlan("edge-table", 8, 12), LayerPlan("edge-table", 6, 16)])
    rng = np.random.default_rng(4)
    codes = np.concatenate([rng.integers(0, 256, size=(300, 8)), np.repeat(np.arange(256)[:, None], 8, axis=1)])
    result = _run_vectors(tmp_path / "m", board, _reference_vectors(tmp_path / "m", codes), tmp_path / "p")
    assert (result["check"], result["mismatches"], result["vectors"]) == ("PASS", 0, len(codes))
    # and with uint16 codes (10 and 11 bits) into halfword entries: every code, and codes above the top
    from conftest import make_random_checkpoint

    checkpoint, calibration = make_random_checkpoint(tmp_path / "r.pt", (2, 5, 1), 5, 3, seed=4)
    generate_model(checkpoint, tmp_path / "w", calibration=calibration, quiet=True, max_error=1.0,
                   plan=[LayerPlan("edge-table", 10, 12), LayerPlan("edge-table", 11, 16)])
    codes = np.concatenate([np.repeat(np.arange(1024)[:, None], 2, axis=1), rng.integers(0, 2048, size=(100, 2))])
    result = _run_vectors(tmp_path / "w", board, _reference_vectors(tmp_path / "w", codes), tmp_path / "pw")
    assert (result["check"], result["mismatches"], result["vectors"]) == ("PASS", 0, len(codes))


@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m0", "qemu-rv32imac"])
def test_low_bit_spline_kernel_on_firmware(small_checkpoints, board, tmp_path):
    """Low-bit coefficients with byte base-branch weights (--base-bits 8: SXTB16 pairs on M4): in the
    cubic model (5-bit coefficients) the halfword kernel (4 and 1 outputs per pass on M0, 5 and 3 outputs), in the
    quadratic one the nibble path (layers of 4 outputs) and the byte path (2 outputs). Every code of
    every input and 300 random codes, run by the firmware, equal the Python integer reference's."""
    from kan2mcu.quant.quantize import QuantOptions

    # the cubic model at 5-bit coefficients (4-bit ones take the compact nibble words)
    for shape, n_in, coef in (("8x5x3-G5-k3", 8, 5), ("6x4x4x2-G3-k2", 6, 4)):
        options = QuantOptions(act_bits=8, spline_bits=3, coef_bits=coef, base_bits=8)
        checkpoint, calibration = small_checkpoints[shape]
        generate_model(checkpoint, tmp_path / shape, calibration=calibration, quiet=True, strategy="spline",
                       options=options, max_error=10.0, allow_saturation=True)
        rng = np.random.default_rng(5)
        codes = np.concatenate([rng.integers(0, 256, size=(300, n_in)),
                                np.repeat(np.arange(256)[:, None], n_in, axis=1)])
        vectors = _reference_vectors(tmp_path / shape, codes)
        result = _run_vectors(tmp_path / shape, board, vectors, tmp_path / f"p{shape}")
        assert (result["check"], result["mismatches"], result["vectors"]) == ("PASS", 0, len(codes)), shape


@pytest.fixture(scope="module")
def spline_dir(digits_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits-spline") / "kan"
    generate_model(digits_checkpoint, folder, strategy="spline", quiet=True)  # 8/8/8, aligned layer 0
    return folder


@pytest.mark.parametrize("level", ["-O0", "-Os"])
@pytest.mark.parametrize("board", ["qemu-cortex-m4", "qemu-cortex-m3", "qemu-cortex-m0", "qemu-rv32imac"])
def test_users_optimisation_levels_build_and_match(digits_dirs, spline_dir, board, level, tmp_path):
    """Users build at their own level (debug -O0, size -Os): the kernels' inline asm needs -O1..-O3
    (KAN_ASM), elsewhere the portable C runs. Both models build at the level and the firmware
    reproduces the reference's outputs exactly (its self-check against the test vectors)."""
    from kan2mcu.firmware.measure import firmware_elf
    from kan2mcu.firmware.pio import run_pio
    from kan2mcu.firmware.project import write_project

    info = get_board(board)
    for name, folder in (("edge", digits_dirs / "kan_int"), ("spline", spline_dir)):
        project = write_project(folder, board, tmp_path / name)
        ini = project / "platformio.ini"
        ini.write_text(ini.read_text().replace("model_build_flags = -O2", f"model_build_flags = {level}"))
        completed = run_pio(project, info.name)
        assert completed.returncode == 0, (name, completed.stdout[-3000:])
        run = run_elf(info, firmware_elf(project, info))
        assert run.result is not None and run.result["check"] == "PASS", (name, run.output[-2000:])
        assert run.result["mismatches"] == 0


@pytest.mark.parametrize("board", ["qemu-cortex-m0", "qemu-cortex-m4"])
def test_wide_spline_layer_on_firmware(board, tmp_path):
    """A spline layer of 32 outputs with 12-bit base weights, both coefficient layouts: too wide for
    the Armv6-M base assembly's weight steps, so M0 reads the signed weights in C (a biased copy
    there once gave wrong outputs); the firmware's outputs equal the reference's."""
    from conftest import make_random_checkpoint
    from kan2mcu.quant.quantize import LayerPlan, QuantOptions

    checkpoint, calibration = make_random_checkpoint(tmp_path / "w.pt", (12, 32, 3), 5, 3, seed=5)
    for layout in (None, "compact"):
        folder = tmp_path / f"kan-{layout}"
        generate_model(checkpoint, folder, calibration=calibration, options=QuantOptions(coef_bits=4),
                       plan=[LayerPlan("spline", 8, coef_layout=layout)] * 2, quiet=True, allow_saturation=True)
        entry = measure([folder], board, tmp_path / f"m-{layout}")["models"][0]
        assert entry["check"] == "PASS", (layout, entry["firmware_result"])
