"""Train kan2mcu's own KAN on a named data set (the embedded default: digits) and save a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kan2mcu.checkpoint import check_checkpoint_path, save_checkpoint
from kan2mcu.datasets import load_dataset
from kan2mcu.errors import OptionError

DEFAULT_WIDTHS = (64, 16, 10)


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoint went and how well the float model does on the test split."""

    checkpoint: Path
    train_accuracy: float
    test_accuracy: float


def train(output: Path, *, dataset: str = "digits", hidden: tuple[int, ...] = (16,), grid_size: int = 5,
          order: int = 3, epochs: int = 60, batch_size: int = 64, lr: float = 1e-2, seed: int = 0,
          progress: bool = True, qat=None, qat_epochs: int | None = None) -> TrainResult:
    """Train a KAN ``[inputs, *hidden, classes]`` with Adam and cross-entropy; save it to ``output``.

    ``qat`` (QuantOptions): then fine-tune it for those bit widths (kan2mcu.qat) before saving."""
    import torch
    from tqdm import tqdm

    from kan2mcu.torch_kan import KAN

    for option, value, ok, need in (("--epochs", epochs, epochs >= 1, "a positive integer"),
                                     ("batch size", batch_size, batch_size >= 1, "a positive integer"),
                                     ("learning rate", lr, lr > 0, "positive"),
                                     ("--grid-size", grid_size, grid_size >= 1, "a positive integer"),
                                     ("--order", order, 1 <= order <= 5, "an integer in 1..5")):
        if not ok:
            raise OptionError(f"{option} must be {need}, got {value}")
    if not hidden or any(h < 1 for h in hidden):
        raise OptionError(f"--hidden widths must be positive integers, got {list(hidden)}")
    check_checkpoint_path(Path(output))  # before the training run, not after it
    data = load_dataset(dataset)
    n_classes = int(data.y_train.max()) + 1
    widths = [data.x_train.shape[1], *hidden, n_classes]
    torch.manual_seed(seed)
    model = KAN(widths, grid_size=grid_size, spline_order=order)
    x_train = torch.tensor(data.x_train, dtype=torch.float32)
    y_train = torch.tensor(data.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc=f"train KAN {widths}", disable=not progress, unit="epoch")
    for _ in bar:
        model.train()
        order_ = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order_), batch_size):
            batch = order_[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    extra = {}
    if qat is not None:  # quantization-aware fine-tuning at qat's widths (kan2mcu/qat.py)
        from kan2mcu.qat import DEFAULT_EPOCHS, qat_after_training

        extra["qat"] = qat_after_training(model, data, qat, epochs=qat_epochs or DEFAULT_EPOCHS, seed=seed,
                                          progress=progress)
    model.eval()
    with torch.no_grad():
        train_acc = float((model(x_train).argmax(1) == y_train).float().mean())
        test_acc = float((model(torch.tensor(data.x_test, dtype=torch.float32)).argmax(1).numpy()
                          == data.y_test).mean())
    path = save_checkpoint(model, Path(output), dataset=dataset, input_transform=data.input_transform,
                           metrics={"train_accuracy": train_acc, "test_accuracy": test_acc, **extra})
    return TrainResult(path, train_acc, test_acc)

