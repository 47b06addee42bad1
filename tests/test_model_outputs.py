"""Model outputs: the class-score output is found, read as [N, C] in class order, and its kind known.

Models from other exporters, built here: scikit-learn classifiers through skl2onnx (a label output
beside the probabilities, with and without ZipMap) and a torch net ending in a softmax.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper
from typer.testing import CliRunner

from conftest import build_mlp, goal
from nnassay.flows.cli.app import app
from nnassay.schemas.goals import ModelSpec
from nnassay.tasks.errors import ModelError
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.model_outputs import read_scores, torch_target

pytest.importorskip("skl2onnx")
from skl2onnx import to_onnx  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

FEATURES, CLASSES = 6, 3


@dataclass(frozen=True)
class Exported:
    """An exported classifier, the output it should be read from and its reference scores."""

    path: Path
    output_name: str
    expected: np.ndarray  # scikit-learn's predict_proba (or torch's output) on the data


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small 3-class tabular data set in [0, 1], saved as npz."""
    x, y = make_classification(
        300, FEATURES, n_informative=4, n_redundant=0, n_classes=CLASSES, class_sep=2.0, random_state=0
    )
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    path = tmp_path_factory.mktemp("table") / "table.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    return path, x, y.astype(np.int64)


def _sklearn(name: str, x: np.ndarray, y: np.ndarray, folder: Path) -> Exported:
    kind, _, zipmap = name.partition("-")
    clf: Any = {
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "forest": lambda: RandomForestClassifier(8, max_depth=4, random_state=0),
        "mlp": lambda: MLPClassifier((16,), max_iter=2000, random_state=0),
    }[kind]()
    clf.fit(x, y)
    options = {id(clf): {"zipmap": False}} if zipmap == "nozipmap" else None
    path = folder / f"{name}.onnx"
    onnx.save(to_onnx(clf, x[:1], options=options, target_opset=17), path)
    output = "probabilities" if zipmap == "nozipmap" else "output_probability"
    return Exported(path, output, clf.predict_proba(x).astype(np.float32))


def _torch_softmax(x: np.ndarray, folder: Path) -> Exported:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES), torch.nn.Softmax(dim=1)
    ).eval()
    path = folder / "torch-softmax.onnx"
    torch.onnx.export(
        net,
        (torch.from_numpy(x[:2]),),
        str(path),
        input_names=["features"],
        output_names=["scores"],
        dynamic_axes={"features": {0: "N"}, "scores": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    with torch.no_grad():
        return Exported(path, "scores", net(torch.from_numpy(x)).numpy())


MODELS = ["logreg-zipmap", "logreg-nozipmap", "forest-zipmap", "mlp-zipmap", "mlp-nozipmap", "torch-softmax"]


@pytest.fixture(scope="module")
def exported(table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    _, x, y = table
    folder = tmp_path_factory.mktemp("exported")
    made = {name: _sklearn(name, x, y, folder) for name in MODELS if name != "torch-softmax"}
    return {**made, "torch-softmax": _torch_softmax(x, folder)}


def runner(path: Path, **spec: Any) -> ModelRunner:
    return ModelRunner(ModelSpec(path=path, layout="NC", **spec), prefer_cuda=False)


@pytest.mark.parametrize("name", MODELS)
def test_scores_are_the_class_probabilities_in_class_order(name: str, exported, table) -> None:
    model, (_, x, _) = exported[name], table
    run = runner(model.path)
    assert run.output_name == model.output_name and run.n_classes == CLASSES
    np.testing.assert_allclose(run.scores(x), model.expected, atol=1e-5)
    np.testing.assert_allclose(run.probabilities(x), model.expected, atol=1e-5)
    np.testing.assert_allclose(run.logits(x), np.log(np.maximum(model.expected, 1e-30)), atol=1e-3)
    np.testing.assert_array_equal(run.predict(x), run.scores(x).argmax(1))
    facts = run.describe()
    assert facts["output_name"] == model.output_name and facts["output_kind"] == "probabilities"
    assert facts["output_kind_source"].startswith("detected: rows non-negative and summing to 1")
    assert {o["name"] for o in facts["outputs"]} >= {model.output_name}
    if name.endswith("-zipmap"):
        assert facts["class_labels"] == [0, 1, 2]


@pytest.mark.parametrize("name", ["mlp-zipmap", "mlp-nozipmap", "torch-softmax"])
def test_torch_module_gives_log_probabilities_so_cross_entropy_is_right(name: str, exported, table) -> None:
    """Gradients: the executor runs only the scores' subgraph (not ArgMax/ZipMap) and ends in
    log_softmax of the Softmax input, so cross-entropy on it is -log p of the true class."""
    model, (_, x, y) = exported[name], table
    run = runner(model.path)
    module = run.torch_module().eval()
    assert module.target.transform == "log_softmax"
    xt = torch.from_numpy(x[:64]).requires_grad_(True)
    logits = module(xt)
    np.testing.assert_allclose(logits.detach().numpy(), run.logits(x[:64]), atol=1e-4)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[:64]), reduction="none")
    expected = -np.log(model.expected[np.arange(64), y[:64]])
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-3, atol=1e-5)
    (grad,) = torch.autograd.grad(loss.sum(), xt)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_score_graph_holds_only_the_logits(exported, table) -> None:
    """What a verifier should bound: one output, the Softmax input, no ArgMax or ai.onnx.ml ops."""
    import onnxruntime as ort

    model, (_, x, _) = exported["mlp-zipmap"], table
    graph = runner(model.path).score_graph()
    assert len(graph.graph.output) == 1
    assert {n.op_type for n in graph.graph.node} <= {"Cast", "MatMul", "Add", "Relu"}
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    z = session.run(None, {"X": x})[0]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), model.expected, atol=1e-5)


def test_zipmap_columns_follow_the_model_class_order(tmp_path: Path, table) -> None:
    """String class labels: columns in the order of the ZipMap's labels (scikit-learn's classes_)."""
    _, x, y = table
    names = np.array(["emu", "cat", "dog"])[y]
    clf = LogisticRegression(max_iter=1000).fit(x, names)
    path = tmp_path / "strings.onnx"
    onnx.save(to_onnx(clf, x[:1], target_opset=17), path)
    run = runner(path)
    assert run.class_labels == list(clf.classes_) == ["cat", "dog", "emu"]
    np.testing.assert_allclose(run.scores(x), clf.predict_proba(x), atol=1e-5)
    shuffled = [{2: 0.5, 0: 0.2, 1: 0.3}]
    np.testing.assert_allclose(read_scores(shuffled, 1, [0, 1, 2]), [[0.2, 0.3, 0.5]])


def test_probabilities_without_a_softmax_are_logged(exported) -> None:
    """No Softmax to cut at (LogisticRegression's Normalizer): the executor would take log p."""
    run = runner(exported["logreg-nozipmap"].path)
    assert torch_target(onnx.load(run.path), run.output_name, run.output_kind).transform == "log"


def test_a_logits_model_reads_as_before(tmp_path: Path, table) -> None:
    """Schema-1 behaviour: a single logits output is read as it is, detected or declared."""
    _, x, _ = table
    path = build_mlp(tmp_path / "mlp.onnx", [FEATURES, 8, CLASSES], seed=2)
    detected, declared = runner(path), runner(path, output="logits")
    assert detected.output_kind == declared.output_kind == "logits"
    assert detected.output_kind_source.startswith("detected") and declared.output_kind_source.startswith(
        "declared"
    )
    np.testing.assert_array_equal(detected.logits(x), declared.scores(x))
    assert detected.torch_module().target.transform == "identity"


def test_declared_probabilities_are_not_second_guessed(exported, table) -> None:
    run = runner(exported["logreg-nozipmap"].path, output="probabilities", output_name="probabilities")
    assert run.output_kind == "probabilities" and run.output_kind_source == "declared in model.output"


def _two_float_outputs(path: Path) -> Path:
    """A linear model with two float [N, 3] outputs: raw scores and their softmax."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [FEATURES, CLASSES], rng.normal(size=FEATURES * CLASSES))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["raw"]),
            helper.make_node("Softmax", ["raw"], ["prob"], axis=1),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [
            helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["N", CLASSES]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", CLASSES]),
        ],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_two_score_outputs_need_a_choice(tmp_path: Path) -> None:
    path = _two_float_outputs(tmp_path / "two.onnx")
    with pytest.raises(ModelError) as caught:
        runner(path)
    text = str(caught.value)
    assert "'raw' tensor(float) [N, 3]" in text and "'prob' tensor(float) [N, 3]" in text
    assert "model.output_name" in text
    chosen = runner(path, output_name="prob")
    assert chosen.output_name == "prob" and chosen.output_kind == "probabilities"
    assert runner(path, output_name="raw").output_kind == "logits"


def test_a_label_output_cannot_be_chosen(exported) -> None:
    with pytest.raises(ModelError) as caught:
        runner(exported["logreg-nozipmap"].path, output_name="label")
    assert "output 'label' cannot be read as class scores" in str(caught.value)
    assert "'probabilities' tensor(float)" in str(caught.value)


def _write_spec(
    folder: Path, model: Path, data: Path, goals: list[dict[str, Any]], **model_extra: Any
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "id": "outputs",
        "title": "Model outputs",
        "seed": 3,
        "model": {"path": str(model), "layout": "NC", "value_range": [0.0, 1.0], **model_extra},
        "data": {"path": str(data)},
        "goals": goals,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def check_bad_input(spec: Path, out: Path, *needles: str) -> None:
    """``nnassay assess`` ends with exit 2 and one message holding every needle, no traceback."""
    result = CliRunner().invoke(app, ["assess", str(spec), "--output", str(out), "--no-track"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("nnassay: error:") == 1
    for needle in needles:
        assert needle in result.output, result.output


def test_cli_exit_2_names_both_outputs(tmp_path: Path, table) -> None:
    model = _two_float_outputs(tmp_path / "two.onnx")
    spec = _write_spec(tmp_path / "s", model, table[0], [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    check_bad_input(
        spec, tmp_path / "out", "'raw' tensor(float) [N, 3]", "'prob' tensor(float) [N, 3]", "output_name"
    )


def test_cli_exit_2_on_an_unknown_output_name_lists_the_valid_ones(tmp_path: Path, exported, table) -> None:
    model = exported["logreg-zipmap"].path
    spec = _write_spec(
        tmp_path / "s",
        model,
        table[0],
        [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)],
        output_name="proba",
    )
    check_bad_input(spec, tmp_path / "out", "no output 'proba'", "'output_label'", "'output_probability'")


@pytest.mark.slow
def test_assess_a_zipmap_classifier_end_to_end(tmp_path: Path, exported, table) -> None:
    """The skl2onnx default export (label + ZipMap) goes through a full assessment, attack included."""
    goals = [
        goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
        goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.05}, "label_flip_rate", "<=", 0.2),
        goal("PGD", {"kind": "linf_ball", "eps": 0.05}, "robust_accuracy", ">=", 0.3, budget={"samples": 30}),
    ]
    spec = _write_spec(tmp_path / "s", exported["mlp-zipmap"].path, table[0], goals)
    out = tmp_path / "run"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(spec), "--output", str(out), "--no-track"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    evidence = json.loads((out / "evidence.json").read_text())
    results = {r["goal_id"]: r for r in evidence["results"]}
    assert all(r["status"] != "error" for r in results.values()), results
    assert results["CLEAN"]["metrics"]["accuracy"]["value"] > 0.8, results["CLEAN"]
    assert results["PGD"]["status"] == "completed", results["PGD"]  # the white-box attack ran
    assert results["PGD"]["details"]["torch_vs_ort_max_abs_deviation"] < 1e-3
