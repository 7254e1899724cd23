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


def _warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line]


def test_defaults_do_not_cry_wolf(digits_checkpoint, tmp_path, capsys):
    """The issue's case: --act-bits 4 --spline-bits 3 --coef-bits 4 --strategy spline keeps the float
    accuracy; without --max-error nothing is printed as a warning: the report holds what was noted
    (the default limit out of reach, saturation, logit RMS) and stderr says only how many notes.
    The same --max-error passed explicitly is the user's request: then it is a warning."""
    args = ["generate", digits_checkpoint, "--act-bits", "4", "--spline-bits", "3", "--coef-bits", "4",
            "--strategy", "spline"]
    status, err = run_cli(capsys, *args, "-o", tmp_path / "a")
    assert status == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["accuracy"]["quantized"] >= report["accuracy"]["float"] - 0.01
    assert _warning_lines(err) == [], err
    assert report["planner"]["warning"] is None and report["guard"]["warnings"] == []
    default_note = f"the default --max-error {DEFAULT_MAX_ERROR:g} is below what these bit widths reach"
    assert report["planner"]["note"].startswith(default_note)
    notes = report["notes"]
    assert notes[0] == report["planner"]["note"] and notes[1:] == report["guard"]["notes"]
    assert any("saturate" in note for note in notes) and any("RMS" in note for note in notes)
    assert f"kan2mcu: {len(notes)} notes in {tmp_path / 'a' / 'report.md'}" in err.splitlines()
    md = (tmp_path / "a" / "report.md").read_text()
    section = md[md.index("## Notes"):]
    assert all(f"- {note}" in section for note in notes) and md.count(default_note) == 1
    status, err = run_cli(capsys, *args, "-q", "--max-error", str(DEFAULT_MAX_ERROR), "-o", tmp_path / "b")
    unreachable = f"kan2mcu: warning: --max-error {DEFAULT_MAX_ERROR:g} is below what these bit widths reach"
    assert status == 0 and unreachable in err


def test_default_generate_prints_no_warning(digits_checkpoint, tmp_path, capsys):
    """`kan2mcu generate digits.pt`: no warning, and with nothing noted no notes line either."""
    status, err = run_cli(capsys, "generate", digits_checkpoint, "-o", tmp_path / "m")
    assert status == 0, err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert _warning_lines(err) == [] and report["notes"] == [] and " notes in " not in err, err
    assert "## Notes" not in (tmp_path / "m" / "report.md").read_text()


def test_a_lossy_plan_still_warns(digits_checkpoint, tmp_path, capsys):
    """3-bit codes, 2-bit tables and coefficients lose accuracy on the test split (0.90 against 0.96):
    that changes the user's result, so it is warned about, with the numbers; the likely causes
    (saturation) stay notes in the report."""
    status, err = run_cli(capsys, "generate", digits_checkpoint, "-o", tmp_path / "m", "-q", "--strategy", "spline",
                          "--act-bits", "3", "--spline-bits", "2", "--coef-bits", "2")
    assert status == 0, err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["float"] - acc["quantized"] > 0.01, acc
    lines = _warning_lines(err)
    assert f"the generated model's accuracy on the digits test split is {acc['quantized']:.4f}" in err, err
    assert any("argmax agrees with the float model on only" in line for line in lines), err
    assert not any("saturate" in line for line in lines) and any("saturate" in n for n in report["notes"])


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


def test_one_formatter_for_the_plan_lines():
    """generate's plan lines and report.md's plan list come from one formatter (planner.layer_line):
    the same row, rounded on the console, exact in the report."""
    from kan2mcu.codegen.report import markdown
    from kan2mcu.quant.planner import larger_plan_line, layer_line

    row = {"layer": 0, "strategy": "edge-table", "in_bits": 5, "table_bits": 8, "predicted_flash_bytes": 36454,
           "predicted_instructions": 1034, "alternative": {"strategy": "spline", "in_bits": 8,
                                                           "predicted_flash_bytes": 10035, "predicted_instructions": 12299}}
    assert layer_line(row, core="cortex-m4") == ("layer 0: edge-table (5-bit codes, 8-bit entries): 35.6 KB, 1.0k instr "
                                                 "on cortex-m4; spline (8-bit codes) would be 9.8 KB, 12.3k instr")
    md = layer_line(row, markdown=True)
    assert md == ("- layer 0: **edge-table**, 5-bit input codes, 8-bit entries: 36454 bytes, about 1034 instructions; "
                  "spline (8-bit codes) would be 10035 bytes, about 12299 instructions")
    larger = {"plan": "layer 0: edge-table 6-bit codes", "extra_bytes": 900, "instructions_saved": 12}
    report = {"model": {"name": "kan", "source_format": "kan2mcu", "widths": [4, 2], "sha256": "0" * 64,
                        "base_activation": "silu"},
              "arith": "int", "options": {"act_bits": 8}, "calibration": "none", "layers": [],
              "totals": {k: 0 for k in ("edges", "table_bytes", "coef_bytes", "flash_bytes", "macs", "bitops",
                                        "bitops_float32", "bitops_reduction", "workspace_bytes")},
              "planner": {"objective": "speed", "flash_budget": 65536, "core": "cortex-m4", "calibration_error": 0.001,
                          "plans_considered": 3, "layers": [row], "larger_plans": [larger]}}
    text = markdown(report)
    assert md in text.splitlines() and larger_plan_line(larger, markdown=True) in text.splitlines()
    assert larger_plan_line(larger) == ("a larger plan (layer 0: edge-table 6-bit codes) would add 900 bytes for 12 "
                                        "fewer instructions (within the cost model's error)")
