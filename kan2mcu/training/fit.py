"""The one float training loop: train (digits, own data) and QAT (fine-tuning) both run it.

It takes the loss function and, optionally, the forward pass the loss sees, so a variant plugs in
as a different model or loss without a second loop.
"""
from __future__ import annotations

import numpy as np


def fit(model, x: np.ndarray, y: np.ndarray, loss_fn, *, epochs: int, batch_size: int = 64, lr: float = 1e-2,
        seed: int = 0, progress: bool = True, desc: str = "train KAN", forward=None, dtype=None,
        after_epoch=None) -> None:
    """Adam with a cosine schedule over shuffled mini-batches, deterministic for ``seed``.

    ``loss_fn(outputs, targets)`` -> scalar tensor; ``y`` int64 (class indices) or float [N, O].
    ``forward`` computes the outputs the loss sees (default ``model``; QAT passes the fake-quantized
    model over ``model``'s parameters), on inputs of ``dtype`` (default float32).
    ``after_epoch(epoch)`` runs after each epoch and returns extra progress-bar fields (a dict)."""
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
        bar.set_postfix(loss=f"{loss.item():.3f}", **extra)
    model.eval()


def predict(model, x: np.ndarray) -> np.ndarray:
    """The float model's outputs [N, O] (float64) on model inputs ``x``."""
    import torch

    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).double().numpy()
