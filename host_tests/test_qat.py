"""Quantization-aware training (issue 8.2): ``kan2mcu finetune`` and ``kan2mcu train --qat``.

- On the default digits KAN, QAT at act 4 / spline 2 / coef 3 then ``generate --strategy spline``
  at those widths stays within 1.0 point of the float test accuracy, at act 4 / spline 3 / coef 3
  within 0.5 points, and the C is bit-exact (verify); at act 3 / spline 2 / coef 2, where PTQ
  alone loses points, QAT wins them back. The
  spline strategy is forced: the planner (``--strategy auto``) would pick edge-table layers, where
  --spline-bits/--coef-bits do not apply.
- The fake-quantized forward is the integer model: its values equal the integer reference's, and
  the float surrogate carrying the gradients equals them up to the last rounding.
- efficient-kan (non-uniform knots after update_grid: per-input tables) and pykan checkpoints are
  fine-tuned into kan2mcu checkpoints that generate deploys; same seed, same checkpoint bytes.
- Bad input: one line, exit 1, nothing written.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from kan2mcu import cli
from kan2mcu.model.bspline import model_forward
from kan2mcu.data.datasets import load_dataset
from kan2mcu.errors import UnsupportedModelError
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.model.ir import KANLayer, KANModel
from kan2mcu.training.qat import FakeQuantKAN, finetune, ir_from_kan, kan_from_ir
from kan2mcu.quant.quantize import QuantOptions
from kan2mcu.quant.reference import quantize_inputs, run_layer, run_model
from kan2mcu.quant.strategies import spline
from kan2mcu.model.torch_kan import KAN
from kan2mcu.check.verify import verify

TARGETS = {(4, 2, 3): 1.0, (4, 3, 3): 0.5}  # (act, spline, coef) bits -> allowed points below float


def widths_args(act: int, spline: int, coef: int) -> list:
    return ["--act-bits", act, "--spline-bits", spline, "--coef-bits", coef]


def generate_spline(capsys, checkpoint, folder, bits) -> dict:
    status, err = run_cli(capsys, "generate", checkpoint, "-o", folder, "--strategy", "spline", "-q", *widths_args(*bits))
    assert status == 0, err
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="session")
def qat_digits(digits_checkpoint, tmp_path_factory):
    """Per target widths: PTQ report of the default checkpoint, QAT checkpoint, its report and folder."""
    base = tmp_path_factory.mktemp("qat")
    out = {}
    for bits in TARGETS:
        tag = "a{}s{}c{}".format(*bits)
        ckpt = base / f"{tag}.pt"
        assert cli.main(["finetune", str(digits_checkpoint), "-o", str(ckpt), *map(str, widths_args(*bits))]) == 0
        ptq_dir, qat_dir = base / f"ptq_{tag}", base / f"qat_{tag}"
        for src, folder in ((digits_checkpoint, ptq_dir), (ckpt, qat_dir)):
            assert cli.main(["generate", str(src), "-o", str(folder), "--strategy", "spline", "-q",
                             *map(str, widths_args(*bits))]) == 0
        out[bits] = {"checkpoint": ckpt, "folder": qat_dir,
                     "ptq": json.loads((ptq_dir / "report.json").read_text()),
                     "qat": json.loads((qat_dir / "report.json").read_text())}
    return out


@pytest.mark.parametrize("bits", list(TARGETS), ids=lambda b: "act{}-spline{}-coef{}".format(*b))
def test_qat_digits_accuracy_and_bit_exact(qat_digits, digits_checkpoint, bits):
    entry = qat_digits[bits]
    ptq, qat = entry["ptq"], entry["qat"]
    float_acc = ptq["accuracy"]["float"]  # the default checkpoint's float test accuracy
    print(f"act {bits[0]} / spline {bits[1]} / coef {bits[2]}: float {float_acc:.4f}, PTQ "
          f"{ptq['accuracy']['quantized']:.4f}, QAT {qat['accuracy']['quantized']:.4f} "
          f"(fine-tuned float {qat['accuracy']['float']:.4f})")
    assert all(step == {"strategy": "spline", "in_bits": bits[0]} for step in qat["plan"])
    assert (qat["options"]["spline_bits"], qat["options"]["coef_bits"]) == bits[1:]
    assert qat["accuracy"]["quantized"] >= float_acc - TARGETS[bits] / 100, (qat["accuracy"], float_acc)
    # what finetune measured and recorded is what generate deploys
    recorded = torch.load(entry["checkpoint"], weights_only=True)["metrics"]["qat"]
    assert recorded["quantized_after"] == qat["accuracy"]["quantized"]
    assert recorded["ptq_before"] == ptq["accuracy"]["quantized"]
    assert (recorded["act_bits"], recorded["spline_bits"], recorded["coef_bits"], recorded["epochs"]) == bits + (10,)
    result = verify(entry["folder"], quiet=True)
    assert result.bit_exact and result.inputs_checked >= 1000


def test_qat_recovers_where_ptq_loses(digits_checkpoint, tmp_path):
    """At act 3 / spline 2 / coef 2 PTQ loses points; QAT wins most of them back."""
    result = finetune(digits_checkpoint, tmp_path / "new.pt", QuantOptions(act_bits=3, spline_bits=2, coef_bits=2),
                      progress=False)
    print(f"act 3 / spline 2 / coef 2: float {result.float_before:.4f}, PTQ {result.ptq_before:.4f}, "
          f"QAT {result.quantized_after:.4f}")
    assert result.ptq_before < result.float_before - 0.03  # (else this test shows nothing)
    assert result.quantized_after >= result.ptq_before + 0.03


def surrogate_matches(fake: FakeQuantKAN, x: np.ndarray) -> None:
    """The fake-quantized forward's values are the integer model's, its float surrogate equals them
    up to the last rounding, and gradients reach every weight."""
    qmodel = fake.recalibrate()
    exact = run_model(qmodel, quantize_inputs(qmodel, x)) * qmodel.output_scale
    outputs = fake(torch.tensor(x))
    np.testing.assert_array_equal(outputs.detach().numpy(), exact)
    surrogate, _ = fake.forward(torch.tensor(x))
    # the last layer's surrogate differs from its exact output by the final rounding (half a step)
    # plus what rounding the requantization constants to integers moves (half a unit of M and R
    # each, in units of 2^-shift): the surrogate uses the same tables and weights as the integer model
    codes = quantize_inputs(qmodel, x)
    for layer in qmodel.layers[:-1]:
        codes = run_layer(layer, codes)
    last = qmodel.layers[-1]
    acc_spline, acc_base = spline.accumulators(last, codes)
    allowed = 0.5 + (np.abs(acc_spline) + np.abs(acc_base) + 1) * 0.5 / 2.0 ** last.shift[None, :]
    gap = np.abs(surrogate.detach().numpy() - exact) / qmodel.output_scale
    assert np.all(gap <= allowed + 1e-9), float((gap - allowed).max())
    assert np.median(gap) < 0.5
    outputs.square().sum().backward()
    for layer in fake.kan.layers:
        assert layer.spline_weight.grad.abs().sum() > 0 and layer.base_weight.grad.abs().sum() > 0


def update_grid_state_dict(digits_checkpoint) -> dict:
    """The digits KAN after update_grid on every layer: non-uniform per-input knots (efficient-kan layout)."""
    imported = load_checkpoint(digits_checkpoint)
    model = kan_from_ir(imported.model).double()
    with torch.no_grad():
        h = torch.tensor(load_dataset("digits").x_train)
        for layer in model.layers:
            layer.update_grid(h)
            h = layer(h)
    return model.float().state_dict()


@pytest.mark.parametrize("bits", [(4, 2, 3), (3, 2, 2), (8, 3, 4)])
def test_fake_quant_forward_is_the_integer_model(digits_checkpoint, bits):
    data = load_dataset("digits")
    fake = FakeQuantKAN(kan_from_ir(load_checkpoint(digits_checkpoint).model),
                        QuantOptions(act_bits=bits[0], spline_bits=bits[1], coef_bits=bits[2]), data.x_train)
    surrogate_matches(fake, data.x_test)


def test_no_gradient_where_codes_saturate(digits_checkpoint):
    """Inputs beyond a layer's code window saturate in the integer model: no gradient flows to them."""
    data = load_dataset("digits")
    fake = FakeQuantKAN(kan_from_ir(load_checkpoint(digits_checkpoint).model),
                        QuantOptions(act_bits=4, spline_bits=2, coef_bits=3), data.x_train)
    fake.recalibrate()
    x = torch.tensor(data.x_test[:32].copy(), requires_grad=True)
    with torch.no_grad():
        x[:, :8] = 5.0  # far above every calibrated input range: code 15
        x[:, 8:16] = -5.0  # far below: code 0
    fake(x).sum().backward()
    assert torch.all(x.grad[:, :16] == 0)
    assert torch.count_nonzero(x.grad[:, 16:]) > 0


def test_fake_quant_per_input_tables(digits_checkpoint):
    data = load_dataset("digits")
    kan = KAN([64, 16, 10])
    kan.load_state_dict(update_grid_state_dict(digits_checkpoint))
    assert ir_from_kan(kan).layers[0].uniform_grid() is None  # per-input tables, not the cardinal one
    surrogate_matches(FakeQuantKAN(kan, QuantOptions(act_bits=5, spline_bits=3, coef_bits=4), data.x_train),
                      data.x_test)


def jittered_state_dict(digits_checkpoint) -> dict:
    """The digits KAN as a plain efficient-kan state dict, every knot moved by up to 0.2 grid steps
    (non-uniform, per input: per-input tables). Not update_grid: its least-squares refit leaves
    huge coefficients on boundary B-splines that set the per-output coefficient scale today (issue 8.1)."""
    state = torch.load(digits_checkpoint, weights_only=True)["state_dict"]
    rng = np.random.default_rng(0)
    for key in [k for k in state if k.endswith(".grid")]:
        grid = state[key].double().numpy()
        step = grid[0, 1] - grid[0, 0]
        state[key] = torch.tensor(grid + rng.uniform(-0.2 * step, 0.2 * step, grid.shape), dtype=torch.float32)
    return state


def test_efficient_kan_checkpoint_finetunes_and_deploys(digits_checkpoint, tmp_path, capsys):
    torch.save(jittered_state_dict(digits_checkpoint), tmp_path / "ek.pt")
    status, err = run_cli(capsys, "finetune", tmp_path / "ek.pt", "-o", tmp_path / "new.pt", "--epochs", 1,
                          *widths_args(5, 3, 4))
    assert status == 1 and "names no data set" in err and "--dataset" in err
    assert not (tmp_path / "new.pt").exists()
    result = finetune(tmp_path / "ek.pt", tmp_path / "new.pt", QuantOptions(act_bits=5, spline_bits=3, coef_bits=4),
                      dataset="digits", epochs=2, progress=False)
    print(f"efficient-kan, non-uniform knots, act 5 / spline 3 / coef 4: float {result.float_before:.4f}, "
          f"PTQ {result.ptq_before:.4f} -> QAT {result.quantized_after:.4f}")
    assert result.quantized_after >= result.float_before - 0.01
    imported = load_checkpoint(result.checkpoint)
    assert imported.format == "kan2mcu" and imported.dataset == "digits"
    assert imported.model.metadata["input_transform"] == load_dataset("digits").input_transform
    report = generate_spline(capsys, result.checkpoint, tmp_path / "m", (5, 3, 4))
    assert report["layers"][0]["basis_mode"] == "per_input"
    assert report["accuracy"]["quantized"] == result.quantized_after
    assert verify(tmp_path / "m", quiet=True).bit_exact


def test_pykan_checkpoint_finetunes_and_deploys(tmp_path, capsys):
    from conftest import require_module

    kan = require_module("kan", "pip install -e .[pykan]")
    data = load_dataset("digits")
    model = kan.KAN(width=[64, 3, 10], grid=3, k=3, seed=0, auto_save=False, ckpt_path=str(tmp_path / "log"))
    model(torch.tensor(data.x_train[:200], dtype=torch.float32))
    model.saveckpt(str(tmp_path / "pk"))
    bits = (6, 3, 4)
    result = finetune(tmp_path / "pk", tmp_path / "new.pt", QuantOptions(act_bits=6, spline_bits=3, coef_bits=4),
                      dataset="digits", epochs=2, lr=1e-2, progress=False)
    print(f"pykan [64, 3, 10] untrained: PTQ {result.ptq_before:.4f} -> QAT {result.quantized_after:.4f}")
    assert result.quantized_after > result.ptq_before + 0.2  # two epochs teach the untrained model digits
    report = generate_spline(capsys, result.checkpoint, tmp_path / "m", bits)
    assert report["accuracy"]["quantized"] == result.quantized_after
    assert verify(tmp_path / "m", quiet=True).bit_exact


def test_same_seed_same_checkpoint(digits_checkpoint, tmp_path):
    options = QuantOptions(act_bits=4, spline_bits=2, coef_bits=3)
    paths = []
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):  # torch.save records the file name: same name
        paths.append(tmp_path / folder / "new.pt")
        finetune(digits_checkpoint, paths[-1], options, epochs=1, seed=seed, progress=False)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    weights = [torch.load(p, weights_only=True)["state_dict"] for p in paths]
    assert not torch.equal(weights[0]["layers.0.spline_weight"], weights[2]["layers.0.spline_weight"])


def test_a_run_that_only_hurts_keeps_the_original_weights(digits_checkpoint, tmp_path):
    """A learning rate that wrecks the model: the best integer model on the training split is the original."""
    options = QuantOptions(act_bits=4, spline_bits=3, coef_bits=3)
    result = finetune(digits_checkpoint, tmp_path / "new.pt", options, epochs=1, lr=10.0, progress=False)
    assert result.best_epoch == 0 and result.quantized_after == result.ptq_before
    original = torch.load(digits_checkpoint, weights_only=True)["state_dict"]
    kept = torch.load(tmp_path / "new.pt", weights_only=True)["state_dict"]
    for key in ("layers.0.base_weight", "layers.1.grid"):
        assert torch.equal(original[key], kept[key])
    torch.testing.assert_close(kept["layers.1.spline_weight"],
                               original["layers.1.spline_weight"] * original["layers.1.spline_scaler"][..., None])


def test_conversion_folds_output_scale():
    rng = np.random.default_rng(0)
    knots = np.tile(np.linspace(-2.2, 2.2, 12), (3, 1))
    layer = KANLayer(knots=knots, order=3, coef=rng.normal(size=(2, 3, 8)), base_weight=rng.normal(size=(2, 3)),
                     out_scale=np.array([0.5, -2.0]))
    model = KANModel((layer,), source="pykan")
    x = rng.uniform(-1.5, 1.5, (64, 3))
    converted = ir_from_kan(kan_from_ir(model))
    np.testing.assert_allclose(model_forward(converted, x), model_forward(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, needle", [
    ({"out_bias": np.array([0.0, 0.1])}, "output bias"),
    ({"base_function": "gelu"}, "base function 'gelu'"),
])
def test_unsupported_models_are_refused(change, needle):
    layer = KANLayer(knots=np.tile(np.linspace(-2.2, 2.2, 12), (3, 1)), order=3, coef=np.ones((2, 3, 8)),
                     base_weight=np.ones((2, 3)), **change)
    with pytest.raises(UnsupportedModelError, match=needle):
        kan_from_ir(KANModel((layer,)))


@pytest.mark.parametrize("args, needle", [
    (["finetune", "{text}", "-o", "{out}"], "not a readable PyTorch checkpoint"),
    (["finetune", "{ckpt}", "-o", "{out}", "--act-bits", "9"], "--act-bits must be an integer in 2..8, got 9"),
    (["finetune", "{ckpt}", "-o", "{out}", "--spline-bits", "1"], "--spline-bits must be an integer in 2..8, got 1"),
    (["finetune", "{ckpt}", "-o", "{out}", "--coef-bits", "0"], "--coef-bits must be an integer in 2..8, got 0"),
    (["finetune", "{ckpt}", "-o", "{out}", "--epochs", "0"], "--epochs must be a positive integer"),
    (["finetune", "{ckpt}", "-o", "{out}", "--dataset", "nope"], "unknown data set 'nope'"),
    (["train", "-o", "{out}", "--act-bits", "4"], "add --qat"),
    (["train", "-o", "{out}", "--qat", "--coef-bits", "12"], "--coef-bits must be an integer in 2..8, got 12"),
])
def test_bad_input_one_line(digits_checkpoint, tmp_path, capsys, args, needle):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    args = [a.format(text=tmp_path / "notes.txt", out=tmp_path / "out.pt", ckpt=digits_checkpoint) for a in args]
    status, err = run_cli(capsys, *args)
    assert status == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("kan2mcu: error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not (tmp_path / "out.pt").exists()


def test_train_qat(tmp_path, capsys):
    status, err = run_cli(capsys, "train", "-o", tmp_path / "t.pt", "--epochs", 3, "--qat", "--qat-epochs", 1,
                          *widths_args(4, 3, 3))
    assert status == 0, err
    metrics = torch.load(tmp_path / "t.pt", weights_only=True)["metrics"]
    qat = metrics["qat"]
    assert (qat["act_bits"], qat["spline_bits"], qat["coef_bits"], qat["epochs"]) == (4, 3, 3, 1)
    report = generate_spline(capsys, tmp_path / "t.pt", tmp_path / "m", (4, 3, 3))
    assert report["accuracy"]["quantized"] == qat["quantized_after"]
    assert report["model"]["qat"] == {"strategy": "spline", "act_bits": 4, "spline_bits": 3, "coef_bits": 3,
                                      "base_bits": 12, "silu_bits": 12}
    assert "fine-tuned (QAT)" not in capsys.readouterr().err
    # deployed otherwise (the planner's default: 8 bits, edge-table layers): a warning says so
    status, err = run_cli(capsys, "generate", tmp_path / "t.pt", "-o", tmp_path / "auto", "-q")
    assert status == 0, err
    warning = [line for line in err.splitlines() if "fine-tuned (QAT)" in line]
    assert len(warning) == 1 and "--act-bits 8 here" in warning[0] and "edge-table layers" in warning[0], err


def test_train_on_own_data_with_qat(tmp_path, capsys):
    """`train --data ... --qat` (regression): QAT calibrates on the rows the checkpoint keeps, as
    generate does; the report's held-out R2 of the integer model is what QAT measured."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(0, 2, 600), rng.uniform(-3, 3, 600)], axis=1)
    y = np.sin(np.pi * x[:, 0]) + 0.3 * x[:, 1] ** 2
    rows = "\n".join(",".join(repr(float(v)) for v in (*r, t)) for r, t in zip(x, y))
    (tmp_path / "data.csv").write_text("speed,angle,power\n" + rows + "\n")
    status, err = run_cli(capsys, "train", "--data", tmp_path / "data.csv", "--target", "power", "--task", "regress",
                          "--widths", "2,6,1", "--epochs", 40, "--no-progress", "-o", tmp_path / "r.pt",
                          "--qat", "--qat-epochs", 3, *widths_args(4, 3, 3))
    assert status == 0, err
    qat = torch.load(tmp_path / "r.pt", weights_only=True)["metrics"]["qat"]
    print(f"regression act 4 / spline 3 / coef 3: float R2 {qat['float_before']:.4f}, PTQ {qat['ptq_before']:.4f}, "
          f"QAT {qat['quantized_after']:.4f}")
    assert qat["quantized_after"] >= qat["ptq_before"] - 0.01
    report = generate_spline(capsys, tmp_path / "r.pt", tmp_path / "m", (4, 3, 3))
    evaluation = report["evaluation"]
    assert evaluation["metric"] == "r2"
    # the report feeds the raw held-out values through float32 (the C float API): up to a code apart
    assert abs(evaluation["quantized"]["r2"] - qat["quantized_after"]) < 0.01
    assert verify(tmp_path / "m", quiet=True).bit_exact
    status, err = run_cli(capsys, "finetune", tmp_path / "r.pt", "-o", tmp_path / "again.pt")
    assert status == 1 and "train --data FILE ... --qat" in err and len(err.strip().splitlines()) == 1, err
