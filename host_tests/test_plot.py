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
    widths = ["--spline-bits", "3"] if request.param == "spline" else []  # edge tables refuse spline widths
    assert main(["generate", str(digits_checkpoint), "-o", str(out), *widths, "-q", "--plots",
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


def test_figure_axes_are_labelled_and_explained(plotted):
    """On the matplotlib figure objects: every edge panel has a y label, every histogram an x label
    and a y label, the heat map's colour bar a label, the suptitle explains the colours, no font
    under 8 points; the large layer's picked edges are named in report.md."""
    from kan2mcu.plots import build_layer_figure, pyplot

    model, qmodel = load_bundle(plotted)
    plt = pyplot()
    for index, (layer, qlayer) in enumerate(zip(model.layers, qmodel.layers)):
        fig, drawn = build_layer_figure(index, layer, qlayer, None)
        try:
            axes = fig.get_axes()
            colorbars = [ax for ax in axes if ax.get_label() == "<colorbar>"]
            panels = [ax for ax in axes if ax not in colorbars]
            functions = [ax for ax in panels if ax.get_lines()]
            histograms = [ax for ax in panels if not ax.get_lines() and not ax.get_images()]
            assert len(functions) == len(histograms) == drawn["shown"]
            assert all(ax.get_ylabel().startswith("edge value") for ax in functions)
            assert all(ax.get_xlabel().startswith("layer input x") and ax.get_ylabel() for ax in histograms)
            if drawn["shown"] < drawn["edges"]:
                assert len(colorbars) == 1 and "max |float - quantized|" in colorbars[0].get_ylabel()
                heat = [ax for ax in panels if ax.get_images()][0]
                assert heat.get_xlabel() and heat.get_ylabel()
            assert "grey: histogram" in fig._suptitle.get_text()
            texts = [t for ax in axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels())]
            assert min(t.get_fontsize() for t in texts + [fig._suptitle]) >= 8
        finally:
            plt.close(fig)
    report = (plotted / "report.md").read_text()
    assert "(shapes that differ most: in " in report  # layer 0, 1024 edges: says which were picked


def test_picked_edges_differ_more_than_the_largest_ones():
    """pick_edges spreads over shapes: on a layer whose largest edges all look alike (scaled copies
    of one bump) and whose other edges are ramps and waves, the picks include those shapes, and
    their smallest pairwise shape distance beats the 12 largest-range edges'."""
    from kan2mcu.plots import pick_edges

    x = np.linspace(-1, 1, 200)
    shapes = [np.exp(-8 * x**2) * (3 + 0.01 * k) for k in range(20)]  # 20 big look-alike bumps
    shapes += [0.5 * x, 0.5 * np.sin(3 * x), 0.4 * x**2, -0.3 * x**3, 0.2 * np.cos(5 * x), 0.3 * np.abs(x)]
    curves = np.stack(shapes)[:, :, None]  # [O, F, I=1]
    picked = pick_edges(curves, 12)
    assert len(set(picked)) == 12 and picked[0] == (19, 0)  # the largest-range edge first
    assert {20, 21, 22, 23, 24, 25} <= {o for o, _ in picked}

    def spread(edges):
        flat = np.stack([curves[o, :, i] for o, i in edges])
        norm = (flat - flat.mean(1, keepdims=True)) / np.ptp(flat, axis=1, keepdims=True)
        return min(np.sqrt(((norm[a] - norm[b]) ** 2).mean()) for a in range(len(edges)) for b in range(a))

    largest = sorted(range(len(shapes)), key=lambda e: -np.ptp(shapes[e]))[:12]
    assert spread(picked) > spread([(e, 0) for e in largest])
