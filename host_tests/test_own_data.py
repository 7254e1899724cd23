"""Training and evaluating on your own data (issue 8.3): `kan2mcu train --data` on CSV tables
(scikit-learn's breast cancer with text labels; a synthetic regression with columns of very
different ranges), `generate --eval-data`, the C float input API on raw feature values, and the
one-line refusals of bad tables."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from kan2mcu import cli
from kan2mcu.codegen.bundle import load_bundle
from kan2mcu.quant.evaluate import api_codes
from kan2mcu.check.hostcc import HostModel
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.input_codec import input_codec, quantize_raw
from kan2mcu.quant.reference import run_model
from kan2mcu.check.verify import verify

EPOCHS = "40"
QUIET = "--no-progress"


def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cancer(tmp_path_factory) -> dict:
    """Breast cancer (569 rows, 30 features, labels "malignant"/"benign") as train.csv and eval.csv."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    base = tmp_path_factory.mktemp("cancer")
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    labels = np.array(["malignant", "benign"])[data.target]
    x_tr, x_ev, y_tr, y_ev = train_test_split(data.data, labels, test_size=0.25, random_state=0, stratify=labels)
    rows = lambda x, y: [[repr(float(v)) for v in r] + [label] for r, label in zip(x, y)]  # noqa: E731
    train = _write_csv(base / "train.csv", names + ["diagnosis"], rows(x_tr, y_tr))
    # the evaluation file lists its columns in another order: they are matched by name
    order = list(range(len(names)))[::-1]
    ev = _write_csv(base / "eval.csv", ["diagnosis"] + [names[i] for i in order],
                    [[label] + [repr(float(r[i])) for i in order] for r, label in zip(x_ev, y_ev)])
    return {"base": base, "train": train, "eval": ev, "x_eval": x_ev, "y_eval": y_ev, "names": names}


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> dict:
    """y = sin(pi speed) + 0.3 angle^2 + 0.02 (temp - 150) + noise; columns spanning 0..2, -3..3, 100..200."""
    base = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    n = 1500
    x = np.stack([rng.uniform(0, 2, n), rng.uniform(-3, 3, n), rng.uniform(100, 200, n)], axis=1)
    y = np.sin(np.pi * x[:, 0]) + 0.3 * x[:, 1] ** 2 + 0.02 * (x[:, 2] - 150) + rng.normal(0, 0.05, n)
    header = ["speed", "angle", "temp", "power"]
    rows = [[repr(float(v)) for v in (*r, t)] for r, t in zip(x, y)]
    return {"base": base, "train": _write_csv(base / "train.csv", header, rows[:1200]),
            "eval": _write_csv(base / "eval.csv", header, rows[1200:]), "x_eval": x[1200:], "y_eval": y[1200:]}


@pytest.fixture(scope="module")
def cancer_model(cancer) -> dict:
    base = cancer["base"]
    status = cli.main(["train", "--data", str(cancer["train"]), "--target", "diagnosis", "--task", "classify",
                       "--widths", "30,8,2", "--epochs", EPOCHS, QUIET, "-o", str(base / "cancer.pt")])
    assert status == 0
    status = cli.main(["generate", str(base / "cancer.pt"), "-o", str(base / "kan"), "-q",
                       "--eval-data", str(cancer["eval"])])
    assert status == 0
    return {"checkpoint": base / "cancer.pt", "folder": base / "kan"}


@pytest.fixture(scope="module")
def regression_model(regression) -> dict:
    base = regression["base"]
    assert cli.main(["train", "--data", str(regression["train"]), "--target", "power", "--task", "regress",
                     "--widths", "3,8,1", "--epochs", "60", QUIET, "-o", str(base / "reg.pt")]) == 0
    assert cli.main(["generate", str(base / "reg.pt"), "-o", str(base / "kan"), "-q",
                     "--eval-data", str(regression["eval"])]) == 0
    return {"checkpoint": base / "reg.pt", "folder": base / "kan"}


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_classification_report_carries_accuracy_within_a_point(cancer, cancer_model):
    ev = _report(cancer_model["folder"])["evaluation"]
    assert ev["data"] == "eval.csv" and ev["task"] == "classify" and ev["target"] == "diagnosis"
    assert ev["metric"] == "accuracy" and ev["samples"] == len(cancer["y_eval"]) == 143
    assert ev["float"]["accuracy"] > 0.9  # the model learned the task
    assert abs(ev["quantized"]["accuracy"] - ev["float"]["accuracy"]) <= 0.01  # 8/8/8 within 1 point
    md = (cancer_model["folder"] / "report.md").read_text()
    assert f"generated integer model accuracy {ev['quantized']['accuracy']:.4f}" in md


def test_text_labels_are_mapped_and_the_mapping_kept(cancer_model):
    imported = load_checkpoint(cancer_model["checkpoint"])
    meta = imported.model.metadata
    assert meta["classes"] == ["benign", "malignant"] and meta["task"] == "classify"
    manifest = json.loads((cancer_model["folder"] / "kan2mcu.json").read_text())
    assert manifest["data"]["classes"] == ["benign", "malignant"]
    assert len(manifest["data"]["columns"]) == 30


def test_c_float_api_on_raw_csv_values_gives_the_reported_accuracy(cancer, cancer_model, tmp_path):
    """The C, fed the raw feature values of the evaluation CSV through kan_quantize_input, computes
    exactly the codes and outputs the report's integer figures come from."""
    folder = cancer_model["folder"]
    model, qmodel = load_bundle(folder)
    host = HostModel(folder, tmp_path)
    raw = np.asarray(cancer["x_eval"], np.float32)
    codes = host.quantize(raw).astype(np.int64)
    assert np.array_equal(codes, api_codes(model, qmodel, raw))
    c_out = host.infer(codes).astype(np.int64)
    assert np.array_equal(c_out, run_model(qmodel, codes))
    labels = np.array(model.metadata["classes"])[c_out.argmax(1)]
    accuracy = float((labels == cancer["y_eval"]).mean())
    assert accuracy == _report(folder)["evaluation"]["quantized"]["accuracy"]
    # the integer API on the same values in Q15.16 goes through the same per-column scaling
    codec = input_codec(qmodel, model.metadata["input_transform"])
    q16 = np.rint(cancer["x_eval"] * 65536).astype(np.int32)
    assert np.array_equal(host.quantize(q16, raw=True), quantize_raw(qmodel, codec, q16))


def test_own_data_models_are_bit_exact(cancer_model, regression_model):
    for model in (cancer_model, regression_model):
        result = verify(model["folder"], quiet=True)
        assert result.bit_exact is True


def test_header_lists_the_per_column_scaling(cancer_model):
    header = (cancer_model["folder"] / "kan.h").read_text()
    assert "#define KAN_INPUT_RAW_FEATURES 1" in header and "KAN_INPUT_RAW_SCALE" not in header
    assert "  0 mean_radius: x = f * " in header and " 29 worst_fractal_dimension: x = f * " in header


def test_regression_report_carries_r2_and_max_error(regression, regression_model):
    ev = _report(regression_model["folder"])["evaluation"]
    assert ev["task"] == "regress" and ev["metric"] == "r2" and ev["samples"] == 300
    assert ev["float"]["r2"] > 0.95
    assert abs(ev["quantized"]["r2"] - ev["float"]["r2"]) <= 0.01
    # max |error| is in the target's units: recompute it from the integer reference
    model, qmodel = load_bundle(regression_model["folder"])
    t = model.metadata["target_transform"]
    pred = run_model(qmodel, api_codes(model, qmodel, regression["x_eval"]))[:, 0] * qmodel.output_scale
    pred = pred * t["scale"] + t["offset"]
    assert ev["quantized"]["max_abs_error"] == pytest.approx(float(np.abs(pred - regression["y_eval"]).max()),
                                                              rel=1e-12)
    assert "accuracy" not in _report(regression_model["folder"])  # no digits-style accuracy on regression


def test_regression_metrics_match_scikit_learn():
    from sklearn.metrics import max_error, r2_score

    from kan2mcu.training.train import regression_metrics

    rng = np.random.default_rng(5)
    y = rng.normal(3.0, 2.0, 200)
    pred = y + rng.normal(0.0, 0.7, 200)
    figures = regression_metrics(pred, y)
    assert figures["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert figures["max_abs_error"] == pytest.approx(max_error(y, pred), rel=1e-12)


def test_scaling_maps_the_training_range_onto_the_grid():
    from kan2mcu.data.tabular import apply_transform, grid_scaling

    x = np.array([[0.0, 100.0, 5.0], [2.0, 300.0, 5.0], [1.0, 200.0, 5.0]])
    scaled = apply_transform(x, grid_scaling(x))
    assert np.allclose(scaled.min(0), [-1, -1, 0]) and np.allclose(scaled.max(0), [1, 1, 0])  # constant -> 0


def test_without_eval_data_the_held_out_split_is_evaluated(regression_model, tmp_path):
    assert cli.main(["generate", str(regression_model["checkpoint"]), "-o", str(tmp_path / "kan"), "-q"]) == 0
    report = _report(tmp_path / "kan")
    ev = report["evaluation"]
    assert ev["data"] == "held-out split" and ev["samples"] == 240 and ev["task"] == "regress"
    assert abs(ev["quantized"]["r2"] - ev["float"]["r2"]) <= 0.01
    assert report["calibration"] == "the checkpoint's training rows (960)"


def test_calibration_file_of_raw_rows(regression, regression_model, tmp_path):
    """--calibration takes raw feature rows (CSV by column name, target optional) for such models."""
    rows = [[r[2], r[0], r[1]] for r in csv.reader(open(regression["train"]))][:401]  # temp, speed, angle
    calib = _write_csv(tmp_path / "calib.csv", rows[0], rows[1:])
    assert cli.main(["generate", str(regression_model["checkpoint"]), "-o", str(tmp_path / "kan"), "-q",
                     "--calibration", str(calib), "--arith", "int"]) == 0
    report = _report(tmp_path / "kan")
    assert report["calibration"] == "file calib.csv" and report["guard"]["samples"] == 400


def test_calibration_file_with_other_columns_is_refused(capsys, regression, regression_model, tmp_path):
    rows = [r[1:] for r in csv.reader(open(regression["train"]))][:50]  # no "speed" column
    calib = _write_csv(tmp_path / "calib.csv", rows[0], rows[1:])
    status, err = run_cli(capsys, "generate", regression_model["checkpoint"], "-o", tmp_path / "kan", "-q",
                       "--calibration", calib)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and lines == ["kan2mcu: error: --calibration calib.csv: lacks 'speed'"], err
    assert not (tmp_path / "kan").exists()


def test_float_backend_reports_only_the_float_model(regression, regression_model, tmp_path):
    assert cli.main(["generate", str(regression_model["checkpoint"]), "-o", str(tmp_path / "f"), "-q",
                     "--arith", "float", "--eval-data", str(regression["eval"])]) == 0
    ev = _report(tmp_path / "f")["evaluation"]
    assert ev["quantized"] is None and ev["max_abs_output_error"] is None and ev["float"]["r2"] > 0.95
    header = (tmp_path / "f" / "kan.h").read_text()
    assert "kan_infer takes x" in header and "  2 temp: x = f * " in header


def test_training_is_deterministic_and_npz_npy_formats_agree(tmp_path):
    """Same data and seed -> the same weights, from a .npz and from a .npy pair alike."""
    import torch

    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    common = ["--task", "classify", "--widths", "4,3,2", "--epochs", "3", QUIET]
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), *common, "-o", str(tmp_path / "a.pt")]) == 0
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), *common, "-o", str(tmp_path / "b.pt")]) == 0
    assert cli.main(["train", "--data", str(tmp_path / "x.npy"), "--target", str(tmp_path / "y.npy"), *common,
                     "-o", str(tmp_path / "c.pt")]) == 0
    states = [torch.load(tmp_path / f"{n}.pt", weights_only=True)["state_dict"] for n in "abc"]
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])
    # evaluation from a .npz and from a FEATURES.npy,LABELS.npy pair: the same figures
    reports = []
    for name, data in (("npz", tmp_path / "d.npz"), ("pair", f"{tmp_path / 'x.npy'},{tmp_path / 'y.npy'}")):
        assert cli.main(["generate", str(tmp_path / "a.pt"), "-o", str(tmp_path / name), "-q",
                         "--eval-data", str(data)]) == 0
        reports.append(_report(tmp_path / name)["evaluation"])
    assert reports[0]["samples"] == reports[1]["samples"] == 120
    assert reports[0]["float"] == reports[1]["float"] and reports[0]["quantized"] == reports[1]["quantized"]


def test_eval_data_on_a_checkpoint_without_a_task_infers_it(small_checkpoints, tmp_path):
    """A foreign-style checkpoint (no task, no target): several outputs -> classification, the
    CSV's last column is the class index."""
    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    x = np.load(calibration)[:50]
    labels = np.arange(50) % 3
    ev = _write_csv(tmp_path / "ev.csv", [f"f{i}" for i in range(8)] + ["label"],
                    [[repr(float(v)) for v in r] + [int(c)] for r, c in zip(x, labels)])
    assert cli.main(["generate", str(checkpoint), "-o", str(tmp_path / "kan"), "-q", "--calibration",
                     str(calibration), "--eval-data", str(ev)]) == 0
    result = _report(tmp_path / "kan")["evaluation"]
    assert result["task"] == "classify" and result["task_inferred"] is True and result["target"] == "label"
    assert result["samples"] == 50 and 0.0 <= result["quantized"]["accuracy"] <= 1.0


# ---- bad input: one line, exit 1 (2 for usage), nothing written ----

@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bad")
    good = [[repr(0.1 * i), repr(1.0 + i), str(i % 2)] for i in range(20)]
    _write_csv(base / "good.csv", ["a", "b", "label"], good)
    _write_csv(base / "text.csv", ["a", "b", "label"], good[:5] + [["0.3", "high", "1"]] + good[5:])
    _write_csv(base / "nan.csv", ["a", "b", "label"], good[:7] + [["nan", "2", "0"]] + good[7:])
    _write_csv(base / "one.csv", ["a", "b", "label"], good[:1])
    _write_csv(base / "strings.csv", ["a", "b", "label"], [r[:2] + [["lo", "hi"][i % 2]] for i, r in enumerate(good)])
    _write_csv(base / "fraction.csv", ["a", "b", "label"], [r[:2] + [repr(0.5 * i)] for i, r in enumerate(good)])
    _write_csv(base / "ragged.csv", ["a", "b", "label"], good[:3] + [["1", "2"]])
    _write_csv(base / "constant.csv", ["a", "b", "label"], [r[:2] + ["7"] for r in good])
    _write_csv(base / "ids.csv", ["a", "b", "label"], [[repr(0.1 * i), "1", f"id{i}"] for i in range(40)])
    (base / "noheader.csv").write_text("1,2,0\n3,4,1\n")
    (base / "data.txt").write_text("a,b\n")
    np.savez(base / "nox.npz", y=np.zeros(3))
    return base


@pytest.mark.parametrize("args, needles", [
    (["--data", "good.csv", "--target", "missing"], ["no column 'missing'", "a, b, label"]),
    (["--data", "text.csv", "--target", "label"], ["line 7", "column 'b'", "'high' is not a number"]),
    (["--data", "nan.csv", "--target", "label"], ["line 9", "column 'a'", "not finite"]),
    (["--data", "one.csv", "--target", "label"], ["1 data row", "need at least 2 data rows"]),
    (["--data", "strings.csv", "--target", "label", "--task", "regress"], ["regress needs numbers", "'lo'"]),
    (["--data", "fraction.csv", "--target", "label", "--task", "classify"], ["whole-number or text class labels",
                                                                             "--task regress"]),
    (["--data", "constant.csv", "--target", "label"], ["'label' holds one value only"]),
    (["--data", "ids.csv", "--target", "label"], ["40 distinct text values in 40 rows", "--task classify"]),
    (["--data", "ragged.csv", "--target", "label"], ["line 5 has 2 cells, the header 3"]),
    (["--data", "noheader.csv", "--target", "label"], ["first row must be a header"]),
    (["--data", "data.txt", "--target", "label"], ["unknown format .txt", ".csv"]),
    (["--data", "nox.npz"], ["arrays named x"]),
    (["--data", "absent.csv", "--target", "label"], ["no such file"]),
    (["--data", "good.csv"], ["--data needs --target COLUMN"]),
    (["--data", "good.csv", "--target", "label", "--widths", "2,4,3"], ["2 feature columns and 2 classes",
                                                                         "--widths 2,16,2"]),
    (["--data", "good.csv", "--target", "label", "--widths", "2,x"], ["--widths must be comma-separated"]),
    (["--target", "label"], ["--target needs --data FILE"]),
])
def test_bad_tables_give_one_line(capsys, tables, tmp_path, args, needles):
    args = [str(tables / a) if a.endswith((".csv", ".npz", ".txt")) else a for a in args]
    status, err = run_cli(capsys, "train", *args, "--epochs", "1", "-o", tmp_path / "m.pt")
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kan2mcu: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "m.pt").exists()


def test_unknown_task_is_a_usage_error(capsys, tables, tmp_path):
    status, err = run_cli(capsys, "train", "--data", tables / "good.csv", "--target", "label", "--task", "cluster",
                       "-o", tmp_path / "m.pt")
    assert status == 2 and "invalid choice: 'cluster'" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("edit, needles", [
    (lambda h, r: (h[:-1], [x[:-1] for x in r]), ["no column 'diagnosis'"]),
    (lambda h, r: (h[1:], [x[1:] for x in r]), ["lacks 'mean_radius'"]),
    (lambda h, r: (h + ["id"], [x + ["7"] for x in r]), ["not trained on: 'id'"]),
    (lambda h, r: (h, [x[:-1] + ["unknown"] for x in r]), ["class 'unknown' was not seen in training"]),
])
def test_bad_eval_data_gives_one_line(capsys, cancer, cancer_model, tmp_path, edit, needles):
    rows = list(csv.reader(open(cancer["train"])))
    header, body = edit(rows[0], rows[1:30])
    bad = _write_csv(tmp_path / "bad.csv", header, body)
    status, err = run_cli(capsys, "generate", cancer_model["checkpoint"], "-o", tmp_path / "kan", "-q",
                       "--eval-data", bad)
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kan2mcu: error: --eval-data "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "kan").exists()


def test_eval_data_on_a_one_output_checkpoint_reports_regression(tmp_path):
    """No task recorded and one output: regression metrics (R2, max |error|), not accuracy."""
    from conftest import make_random_checkpoint

    checkpoint, calibration = make_random_checkpoint(tmp_path / "r.pt", (4, 3, 1), 5, 3, seed=4)
    x = np.load(calibration)[:60]
    np.savez(tmp_path / "ev.npz", x=x, y=x[:, 0] - x[:, 1])
    assert cli.main(["generate", str(checkpoint), "-o", str(tmp_path / "kan"), "-q", "--calibration",
                     str(calibration), "--eval-data", str(tmp_path / "ev.npz")]) == 0
    report = _report(tmp_path / "kan")
    ev = report["evaluation"]
    assert ev["task"] == "regress" and ev["task_inferred"] is True and ev["metric"] == "r2"
    assert set(ev["quantized"]) == {"r2", "max_abs_error"} and "accuracy" not in report
    assert "task regress (inferred from the output width)" in (tmp_path / "kan" / "report.md").read_text()


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory) -> Path:
    """scikit-learn's diabetes data as a CSV: 10 features, an integer target ("progression") of 214 values."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    return _write_csv(tmp_path_factory.mktemp("diabetes") / "diabetes.csv", list(data.feature_names) + ["progression"],
                      [[repr(float(v)) for v in row] + [str(int(t))] for row, t in zip(data.data, data.target)])


def test_task_is_inferred_from_the_target(capsys, diabetes_csv, tables, tmp_path):
    """Without --task: the diabetes target (whole numbers, 214 distinct) trains a regression and says
    why; 0/1 labels train a classifier; the checkpoint records the task."""
    from kan2mcu.model.importers import load_checkpoint

    status, err = run_cli(capsys, "train", "--data", diabetes_csv, "--target", "progression", "--epochs", "5", QUIET,
                          "-o", tmp_path / "d.pt")
    assert status == 0, err
    assert "--task not given: the target 'progression' has 214 distinct whole numbers" in err
    assert "a regression (--task regress" in err
    import torch

    assert load_checkpoint(tmp_path / "d.pt").model.metadata["task"] == "regress"
    metrics = torch.load(tmp_path / "d.pt", weights_only=True)["metrics"]
    assert metrics["task_inferred"].startswith("--task not given")
    status, err = run_cli(capsys, "train", "--data", tables / "good.csv", "--target", "label", "--epochs", "2", QUIET,
                          "-o", tmp_path / "g.pt")
    assert status == 0 and "2 distinct whole numbers, so this trains a classifier" in err
    assert load_checkpoint(tmp_path / "g.pt").model.metadata["task"] == "classify"


def test_infer_task_rules():
    from kan2mcu.data.tabular import MAX_INFERRED_CLASSES, Table, infer_task

    def table(y):
        return Table(np.zeros((len(y), 1)), y, ("a",), "t", "t.csv")

    assert infer_task(table(np.arange(MAX_INFERRED_CLASSES, dtype=float) % 20))[0] == "classify"
    assert infer_task(table(np.arange(MAX_INFERRED_CLASSES + 1, dtype=float)))[0] == "regress"
    assert infer_task(table(np.array([0.5, 1.0, 1.5])))[0] == "regress"
    assert infer_task(table(np.array(["a", "b", "a"], dtype=object)))[0] == "classify"


def test_early_stopping_restores_the_best_epoch():
    """fit with a validation split stops once the validation loss has not improved for `patience`
    epochs and leaves the model at the best epoch: its validation loss is the recorded best."""
    import torch

    from kan2mcu.model.torch_kan import KAN
    from kan2mcu.training.fit import _loss_on, fit

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (60, 2))
    y = (x[:, :1] ** 2 + rng.normal(0, 0.3, (60, 1)))  # noisy and few rows: it overfits soon
    torch.manual_seed(0)
    model = KAN([2, 16, 1], grid_size=10, spline_order=3)
    stopped = fit(model, x[:30], y[:30], torch.nn.functional.mse_loss, epochs=400, lr=0.05, progress=False,
                  validation=(x[30:], y[30:]), patience=10)
    assert stopped["epochs_run"] < 400 and stopped["epochs_run"] == stopped["best_epoch"] + 10
    loss = _loss_on(model, (x[30:], y[30:]), torch.nn.functional.mse_loss, torch.float32)
    assert loss == stopped["best_validation_loss"]


def test_own_data_training_keeps_a_validation_split(regression_model):
    import torch

    metrics = torch.load(regression_model["checkpoint"], weights_only=True)["metrics"]
    validation = metrics["validation"]
    assert validation["rows"] == 144 and 1 <= validation["best_epoch"] <= validation["epochs_run"] <= 60


def test_overfitting_warning():
    from kan2mcu.training.train import overfitting_warning

    assert overfitting_warning({"train_r2": 0.855, "test_r2": 0.029}, "regress").startswith(
        "held-out R2 0.029 is far below training R2 0.855")
    assert overfitting_warning({"train_r2": 0.9, "test_r2": 0.8}, "regress") is None
    assert "held-out accuracy 0.700" in overfitting_warning({"train_accuracy": 1.0, "test_accuracy": 0.7}, "classify")
    assert overfitting_warning({"train_accuracy": 0.99, "test_accuracy": 0.95}, "classify") is None
