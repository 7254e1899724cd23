"""`kan2mcu plot` / `generate --plots`: one PNG per layer, float edges against the quantized ones."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.model.bspline import layer_forward
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.cli import main
from kan2mcu.plots import REPORT_SECTION, code_inputs, float_edges, quantized_edges

pytest.importorskip("matplotlib")


# The planner's error limit is not what these tests are about: --max-error 1 lets every plan through.
@pytest.fixture(scope="module", params=["spline", "edge-table"])
def plotted(request, digits_checkpoint, tmp_path_factory):
    """The default digits model (3-bit spline tables, or edge tables), generated with --plots."""
    out = tmp_path_factory.mktemp("plot") / request.param
    assert main(["generate", str(digits_checkpoint), "-o", str(out), "--spline-bits", "3", "-q", "--plots",
                 "--strategy", request.param, "--max-error", "1"]) == 0
    return out


def test_one_png_per_layer_not_blank(plotted):
    import matplotlib.image

    pngs = sorted(plotted.glob("*.png"))
    assert [p.name for p in pngs] == ["layer0_edges.png", "layer1_edges.png"]  # [64, 16, 10]: two layers
    for png in pngs:
        image = matplotlib.image.imread(png)
        height, width = image.shape[:2]
        assert height >= 400 and width >= 600, (png.name, image.shape)
        rgb = image[..., :3].reshape(-1, 3)
        assert rgb.std() > 0.05  # not a blank canvas
        # lines in both colours are there: some clearly red pixels (quantized) and blue (float)
        assert ((rgb[:, 0] > 0.7) & (rgb[:, 1] < 0.4) & (rgb[:, 2] < 0.4)).sum() > 200, png.name
        assert ((rgb[:, 2] > 0.6) & (rgb[:, 0] < 0.3)).sum() > 200, png.name
    report = (plotted / "report.md").read_text()
    assert report.count(REPORT_SECTION) == 1
    assert "![layer0_edges.png](layer0_edges.png)" in report and "![layer1_edges.png](layer1_edges.png)" in report


def test_plotting_again_gives_identical_files(plotted, capsys):
    before = {p.name: p.read_bytes() for p in plotted.glob("*.png")}
    report = (plotted / "report.md").read_text()
    assert main(["plot", str(plotted)]) == 0
    assert {p.name: p.read_bytes() for p in plotted.glob("*.png")} == before
    assert (plotted / "report.md").read_text() == report  # section replaced, not appended twice
    assert b"Software" not in before["layer0_edges.png"]  # no version/date metadata


def test_drawn_edges_are_the_integer_arithmetic(plotted):
    """The pictures show the real thing: the float edges summed over inputs plus the bias are the
    float layer; spline edges summed over inputs are the C's two accumulators (scaled); edge-table
    edges lie within half an entry step of the float edge at every code."""
    from kan2mcu.quant.strategies import spline

    model, qmodel = load_bundle(plotted)
    rng = np.random.default_rng(0)
    for layer, qlayer in zip(model.layers, qmodel.layers):
        codes = rng.integers(0, qlayer.codes, size=(20, qlayer.in_features))
        inputs = np.arange(qlayer.in_features)[None, :]
        x = code_inputs(qlayer)[codes, inputs]
        np.testing.assert_allclose(float_edges(layer, x).sum(axis=2).T + layer.out_bias, layer_forward(layer, x),
                                   rtol=1e-10, atol=1e-10)
        table = quantized_edges(qlayer, layer)  # [O, Q, I]
        if qlayer.strategy == "spline":
            summed = table[:, codes, inputs].sum(axis=2).T  # [N, O]
            acc_spline, acc_base = spline.accumulators(qlayer, codes)
            expected = layer.out_scale * (qlayer.basis_scale * qlayer.coef_scale * acc_spline
                                          + qlayer.base_scale * qlayer.silu_scale * acc_base)
            np.testing.assert_allclose(summed, expected, rtol=1e-12, atol=1e-12)
        else:
            exact = float_edges(layer, code_inputs(qlayer))  # [O, Q, I]
            step = qlayer.entry_scale[:, None, None]
            assert np.all(np.abs(table - exact) <= step / 2 + 1e-9)
            assert np.abs(table - exact).max() > 0  # quantized, not a copy of the float edge


def test_plot_of_a_float_model_is_a_one_line_error(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["generate", str(digits_checkpoint), "-o", str(out), "--arith", "float", "-q"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kan2mcu: error: ") and "--arith int" in err[0]
    assert not list(out.glob("*.png"))
    assert main(["plot", str(tmp_path / "nothing")]) == 1


def test_plot_without_a_data_set_uses_the_calibration_file(small_checkpoints, tmp_path):
    """A random [6, 4, 4, 2] KAN with a calibration .npy: three PNGs; the last layer (8 edges) shows
    every edge, the larger ones the top edges and the error heat map."""
    import matplotlib.image

    checkpoint, calibration = small_checkpoints["6x4x4x2-G3-k2"]
    out = tmp_path / "small"
    assert main(["generate", str(checkpoint), "-o", str(out), "--calibration", str(calibration), "-q",
                 "--strategy", "spline", "--max-error", "1"]) == 0
    assert main(["plot", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["layer0_edges.png", "layer1_edges.png", "layer2_edges.png"]
    report = (out / "report.md").read_text()
    assert "- layer2_edges.png (spline): 8 of 8 edges" in report
    assert "- layer0_edges.png (spline): 12 of 24 edges" in report
    assert "histogram beneath" in report
    for name in names:
        assert matplotlib.image.imread(out / name)[..., :3].std() > 0.05
