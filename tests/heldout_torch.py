"""Held-out torch architectures and export settings (issue 15, "any model a user brings"): models built
the way users export them, none of which the executor or verifier was written against.

Fixed batch axes (1 and 8, no dynamic axes), opsets 11 and 20, EfficientNet-, ConvNeXt- and
DenseNet-style blocks, the normalisations and activations of common vision nets, transposed
convolutions and upsampling, 1-D convolutions and recurrent (GRU, LSTM) sequence classifiers, and a
binary classifier with a single sigmoid output. Every model is tiny, seeded and trained for a few
steps on scikit-learn's bundled digits; data is written as ``.npz`` beside the ONNX file, and
``zoo_models.standard_spec`` gives the spec of a standard assessment.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zoo_models
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the usual torch alias)

CLASSES = 10


@dataclass(frozen=True)
class Recipe:
    """How one held-out model is made: its torch module, input kind, export opset and batch axis."""

    make: Callable[[], nn.Module]
    data: str  # image (N,3,16,16) | sequence (N,1,64) | steps (N,8,8) | binary (N,3,16,16; 2 classes)
    opset: int = 17
    fixed_batch: int | None = None  # None: a dynamic batch axis; else the batch frozen at export


# ---------------------------------------------------------------- architectures


class SmallCnn(nn.Module):
    """BatchNorm, MaxPool(ceil_mode=True), AdaptiveAvgPool to 2x2, Dropout, Flatten, Linear."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 16 -> 8 with ceil
            nn.Conv2d(width, 2 * width, 3, 1, 1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Flatten(), nn.Linear(8 * width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ViewCnn(SmallCnn):
    """SmallCnn flattened by ``x.view(x.size(0), -1)``: a fixed-batch export freezes that size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        return self.head[2](y.view(y.size(0), -1))


class MBConv(nn.Module):
    """EfficientNet block: expand, SiLU, depthwise conv, squeeze-excitation with Sigmoid, project."""

    def __init__(self, c: int, expand: int = 2) -> None:
        super().__init__()
        mid = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU()
        )
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, 4, 1), nn.SiLU(), nn.Conv2d(4, mid, 1), nn.Sigmoid()
        )
        self.project = nn.Sequential(nn.Conv2d(mid, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        return x + self.project(y * self.se(y))


class EfficientNetStyle(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.SiLU())
        self.block = MBConv(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.block(self.stem(x)), 1), 1))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, permute to channels-last, LayerNorm, Linear, GELU, Linear, permute back."""

    def __init__(self, c: int, approximate: str) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtStyle(nn.Module):
    """A patchify stem and two ConvNeXt blocks: one exact GELU (Erf), one tanh-approximate GELU."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, 4)
        self.blocks = nn.Sequential(ConvNeXtBlock(width, "none"), ConvNeXtBlock(width, "tanh"))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x)).mean((2, 3))))


class DenseStyle(nn.Module):
    """DenseNet-style concatenation with GroupNorm, InstanceNorm, PReLU, LeakyReLU, ELU, Softplus, Tanh."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1), nn.GroupNorm(2, width), nn.PReLU(width))
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.InstanceNorm2d(width, affine=True))
        self.layer2 = nn.Conv2d(2 * width, width, 3, 1, 1)
        self.head = nn.Linear(3 * width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = F.avg_pool2d(self.stem(x), 2)
        x1 = F.leaky_relu(self.layer1(x0), 0.1)
        x2 = F.elu(self.layer2(torch.cat([x0, x1], 1)))
        y = torch.cat([x0, x1, F.softplus(x2)], 1)
        return self.head(torch.tanh(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)))


class UpsampleNet(nn.Module):
    """ConvTranspose2d, nearest and bilinear Upsample between strided convolutions."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(3, width, 3, 2, 1)  # 16 -> 8
        self.down2 = nn.Conv2d(width, width, 3, 2, 1)  # 8 -> 4
        self.up_t = nn.ConvTranspose2d(width, width, 2, 2)  # 4 -> 8
        self.up_n = nn.Upsample(scale_factor=2, mode="nearest")  # 8 -> 16
        self.up_b = nn.Upsample(size=(8, 8), mode="bilinear", align_corners=False)  # 16 -> 8
        self.head = nn.Linear(width * 8 * 8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.up_t(F.relu(self.down2(F.relu(self.down1(x))))))
        return self.head(torch.flatten(self.up_b(self.up_n(y)), 1))


class Conv1dNet(nn.Module):
    """A 1-D convolutional classifier on sequences [N, 1, L]."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, width, 5, 1, 2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(4),
            nn.Flatten(),
            nn.Linear(8 * width, CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RecurrentNet(nn.Module):
    """A GRU or LSTM over [N, T, F] rows, classifying from the last hidden state."""

    def __init__(self, cell: str, hidden: int = 8) -> None:
        super().__init__()
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class BinaryNet(nn.Module):
    """A binary classifier with one sigmoid output [N, 1] (is the digit >= 5?)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


RECIPES: dict[str, Recipe] = {
    "cnn_fixed1": Recipe(SmallCnn, "image", fixed_batch=1),
    "cnn_fixed8": Recipe(SmallCnn, "image", fixed_batch=8),
    "cnn_view_fixed8": Recipe(ViewCnn, "image", fixed_batch=8),
    "cnn_opset11": Recipe(SmallCnn, "image", opset=11),
    "cnn_opset20": Recipe(SmallCnn, "image", opset=20),
    "efficientnet": Recipe(EfficientNetStyle, "image"),
    "convnext": Recipe(ConvNeXtStyle, "image"),
    "convnext_opset20": Recipe(ConvNeXtStyle, "image", opset=20),
    "densenet": Recipe(DenseStyle, "image"),
    "upsample": Recipe(UpsampleNet, "image"),
    "upsample_opset11": Recipe(UpsampleNet, "image", opset=11),
    "convnext_opset11": Recipe(ConvNeXtStyle, "image", opset=11),
    "densenet_opset9": Recipe(DenseStyle, "image", opset=9),
    "conv1d": Recipe(Conv1dNet, "sequence"),
    "gru": Recipe(lambda: RecurrentNet("gru"), "steps"),
    "lstm": Recipe(lambda: RecurrentNet("lstm"), "steps"),
    "binary_sigmoid": Recipe(BinaryNet, "binary"),
}
ALL_MODELS = tuple(RECIPES)
MULTICLASS_MODELS = tuple(n for n, r in RECIPES.items() if r.data != "binary")


# ---------------------------------------------------------------- data, training, export


def dataset(kind: str, n: int = 300) -> tuple[np.ndarray, np.ndarray, str]:
    """Inputs, labels and the spec layout for one data kind (values in [0, 1])."""
    images, y = zoo_models.digits_images(size=16, n=n)
    if kind == "image":
        return images, y, "NCHW"
    if kind == "binary":
        return images, (y >= 5).astype(np.int64), "NCHW"
    rows = images[:, 0, ::2, ::2]  # back to the 8x8 digits: 8 steps of 8 features
    if kind == "steps":
        return np.ascontiguousarray(rows), y, "NC"
    return np.ascontiguousarray(rows.reshape(len(rows), 1, 64)), y, "NC"


def export(model: nn.Module, sample: np.ndarray, path: Path, *, opset: int, fixed_batch: int | None) -> Path:
    """torch.onnx.export (TorchScript exporter), with a dynamic batch axis or a batch frozen at export."""
    batch = fixed_batch or 1
    args = (torch.tensor(np.repeat(sample[:1], batch, axis=0)),)
    dynamic: dict[str, Any] | None = None if fixed_batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        args,
        buffer,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=dynamic,
        opset_version=opset,
        dynamo=False,
    )
    path.write_bytes(buffer.getvalue())
    return path


def build(name: str, folder: Path, *, seed: int = 0, steps: int = 80) -> zoo_models.ZooModel:
    """Build, train for ``steps`` Adam steps and export one held-out model with its data."""
    recipe = RECIPES[name]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    x, y, layout = dataset(recipe.data)
    model = recipe.make()
    zoo_models.train(model, x, y, steps, seed, lr=5e-3, batch=32, binary=recipe.data == "binary")
    path = export(model, x, folder / f"{name}.onnx", opset=recipe.opset, fixed_batch=recipe.fixed_batch)
    data = folder / f"{name}.npz"
    np.savez(data, x=x, y=y)
    classes = 2 if recipe.data == "binary" else CLASSES
    return zoo_models.ZooModel(
        name, path, data, "image" if layout == "NCHW" else "sequence", layout, (0.0, 1.0), classes
    )


def standard_spec(m: zoo_models.ZooModel, *, samples: int = 60) -> dict[str, Any]:
    """The zoo's standard spec for a held-out model (image goals; sequences drop the image corruptions)."""
    image = dataclasses.replace(m, kind="image")  # sequences in [0, 1] take the image goals
    spec = zoo_models.standard_spec(image, samples=samples)
    spec["id"], spec["title"] = f"heldout-{m.name}", f"Held-out: {m.name}"
    if m.kind != "image":  # image corruptions (contrast, ...) have no meaning for a sequence
        spec["goals"] = [g for g in spec["goals"] if g["id"] != "CORRUPT"]
    return spec
