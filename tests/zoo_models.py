"""A zoo of models nobody on the team wrote the exporter of: torch architectures and scikit-learn
classifiers exported to ONNX, built deterministically (never downloaded), with their data.

`benchmarks/zoo.py` builds them at full width and runs a standard spec on each; the test suite builds
tiny-width versions of the same models so that every op path they emit is exercised in CI.
Data: scikit-learn's bundled digits (8x8, upscaled to 32x32 RGB for the CIFAR-size nets) and a
synthetic raw-feature table whose columns span 1e-3 to 3e3.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the usual torch alias)

IMAGE_MODELS = ("resnet18", "mobilenetv3", "vit", "nhwc_cnn")
SKLEARN_MODELS = ("sk_logreg", "sk_logreg_zipmap", "sk_mlp", "sk_forest", "sk_forest_zipmap")
TABULAR_MODELS = ("tabular_mlp", *SKLEARN_MODELS)
ALL_MODELS = (*IMAGE_MODELS, *TABULAR_MODELS)
FEATURE_SCALES = np.array([1e-3, 0.05, 1.0, 20.0, 300.0, 3e3], dtype=np.float32)


@dataclass(frozen=True)
class ZooModel:
    """A built model with its data and what a spec must say about it."""

    name: str
    path: Path
    data: Path
    kind: str  # image | tabular
    layout: str
    value_range: tuple[float, float] | None
    classes: int


# ---------------------------------------------------------------- data


def digits_images(size: int = 32, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upscaled to size x size, 3 channels, values in [0, 1], NCHW."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n] / 16.0, dtype=torch.float32)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.repeat(1, 3, 1, 1).numpy(), d.target[:n].astype(np.int64)


def raw_table(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class table whose six numeric features live on scales from 1e-3 to 3e3."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n, n_features=6, n_informative=4, n_redundant=1, n_classes=3, random_state=seed
    )
    x = (x - x.min(0)) * FEATURE_SCALES  # non-negative, raw units
    return x.astype(np.float32), y.astype(np.int64)


# ---------------------------------------------------------------- torch architectures


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (CIFAR variant: 3x3 stem, no max-pool)."""

    def __init__(self, width: int = 64, classes: int = 10) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        layers, cin = [], w[0]
        for i, cout in enumerate(w):
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(c // 4, 4), 1), nn.Conv2d(max(c // 4, 4), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.Hardswish(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),  # depthwise
            nn.BatchNorm2d(mid),
            nn.Hardswish(),
            SqueezeExcite(mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    """MobileNetV3-style: depthwise convs, HardSwish, squeeze-excitation with HardSigmoid, ReLU6 stem."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(w, w, 2, 1),
            InvertedResidual(w, 2 * w, 3, 2),
            InvertedResidual(2 * w, 2 * w, 3, 1),
        )
        self.head = nn.Sequential(nn.Linear(2 * w, 4 * w), nn.Hardswish(), nn.Linear(4 * w, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class TinyViT(nn.Module):
    """A small vision transformer: patch embedding, class token, LayerNorm, GELU, self-attention."""

    def __init__(
        self, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 8, classes: int = 10
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (32 // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


class NhwcCnn(nn.Module):
    """Takes NHWC images with values in [0, 255] and normalises inside the graph."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, width, 3, 1, 1), nn.Conv2d(width, 2 * width, 3, 2, 1)
        self.head = nn.Linear(2 * width * 16 * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.25
        return self.head(torch.flatten(F.relu(self.c2(F.relu(self.c1(x)))), 1))


class RawFeatureMlp(nn.Module):
    """A tabular MLP that standardises raw features (1e-3 to 3e3) inside the graph."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, width: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.net = nn.Sequential(
            nn.Linear(6, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    seed: int,
    *,
    lr: float = 2e-3,
    batch: int = 64,
    binary: bool = False,
) -> nn.Module:
    """A few seeded Adam steps on random batches (cross-entropy; ``binary``: one sigmoid output)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.tensor(x), torch.tensor(y)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        opt.zero_grad()
        out = model(xt[idx])
        loss = F.binary_cross_entropy(out[:, 0], yt[idx].float()) if binary else F.cross_entropy(out, yt[idx])
        loss.backward()
        opt.step()
    return model.eval()


def _export(model: nn.Module, sample: np.ndarray, path: Path, opset: int = 17) -> Path:
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.tensor(sample[:1]),),
        buffer,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    path.write_bytes(buffer.getvalue())
    return path


def _torch_model(name: str, tiny: bool) -> nn.Module:
    if name == "resnet18":
        return ResNet18(width=4 if tiny else 64)
    if name == "mobilenetv3":
        return MobileNetV3Style(width=8 if tiny else 24)
    if name == "vit":
        return TinyViT(dim=16 if tiny else 96, depth=1 if tiny else 4, heads=2 if tiny else 4)
    return NhwcCnn(width=4 if tiny else 16)


def build_image_model(
    name: str, folder: Path, *, tiny: bool, samples: int = 400, seed: int = 0, steps: int | None = None
) -> ZooModel:
    """Build, train briefly (``steps`` Adam steps of 64 images; default 20 tiny, 300 full width) and
    export one of the torch image architectures with its data."""
    torch.manual_seed(seed)
    x, y = digits_images(n=samples)
    model = _torch_model(name, tiny)
    nhwc = name == "nhwc_cnn"
    x_in = (x.transpose(0, 2, 3, 1) * 255.0).astype(np.float32) if nhwc else x
    train(model, x_in, y, steps=steps or (20 if tiny else 300), seed=seed)
    path = _export(model, x_in, folder / f"{name}.onnx")
    data = folder / f"{name}.npz"
    np.savez(data, x=x_in, y=y)
    vr = (0.0, 255.0) if nhwc else (0.0, 1.0)
    return ZooModel(name, path, data, "image", "NHWC" if nhwc else "NCHW", vr, 10)


def build_tabular_mlp(folder: Path, *, tiny: bool, seed: int = 0) -> ZooModel:
    x, y = raw_table(seed=seed)
    model = RawFeatureMlp(x.mean(0), x.std(0) + 1e-6, width=8 if tiny else 32)
    train(model, x, y, steps=50 if tiny else 600, seed=seed)
    path = _export(model, x, folder / "tabular_mlp.onnx")
    data = folder / "tabular_mlp.npz"
    np.savez(data, x=x, y=y)
    return ZooModel("tabular_mlp", path, data, "tabular", "NC", None, 3)


def _sklearn_estimator(name: str, tiny: bool, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name.startswith("sk_logreg"):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    if name == "sk_mlp":
        hidden = (8,) if tiny else (64, 32)
        return make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=300, random_state=seed))
    return RandomForestClassifier(
        n_estimators=5 if tiny else 100, max_depth=4 if tiny else 8, random_state=seed
    )


def build_sklearn_model(name: str, folder: Path, *, tiny: bool, seed: int = 0) -> ZooModel:
    """Fit and convert a scikit-learn classifier with skl2onnx (ZipMap output when the name says so)."""
    from skl2onnx import to_onnx

    x, y = raw_table(seed=seed)
    est = _sklearn_estimator(name, tiny, seed).fit(x, y)
    options = None if name.endswith("zipmap") else {"zipmap": False}
    onx = to_onnx(est, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    path = folder / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    data = folder / f"{name}.npz"
    np.savez(data, x=x, y=y)
    return ZooModel(name, path, data, "tabular", "NC", None, 3)


def build(name: str, folder: Path, *, tiny: bool, seed: int = 0, steps: int | None = None) -> ZooModel:
    """Build one zoo model by name into folder (``steps``: training steps of the torch image models,
    when not their default)."""
    folder.mkdir(parents=True, exist_ok=True)
    if name in IMAGE_MODELS:
        return build_image_model(name, folder, tiny=tiny, seed=seed, steps=steps)
    if name == "tabular_mlp":
        return build_tabular_mlp(folder, tiny=tiny, seed=seed)
    if name in SKLEARN_MODELS:
        return build_sklearn_model(name, folder, tiny=tiny, seed=seed)
    raise ValueError(f"unknown zoo model {name!r}; expected one of {ALL_MODELS}")


def built(name: str, folder: Path) -> ZooModel | None:
    """The model ``build`` made before in folder (its ONNX file and data are there), else None. The
    width is not recorded: the caller knows whether that folder holds tiny or full models."""
    path, data = folder / f"{name}.onnx", folder / f"{name}.npz"
    if name not in ALL_MODELS or not path.exists() or not data.exists():
        return None
    if name in IMAGE_MODELS:
        nhwc = name == "nhwc_cnn"
        vr = (0.0, 255.0) if nhwc else (0.0, 1.0)
        return ZooModel(name, path, data, "image", "NHWC" if nhwc else "NCHW", vr, 10)
    return ZooModel(name, path, data, "tabular", "NC", None, 3)


def standard_goals(m: ZooModel, *, samples: int) -> list[dict[str, Any]]:
    """The zoo's standard spec goals for one model: clean, noise, attack, corruptions or tabular
    perturbations, a formal goal on 2 samples, float16/int8 deployment."""
    lo, hi = m.value_range or (0.0, 1.0)
    span = hi - lo

    def g(
        gid: str, threat: dict[str, Any], metric: str, cmp: str, thr: float, **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": gid,
            "statement": f"{gid}: {metric} {cmp} {thr} under {threat['kind']}",
            "threat": threat,
            "metric": metric,
            "criterion": {"comparator": cmp, "threshold": thr},
            "risk": {"id": f"R-{gid}", "source": "B.5 risk sources related to machine learning"},
            "controls": ["A.6.2.4"],
            **extra,
        }

    goals = [g("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5, budget={"samples": samples})]
    if m.kind == "image":
        goals += [
            g(
                "NOISE",
                {"kind": "gaussian_noise", "sigma": 0.05 * span},
                "accuracy",
                ">=",
                0.5,
                budget={"samples": samples},
            ),
            g(
                "ATTACK",
                {"kind": "linf_ball", "eps": 0.01 * span},
                "robust_accuracy",
                ">=",
                0.3,
                budget={"samples": 20},
            ),
            g(
                "CORRUPT",
                {"kind": "corruption", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]},
                "mean_accuracy",
                ">=",
                0.4,
                budget={"samples": 50},
            ),
        ]
    else:
        goals += [
            g(
                "NOISE",
                {"kind": "tabular", "perturbation": "numeric_noise", "strength": 0.1},
                "accuracy",
                ">=",
                0.5,
                budget={"samples": samples},
            ),
            g(
                "ATTACK",
                {"kind": "linf_ball", "eps": 0.05},
                "robust_accuracy",
                ">=",
                0.3,
                budget={"samples": 20},
            ),
            g("INVALID", {"kind": "invalid_input"}, "confident_garbage_rate", "<=", 0.5),
        ]
    goals += [
        g(
            "FORMAL",
            {"kind": "linf_ball", "eps": 0.001 * span},
            "verified_fraction",
            ">=",
            0.5,
            methods=[{"name": "formal.local_robustness", "params": {"time_per_sample_s": 10.0}}],
            budget={"samples": 2},
        ),
        g(
            "DEPLOY",
            {"kind": "deployment", "variants": ["float16", "int8_dynamic"]},
            "disagreement_rate",
            "<=",
            0.1,
            budget={"samples": 100},
        ),
    ]
    return goals


def standard_spec(m: ZooModel, *, samples: int = 200) -> dict[str, Any]:
    """A complete spec dict for a zoo model."""
    model: dict[str, Any] = {"path": str(m.path), "layout": m.layout}
    data: dict[str, Any] = {"path": str(m.data)}
    if m.value_range is not None:
        model["value_range"] = list(m.value_range)
    else:  # raw tabular features: the overall range, and each feature's own range and scale
        x = np.load(m.data)["x"]
        model["value_range"] = [float(x.min()), float(x.max())]
        data["features"] = [
            {
                "name": str(i),
                "range": [float(x[:, i].min()), float(x[:, i].max())],
                "noise_scale": float(x[:, i].std()),
            }
            for i in range(x.shape[1])
        ]
    return {
        "schema_version": "1",
        "id": f"zoo-{m.name}",
        "title": f"Zoo: {m.name}",
        "seed": 1,
        "model": model,
        "data": data,
        "goals": standard_goals(m, samples=samples),
    }


def assess_every_goal(spec: dict[str, Any], folder: Path, timeout_s: int = 850) -> dict[str, Any]:
    """Run ``nnassay assess`` on ``spec`` in a new process, as a user would (no tracking, CPU), and
    check what every model must give: exit 0 or 1 (never a crash), no traceback, a verdict for every
    goal and a reason for each inconclusive one. Returns the evidence bundle (as JSON)."""
    import json
    import subprocess
    import sys

    import yaml

    spec_path, run = folder / "spec.yaml", folder / "run"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(spec_path), "--output", str(run)]
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [*cmd, "--no-track", "--cpu"], capture_output=True, text=True, timeout=timeout_s, cwd=repo
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    evidence: dict[str, Any] = json.loads((run / "evidence.json").read_text())
    verdicts = {v["goal_id"]: v for v in evidence["verdicts"]}
    assert set(verdicts) == {g["id"] for g in spec["goals"]}
    for v in verdicts.values():
        assert v["verdict"] in ("pass", "fail", "inconclusive")
        if v["verdict"] == "inconclusive":
            assert v.get("reason") or v.get("explanation") or v.get("advice"), v
    return evidence
