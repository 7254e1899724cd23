"""Bad-input matrix (issue 11): every failure gives exit 1 (2 for usage), exactly one
"kan2mcu: error:" line, no traceback, and leaves the output untouched or complete.

Most cases run the CLI in-process (``kan2mcu.cli.main``: an uncaught exception fails the test);
a few run ``python -m kan2mcu`` to show the real process's stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_one_error, run_cli  # noqa: E402
from kan2mcu import cli, generate as generate_module  # noqa: E402
from kan2mcu.codegen import identity, model_dir  # noqa: E402
from kan2mcu.model.checkpoint import save_checkpoint  # noqa: E402
from kan2mcu.generate import generate_model  # noqa: E402
from kan2mcu.check.hostcc import HostModel, fuzz  # noqa: E402
from kan2mcu.model.torch_kan import KAN  # noqa: E402

UNWRITABLE = Path("/proc/kan2mcu-test-output")  # not creatable even by root


def snapshot(folder: Path) -> dict:
    """Every file (relative name -> bytes) under ``folder``, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_leftovers(parent: Path) -> None:
    """No staging or backup folder of the atomic write remains beside the output."""
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".") and (".new-" in p.name or ".old-" in p.name)]


def scaled_checkpoint(source: Path, target: Path, factor: float, suffixes=("spline_weight", "base_weight")) -> Path:
    payload = torch.load(source, weights_only=True)
    for key, value in payload["state_dict"].items():
        if key.endswith(suffixes):
            payload["state_dict"][key] = value * factor
    torch.save(payload, target)
    return target


# ---- output paths -------------------------------------------------------------------------------

def test_output_is_a_file(capsys, small, tmp_path):
    checkpoint, calibration = small
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", target, "--calibration", calibration)
    assert_one_error(status, err, "is a file")
    assert target.read_text() == "keep me"


def test_output_under_a_file(capsys, small, tmp_path):
    checkpoint, calibration = small
    (tmp_path / "file.txt").write_text("keep me")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "file.txt" / "sub" / "m",
                          "--calibration", calibration)
    assert_one_error(status, err, "is a file, not a folder")


def test_output_not_writable(capsys, small):
    checkpoint, calibration = small
    status, err = run_cli(capsys, "generate", checkpoint, "-o", UNWRITABLE, "--calibration", calibration)
    assert_one_error(status, err, "not writable")


def test_output_folder_with_foreign_files_is_refused(capsys, small, tmp_path):
    checkpoint, calibration = small
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "mine", "--calibration", calibration)
    assert_one_error(status, err, "not a kan2mcu model folder")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_build_output_is_a_file(capsys, generated, tmp_path):
    target = tmp_path / "project.txt"
    target.write_text("keep me")
    status, err = run_cli(capsys, "build", generated, "--board", "qemu-cortex-m4", "-o", target)
    assert_one_error(status, err)
    assert target.read_text() == "keep me"


# ---- atomic output ------------------------------------------------------------------------------

def test_regeneration_leaves_no_stale_files(small, generated, tmp_path):
    """Files of the previous generation go (kan.c under another --name); a file kan2mcu did not
    write is never deleted: generate refuses (test_defects.py)."""
    checkpoint, calibration = small
    assert (generated / "calibration.npy").exists()
    generate_model(checkpoint, generated, name="other", calibration=calibration, quiet=True)
    names = sorted(p.name for p in generated.iterdir())
    assert "kan.c" not in names and "kan.h" not in names and "other.c" in names
    no_leftovers(tmp_path)


@pytest.mark.parametrize("fail_at", [1, 4, 8])
def test_interrupted_write_keeps_the_old_model(small, generated, tmp_path, monkeypatch, fail_at):
    """Ctrl-C while files are written: the old folder is byte-for-byte what it was, nothing else remains."""
    checkpoint, calibration = small
    before = snapshot(generated)
    calls = {"n": 0}
    real_text, real_bytes = Path.write_text, Path.write_bytes

    def interrupting(real):
        def write(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)
        return write

    monkeypatch.setattr(Path, "write_text", interrupting(real_text))
    monkeypatch.setattr(Path, "write_bytes", interrupting(real_bytes))
    with pytest.raises(KeyboardInterrupt):
        generate_model(checkpoint, generated, calibration=calibration, quiet=True,
                       options=generate_module.QuantOptions(coef_bits=4))
    assert calls["n"] == fail_at
    assert snapshot(generated) == before
    no_leftovers(tmp_path)


def test_interrupt_between_the_renames_restores_the_old_model(small, generated, tmp_path, monkeypatch):
    checkpoint, calibration = small
    before = snapshot(generated)
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the old folder is moved aside; the new one not yet in place
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(model_dir.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        generate_model(checkpoint, generated, calibration=calibration, quiet=True,
                       options=generate_module.QuantOptions(coef_bits=4))
    assert snapshot(generated) == before
    no_leftovers(tmp_path)


def test_failed_generation_writes_nothing(capsys, small, tmp_path):
    checkpoint, calibration = small
    out = tmp_path / "new"
    status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration, "--name", "main")
    assert_one_error(status, err)
    assert not out.exists()
    no_leftovers(tmp_path)


# ---- reserved names -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,reason", [("kan2mcu", "harness"), ("kan2mcu_net", "harness"), ("main", "main.c"),
                                         ("int", "C keyword"), ("return", "C keyword"), ("stdint", "<stdint.h>"),
                                         ("Bad-Name", "lower-case C identifier")])
def test_reserved_names_are_refused(capsys, small, tmp_path, name, reason):
    checkpoint, calibration = small
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration,
                          "--name", name)
    assert_one_error(status, err, "--name", reason)
    suggestion = err.split("e.g. ")[-1].strip().strip("'")
    assert identity.reserved_name_reason(suggestion) is None and identity.c_prefix(suggestion) == suggestion
    assert not (tmp_path / "m").exists()


# ---- checkpoints --------------------------------------------------------------------------------

def test_truncated_checkpoint(capsys, small, tmp_path):
    checkpoint, calibration = small
    data = Path(checkpoint).read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{cut}.pt"
        truncated.write_bytes(data[:cut])
        status, err = run_cli(capsys, "generate", truncated, "-o", tmp_path / "m", "--calibration", calibration)
        assert_one_error(status, err, "truncated")
        assert "Errno" not in err


def test_inconsistent_shapes_inside_a_layer(capsys, tmp_path):
    state = KAN([4, 3, 2]).state_dict()
    state["layers.0.spline_scaler"] = torch.ones(2, 4)  # spline_weight is [3, 4, 8]
    torch.save(state, tmp_path / "bad.pt")
    status, err = run_cli(capsys, "generate", tmp_path / "bad.pt", "-o", tmp_path / "m")
    assert_one_error(status, err, "layers.0", "spline_scaler")
    state = KAN([4, 3, 2]).state_dict()
    state["layers.1.base_weight"] = torch.ones(2, 5)
    torch.save(state, tmp_path / "bad2.pt")
    status, err = run_cli(capsys, "generate", tmp_path / "bad2.pt", "-o", tmp_path / "m")
    assert_one_error(status, err, "layers.1", "base_weight")
    assert not (tmp_path / "m").exists()


def test_weights_x1e30(small, tmp_path):
    """Real process: OverflowError inside quantization becomes one line."""
    checkpoint, calibration = small
    big = scaled_checkpoint(checkpoint, tmp_path / "x1e30.pt", 1e30)
    # spline layers: their int64 requantization overflows (edge tables are scale-invariant and deploy it)
    run = subprocess.run([sys.executable, "-m", "kan2mcu", "generate", str(big), "-o", str(tmp_path / "m"),
                          "--calibration", str(calibration), "--strategy", "spline"], capture_output=True, text=True)
    assert_one_error(run.returncode, run.stderr)
    assert not (tmp_path / "m").exists()


def test_memory_error_is_reported(capsys, small, tmp_path, monkeypatch):
    checkpoint, calibration = small

    def no_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(generate_module, "choose", no_memory)  # the planner quantizes
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration)
    assert_one_error(status, err, "out of memory")
    assert not (tmp_path / "m").exists()


def test_two_kans_in_one_state_dict(capsys, tmp_path):
    a, b = KAN([4, 3, 2]).state_dict(), KAN([4, 5, 2]).state_dict()
    state = {**{f"head.{k}": v for k, v in a.items()}, **{f"enc.{k}": v for k, v in b.items()}}
    state["stem.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / "two.pt")
    calibration = tmp_path / "c.npy"
    np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (64, 4)))
    status, err = run_cli(capsys, "generate", tmp_path / "two.pt", "-o", tmp_path / "m", "--calibration", calibration)
    assert_one_error(status, err, "'enc'", "'head'", "--prefix")
    assert not (tmp_path / "m").exists()
    status, err = run_cli(capsys, "generate", tmp_path / "two.pt", "-o", tmp_path / "m", "--calibration", calibration,
                          "--prefix", "enc", "-q", "--allow-saturation", "--max-error", "10")
    assert status == 0, err
    assert json.loads((tmp_path / "m" / "report.json").read_text())["model"]["widths"] == [4, 5, 2]
    assert "warning:" in err and "stem.weight" in err and "ignored the KAN(s) 'head'" in err
    status, err = run_cli(capsys, "generate", tmp_path / "two.pt", "-o", tmp_path / "m", "--prefix", "nope")
    assert_one_error(status, err, "'nope'", "'enc'")


def test_efficient_kan_base_activation_is_stated(capsys, tmp_path):
    torch.save(KAN([4, 3, 2]).state_dict(), tmp_path / "ek.pt")
    calibration = tmp_path / "c.npy"
    np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (64, 4)))
    status, err = run_cli(capsys, "generate", tmp_path / "ek.pt", "-o", tmp_path / "m", "--calibration", calibration,
                          "--allow-saturation", "--max-error", "10")  # an untrained KAN: accuracy is not the point
    assert status == 0, err
    assert "base activation silu (assumed" in err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["model"]["base_activation"].startswith("silu (assumed")
    assert "Base activation: silu (assumed" in (tmp_path / "m" / "report.md").read_text()


# ---- train ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["folder", "under-file", "unwritable"])
def test_train_output_checked_before_training(capsys, tmp_path, monkeypatch, target):
    import kan2mcu.training.train as train_module

    def no_training(*_args, **_kwargs):
        raise AssertionError("the data set was loaded: the output was not checked first")

    monkeypatch.setattr(train_module, "load_dataset", no_training)
    (tmp_path / "file.txt").write_text("x")
    path = {"folder": tmp_path, "under-file": tmp_path / "file.txt" / "m.pt", "unwritable": UNWRITABLE / "m.pt"}[target]
    status, err = run_cli(capsys, "train", "-o", path, "--epochs", "1")
    assert_one_error(status, err, "-o")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("args,needle", [(["--order", "9"], "--order"), (["--grid-size", "0"], "--grid-size"),
                                         (["--epochs", "0"], "--epochs"), (["--hidden", "0"], "--hidden")])
def test_train_option_errors_name_the_option(capsys, tmp_path, args, needle):
    status, err = run_cli(capsys, "train", "-o", tmp_path / "m.pt", *args)
    assert_one_error(status, err, needle)
    assert not (tmp_path / "m.pt").exists()


def test_train_usage_error_is_exit_2(capsys, tmp_path):
    status, err = run_cli(capsys, "train", "-o", tmp_path / "m.pt", "--epochs", "many")
    assert_one_error(status, err, "--epochs", code=2)


def test_save_checkpoint_failure_leaves_no_tmp(tmp_path, monkeypatch):
    from kan2mcu.errors import OptionError

    def failing_save(_payload, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OptionError, match="No space left"):
        save_checkpoint(KAN([4, 3, 2]), tmp_path / "m.pt", dataset=None, input_transform=None)
    assert list(tmp_path.iterdir()) == []


# ---- verify ---------------------------------------------------------------------------------------

def test_verify_without_data_says_nothing_was_compared(capsys, small_checkpoints, tmp_path):
    checkpoint, _ = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", quiet=True)  # no calibration data at all
    status = cli.main(["verify", str(tmp_path / "m"), "--random", "3000"])
    out = capsys.readouterr().out
    assert status == 0
    assert "max |C - float model|" not in out
    assert "no model inputs to compare with the float model" in out and "3000 random codes bit-exact" in out


def test_verify_bad_options(capsys, generated):
    status, err = run_cli(capsys, "verify", generated, "--random", "-5")
    assert_one_error(status, err, "--random")
    status, err = run_cli(capsys, "verify", generated, "--fuzz", "soon")
    assert_one_error(status, err, "--fuzz", code=2)


# ---- float back end: non-finite inputs ------------------------------------------------------------

def test_float_c_non_finite_inputs_are_defined(small, tmp_path):
    checkpoint, calibration = small
    generate_model(checkpoint, tmp_path / "f", arith="float", calibration=calibration, quiet=True)
    header = (tmp_path / "f" / "kan.h").read_text()
    assert "KAN_ERR_NOT_FINITE" in header and "NaN or +-Inf" in header
    host = HostModel(tmp_path / "f", tmp_path / "b")
    rows = np.zeros((5, 8), np.float32)
    rows[0, 3], rows[1, 0], rows[2, 7] = np.nan, np.inf, -np.inf
    rows[3, :] = -1.8e38
    rows[4, :] = 0.25
    outputs, status = host.run(rows)
    assert status.tolist()[:3] == [-2, -2, -2]
    assert np.all(outputs[:3] == 0.0)
    assert status[3] == 0 and status[4] == 0
    assert np.all(np.isfinite(outputs[4]))


@pytest.mark.parametrize("arith", ["int", "float"])
def test_fuzz_short_budget(small, tmp_path, arith):
    """A short fuzz run of the generated C under ASan+UBSan (libFuzzer when clang links it)."""
    checkpoint, calibration = small
    generate_model(checkpoint, tmp_path / "m", arith=arith, calibration=calibration, quiet=True)
    result = fuzz(tmp_path / "m", 2, tmp_path / "fz")
    assert result.executions > 1000, result
    loop = fuzz(tmp_path / "m", 1, tmp_path / "fz_loop", engine="loop")
    assert loop.engine.startswith("random loop") and loop.executions > 1000


def test_fuzz_finds_the_old_float_ub(small, tmp_path):
    """The fuzz loop is not blind: without the NaN guard in expf it reports UBSan's float->int finding."""
    from kan2mcu.errors import VerificationError

    checkpoint, calibration = small
    generate_model(checkpoint, tmp_path / "f", arith="float", calibration=calibration, quiet=True)
    source = tmp_path / "f" / "kan.c"
    text = source.read_text()
    for guard in ("    if (x != x) {\n        return x;\n    }\n",):
        assert guard in text
        text = text.replace(guard, "")
    text = text.replace("return KAN_ERR_NOT_FINITE;", "break;")
    source.write_text(text)
    with pytest.raises(VerificationError, match="fuzzing"):
        fuzz(tmp_path / "f", 3, tmp_path / "fz", engine="loop")
