"""Issue 18, defects 1-10: no data loss, no misleading output. Each test failed before its fix."""
from __future__ import annotations

import csv
import functools
import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_one_error, run_cli  # noqa: E402
from kan2mcu.check import hostcc, verify as verify_module  # noqa: E402
from kan2mcu.codegen.bundle import load_bundle  # noqa: E402
from kan2mcu.errors import VerificationError  # noqa: E402
from kan2mcu.generate import generate_model  # noqa: E402
from kan2mcu.check.hostcc import HostModel  # noqa: E402


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. data loss ---------------------------------------------------------------------------------

def test_generate_into_the_folder_holding_its_checkpoint_loses_nothing(capsys, small, generated):
    """The issue's recipe: a model folder that also holds the input checkpoint and the user's notes."""
    checkpoint, _ = small
    shutil.copy(checkpoint, generated / "ckpt.pt")
    (generated / "notes.txt").write_text("notes\n")
    before = snapshot(generated)
    status, err = run_cli(capsys, "generate", generated / "ckpt.pt", "-o", generated, "--strategy", "spline")
    assert_one_error(status, err, "ckpt.pt", "notes.txt", "did not write")
    assert snapshot(generated) == before


def test_the_manifest_lists_what_may_be_replaced(small, generated):
    checkpoint, calibration = small
    listed = json.loads((generated / "kan2mcu.json").read_text())["files"]
    assert listed == sorted(p.name for p in generated.iterdir())
    (generated / "layer0_edges.png").write_bytes(b"a plot of kan2mcu plot")  # kan2mcu's too
    generate_model(checkpoint, generated, name="other", calibration=calibration, quiet=True)
    assert "kan.c" not in {p.name for p in generated.iterdir()}  # the older generation's files go


def test_a_manifest_without_a_file_list_still_protects_foreign_files(capsys, small, generated):
    checkpoint, calibration = small
    manifest = json.loads((generated / "kan2mcu.json").read_text())
    del manifest["files"]  # as kan2mcu wrote it before the list existed
    (generated / "kan2mcu.json").write_text(json.dumps(manifest))
    (generated / "results.csv").write_text("mine\n")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", generated, "--calibration", calibration)
    assert_one_error(status, err, "results.csv")
    (generated / "results.csv").unlink()
    status, err = run_cli(capsys, "generate", checkpoint, "-o", generated, "--calibration", calibration, "-q")
    assert status == 0, err


# ---- 2. verify --fuzz budgets ---------------------------------------------------------------------

@pytest.mark.parametrize("value,needle", [("nan", "finite"), ("inf", "finite"), ("-1", "negative"),
                                          ("1e-9", "at least 1 s")])
def test_verify_fuzz_budget_is_checked(capsys, generated, value, needle):
    status, err = run_cli(capsys, "verify", generated, "--fuzz", value)
    assert_one_error(status, err, "--fuzz", needle)


def test_fuzz_reports_the_seconds_it_ran(generated, tmp_path, monkeypatch):
    """The figure is measured: a fuzz run slowed by 2 s reports at least 3 s, not the 1 s asked for."""
    real_run = hostcc.subprocess.run

    def slow_run(cmd, *args, **kwargs):
        if Path(cmd[0]).name == "fuzz":
            time.sleep(2)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(hostcc.subprocess, "run", slow_run)
    result = hostcc.fuzz(generated, 1, tmp_path / "fz", engine="loop")
    assert 3 <= result.seconds < 60 and result.executions > 1000


# ---- 3. --max-error -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_max_error_must_be_a_positive_number(capsys, small, tmp_path, value):
    checkpoint, calibration = small
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration,
                          "--max-error", value)
    assert_one_error(status, err, "--max-error")
    assert not (tmp_path / "m").exists()


# ---- 4. sweep --jobs 0 ----------------------------------------------------------------------------

def test_sweep_jobs_zero_makes_no_folder(capsys, small, tmp_path):
    checkpoint, calibration = small
    status, err = run_cli(capsys, "sweep", checkpoint, "-o", tmp_path / "sw", "--board", "none", "--jobs", "0",
                          "--calibration", calibration)
    assert_one_error(status, err, "--jobs")
    assert not (tmp_path / "sw").exists()


# ---- 5. --prefix on a kan2mcu checkpoint ----------------------------------------------------------

def test_prefix_naming_nothing_is_refused(capsys, small, tmp_path):
    checkpoint, calibration = small
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration,
                          "--prefix", "nosuch")
    assert_one_error(status, err, "'nosuch'", "one KAN")
    assert not (tmp_path / "m").exists()


# ---- 6. a plain pickle ----------------------------------------------------------------------------

def test_plain_pickle_gives_only_kan2mcus_error(tmp_path):
    """Real process: torch's warnings go to its stderr (in-process, pytest would capture them)."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    run = subprocess.run([sys.executable, "-m", "kan2mcu", "generate", str(path), "-o", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert_one_error(run.returncode, run.stderr, "plain.pkl", "not a torch.save file")
    assert "Warning" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


# ---- 7. a NaN calibration cell --------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_nan_calibration_cell_is_located(capsys, small, tmp_path, suffix):
    checkpoint, calibration = small
    rows = np.load(calibration)
    rows[17, 5] = np.nan
    bad = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        np.save(bad, rows)
    else:
        np.savetxt(bad, rows, delimiter=",")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", bad)
    assert_one_error(status, err, "row 17, column 5", "nan")


# ---- 8. finetune -o an existing file --------------------------------------------------------------

def test_finetune_does_not_overwrite_a_foreign_file(capsys, small, tmp_path):
    from kan2mcu.model.checkpoint import is_own_checkpoint

    checkpoint, _ = small
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    status, err = run_cli(capsys, "finetune", checkpoint, "-o", notes, "--epochs", "1", "--dataset", "digits")
    assert_one_error(status, err, "notes.txt", "not a kan2mcu checkpoint")
    assert notes.read_text() == "precious\n"
    assert is_own_checkpoint(checkpoint) and not is_own_checkpoint(notes)


# ---- 9. the guard weighs held-out rows ------------------------------------------------------------

@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A 3-feature, 3-class own-data checkpoint, and calibration rows 10x wider than its data."""
    from kan2mcu.training.train import train_on_data

    base = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(240, 3)) * [1.0, 2.0, 5.0] + [0.0, 1.0, 10.0]
    y = np.where(x[:, 0] + 0.5 * (x[:, 1] - 1) > 0.2, "a", np.where(x[:, 2] > 10, "b", "c"))
    for name, rows, labels in (("data.csv", x, y), ("wide.csv", (x - [0, 1, 10]) * 10 + [0, 1, 10], None)):
        with open(base / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["f0", "f1", "f2"] + (["label"] if labels is not None else []))
            for i, row in enumerate(rows):
                writer.writerow([repr(float(v)) for v in row] + ([labels[i]] if labels is not None else []))
    result = train_on_data(base / "m.pt", base / "data.csv", target="label", task="classify", widths=(3, 6, 3),
                           epochs=40, progress=False)
    return result.checkpoint, base / "wide.csv"


def test_guard_refuses_a_model_that_loses_accuracy_on_held_out_rows(capsys, own_data, tmp_path):
    checkpoint, wide = own_data
    args = ["generate", checkpoint, "-o", tmp_path / "m", "--calibration", wide, "--strategy", "spline",
            "--act-bits", "5", "-q"]  # the calibration figures pass (argmax agreement 86%)
    status, err = run_cli(capsys, *args)
    assert_one_error(status, err, "held-out split", "accuracy", "limit 0.10", "--allow-saturation")
    assert not (tmp_path / "m").exists()
    status, err = run_cli(capsys, *args, "--allow-saturation")
    assert status == 0 and "written anyway" in err, err
    held = json.loads((tmp_path / "m" / "report.json").read_text())["guard"]["held_out"]
    assert held["refused"] and held["loss"] > 0.10 and held["float"] > 0.9
    # calibrated on its own training rows the same bit widths pass, the figures in the report
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "ok", "--strategy", "spline",
                          "--act-bits", "5", "-q")
    assert status == 0, err
    held = json.loads((tmp_path / "ok" / "report.json").read_text())["guard"]["held_out"]
    assert held["refused"] is None and held["loss"] <= 0.10


# ---- 10. differential fuzzing ---------------------------------------------------------------------

def plant_wrong_answer(folder: Path) -> None:
    """One output off by one where input 3 is some code A and input 5 is above 200 (about one input
    in 1200): no crash, no sanitizer finding, and A picked so that no input of the regular
    verification (kan2mcu.verify.verification_codes) meets the condition."""
    from kan2mcu.generate import load_calibration
    from kan2mcu.check.verify import verification_codes

    _, qmodel = load_bundle(folder)
    codes = verification_codes(qmodel, load_calibration(folder / "calibration.npy", qmodel.in_features))
    code = next(a for a in range(1, 200) if not np.any(codes[codes[:, 3] == a][:, 5] > 200))
    source = folder / "kan.c"
    text = source.read_text()
    line = "    kan_layer1(kan_act0, output);\n"  # first in kan_infer (the codes API), then in kan_infer_q
    assert text.count(line) == 2 and text.index(line) < text.index("int kan_infer_q(")
    source.write_text(text.replace(line, line + f"    if (input[3] == {code}u && input[5] > 200u) {{\n"
                                               "        output[0] += 1;\n    }\n", 1))


@pytest.fixture()
def loop_engine(monkeypatch):
    """The random loop (deterministic: seeded) whether or not clang links libFuzzer here."""
    monkeypatch.setattr(verify_module, "fuzz_c", functools.partial(hostcc.fuzz, engine="loop"))


def test_fuzzing_finds_a_planted_wrong_answer(capsys, generated, loop_engine):
    plant_wrong_answer(generated)
    model, qmodel = load_bundle(generated)
    host = HostModel(generated, generated.parent / "host")
    with pytest.raises(VerificationError, match="found a wrong answer") as caught:
        verify_module.fuzz_differential(generated, host, model, qmodel, 1, generated.parent / "fz")
    assert "output 0" in str(caught.value)
    status, err = run_cli(capsys, "verify", generated)
    assert status == 0, err  # the regular verification misses it
    status, err = run_cli(capsys, "verify", generated, "--fuzz", "1")
    assert_one_error(status, err, "wrong answer")


def test_clean_fuzz_run_says_what_it_compared(capsys, generated, loop_engine):
    from kan2mcu import cli

    assert cli.main(["verify", str(generated), "--fuzz", "1"]) == 0
    out = capsys.readouterr().out
    assert "C == integer reference on the" in out and "inputs the fuzzer kept" in out


def test_float_fuzzing_finds_a_planted_wrong_answer(capsys, small, tmp_path, loop_engine):
    """Float back end: off by one where input 3 is exactly 1.0f (never in verify's random rows; one of
    the fuzz loop's special values)."""
    from kan2mcu import cli

    checkpoint, calibration = small
    folder = tmp_path / "f"
    generate_model(checkpoint, folder, arith="float", calibration=calibration, quiet=True)
    assert cli.main(["verify", str(folder), "--fuzz", "1"]) == 0
    assert "C within tolerance of the float model on the" in capsys.readouterr().out
    source = folder / "kan.c"
    line = "    kan_layer1(kan_act0, output);\n"
    text = source.read_text()
    assert text.count(line) == 1
    source.write_text(text.replace(line, line + "    if (input[3] == 1.0f) {\n        output[0] += 1.0f;\n    }\n"))
    status, err = run_cli(capsys, "verify", folder)
    assert status == 0, err  # the regular verification misses it
    status, err = run_cli(capsys, "verify", folder, "--fuzz", "1")
    assert_one_error(status, err, "wrong answer", "float model")


@pytest.mark.parametrize("metric,before,after,refused", [
    ("accuracy", 0.9583, 0.375, True), ("accuracy", 0.96, 0.90, False),
    ("r2", 0.85, 0.60, True), ("r2", 0.85, 0.80, False), ("r2", 0.85, float("nan"), True)])
def test_held_out_loss_limit(metric, before, after, refused):
    from kan2mcu.quant import guard
    from kan2mcu.errors import QuantizationError

    evaluated = {"data": "held-out split", "samples": 48, "metric": metric,
                 "float": {metric: before}, "quantized": {metric: after}}
    figures = guard.held_out_loss(evaluated)
    assert bool(figures["refused"]) is refused
    if refused:
        with pytest.raises(QuantizationError, match="--allow-saturation"):
            guard.check_held_out(figures)
        warned = []
        guard.check_held_out(figures, force=True, warn=warned.append)
        assert "written anyway" in warned[0]
