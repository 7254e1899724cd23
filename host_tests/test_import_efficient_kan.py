"""efficient-kan-layout checkpoints (non-uniform grids from update_grid included) and foreign files.

Models are kan2mcu's own torch KAN (efficient-kan semantics and state-dict layout), with grids
moved by ``KANLinear.update_grid``; no efficient-kan package is involved.

Tolerances: ``SEMANTIC_ATOL = 1e-12`` for the torch module run in float64 against the IR's float64
forward (same function, same precision; measured <= 1e-15), and ``FLOAT32_RTOL = 1e-5`` relative
to the output scale for the ordinary float32 torch forward (float32 round-off over short sums;
measured ~2e-7 on outputs of magnitude ~1).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import torch

from kan2mcu.model.bspline import model_forward  # noqa: E402
from kan2mcu.errors import CheckpointError  # noqa: E402
from kan2mcu.model.importers import load_checkpoint  # noqa: E402
from kan2mcu.model.importers.efficient_kan import ir_from_state_dict  # noqa: E402
from kan2mcu.model.torch_kan import KAN, KANLinear  # noqa: E402

SEMANTIC_ATOL = 1e-12
FLOAT32_RTOL = 1e-5


def adapted_kan(widths=(4, 6, 3), grid_size=5, order=3, seed=0, scale=1.5) -> KAN:
    """A KAN whose every layer's grid was moved by update_grid on its own (wide) input data."""
    torch.manual_seed(seed)
    model = KAN(list(widths), grid_size=grid_size, spline_order=order)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(0.3, scale, (256, widths[0])), dtype=torch.float32)
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.normal_(0.0, 0.3)
            layer.update_grid(x)
            x = layer(x)
    return model.eval()


def torch_forward(model: KAN, x: np.ndarray, *, float64: bool) -> np.ndarray:
    with torch.no_grad():
        if float64:
            model.double()
            try:
                return model(torch.tensor(x, dtype=torch.float64)).numpy()
            finally:
                model.float()
        return model(torch.tensor(x, dtype=torch.float32)).double().numpy()


def check_against_torch(model: KAN, ir, name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.5, (1000, ir.layers[0].in_features)).astype(np.float32).astype(np.float64)
    ours = model_forward(ir, x)
    err64 = float(np.max(np.abs(ours - torch_forward(model, x, float64=True))))
    ref32 = torch_forward(model, x, float64=False)
    err32 = float(np.max(np.abs(ours - ref32)))
    print(f"{name}: max|IR - torch float64| = {err64:.3g}, max|IR - torch float32| = {err32:.3g}")
    assert err64 <= SEMANTIC_ATOL
    assert err32 <= FLOAT32_RTOL * max(1.0, float(np.max(np.abs(ref32))))


# ------------------------------------------------------------------------------------------------
# update_grid on kan2mcu's KANLinear
# ------------------------------------------------------------------------------------------------

def test_update_grid_makes_per_input_non_uniform_grids():
    layer = adapted_kan().layers[0]
    knots = layer.grid.numpy().astype(np.float64)
    assert knots.shape == (4, 5 + 2 * 3 + 1)
    assert np.all(np.diff(knots, axis=1) > 0)
    steps = np.diff(knots, axis=1)
    assert not np.allclose(steps, steps[:, :1], rtol=1e-3), "grid stayed uniform"
    assert not np.allclose(knots, knots[:1]), "all inputs share one grid"


def test_update_grid_knots_follow_quantiles():
    torch.manual_seed(0)
    layer = KANLinear(1, 1, grid_size=4, spline_order=3)
    x = torch.tensor(np.random.default_rng(0).exponential(1.0, (401, 1)), dtype=torch.float32)
    layer.update_grid(x, grid_eps=0.0, margin=0.0)
    inner = layer.grid[0, 3:-3].numpy()
    expected = np.sort(x[:, 0].numpy())[[0, 100, 200, 300, 400]]
    np.testing.assert_allclose(inner, expected, rtol=1e-6)
    layer.update_grid(x, grid_eps=1.0, margin=0.0)  # grid_eps 1: uniform over the data range
    np.testing.assert_allclose(np.diff(layer.grid[0].numpy()), np.diff(layer.grid[0].numpy())[0], rtol=1e-4)


@pytest.mark.parametrize("scaler", ["trained", "zeros-in-some-edges"])
def test_update_grid_keeps_the_spline_function(scaler):
    """Inside the old grid the old spline is smooth; the refit on new knots reproduces it closely."""
    torch.manual_seed(1)
    layer = KANLinear(3, 2, grid_size=6, spline_order=3)
    with torch.no_grad():
        layer.spline_weight.normal_(0.0, 0.5)
        if scaler != "trained":
            layer.spline_scaler[0, 1] = 0.0
    x = torch.tensor(np.random.default_rng(1).uniform(-0.9, 0.9, (512, 3)), dtype=torch.float32)
    with torch.no_grad():
        before = layer(x)
        old_grid = layer.grid.clone()
        layer.update_grid(x)
        after = layer(x)
    assert not torch.equal(old_grid, layer.grid)
    error = float((after - before).abs().max())
    assert error < 0.02 * float(before.abs().max()), error
    if scaler == "trained":
        assert torch.all(layer.spline_weight != 0)  # every edge keeps a refitted spline
    else:
        assert torch.all(layer.spline_weight[0, 1] == 0)  # a zero scaler keeps its edge's weights zero
        assert torch.any(layer.spline_weight[1, 1] != 0)


def test_update_grid_rejects_bad_input():
    layer = KANLinear(3, 2)
    with pytest.raises(ValueError):
        layer.update_grid(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        layer.update_grid(torch.zeros(10, 3), grid_eps=0.0, margin=0.0)


# ------------------------------------------------------------------------------------------------
# Importing non-uniform efficient-kan checkpoints
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("widths,grid_size,order", [((4, 6, 3), 5, 3), ((3, 5, 4, 2), 8, 2), ((2, 3), 3, 1)],
                         ids=["4x6x3-G5-k3", "3x5x4x2-G8-k2", "2x3-G3-k1"])
@pytest.mark.parametrize("layout", ["bare", "nested-state_dict", "nested-model_state_dict", "module-prefix"])
def test_non_uniform_checkpoint_imports(tmp_path, widths, grid_size, order, layout):
    model = adapted_kan(widths, grid_size, order)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "bare":
        payload = state
    elif layout == "nested-state_dict":
        payload = {"state_dict": state, "epoch": 7, "optimizer": {"lr": 1e-3}}
    elif layout == "nested-model_state_dict":
        payload = {"model_state_dict": state, "step": 3}
    else:  # DataParallel / wrapper prefix
        payload = {"module.kan." + k: v for k, v in state.items()}
    path = tmp_path / "efficient_kan.pt"
    torch.save(payload, path)

    imported = load_checkpoint(path)
    assert imported.format == "efficient-kan" and imported.model.source == "efficient-kan"
    ir = imported.model
    assert ir.widths == list(widths)
    assert all(layer.order == order and layer.grid_size == grid_size for layer in ir.layers)
    assert all(layer.uniform_grid() is None for layer in ir.layers)
    for layer, torch_layer in zip(ir.layers, model.layers):
        np.testing.assert_array_equal(layer.knots, torch_layer.grid.numpy().astype(np.float64))
    check_against_torch(model, ir, f"{layout} {widths}")


def test_checkpoint_without_spline_scaler(tmp_path):
    """efficient-kan with enable_standalone_scale_spline=False saves no spline_scaler."""
    model = adapted_kan()
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.mul_(layer.spline_scaler[..., None])
            layer.spline_scaler.fill_(1.0)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("spline_scaler")}
    torch.save(state, tmp_path / "noscaler.pt")
    check_against_torch(model, load_checkpoint(tmp_path / "noscaler.pt").model, "no spline_scaler")


def test_ir_from_state_dict_equals_file_import(tmp_path):
    model = adapted_kan()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
    assert load_checkpoint(tmp_path / "m.pt").model.sha256() == ir_from_state_dict(model.state_dict()).sha256()


# ------------------------------------------------------------------------------------------------
# Foreign and corrupt files: always a clean CheckpointError
# ------------------------------------------------------------------------------------------------

def _write_foreign(kind: str, path):
    rng = np.random.default_rng(0)
    if kind == "random-bytes":
        path.write_bytes(rng.bytes(4096))
    elif kind == "text":
        path.write_text("epoch,loss\n1,0.5\n2,0.25\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unrelated-dict":
        torch.save({"weight": torch.zeros(3, 3), "bias": torch.zeros(3), "name": "mlp"}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(4, 4), path)
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "truncated":
        torch.save({"state_dict": adapted_kan().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:700])
    elif kind == "numpy-npy":
        np.save(path.with_suffix(".npy"), rng.normal(size=(4, 4)))
        path.with_suffix(".npy").rename(path)
    elif kind == "pickled-module":  # needs unpickling arbitrary code: refused by weights_only
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "ek-missing-grid":
        torch.save({k: v for k, v in adapted_kan().state_dict().items() if not k.endswith("grid")}, path)
    elif kind == "ek-bad-shapes":
        state = adapted_kan().state_dict()
        state["layers.0.spline_weight"] = torch.zeros(6, 4)
        torch.save(state, path)
    elif kind == "ek-mismatched-layers":
        state = adapted_kan().state_dict()
        state["layers.1.base_weight"] = torch.zeros(3, 5)
        torch.save(state, path)
    elif kind == "ek-gap-in-layers":
        state = adapted_kan((4, 6, 3)).state_dict()
        torch.save({k.replace("layers.1.", "layers.2."): v for k, v in state.items()}, path)
    elif kind == "ek-nan":
        state = adapted_kan().state_dict()
        state["layers.0.base_weight"][0, 0] = float("nan")
        torch.save(state, path)
    elif kind == "ek-string-value":
        state = adapted_kan().state_dict()
        state["layers.0.grid"] = "not a tensor"
        torch.save(state, path)
    else:
        raise AssertionError(kind)


FOREIGN = ["random-bytes", "text", "empty", "unrelated-dict", "tensor", "list", "truncated", "numpy-npy",
           "pickled-module", "ek-missing-grid", "ek-bad-shapes", "ek-mismatched-layers", "ek-gap-in-layers",
           "ek-nan", "ek-string-value"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_or_corrupt_file_is_a_checkpoint_error(tmp_path, kind):
    path = tmp_path / "model.pt"
    _write_foreign(kind, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 400, message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nothing_here.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------------------
# The spline kernel (KANtize path) with any base function of the IR
# ------------------------------------------------------------------------------------------------

def _uniform_kan(widths=(4, 6, 2), seed=3) -> KAN:
    torch.manual_seed(seed)
    model = KAN(list(widths), grid_size=5, spline_order=3).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.spline_weight.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("kind", ["gelu", "identity", "relu", "tanh", "sigmoid", "silu"])
def test_spline_strategy_takes_every_base_function(kind, tmp_path):
    """--strategy spline with --base-activation KIND: the base-branch table holds KIND's values at the
    input codes (quantized like the SiLU table), the C equals the integer reference, and the model
    follows the float model of that base function (and not SiLU's, unless KIND is SiLU)."""
    from conftest import assert_c_equals_reference
    from kan2mcu.model.bspline import BASE_FUNCTION_VALUES
    from kan2mcu.codegen.bundle import load_bundle
    from kan2mcu.generate import generate_model
    from kan2mcu.quant.reference import dequantize_outputs, quantize_inputs, run_model
    from kan2mcu.quant.strategies import spline

    model = _uniform_kan()
    x = np.random.default_rng(3).uniform(-1, 1, (600, 4))
    torch.save(model.float().state_dict(), tmp_path / "m.pt")
    np.save(tmp_path / "calib.npy", x)
    generate_model(tmp_path / "m.pt", tmp_path / "out", calibration=tmp_path / "calib.npy", base_activation=kind,
                   strategy="spline", quiet=True, max_error=1.0)
    ir, qmodel = load_bundle(tmp_path / "out")
    assert [layer.base_function for layer in ir.layers] == [kind, kind]
    fn = BASE_FUNCTION_VALUES[kind]
    for layer, ql in zip(ir.layers, qmodel.layers):
        assert ql.strategy == "spline"
        codes = np.broadcast_to(np.arange(ql.codes)[:, None], (ql.codes, ql.in_features))
        _, _, table = spline.decode_inputs(ql, codes)
        xq = ql.in_scale[None, :] * (codes - ql.in_zero[None, :])  # the float value of every code
        qmax = (1 << (ql.silu_bits - 1)) - 1
        expected = np.clip(np.round(fn(xq) / ql.silu_scale), -qmax, qmax)
        np.testing.assert_array_equal(table, expected)
    codes = quantize_inputs(qmodel, x)
    assert_c_equals_reference(tmp_path / "out", codes, tmp_path / "build")
    ours = dequantize_outputs(qmodel, run_model(qmodel, codes))
    original = model_forward(ir, x)
    span = float(original.max() - original.min())
    assert np.abs(ours - original).max() <= 0.03 * span
    if kind != "silu":  # the base function matters: the SiLU model's outputs are measurably different
        silu_ir = type(ir)(tuple(dataclasses.replace(layer, base_function="silu") for layer in ir.layers),
                           source=ir.source, metadata=ir.metadata)
        assert np.abs(model_forward(silu_ir, x) - ours).max() > 0.03 * span
