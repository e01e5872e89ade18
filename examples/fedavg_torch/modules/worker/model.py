"""The model: a small CNN on 1x8x8 images, small enough to train on a CPU in seconds."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def make_model(seed: int) -> nn.Module:
    """The CNN, its initial weights drawn from ``seed`` (the same on every node)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),  # 16 x 8 x 8
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 x 4 x 4
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def as_images(X: np.ndarray) -> torch.Tensor:
    """Rows of 64 pixels in [0, 1] as a batch of 1x8x8 images."""
    return torch.as_tensor(np.asarray(X, dtype=np.float32)).reshape(-1, 1, 8, 8)


def count_correct(model: nn.Module, X: np.ndarray, y: np.ndarray) -> int:
    """How many rows of ``X`` the model classifies correctly."""
    if len(y) == 0:
        return 0
    model.eval()
    with torch.no_grad():
        predicted = model(as_images(X)).argmax(dim=1).numpy()
    return int(np.sum(predicted == y))


def train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    """Minibatch SGD with momentum on the cross-entropy loss, in place."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = as_images(X), torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(images[batch]), labels[batch]).backward()
            optimizer.step()
