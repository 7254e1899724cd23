"""The one float training loop: train (digits, own data) and QAT (fine-tuning) both run it.

It takes the loss function and, optionally, the forward pass the loss sees, so a variant plugs in
as a different model or loss without a second loop.
"""
from __future__ import annotations

import numpy as np


class _BestEpoch:
    """Early stopping on a validation loss: the best epoch's weights, and when to stop."""

    def __init__(self, model, patience: int):
        self.model, self.patience = model, patience
        self.best_loss, self.best_epoch, self.state, self.epochs_run = float("inf"), -1, None, 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record ``epoch``'s validation ``loss``; True when training should stop."""
        import copy

        self.epochs_run = epoch + 1
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            self.state = copy.deepcopy(self.model.state_dict())
        return epoch - self.best_epoch >= self.patience

    def restore(self) -> dict:
        """Load the best epoch's weights; what happened, for the checkpoint's metrics."""
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return {"best_epoch": self.best_epoch + 1, "epochs_run": self.epochs_run,
                "best_validation_loss": self.best_loss}


def fit(model, x: np.ndarray, y: np.ndarray, loss_fn, *, epochs: int, batch_size: int = 64, lr: float = 1e-2,
        seed: int = 0, progress: bool = True, desc: str = "train KAN", forward=None, dtype=None,
        after_epoch=None, validation=None, patience: int = 15) -> dict | None:
    """Adam with a cosine schedule over shuffled mini-batches, deterministic for ``seed``.

    ``loss_fn(outputs, targets)`` -> scalar tensor; ``y`` int64 (class indices) or float [N, O].
    ``forward`` computes the outputs the loss sees (default ``model``; QAT passes the fake-quantized
    model over ``model``'s parameters), on inputs of ``dtype`` (default float32).
    ``after_epoch(epoch)`` runs after each epoch and returns extra progress-bar fields (a dict).
    ``validation`` (x_val, y_val): stop once the validation loss has not improved for ``patience``
    epochs and restore the best epoch's weights; returns what happened (else None)."""
    import torch
    from tqdm import tqdm

    dtype = dtype or torch.float32
    forward = forward or model
    x_t = torch.tensor(x, dtype=dtype)
    y_t = torch.tensor(y) if y.dtype.kind in "iu" else torch.tensor(y, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, unit="epoch")
    best = _BestEpoch(model, patience) if validation is not None else None
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_t), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn(forward(x_t[batch]), y_t[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        extra = after_epoch(epoch) if after_epoch is not None else {}
        stop = False
        if best is not None:
            val_loss = _loss_on(model, validation, loss_fn, dtype)
            stop = best.update(epoch, val_loss)
            extra = {**extra, "val_loss": f"{val_loss:.3f}"}
        bar.set_postfix(loss=f"{loss.item():.3f}", **extra)
        if stop:
            break
    bar.close()
    model.eval()
    return best.restore() if best is not None else None


def _loss_on(model, rows, loss_fn, dtype) -> float:
    """``loss_fn`` of ``model`` on (x, y) rows, without gradients."""
    import torch

    x, y = rows
    y_t = torch.tensor(y) if y.dtype.kind in "iu" else torch.tensor(y, dtype=dtype)
    model.eval()
    with torch.no_grad():
        return float(loss_fn(model(torch.tensor(x, dtype=dtype)), y_t))


def predict(model, x: np.ndarray) -> np.ndarray:
    """The float model's outputs [N, O] (float64) on model inputs ``x``."""
    import torch

    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).double().numpy()
