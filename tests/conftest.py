"""Shared fixtures: tiny ONNX models built in-session with onnx.helper, their data, spec writers.

The environment is set before Prefect or MLflow are imported: no telemetry, and their homes live
in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HOME = Path(tempfile.mkdtemp(prefix="nnassay-tests-"))
for key, value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_HOME": str(_HOME / "prefect"),
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_TRACKING_URI": f"sqlite:///{_HOME / 'mlflow.db'}",
    "GIT_PYTHON_REFRESH": "quiet",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ[key] = value

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx_kit  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from hypothesis import settings  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# No per-example time limit: on a busy 2-core machine a slow example is not a failure (no timing
# assertions in tests).
settings.register_profile("nnassay", deadline=None)
settings.load_profile("nnassay")

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files in tests/golden.")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start servers or clusters belong to the slow lane (`-m "not slow"` leaves them out)."""
    for item in items:
        if item.get_closest_marker("server") or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def build_mlp(
    path: Path,
    sizes: list[int],
    *,
    image_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    name: str = "input",
) -> Path:
    """An MLP (Gemm + Relu, no Relu after the last layer) as ONNX, with a free batch axis.

    With ``image_shape`` the input is an image (N, *image_shape) flattened first.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = name
    if image_shape is not None:
        nodes.append(helper.make_node("Flatten", [name], ["flat"], axis=1))
        current = "flat"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = rng.normal(0, 1.0 / np.sqrt(fan_in), (fan_out, fan_in))
        b = rng.normal(0, 0.1, fan_out)
        inits += [_init(f"W{i}", w), _init(f"B{i}", b)]
        out = f"h{i}" if i < len(sizes) - 2 else "logits"
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [out], transB=1))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        current = out
    in_shape = ["N", *(image_shape or (sizes[0],))]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def label_with_model(path: Path, x: np.ndarray, flip: float, seed: int) -> np.ndarray:
    """Labels equal to the model's own predictions, with a share ``flip`` changed (known accuracy)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    y = logits.argmax(1)
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < flip
    y[flipped] = (y[flipped] + 1) % logits.shape[1]
    return y


@dataclass(frozen=True)
class TinyCase:
    """A tiny model with its data, as the tests use it."""

    model: Path
    data: Path
    layout: str
    kind: str
    n_classes: int


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def image_case(tiny_dir: Path) -> TinyCase:
    """A 1x6x6 grey 'image' MLP with 3 classes, 120 samples in [0, 1], about 90% accurate."""
    model = build_mlp(tiny_dir / "image.onnx", [36, 16, 3], image_shape=(1, 6, 6), seed=1)
    x = np.random.default_rng(2).uniform(0, 1, (120, 1, 6, 6)).astype(np.float32)
    y = label_with_model(model, x, flip=0.1, seed=3)
    data = tiny_dir / "image.npz"
    np.savez(data, x=x, y=y)
    return TinyCase(model, data, "NCHW", "image", 3)


@pytest.fixture(scope="session")
def tabular_case(tiny_dir: Path) -> TinyCase:
    """A 5-feature tabular MLP with 3 classes, 150 samples in [0, 1]."""
    model = build_mlp(tiny_dir / "tabular.onnx", [5, 8, 3], seed=4)
    x = np.random.default_rng(5).uniform(0, 1, (150, 5)).astype(np.float32)
    y = label_with_model(model, x, flip=0.1, seed=6)
    data = tiny_dir / "tabular.npz"
    np.savez(data, x=x, y=y)
    return TinyCase(model, data, "NC", "tabular", 3)


def build_slow_case(folder: Path) -> TinyCase:
    """The tiny image MLP on 2,048 samples, so that a noise test with many draws takes seconds."""
    model = build_mlp(folder / "image.onnx", [36, 16, 3], image_shape=(1, 6, 6), seed=1)
    x = np.random.default_rng(2).uniform(0, 1, (2048, 1, 6, 6)).astype(np.float32)
    data = folder / "image.npz"
    np.savez(data, x=x, y=label_with_model(model, x, flip=0.1, seed=3))
    return TinyCase(model, data, "NCHW", "image", 3)


def goal(
    goal_id: str, threat: dict[str, Any], metric: str, comparator: str, threshold: float, **extra: Any
) -> dict[str, Any]:
    """A goal dict for a spec."""
    return {
        "id": goal_id,
        "statement": f"goal {goal_id}",
        "threat": threat,
        "metric": metric,
        "criterion": {"comparator": comparator, "threshold": threshold},
        "risk": {"id": "R-1", "source": "B.5 risk sources related to machine learning"},
        "controls": ["A.6.2.4"],
        **extra,
    }


def write_spec(folder: Path, case: TinyCase, goals: list[dict[str, Any]], **extra: Any) -> Path:
    """Write a YAML spec for a tiny case; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "id": "tiny",
        "title": "Tiny assessment",
        "seed": 3,
        "model": {"path": str(case.model), "layout": case.layout, "value_range": [0.0, 1.0]},
        "data": {"path": str(case.data)},
        "goals": goals,
        **extra,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def spec_writer(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(case: TinyCase, goals: list[dict[str, Any]], **extra: Any) -> Path:
        return write_spec(tmp_path / "spec", case, goals, **extra)

    return write


def make_context(
    case: TinyCase,
    threat: Any,
    out: Path,
    *,
    metric: str = "accuracy",
    seed: int = 0,
    samples: int | None = None,
    confidence: float = 0.95,
    interval: str = "clopper-pearson",
):  # type: ignore[no-untyped-def]
    """A RunContext for calling a method directly on a tiny case."""
    from pydantic import TypeAdapter

    from nnassay.schemas.goals import DataSpec, ModelSpec
    from nnassay.schemas.threats import Threat
    from nnassay.tasks.io.data_io import load_dataset
    from nnassay.tasks.io.model_io import ModelRunner
    from nnassay.tasks.methods.registry import RunContext

    model = ModelRunner(
        ModelSpec(path=case.model, layout=case.layout, value_range=(0.0, 1.0)), prefer_cuda=False
    )
    data = load_dataset(DataSpec(path=case.data), model)
    if samples:
        data = data.subset(samples)
    if isinstance(threat, dict):
        threat = TypeAdapter(Threat).validate_python(threat)
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(
        model=model,
        data=data,
        threat=threat,
        metric=metric,
        seed=seed,
        out_dir=out,
        run_dir=out,
        time_s=120.0,
        confidence=confidence,
        interval=interval,
    )


@pytest.fixture
def context_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    counter = [0]

    def factory(case: TinyCase, threat: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        counter[0] += 1
        return make_context(case, threat, tmp_path / f"ctx{counter[0]}", **kwargs)

    return factory


@pytest.fixture(scope="session")
def kit() -> type[onnx_kit.Kit]:
    """Builders of tiny ONNX models (``tests/onnx_kit.py``)."""
    return onnx_kit.Kit


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    """A 3-8-8-2 ReLU network on disk."""
    return onnx_kit.save(onnx_kit.mlp([3, 8, 8, 2], seed=3), tmp_path)


# ---------------------------------------------------------------- monitoring (tests/monitoring)
# Fixtures live here, not in a tests/monitoring/conftest.py: a second module named `conftest` would
# shadow this one for the `from conftest import ...` lines of the other tests.
from collections.abc import Callable  # noqa: E402

from nnassay.schemas.goals import DataSpec, Layout, ModelSpec  # noqa: E402
from nnassay.tasks.io.data_io import Dataset, load_dataset  # noqa: E402
from nnassay.tasks.io.model_io import ModelRunner  # noqa: E402


@pytest.fixture(scope="session")
def digits_model() -> ModelRunner:
    return ModelRunner(ModelSpec(path=DIGITS / "model.onnx", layout=Layout.NCHW), prefer_cuda=False)


@pytest.fixture(scope="session")
def digits_reference(digits_model: ModelRunner) -> Dataset:
    return load_dataset(DataSpec(path=DIGITS / "test.npz"), digits_model)


@pytest.fixture(scope="session")
def tabular_model(tabular_case) -> ModelRunner:  # type: ignore[no-untyped-def]
    return ModelRunner(ModelSpec(path=tabular_case.model, layout=Layout.FLAT), prefer_cuda=False)


@pytest.fixture(scope="session")
def image_model(image_case) -> ModelRunner:  # type: ignore[no-untyped-def]
    return ModelRunner(ModelSpec(path=image_case.model, layout=Layout.NCHW), prefer_cuda=False)


@pytest.fixture
def tabular_data(tabular_model: ModelRunner) -> Callable[..., Dataset]:
    def build(n: int, seed: int, shift: dict[int, float] | None = None) -> Dataset:
        from monitor_kit import make_dataset

        x = np.random.default_rng(seed).uniform(0, 1, (n, 5))
        for column, k in (shift or {}).items():
            x[:, column] += k * np.sqrt(1 / 12)  # k standard deviations of U(0, 1)
        return make_dataset(x, tabular_model, seed=seed)

    return build
