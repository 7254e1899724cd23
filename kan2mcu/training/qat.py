"""Quantization-aware training: fine-tune a KAN through a forward that computes exactly what the
integer model of the ``spline`` strategy computes (docs/arithmetic.md), so that ``generate
--strategy spline`` at the same bit widths deploys a model trained for them.

Every training step quantizes the current weights with ``kan2mcu.quant.quantize.quantize`` (the spline
strategy's own basis and SiLU tables, coefficient and base-weight scales and rounding,
requantization constants: nothing re-derived here, so changes to those rules carry over) and runs
the integer reference (``reference.quantize_inputs``, ``reference.run_layer``: the same rounding
and saturation as the C). The forward's values are the integer model's outputs, dequantized.

Gradients are straight-through, through a float surrogate of each layer built from the same
integer tables and quantized weights: basis and SiLU values are the table entries of each input's
code, with the gradient of the float B-splines and SiLU at the layer's float input clamped to its
code window (zero where codes saturate); coefficients and base weights are their quantized values
with the gradient of the float weight (zero where a weight is clipped). The surrogate differs
from the integer output by the rounding to codes and by the rounding of the requantization
multipliers to integers (host_tests/test_qat.py bounds both).

Activation ranges are calibrated as ``generate`` calibrates them (min/max of the float model's
activations on the training split, widened to the grid) before the first epoch and after every
epoch, and held within it. After every epoch the integer model ``generate`` would make of the
weights is scored on the training split (accuracy or R2, then loss); the best epoch's weights are
kept (epoch 0: the original ones), since at the lowest widths a step can make the integer model
worse (the per-output coefficient scale follows the largest weight). The result is measured
again through the real pipeline (``FinetuneResult``).

Cost: every step quantizes the whole model once more (about 10 ms for the digits KAN [64, 16, 10]
at 4-bit codes, 30 ms at 8; 0.3 s and 3 s for [784, 256, 10]): QAT is meant for MCU-sized models.

Where QAT and PTQ cannot match: ``generate --calibration`` on other data than the training split
gives other ranges; ``--strategy auto`` may pick edge-table layers (spline/coef bits do not apply
there, and QAT did not train for them).
"""
from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kan2mcu.model.checkpoint import check_checkpoint_path, save_checkpoint
from kan2mcu.data.datasets import Dataset, load_dataset
from kan2mcu.errors import OptionError, UnsupportedModelError
from kan2mcu.model.importers.efficient_kan import ir_from_state_dict
from kan2mcu.model.ir import KANModel
from kan2mcu.quant.quantize import LayerPlan, QuantOptions, calibrate, quantize
from kan2mcu.quant.reference import quantize_inputs, run_layer, run_model
from kan2mcu.quant.strategies import spline
from kan2mcu.training.fit import fit as train_fit

STRATEGY = "spline"  # the strategy whose arithmetic the fake quantization mirrors
DEFAULT_EPOCHS = 10
DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class FinetuneResult:
    """Where the checkpoint went and its test score (accuracy, or R2 for regression) as a float
    model, and through the integer reference at the QAT widths before (PTQ) and after fine-tuning."""

    checkpoint: Path | None
    float_before: float
    ptq_before: float
    float_after: float
    quantized_after: float
    best_epoch: int = 0  # the epoch whose weights were kept (0: the original ones)

    def summary(self, options: QuantOptions) -> str:
        """One line for the user."""
        return (f"test score at act {options.act_bits} / spline {options.spline_bits} / coef {options.coef_bits} "
                f"(--strategy spline): {self.ptq_before:.4f} before QAT (PTQ), {self.quantized_after:.4f} after; "
                f"float {self.float_before:.4f} before, {self.float_after:.4f} after; kept the weights of epoch "
                f"{self.best_epoch} (best integer model on the training split)")


def check_supported(model: KANModel) -> None:
    """Refuse (UnsupportedModelError) what the spline strategy, and so QAT, cannot compute, and
    what kan2mcu's torch KAN cannot hold (an output bias)."""
    for layer in model.layers:
        reason = spline.unsupported(layer)
        if reason:
            raise UnsupportedModelError(f"{layer.name}: {reason}; QAT mirrors the spline strategy only")
        if layer.base_function != "silu":  # the spline strategy takes any; kan2mcu's torch KAN has SiLU
            raise UnsupportedModelError(f"{layer.name}: base function {layer.base_function!r}: kan2mcu's torch KAN "
                                        "(QAT) has a SiLU base only; generate deploys it without finetune")
        if np.any(layer.out_bias != 0):
            raise UnsupportedModelError(f"{layer.name}: an output bias (pykan node/subnode bias) has no place in "
                                        "kan2mcu's torch KAN; finetune cannot carry it")


def kan_from_ir(model: KANModel):
    """kan2mcu's torch KAN computing ``model`` (SiLU base, no bias): knots, coefficients (spline
    scaler 1) and base weights copied, each layer's output scale folded into its weights."""
    import torch

    from kan2mcu.model.torch_kan import KAN, KANLinear

    check_supported(model)
    first = model.layers[0]
    kan = KAN(model.widths, grid_size=first.grid_size, spline_order=first.order)
    for index, layer in enumerate(model.layers):
        if (layer.grid_size, layer.order) != (first.grid_size, first.order):
            kan.layers[index] = KANLinear(layer.in_features, layer.out_features, layer.grid_size, layer.order)
            kan.config["grid_size"] = [lay.grid_size for lay in model.layers]
            kan.config["spline_order"] = [lay.order for lay in model.layers]
        target = kan.layers[index]
        scale = layer.out_scale
        with torch.no_grad():
            target.grid.copy_(torch.tensor(layer.knots))
            target.spline_weight.copy_(torch.tensor(layer.coef * scale[:, None, None]))
            target.spline_scaler.fill_(1.0)
            target.base_weight.copy_(torch.tensor(layer.base_weight * scale[:, None]))
    return kan


def ir_from_kan(kan, metadata: dict | None = None) -> KANModel:
    """The IR of a torch KAN, read the way a saved checkpoint is read (float32 values)."""
    state = {k: v.detach().cpu() for k, v in kan.state_dict().items()}
    return ir_from_state_dict(state, source="kan2mcu", metadata=metadata)


@dataclass(frozen=True, eq=False)
class _Tables:
    """One layer's dequantized tables (torch float64)."""

    basis: object  # [I, Q, NB]: value of B-spline m at code q of input i (edge-normalized), as the C reads it
    silu: object  # [I, Q]: SiLU table value at code q of input i
    low: object  # [I]: float input at code 0
    high: object  # [I]: float input at the top code


def _tables(qlayer) -> _Tables:
    """The integer tables of ``qlayer`` read back code by code with the strategy's own decoder."""
    import torch

    codes = np.broadcast_to(np.arange(qlayer.codes)[:, None], (qlayer.codes, qlayer.in_features))
    first, basis, silu_q = spline.decode_inputs(qlayer, codes)  # [Q, I], [Q, I, K1], [Q, I]
    dense = np.zeros((qlayer.in_features, qlayer.codes, qlayer.n_basis))
    i_idx, q_idx = np.arange(qlayer.in_features)[None, :], np.arange(qlayer.codes)[:, None]
    for j in range(qlayer.k1):  # edge-normalized reads stay in 0..NB-1; zero basis values add nothing
        np.add.at(dense, (i_idx, q_idx, first + j), basis[:, :, j].astype(np.float64))
    low = qlayer.in_scale * (0 - qlayer.in_zero)
    high = qlayer.in_scale * (qlayer.codes - 1 - qlayer.in_zero)
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    return _Tables(t(dense * qlayer.basis_scale), t(silu_q.T * qlayer.silu_scale), t(low), t(high))


def _straight_through(weight, quantized: np.ndarray, scale: np.ndarray, bits: int):
    """Value ``quantized * scale``, gradient of ``weight`` (zero where the weight was clipped)."""
    import torch

    scale = np.asarray(scale, np.float64)
    scale = torch.tensor(scale.reshape(scale.shape + (1,) * (weight.dim() - scale.ndim)))
    kept = (weight.detach().abs() <= scale * ((1 << (bits - 1)) - 0.5)).double()
    live = weight * kept
    return torch.tensor(quantized.astype(np.float64)) * scale + live - live.detach()


class FakeQuantKAN:
    """The fake-quantized forward of a torch KAN at ``options`` (see the module docstring).

    Every step quantizes the current weights with ``kan2mcu.quant.quantize.quantize`` (the spline
    strategy's own tables, coefficient and weight rounding, requantization constants) against the
    activation ranges of the last :meth:`recalibrate`, and runs the integer reference: the forward
    values are the integer model's. Gradients flow through a float surrogate of each layer built
    from the same dequantized tables and weights (straight-through estimators)."""

    def __init__(self, kan, options: QuantOptions, calibration: np.ndarray) -> None:
        self.kan, self.options, self.calibration = kan, options, np.asarray(calibration, np.float64)
        self.plan = tuple(LayerPlan(STRATEGY, options.act_bits) for _ in kan.layers)
        self.activations: list | None = None

    def recalibrate(self):
        """Activation ranges from the float model as it is now (what ``generate`` computes from the
        saved weights); returns the integer model of the current weights."""
        self.activations = calibrate(ir_from_kan(self.kan), self.calibration)
        return self.quantized()

    def quantized(self):
        """The integer model (QuantModel) of the current weights at the calibrated ranges."""
        return quantize(ir_from_kan(self.kan), self.options, None, plan=self.plan, activations=self.activations)

    def __call__(self, x):
        """Outputs [N, O] (float64 tensor) for float model inputs [N, I]: the integer model's
        dequantized outputs, with straight-through gradients."""
        surrogate, exact = self.forward(x)
        return surrogate + (exact - surrogate).detach()

    def forward(self, x):
        """The last layer's float surrogate (computed from the integer codes entering it: equal to the
        exact output but for the final rounding) and the integer model's dequantized outputs."""
        import torch
        import torch.nn.functional as F

        qmodel = self.quantized()
        codes = quantize_inputs(qmodel, x.detach().numpy())
        surrogate = x.double()  # float value carrying the gradient
        for torch_layer, ql in zip(self.kan.layers, qmodel.layers):
            tab = _tables(ql)
            xg = torch.maximum(torch.minimum(surrogate, tab.high), tab.low)  # no gradient where codes saturate
            rows, q = torch.arange(ql.in_features)[None, :], torch.from_numpy(codes)
            basis_float, silu_float = torch_layer.b_splines(xg), F.silu(xg)
            basis = tab.basis[rows, q] + basis_float - basis_float.detach()  # [N, I, NB]
            silu = tab.silu[rows, q] + silu_float - silu_float.detach()  # [N, I]
            coef = torch_layer.spline_weight.double() * torch_layer.spline_scaler.double()[..., None]  # as imported
            coef = _straight_through(coef, ql.coef, ql.coef_scale, ql.coef_bits)
            base = _straight_through(torch_layer.base_weight.double(), ql.base_weight, ql.base_scale, ql.base_bits)
            surrogate = torch.einsum("nim,oim->no", basis, coef) + silu @ base.T
            codes = run_layer(ql, codes)  # the exact integer outputs: next layer's codes, or int32 outputs
        return surrogate, torch.from_numpy(codes.astype(np.float64) * qmodel.output_scale)


def _is_classification(y: np.ndarray) -> bool:
    return np.asarray(y).dtype.kind in "iu"


def score(outputs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (integer labels) or R2 (float targets)."""
    outputs, y = np.asarray(outputs, np.float64), np.asarray(y)
    if _is_classification(y):
        return float((outputs.argmax(1) == y).mean())
    y = y.reshape(len(y), -1).astype(np.float64)
    return float(1.0 - ((outputs - y) ** 2).sum() / max(((y - y.mean(0)) ** 2).sum(), 1e-300))


def quantized_score(model: KANModel, options: QuantOptions, data: Dataset, calibration: np.ndarray) -> float:
    """Test score of ``model`` through the integer reference, quantized as ``generate --strategy spline``
    does on ``calibration`` (the inputs generate will calibrate on)."""
    qmodel = quantize(model, options, calibration, plan=tuple(LayerPlan(STRATEGY, options.act_bits)
                                                               for _ in model.layers))
    return score(run_model(qmodel, quantize_inputs(qmodel, data.x_test)) * qmodel.output_scale, data.y_test)


def _float_score(model: KANModel, data: Dataset) -> float:
    from kan2mcu.model.bspline import model_forward

    return score(model_forward(model, data.x_test), data.y_test)


def check_training_options(epochs: int, lr: float, batch_size: int = 64) -> None:
    """OptionError unless epochs and batch size are positive integers and the learning rate positive."""
    if not isinstance(epochs, int) or epochs < 1:
        raise OptionError(f"--epochs must be a positive integer, got {epochs}")
    if not lr > 0:
        raise OptionError(f"--lr must be positive, got {lr}")
    if batch_size < 1:
        raise OptionError(f"batch size must be a positive integer, got {batch_size}")


def finetune_kan(kan, data: Dataset, options: QuantOptions, *, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                 batch_size: int = 64, seed: int = 0, progress: bool = True,
                 calibration: np.ndarray | None = None) -> FinetuneResult:
    """Fine-tune the torch KAN ``kan`` in place through :class:`FakeQuantKAN` on ``data``'s training
    split; ``calibration``: the inputs ``generate`` will calibrate the result on (default: the
    training split, as for a named data set). Deterministic for a given seed."""
    import torch

    check_training_options(epochs, lr, batch_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster on a shared machine, and reproducible
    try:
        return _finetune(kan, data, options, epochs, lr, batch_size, seed, progress,
                         data.x_train if calibration is None else np.asarray(calibration, np.float64))
    finally:
        torch.set_num_threads(threads)


def _finetune(kan, data: Dataset, options: QuantOptions, epochs: int, lr: float, batch_size: int, seed: int,
              progress: bool, calibration: np.ndarray) -> FinetuneResult:
    import torch

    float_before = _float_score(ir_from_kan(kan), data)
    fake = FakeQuantKAN(kan, options, calibration)
    qmodel = fake.recalibrate()
    ptq_before = score(run_model(qmodel, quantize_inputs(qmodel, data.x_test)) * qmodel.output_scale, data.y_test)
    classify = _is_classification(data.y_train)
    y_train = data.y_train if classify else np.asarray(data.y_train, np.float64).reshape(len(data.x_train), -1)
    torch.manual_seed(seed)
    best = (_training_fit(qmodel, data), 0, copy.deepcopy(kan.state_dict()))

    def keep_best(epoch: int) -> dict:
        nonlocal best
        fit = _training_fit(fake.recalibrate(), data)  # the integer model generate would make now
        if fit > best[0]:
            best = (fit, epoch + 1, copy.deepcopy(kan.state_dict()))
        return {"train": f"{fit[0]:.4f}"}

    train_fit(kan, data.x_train, y_train, torch.nn.functional.cross_entropy if classify else torch.nn.functional.mse_loss,
              epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
              desc=f"QAT a{options.act_bits}/s{options.spline_bits}/c{options.coef_bits}", forward=fake,
              dtype=torch.float64, after_epoch=keep_best)
    kan.load_state_dict(best[2])  # the weights whose integer model fits the training split best
    model = ir_from_kan(kan)
    return FinetuneResult(None, float_before, ptq_before, _float_score(model, data),
                          quantized_score(model, options, data, calibration), best[1])


def _training_fit(qmodel, data: Dataset) -> tuple[float, float]:
    """(score, -loss) of the integer model on the training split: how epochs are compared."""
    outputs = run_model(qmodel, quantize_inputs(qmodel, data.x_train)) * qmodel.output_scale
    if _is_classification(data.y_train):
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -float(log_p[np.arange(len(outputs)), data.y_train].mean())
    else:
        loss = float(((outputs - np.asarray(data.y_train, np.float64).reshape(len(outputs), -1)) ** 2).mean())
    return score(outputs, data.y_train), -loss


def finetune(checkpoint, output, options: QuantOptions, *, dataset: str | None = None, epochs: int = DEFAULT_EPOCHS,
             lr: float = DEFAULT_LR, seed: int = 0, prefix: str | None = None, progress: bool = True) -> FinetuneResult:
    """``kan2mcu finetune``: read any supported checkpoint, fine-tune it for ``options`` with QAT on
    ``dataset`` (default: the checkpoint's own), save a kan2mcu checkpoint to ``output``."""
    from kan2mcu.model.importers import load_checkpoint

    output = Path(output)
    check_training_options(epochs, lr)
    check_checkpoint_path(output)  # before the training run, not after it
    imported = load_checkpoint(checkpoint, prefix=prefix)
    for warning in imported.warnings:
        print(f"kan2mcu: warning: {warning}", file=sys.stderr)
    if imported.format == "efficient-kan":
        print("kan2mcu: warning: efficient-kan state dicts do not record the base activation: SiLU assumed "
              "(the spline strategy, which QAT mirrors, computes SiLU only)", file=sys.stderr)
    name = dataset or imported.dataset
    if name is None and imported.model.metadata.get("columns"):
        raise OptionError(f"{Path(checkpoint).name} was trained on your own data (--data) and keeps only some of its "
                          "rows; fine-tune while training instead: kan2mcu train --data FILE ... --qat")
    if name is None:
        raise OptionError(f"{Path(checkpoint).name} ({imported.format}) names no data set to fine-tune on; "
                          "pass --dataset NAME (known: digits)")
    data = load_dataset(name)
    model = imported.model
    if data.x_train.shape[1] != model.layers[0].in_features:
        raise OptionError(f"--dataset {name}: {data.x_train.shape[1]} inputs, the model takes "
                          f"{model.layers[0].in_features}")
    kan = kan_from_ir(model)  # refuses what the spline strategy cannot compute
    result = finetune_kan(kan, data, options, epochs=epochs, lr=lr, seed=seed, progress=progress)
    transform = model.metadata.get("input_transform") if imported.dataset == name else data.input_transform
    metrics = {"test_accuracy" if _is_classification(data.y_test) else "test_r2": result.float_after,
               "qat": qat_metrics(options, result, epochs=epochs, lr=lr, seed=seed, source=imported.format)}
    path = save_checkpoint(kan, output, dataset=name, input_transform=transform, metrics=metrics,
                           task="classify" if _is_classification(data.y_test) else "regress")
    return dataclasses.replace(result, checkpoint=path)


def qat_metrics(options: QuantOptions, result: FinetuneResult, **how) -> dict:
    """The checkpoint's ``metrics.qat`` entry: the widths trained for and the measured scores."""
    return {"strategy": STRATEGY, **{k: v for k, v in options.as_dict().items() if k != "table_bits"}, **how,
            "float_before": result.float_before, "ptq_before": result.ptq_before,
            "float_after": result.float_after, "quantized_after": result.quantized_after,
            "best_epoch": result.best_epoch}


def qat_after_training(kan, data: Dataset, options: QuantOptions, *, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                       progress: bool = True, calibration: np.ndarray | None = None) -> dict:
    """``kan2mcu train --qat``: fine-tune the freshly trained ``kan`` in place; its ``metrics.qat`` entry."""
    result = finetune_kan(kan, data, options, epochs=epochs, seed=seed, progress=progress, calibration=calibration)
    if progress:
        print(f"kan2mcu: {result.summary(options)}", file=sys.stderr)
    return qat_metrics(options, result, epochs=epochs, lr=DEFAULT_LR, seed=seed, source="kan2mcu train")


def deployment_warning(trained_for: dict, options: QuantOptions, plan) -> str | None:
    """Why an integer model (``options``, ``plan``) does not deploy the widths a checkpoint was
    fine-tuned for (its ``metrics.qat``), or None when it does."""
    knobs = ("act_bits", "spline_bits", "coef_bits", "base_bits", "silu_bits")
    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    why = [f"{flag(k)} {getattr(options, k)} here" for k in knobs
           if trained_for.get(k) is not None and trained_for[k] != getattr(options, k)]
    other = sorted({step.strategy for step in plan if step.strategy != STRATEGY})
    if other:
        why.append(f"{'/'.join(other)} layers in the plan (spline and coefficient bits do not apply there)")
    if not why:
        return None
    trained = " ".join(f"{flag(k)} {trained_for[k]}" for k in knobs if trained_for.get(k) is not None)
    return (f"the checkpoint was fine-tuned (QAT) for --strategy spline {trained}, but {', '.join(why)}; "
            "generate with its options to deploy what it was trained for")
