"""pykan front end: models trained with pykan's own loop, converted, checked against pykan's forward.

Tolerances (stated once, used everywhere):

- ``SEMANTIC_ATOL = 1e-12``: pykan's forward run in float64 (``model.double()``) against the IR's
  float64 forward. Both compute the same real function in the same precision; only summation order
  differs, so any error above round-off (measured: <= 1e-15) means a wrong fold.
- ``FLOAT32_RTOL = 1e-5``: pykan's ordinary float32 forward against the IR's float64 forward, as
  ``max|ir - pykan| <= FLOAT32_RTOL * max(1, max|pykan|)``. float32 carries 2^-24 = 6e-8 relative
  per operation; an output is a short sum (at most a few dozen edges, each a Cox-de Boor recursion of
  depth k and a SiLU) over two or three layers, so the error is a few hundred ulps of the output
  scale at most. Measured: 3e-7..7e-7 max abs on outputs of magnitude ~2 (about 2e-7 relative),
  so the bound is tight to ~50x, not loose enough to hide a missing scale factor.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import torch
from conftest import require_module

# the "pykan" test extra: skipped where missing, a failure in CI (CI=true)
for _extra in ("yaml", "matplotlib", "pandas", "sympy"):
    require_module(_extra, "pip install -e .[pykan]")
kan = require_module("kan", "pip install -e .[pykan]")

from kan2mcu.model.bspline import model_forward  # noqa: E402
from kan2mcu.errors import CheckpointError, UnsupportedModelError  # noqa: E402
from kan2mcu.model.importers import load_checkpoint  # noqa: E402
from kan2mcu.model.importers.pykan import (  # noqa: E402
    checkpoint_prefix,
    classify_base_function,
    ir_from_pykan,
    is_pykan_checkpoint,
    load_pykan_checkpoint,
    load_pykan_model,
)

SEMANTIC_ATOL = 1e-12
FLOAT32_RTOL = 1e-5


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def make_dataset(n_var: int, seed: int = 0, n: int = 160):
    """Small synthetic regression set: y = sin(pi x0) + x1^2 (other inputs are distractors)."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(-1.0, 1.0, (n, n_var)), dtype=torch.float32)
    y = torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2
    split = n * 3 // 4
    return {"train_input": x[:split], "train_label": y[:split],
            "test_input": x[split:], "test_label": y[split:]}


def new_kan(ckpt_dir, width, **kwargs):
    """A pykan KAN that never writes outside ``ckpt_dir`` (pykan's prune/refine log there)."""
    kwargs.setdefault("grid", 5)
    kwargs.setdefault("k", 3)
    kwargs.setdefault("seed", 0)
    return kan.KAN(width=list(width), auto_save=False, ckpt_path=str(ckpt_dir), **kwargs)


def probe_inputs(n_inputs: int, n: int = 600) -> np.ndarray:
    """Seeded inputs, float32-representable, partly beyond the training range (exercises the edges)."""
    rng = np.random.default_rng(0)
    return rng.uniform(-1.6, 1.6, (n, n_inputs)).astype(np.float32).astype(np.float64)


def pykan_forward(model, x: np.ndarray, *, float64: bool) -> np.ndarray:
    """pykan's own forward on ``x``; leaves the model (dtype, cached data) as it was."""
    cache = model.cache_data
    try:
        with torch.no_grad():
            if float64:
                model.double()
                return model(torch.tensor(x, dtype=torch.float64)).numpy()
            return model(torch.tensor(x, dtype=torch.float32)).double().numpy()
    finally:
        if float64:
            model.float()
        model.cache_data = cache


def check_against_pykan(model, ir, name: str, x: np.ndarray | None = None) -> None:
    x = probe_inputs(ir.layers[0].in_features) if x is None else x
    ours = model_forward(ir, x)
    ref64 = pykan_forward(model, x, float64=True)
    ref32 = pykan_forward(model, x, float64=False)
    err64 = float(np.max(np.abs(ours - ref64)))
    err32 = float(np.max(np.abs(ours - ref32)))
    print(f"{name}: max|IR - pykan float64| = {err64:.3g}, max|IR - pykan float32| = {err32:.3g}")
    assert err64 <= SEMANTIC_ATOL, f"{name}: fold differs from pykan's float64 forward by {err64:.3g}"
    assert err32 <= FLOAT32_RTOL * max(1.0, float(np.max(np.abs(ref32)))), f"{name}: {err32:.3g}"


def knots_uniform(knots: np.ndarray) -> bool:
    steps = np.diff(knots, axis=1)
    return bool(np.allclose(steps, steps[:, :1], rtol=1e-5))


# ------------------------------------------------------------------------------------------------
# Trained models (module scope: train once)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pykan_ckpt")


@pytest.fixture(scope="module")
def trained(ckpt_dir):
    """[3, 4, 1] KAN fitted by pykan's ``fit`` (LBFGS, grid updates at steps 0 and 5, sparsity reg)."""
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.fit(make_dataset(3), steps=6, lamb=0.01, log=100)
    return model


def test_fit_then_convert_matches_pykan(trained):
    ir = ir_from_pykan(trained)
    assert ir.widths == [3, 4, 1] and ir.source == "pykan"
    # fit() ran update_grid: the knots moved to data quantiles, per input.
    assert not knots_uniform(ir.layers[0].knots) and ir.layers[0].uniform_grid() is None
    check_against_pykan(trained, ir, "fit")


def test_update_grid_then_refine_matches_pykan(ckpt_dir):
    data = make_dataset(2, seed=1)
    model = new_kan(ckpt_dir, [2, 3, 1], grid=3)
    model.fit(data, steps=3, log=100, update_grid=False)
    model.update_grid(data["train_input"])  # MultKAN.update_grid: per layer, from its activations
    model = model.refine(7)  # pykan's refine returns a new model with auto_save on: switch it off
    model.auto_save = False
    model.fit(data, steps=2, log=100, update_grid=False)
    ir = ir_from_pykan(model)
    assert [layer.grid_size for layer in ir.layers] == [7, 7]
    assert ir.layers[0].knots.shape == (2, 7 + 2 * 3 + 1)
    assert not knots_uniform(ir.layers[0].knots)
    check_against_pykan(model, ir, "update_grid+refine")


def test_per_layer_grid_sizes_and_orders(ckpt_dir):
    model = new_kan(ckpt_dir, [2, 3, 2], grid=[4, 6], k=[2, 3])
    model.fit(make_dataset(2, seed=2), steps=3, log=100)
    ir = ir_from_pykan(model)
    assert [(layer.grid_size, layer.order) for layer in ir.layers] == [(4, 2), (6, 3)]
    check_against_pykan(model, ir, "grid [4,6] k [2,3]")


def test_pruned_model_matches_pykan(ckpt_dir, trained):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.fit(make_dataset(3), steps=6, lamb=0.01, log=100)
    pruned = model.prune(node_th=0.05, edge_th=0.1)
    ir = ir_from_pykan(pruned)
    assert ir.widths[1] < 4, "prune() removed no hidden node"
    mask = pruned.act_fun[0].mask.detach().numpy()  # [in, out]
    assert (mask == 0).any(), "prune() masked no edge"
    # Pruned edges cost nothing in the output: their folded weights are exactly zero.
    layer = ir.layers[0]
    for i, o in np.argwhere(mask == 0):
        assert layer.base_weight[o, i] == 0 and not layer.coef[o, i].any()
    check_against_pykan(pruned, ir, "prune")


def test_node_and_subnode_affine_terms_fold(ckpt_dir):
    model = new_kan(ckpt_dir, [2, 3, 2], affine_trainable=True)
    model.fit(make_dataset(2, seed=3), steps=3, log=100)
    rng = np.random.default_rng(0)
    with torch.no_grad():  # make the order of operations matter: scale and bias at both levels
        for params in (model.node_scale, model.node_bias, model.subnode_scale, model.subnode_bias):
            for p in params:
                p.copy_(torch.tensor(rng.uniform(-1.5, 1.5, p.shape), dtype=p.dtype))
    ir = ir_from_pykan(model)
    assert not np.allclose(ir.layers[0].out_scale, 1) and not np.allclose(ir.layers[1].out_bias, 0)
    check_against_pykan(model, ir, "node/subnode affine")


def test_prune_input_takes_the_original_inputs(ckpt_dir, trained):
    narrowed = trained.prune_input(active_inputs=[0, 2], log_history=False)
    narrowed.auto_save = False
    ir = ir_from_pykan(narrowed)
    assert ir.widths[0] == 3 and ir.metadata["input_id"] == [0, 2]
    assert not ir.layers[0].coef[:, 1].any() and not ir.layers[0].base_weight[:, 1].any()
    check_against_pykan(narrowed, ir, "prune_input [0, 2]")
    trailing = trained.prune_input(active_inputs=[0, 1], log_history=False)
    assert ir_from_pykan(trailing).widths[0] == 2
    check_against_pykan(trailing, ir_from_pykan(trailing, n_inputs=3), "prune_input [0, 1] n_inputs=3")


def test_fully_degenerate_knots_fold_to_a_zero_spline(ckpt_dir, trained):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.load_state_dict(trained.state_dict())
    with torch.no_grad():
        model.act_fun[1].grid[2] = 0.25  # pykan: all-equal knots -> 0/0 -> nan_to_num -> spline == 0
    ir = ir_from_pykan(model)
    assert not ir.layers[1].coef[:, 2].any()
    check_against_pykan(model, ir, "degenerate knots")


def test_partially_repeated_knots_are_refused(ckpt_dir, trained):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.load_state_dict(trained.state_dict())
    with torch.no_grad():
        model.act_fun[0].grid[1, 5] = model.act_fun[0].grid[1, 4]
    with pytest.raises(UnsupportedModelError, match=r"act_fun\.0: input 1 has repeated"):
        ir_from_pykan(model)


# ------------------------------------------------------------------------------------------------
# Base functions
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fun", [torch.nn.SiLU(), torch.nn.functional.silu, lambda x: x * torch.sigmoid(x)],
                         ids=["nn.SiLU", "F.silu", "lambda-silu"])
def test_silu_base_function_detected(fun):
    assert classify_base_function(fun, "act_fun.0") == "silu"


@pytest.mark.parametrize("fun,kind", [(torch.nn.Identity(), "identity"), (torch.nn.Tanh(), "tanh"),
                                      (torch.nn.GELU(), "gelu"), (torch.nn.ReLU(), "relu")],
                         ids=["Identity", "Tanh", "GELU", "ReLU"])
def test_other_base_functions_detected(fun, kind):
    assert classify_base_function(fun, "act_fun.3") == kind


@pytest.mark.parametrize("fun", [lambda x: 1.01 * torch.nn.functional.silu(x), torch.nn.GELU(approximate="tanh"),
                                 torch.nn.Softplus()], ids=["scaled-silu", "GELU-tanh", "Softplus"])
def test_unknown_base_functions_refused(fun):
    with pytest.raises(UnsupportedModelError, match=r"act_fun\.3: pykan base function"):
        classify_base_function(fun, "act_fun.3")


def test_subclassed_silu_with_own_forward_is_probed():
    class NotSiLU(torch.nn.SiLU):
        def forward(self, x):
            return torch.tanh(x)

    class Softsign(torch.nn.SiLU):
        def forward(self, x):
            return x / (1 + x.abs())

    assert classify_base_function(NotSiLU(), "act_fun.0") == "tanh"  # probed, not trusted by its class
    with pytest.raises(UnsupportedModelError, match="Softsign"):
        classify_base_function(Softsign(), "act_fun.0")


def test_identity_base_model_imports(ckpt_dir, tmp_path):
    model = new_kan(ckpt_dir, [2, 3, 1], base_fun="identity")
    model.fit(make_dataset(2, seed=4), steps=2, log=100)
    ir = ir_from_pykan(model)
    assert [layer.base_function for layer in ir.layers] == ["identity", "identity"]
    check_against_pykan(model, ir, "base 'identity'")
    model.saveckpt(str(tmp_path / "ident"))
    assert load_checkpoint(tmp_path / "ident").model.sha256() == ir.sha256()


def test_identity_base_model_deploys_with_the_spline_kernel(ckpt_dir, tmp_path):
    """pykan with an identity base through --strategy spline (the KANtize path): the base-branch
    table holds the input codes' own values, the C equals the integer reference and the integer
    model follows pykan's forward within 2% of the output range."""
    from conftest import assert_c_equals_reference
    from kan2mcu.codegen.bundle import load_bundle
    from kan2mcu.generate import generate_model
    from kan2mcu.quant.reference import dequantize_outputs, quantize_inputs, run_model
    from kan2mcu.quant.strategies import spline

    model = new_kan(ckpt_dir, [2, 3, 1], base_fun="identity")
    data = make_dataset(2, seed=4)
    model.fit(data, steps=5, log=100)
    model(data["train_input"])  # pykan caches the last forward's inputs: the calibration data
    model.saveckpt(str(tmp_path / "ident"))
    generate_model(tmp_path / "ident", tmp_path / "m", strategy="spline", quiet=True, max_error=1.0)
    _, qmodel = load_bundle(tmp_path / "m")
    for ql in qmodel.layers:
        codes = np.broadcast_to(np.arange(ql.codes)[:, None], (ql.codes, ql.in_features))
        _, _, table = spline.decode_inputs(ql, codes)
        xq = ql.in_scale[None, :] * (codes - ql.in_zero[None, :])
        qmax = (1 << (ql.silu_bits - 1)) - 1
        np.testing.assert_array_equal(table, np.clip(np.round(xq / ql.silu_scale), -qmax, qmax))
    x = data["test_input"].numpy().astype(np.float64)
    codes = quantize_inputs(qmodel, x)
    assert_c_equals_reference(tmp_path / "m", codes, tmp_path / "build")
    ours = dequantize_outputs(qmodel, run_model(qmodel, codes))
    original = pykan_forward(model, x, float64=False)
    span = float(original.max() - original.min())
    assert np.abs(ours - original).max() <= 0.02 * span


def test_zero_base_model_folds(ckpt_dir, tmp_path):
    model = new_kan(ckpt_dir, [2, 3, 1], base_fun="zero")
    model.fit(make_dataset(2, seed=4), steps=2, log=100)
    ir = ir_from_pykan(model)
    assert all(not layer.base_weight.any() for layer in ir.layers)
    check_against_pykan(model, ir, "base 'zero'")
    model.saveckpt(str(tmp_path / "zero"))
    assert load_checkpoint(tmp_path / "zero").model.sha256() == ir.sha256()


# ------------------------------------------------------------------------------------------------
# Symbolic branch and multiplication nodes
# ------------------------------------------------------------------------------------------------

def test_active_symbolic_branch_imports(ckpt_dir, trained, tmp_path):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.load_state_dict(trained.state_dict())
    model.fix_symbolic(1, 2, 0, "sin", fit_params_bool=False, verbose=False, log_history=False)
    with torch.no_grad():
        model.symbolic_fun[1].affine[0, 2] = torch.tensor([1.3, 0.2, 0.7, -0.1])
    ir = ir_from_pykan(model)
    assert [(e.out, e.inp, e.name) for e in ir.layers[1].symbolic] == [(0, 2, "sin")]
    check_against_pykan(model, ir, "symbolic sin")
    model.saveckpt(str(tmp_path / "sym"))
    assert load_checkpoint(tmp_path / "sym").model.sha256() == ir.sha256()


def test_unknown_symbolic_function_refused(ckpt_dir, trained):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.load_state_dict(trained.state_dict())
    model.fix_symbolic(1, 2, 0, "sin", fit_params_bool=False, verbose=False, log_history=False)
    model.symbolic_fun[1].funs_name[0][2] = "bessel"
    with pytest.raises(UnsupportedModelError, match=r"act_fun\.1: symbolic function 'bessel' on edge in 2 -> out 0"):
        ir_from_pykan(model)


def test_symbolic_branch_switched_off_is_ignored(ckpt_dir, trained):
    model = new_kan(ckpt_dir, [3, 4, 1])
    model.load_state_dict(trained.state_dict())
    model.fix_symbolic(0, 0, 1, "x^2", fit_params_bool=False, verbose=False, log_history=False)
    model.symbolic_enabled = False  # pykan's forward skips the symbolic branch entirely
    ir = ir_from_pykan(model)
    assert not ir.layers[0].coef[1, 0].any()  # fix_symbolic masked the numeric edge too
    check_against_pykan(model, ir, "symbolic disabled")
    model.symbolic_enabled = True
    model.unfix_symbolic(0, 0, 1, log_history=False)  # symbolic mask back to 0: nothing active
    check_against_pykan(model, ir_from_pykan(model), "symbolic unfixed")


def test_multiplication_nodes_refused(ckpt_dir, tmp_path):
    model = new_kan(ckpt_dir, [2, [2, 1], 1], mult_arity=2)
    with pytest.raises(UnsupportedModelError, match=r"act_fun\.0: multiplication nodes"):
        ir_from_pykan(model)
    model.saveckpt(str(tmp_path / "mult"))
    with pytest.raises(UnsupportedModelError, match=r"act_fun\.0: multiplication nodes"):
        load_checkpoint(tmp_path / "mult")


# ------------------------------------------------------------------------------------------------
# saveckpt checkpoints
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def saved(trained, tmp_path):
    prefix = tmp_path / "run" / "kan"
    prefix.parent.mkdir()
    cache = trained.cache_data
    trained.cache_data = make_dataset(3)["train_input"]
    try:
        trained.saveckpt(str(prefix))
    finally:
        trained.cache_data = cache
    return prefix


@pytest.mark.parametrize("suffix", ["", "_config.yml", "_state", "_cache_data"])
def test_checkpoint_detected_and_loaded(saved, trained, suffix):
    path = type(saved)(str(saved) + suffix)
    assert is_pykan_checkpoint(path) and checkpoint_prefix(path) == saved
    imported = load_checkpoint(path)
    assert imported.format == "pykan" and imported.model.source == "pykan"
    assert imported.model.sha256() == ir_from_pykan(trained).sha256()
    expected = make_dataset(3)["train_input"].double().numpy()
    np.testing.assert_array_equal(imported.calibration, expected)


def test_checkpoint_matches_pykan_reloaded_model(saved):
    imported = load_pykan_checkpoint(saved)
    reloaded = load_pykan_model(saved)
    check_against_pykan(reloaded, imported.model, "saveckpt -> loadckpt")


def test_checkpoint_without_cache_has_no_calibration(trained, tmp_path):
    cache = trained.cache_data
    trained.cache_data = None
    try:
        trained.saveckpt(str(tmp_path / "nocache"))
    finally:
        trained.cache_data = cache
    assert load_checkpoint(tmp_path / "nocache").calibration is None
    (tmp_path / "nocache_cache_data").unlink()
    assert load_checkpoint(tmp_path / "nocache").calibration is None


def test_checkpoint_read_without_pykan(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "kan", None)  # "import kan" now raises ImportError
    assert load_pykan_checkpoint(saved).model.widths == [3, 4, 1]
    with pytest.raises(CheckpointError, match="needs pykan"):
        load_pykan_model(saved)


def test_checkpoint_missing_state_or_corrupt_files(saved):
    state = type(saved)(str(saved) + "_state")
    state.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(saved)
    state.unlink()
    with pytest.raises(CheckpointError, match="lacks its weights file"):
        load_checkpoint(saved)
    torch.save({"unrelated": torch.zeros(3)}, state)
    with pytest.raises(CheckpointError, match=r"no pykan layers"):
        load_checkpoint(saved)
    config = type(saved)(str(saved) + "_config.yml")
    config.write_text("width: [[3, 0]\nbase_fun_name: silu\n  : : ]\n")
    with pytest.raises(CheckpointError, match="not a readable pykan config"):
        load_checkpoint(saved)


def test_bare_pykan_state_dict_file_is_explained(trained, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "pykan_state.pt")
    with pytest.raises(CheckpointError, match="bare pykan state_dict.*saveckpt"):
        load_checkpoint(tmp_path / "pykan_state.pt")


def test_unrelated_config_yml_is_not_pykan(tmp_path):
    (tmp_path / "thing_config.yml").write_text("learning_rate: 0.1\n")
    assert not is_pykan_checkpoint(tmp_path / "thing")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "thing")


def test_not_a_pykan_object():
    with pytest.raises(CheckpointError, match="not a pykan"):
        ir_from_pykan(torch.nn.Linear(2, 2))
