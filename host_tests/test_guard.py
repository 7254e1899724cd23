"""The quantization guard (kan2mcu/quant/guard.py) on the default digits KAN: a model far from the float
one is refused with numbers, a degraded one is written with warnings carrying numbers, and verify
reports the same figures as generate."""
from __future__ import annotations

import json
import os
import re

import pytest

torch = pytest.importorskip("torch")

from kan2mcu import cli  # noqa: E402
from kan2mcu.quant import guard  # noqa: E402
from kan2mcu.data.datasets import load_dataset  # noqa: E402
from kan2mcu.generate import generate_model  # noqa: E402
from kan2mcu.model.importers import load_checkpoint  # noqa: E402
from kan2mcu.check.verify import verify  # noqa: E402


def _x1e6(source, target):
    """The issue's "weights x1e6" model: spline and base weights of every layer times 10^6."""
    payload = torch.load(source, weights_only=True)
    for key, value in payload["state_dict"].items():
        if key.endswith(("spline_weight", "base_weight")):
            payload["state_dict"][key] = value * 1e6
    torch.save(payload, target)
    return target


def test_weights_x1e6_spline_is_refused_with_numbers(digits_checkpoint, tmp_path, capsys):
    """The spline strategy keeps a code inside one grid interval: on the x1e6 model nearly every
    layer-1 activation saturates. The planner's limit raised, the guard still refuses, with numbers."""
    big = _x1e6(digits_checkpoint, tmp_path / "x1e6.pt")
    args = ["generate", str(big), "-o", str(tmp_path / "m"), "-q", "--strategy", "spline", "--max-error", "10"]
    status = cli.main(args)
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("kan2mcu: error:")]
    assert len(line) == 1 and "far from the float model" in line[0] and "--allow-saturation" in line[0]
    agreement = float(re.search(r"argmax agreement ([\d.]+)%", line[0]).group(1))
    saturation = float(re.search(r"up to ([\d.]+)% of a layer", line[0]).group(1))
    assert agreement < 50 and saturation > 90, line[0]
    assert not (tmp_path / "m").exists()
    # forced: written, with warnings and the figures in the report
    status = cli.main(args + ["--allow-saturation"])
    err = capsys.readouterr().err
    assert status == 0
    assert "written anyway" in err and "saturate" in err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["guard"]["refused"] and max(report["guard"]["saturation"]) > 0.9
    assert report["accuracy"]["quantized"] < 0.5 < report["accuracy"]["float"]
    # layer 1's inputs lie far apart, so each takes its own decode positions: the planner counts them
    # on the quantized layers (its formula alone says 6 KB for 36 KB) and keeps the plan in budget
    assert report["planner"]["predicted_flash_bytes"] == report["totals"]["model_flash_bytes"] <= 65536


def test_weights_x1e6_default_plan_is_clean(digits_checkpoint, tmp_path, capsys):
    """With the planner's default choice the same model quantizes without saturation."""
    big = _x1e6(digits_checkpoint, tmp_path / "x1e6.pt")
    assert cli.main(["generate", str(big), "-o", str(tmp_path / "m"), "-q"]) == 0
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["guard"]["refused"] is None and report["guard"]["warnings"] == []
    assert max(report["guard"]["saturation"]) <= guard.WARN_SATURATION
    assert abs(report["accuracy"]["quantized"] - report["accuracy"]["float"]) <= 0.02


def test_act_bits_3_spline_warns_with_numbers(digits_checkpoint, tmp_path, capsys):
    status = cli.main(["generate", str(digits_checkpoint), "-o", str(tmp_path / "m"), "-q", "--act-bits", "3",
                       "--strategy", "spline", "--max-error", "1"])
    err = capsys.readouterr().err
    assert status == 0, err
    report = json.loads((tmp_path / "m" / "report.json").read_text())["guard"]
    layer1 = report["saturation"][1]
    assert layer1 > 0.3
    saturated = f"layer 1 (layers.1): {100 * layer1:.1f}% of calibration activations"
    assert "warning: argmax agrees with the float model on only" in err and saturated not in err, err
    assert saturated in (tmp_path / "m" / "report.md").read_text()  # a likely cause: a note
    assert "Quantization guard" in (tmp_path / "m" / "report.md").read_text()


def test_default_model_passes_the_guard_quietly(digits_checkpoint, tmp_path, capsys):
    result = generate_model(digits_checkpoint, tmp_path / "m", quiet=True)
    figures = result.report["guard"]
    assert figures["warnings"] == [] and figures["refused"] is None
    assert figures["saturation"] == [0.0, 0.0] and figures["argmax_agreement"] > 0.99
    assert "warning" not in capsys.readouterr().err
    # verify re-measures on the same calibration data: the same figures
    checked = verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True, random=20000)
    assert checked.guard == figures
    assert checked.random_checked == 20000


def test_guard_measures_saturation_against_the_code_window(digits_checkpoint):
    """The saturation figure is what it says: the fraction of activations outside in_scale*(q - in_zero)."""
    from kan2mcu.model.bspline import model_forward
    from kan2mcu.quant.quantize import QuantOptions, quantize

    model = load_checkpoint(digits_checkpoint).model
    x = load_dataset("digits").x_train
    qmodel = quantize(model, QuantOptions(act_bits=3), x)  # default plan: spline at 3 bits
    figures = guard.measure(model, qmodel, x)
    _, acts = model_forward(model, x[:guard.MAX_SAMPLES], return_all=True)
    ql = qmodel.layers[1]
    lo = ql.in_scale * (0 - ql.in_zero) - ql.in_scale / 2
    hi = ql.in_scale * (ql.codes - 1 - ql.in_zero) + ql.in_scale / 2
    outside = ((acts[1] < lo) | (acts[1] >= hi)).mean()
    assert figures.saturation[1] == pytest.approx(outside, abs=1e-9)
    assert figures.saturation[1] > 0.3


@pytest.mark.skipif(os.environ.get("KAN2MCU_SLOW") != "1", reason="long run: set KAN2MCU_SLOW=1")
def test_verify_random_million_under_a_minute(digits_checkpoint, tmp_path):
    """On demand (KAN2MCU_SLOW=1): the issue's 10^6 random codes in under 60 s."""
    generate_model(digits_checkpoint, tmp_path / "m", quiet=True)
    result = verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True, random=1_000_000)
    assert result.random_checked == 1_000_000 and result.random_seconds < 60
