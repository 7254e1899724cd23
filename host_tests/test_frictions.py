"""Issue 18's frictions 14, 15 and 17: warnings only for what changes the result (the rest in the
report), progress and honest wording on the slow steps, and well-kept libraries (scikit-learn's
MinMaxScaler, numpy's number parsing) that give the same numbers as the hand-written code they
replace. scipy's B-spline design matrix does not give efficient-kan's and pykan's floats bit for bit
(it differs by a few ulp), so the basis keeps their Cox-de Boor order and scipy checks it instead."""
from __future__ import annotations

import io
import json

import numpy as np

from conftest import run_cli
from kan2mcu.quant.planner import DEFAULT_MAX_ERROR


def test_basis_agrees_with_scipy_design_matrix():
    """bspline_basis (upstream's recursion, the floats the checkpoints were trained with) against an
    independent implementation, scipy.interpolate.BSpline.design_matrix, on uniform and non-uniform
    knots for orders 1..5: equal to 1e-12 inside the grid, exact zeros outside it."""
    from scipy.interpolate import BSpline

    from kan2mcu.model.bspline import bspline_basis

    rng = np.random.default_rng(7)
    for order in range(1, 6):
        uniform = np.arange(-order, 5 + order + 1) * 0.4 - 1.0
        for knots in (uniform, np.sort(rng.uniform(-3, 3, len(uniform)))):
            x = np.concatenate([rng.uniform(knots[0] - 1, knots[-1] + 1, 2000), knots[:-1]])
            ours = bspline_basis(x[:, None], knots[None, :], order)[:, 0, :]
            inside = (x >= knots[0]) & (x < knots[-1])
            assert np.all(ours[~inside] == 0.0)
            # scipy evaluates on its base interval [t_k, t_{n}]: pad the knots by `order` on each side.
            step_l, step_r = knots[1] - knots[0], knots[-1] - knots[-2]
            padded = np.concatenate([knots[0] - step_l * np.arange(order, 0, -1), knots,
                                     knots[-1] + step_r * np.arange(1, order + 1)])
            scipy = BSpline.design_matrix(x[inside], padded, order).toarray()[:, order:order + ours.shape[1]]
            np.testing.assert_allclose(ours[inside], scipy, rtol=0, atol=1e-12)


def test_grid_scaling_is_min_max_scaling_bit_for_bit():
    """tabular.grid_scaling (MinMaxScaler) gives the former formula's floats exactly; a constant
    column still maps to the grid's middle."""
    from kan2mcu.data.tabular import apply_transform, grid_scaling

    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.normal(size=(40, 6)) * rng.uniform(1e-3, 1e3, 6) + rng.uniform(-1e4, 1e4, 6)
        x[:, 2] = 5.0
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = hi - lo
        scale = np.where(span > 0, 2.0 / np.where(span > 0, span, 1.0), 1.0)
        offset = np.where(span > 0, -1.0 - lo * scale, 0.0 - lo)
        got = grid_scaling(x)
        assert got == {"scale": [float(v) for v in scale], "offset": [float(v) for v in offset]}
        assert np.all(apply_transform(x, got)[:, 2] == 0.0)


def test_csv_numbers_parse_as_python_floats(tmp_path):
    """The CSV reader's numpy conversion gives the same doubles as float() on every cell."""
    from kan2mcu.data.tabular import read_table

    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 3)) * 10.0 ** rng.integers(-8, 8, (200, 3))
    cells = [[repr(float(v)) for v in row] for row in values]
    cells[0][0], cells[1][1] = " 1e-3 ", "7"
    (tmp_path / "t.csv").write_text("a,b,y\n" + "\n".join(",".join(r) for r in cells) + "\n")
    table = read_table(tmp_path / "t.csv", "y")
    expected = np.array([[float(c) for c in r[:2]] for r in cells])
    assert np.array_equal(table.x, expected) and np.array_equal(table.y, [float(r[2]) for r in cells])


def test_defaults_do_not_cry_wolf(digits_checkpoint, tmp_path, capsys):
    """The issue's case: --act-bits 4 --spline-bits 3 --coef-bits 4 --strategy spline keeps the float
    accuracy; without --max-error nothing is printed as a warning, and the report holds what was
    noted. The same --max-error passed explicitly is the user's request: then it is a warning."""
    args = ["generate", digits_checkpoint, "--act-bits", "4", "--spline-bits", "3", "--coef-bits", "4",
            "--strategy", "spline", "-q"]
    status, err = run_cli(capsys, *args, "-o", tmp_path / "a")
    assert status == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["accuracy"]["quantized"] >= report["accuracy"]["float"] - 0.01
    assert "warning" not in err, err
    assert report["planner"]["warning"] is None
    assert report["planner"]["note"].startswith(
        f"the default --max-error {DEFAULT_MAX_ERROR:g} is below what these bit widths reach")
    assert report["guard"]["warnings"] == [] and report["guard"]["notes"]
    md = (tmp_path / "a" / "report.md").read_text()
    assert f"Note: the default --max-error {DEFAULT_MAX_ERROR:g}" in md and "- note: " in md
    status, err = run_cli(capsys, *args, "--max-error", str(DEFAULT_MAX_ERROR), "-o", tmp_path / "b")
    unreachable = f"kan2mcu: warning: --max-error {DEFAULT_MAX_ERROR:g} is below what these bit widths reach"
    assert status == 0 and unreachable in err


def test_result_loss_warnings():
    from kan2mcu.generate import result_loss_warnings

    acc = {"dataset": "digits", "split": "test", "float": 0.96, "quantized": 0.90}
    assert result_loss_warnings({"accuracy": acc}) == [
        "the generated model's accuracy on the digits test split is 0.9000, the float model's 0.9600"]
    assert result_loss_warnings({"accuracy": dict(acc, quantized=0.955)}) == []
    ev = {"data": "eval.csv", "float": {"r2": 0.9}, "quantized": {"r2": 0.7}}
    assert result_loss_warnings({"evaluation": ev}) == [
        "the generated model's R2 on eval.csv is 0.7000, the float model's 0.9000"]


def test_sweep_point_warnings_go_above_the_progress_bar(monkeypatch, capsys):
    """A point's stderr is caught (it would tear the bar); its warnings come back and are written
    with tqdm.write, above the bar."""
    from tqdm import tqdm

    from kan2mcu import sweep
    from kan2mcu.sweep import point

    def fake_compute(task, scratch, result):
        import sys

        print("kan2mcu: warning: something lost", file=sys.stderr)
        result["status"] = "ok"

    monkeypatch.setattr(point, "_compute", fake_compute)
    monkeypatch.setattr(point, "_own_platformio_core", lambda path: __import__("contextlib").nullcontext())
    task = point.PointTask("a4", {"act_bits": 4}, {}, (), (), "x.pt", 2, None)
    item = point.run_point(task)
    assert item["warnings"] == ["something lost"] and item["result"]["status"] == "ok"
    assert capsys.readouterr().err == ""
    bar = tqdm(total=2, file=io.StringIO())
    sweep._print_warnings(bar, "a4", item["warnings"])
    bar.close()
    assert capsys.readouterr().err == "kan2mcu: warning: point a4: something lost\n"


def test_verify_sanitize_says_so_and_steps_are_shown(digits_checkpoint, tmp_path, capsys):
    from kan2mcu.generate import generate_model
    from kan2mcu.check.verify import verify

    generate_model(digits_checkpoint, tmp_path / "m", quiet=True)
    capsys.readouterr()
    result = verify(tmp_path / "m", build_dir=tmp_path / "b", sanitize=True)
    captured = capsys.readouterr()
    assert "kan2mcu verify: compiling the C on the host" in captured.err
    assert "AddressSanitizer + UndefinedBehaviorSanitizer" in captured.err
    assert result.sanitized and f"ASan+UBSan: the same {result.inputs_checked} inputs, no finding" in captured.out
    plain = verify(tmp_path / "m", build_dir=tmp_path / "b", quiet=True)
    assert "ASan" not in plain.summary()


def test_float_report_and_options_read_well(digits_checkpoint, tmp_path):
    from kan2mcu.generate import generate_model

    md = generate_model(digits_checkpoint, tmp_path / "f", arith="float", quiet=True).report
    from kan2mcu.codegen.report import markdown

    text = markdown(md)
    assert "quantized" not in text and "float32 C, no quantization" in text
    int_md = (generate_model(digits_checkpoint, tmp_path / "i", quiet=True).folder / "report.md").read_text()
    assert "options: act 8, spline 8, coef 8, base 12, silu 12, table 8 bits" in int_md and "{" not in int_md
    assert "BitOps: per multiply, the product of its two operands' bit widths" in int_md


def test_measure_note_says_estimate_once():
    from kan2mcu.firmware.cycles import ESTIMATE_NOTE
    from kan2mcu.firmware.measure import markdown_table

    text = markdown_table({"board": "b", "core": "c", "cycles_estimate_note": ESTIMATE_NOTE, "models": []})
    sentence = [line for line in text.splitlines() if line.startswith("Cycles marked")][0]
    assert sentence.count("ESTIMATE") == 1
