"""Train the bundled example: a small CNN on scikit-learn's digits data, exported to ONNX.

Deterministic and seeded: running it again reproduces model.onnx, test.npz and shift.npz.
Run from the repository root: ``python examples/digits/train.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 20261124


class DigitsCNN(nn.Module):
    """Two conv layers, one max-pool, two dense layers: 8x8 grey digits in [0, 1] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1] as (N, 1, 8, 8) float32, split 70/30 with a fixed seed."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=SEED % (2**31), stratify=y
    )
    return x_train, x_test, y_train, y_test


def train(x: np.ndarray, y: np.ndarray, epochs: int = 40) -> DigitsCNN:
    """Adam on cross-entropy with light Gaussian noise augmentation, full determinism."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            batch = (xt[idx] + 0.05 * torch.randn(xt[idx].shape, generator=generator)).clamp(0, 1)
            loss = nn.functional.cross_entropy(model(batch), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def shifted(x: np.ndarray, seed: int) -> np.ndarray:
    """A domain-shifted copy of the test set: dimmer strokes with a raised background."""
    rng = np.random.default_rng(seed)
    return np.clip(0.7 * x + 0.15 + rng.normal(0, 0.03, x.shape), 0, 1).astype(np.float32)


def main() -> None:
    x_train, x_test, y_train, y_test = load_split()
    model = train(x_train, y_train)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(HERE / "model.onnx"),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    np.savez_compressed(HERE / "test.npz", x=x_test, y=y_test)
    np.savez_compressed(HERE / "shift.npz", x=shifted(x_test, SEED), y=y_test)
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} samples; wrote model.onnx, test.npz, shift.npz")


if __name__ == "__main__":
    main()
