"""Held-out scikit-learn models (tests/heldout_sklearn.py): nnassay reads each one's class scores,
classes and labels as scikit-learn itself predicts them, and a whole assessment gives every goal a
verdict on a representative few (single binary score, reordered SVM columns, trees with labels
1, 5, 9, string labels behind a ZipMap, float64 and int64 inputs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import heldout_sklearn
import numpy as np
import pytest
import zoo_models

from nnassay.schemas.goals import DataSpec, ModelSpec
from nnassay.tasks.errors import DataError, ModelError
from nnassay.tasks.io.data_io import load_dataset
from nnassay.tasks.io.labels import class_indices
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.model_outputs import Reading, as_input, check_columns, check_input_type, read_scores

REPO = Path(__file__).resolve().parents[1]
_BUILT: dict[str, heldout_sklearn.HeldoutModel] = {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heldout")


def _built(name: str, folder: Path) -> heldout_sklearn.HeldoutModel:
    if name not in _BUILT or not _BUILT[name].path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of the tiny fits
            _BUILT[name] = heldout_sklearn.build(name, folder)
    return _BUILT[name]


def _runner(m: heldout_sklearn.HeldoutModel) -> ModelRunner:
    return ModelRunner(ModelSpec(**heldout_sklearn.spec(m)["model"]), prefer_cuda=False)


@pytest.mark.parametrize("name", heldout_sklearn.NAMES)
def test_reading_matches_scikit_learns_own_predictions(name: str, folder: Path) -> None:
    """Ground truth: scikit-learn's classes_, predict_proba (probability outputs) or predict."""
    m = _built(name, folder)
    run = _runner(m)
    assert run.class_labels == m.classes.tolist()
    assert run.n_classes == len(m.classes)
    data = load_dataset(DataSpec(**heldout_sklearn.spec(m)["data"]), run)
    np.testing.assert_array_equal(m.classes[data.y], m.y)  # the user's labels, as column indices
    predicted = m.classes[run.predict(data.x)]
    if run.output_kind == "probabilities":
        expected = m.estimator.predict_proba(m.x)
        np.testing.assert_allclose(run.probabilities(data.x), expected, atol=2e-5)
        np.testing.assert_array_equal(predicted, m.classes[expected.argmax(1)])
    else:  # decision scores (SVC without probabilities, LinearSVC, SGD)
        assert np.mean(predicted == m.estimator.predict(m.x)) >= 0.99
        if len(m.classes) == 2:  # the logit gap is the decision margin (positive: classes_[1]), scaled
            logits = run.logits(data.x)
            gap = (logits[:, 1] - logits[:, 0]).astype(np.float64)
            margin = np.asarray(m.estimator.decision_function(m.x), dtype=np.float64)
            scale = float(gap @ margin / (margin @ margin))
            assert scale > 0
            np.testing.assert_allclose(gap, scale * margin, rtol=1e-3, atol=1e-3 * scale)


def test_binary_svm_columns_are_reordered_to_agree_with_the_label_output(folder: Path) -> None:
    """ONNX Runtime's SVMClassifier writes a binary SVM's decision scores as [s, -s]: read in file
    order the top column named the wrong class on every sample."""
    run = _runner(_built("svc_scores_binary", folder))
    assert run.reading.columns == (1, 0)
    assert "reordered" in run.reading.note


def test_single_binary_score_is_read_as_two_columns(folder: Path) -> None:
    m = _built("linear_svc_binary", folder)
    run = _runner(m)
    assert run.output.shape[-1] == 1 and run.reading.single == "score"
    module = run.torch_module().eval()  # gradients see the same two columns
    import torch

    x = m.x[:20].astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), run.logits(x), atol=1e-4)


def test_check_columns_keeps_agreeing_columns_and_notes_what_no_order_explains() -> None:
    reading = Reading(classes=("a", "b", "c"))
    scores = np.array([[3, 1, 0], [0, 2, 1], [0, 1, 5]], np.float32)
    assert check_columns(np.array(["a", "b", "c"]), scores, reading) == reading
    swapped = check_columns(np.array(["b", "a", "c"]), scores, reading)
    assert swapped.columns == (1, 0, 2)
    np.testing.assert_array_equal(read_scores(scores, 3, swapped).argmax(1), [1, 0, 2])
    muddled = check_columns(np.array(["a", "a", "b"]), scores, reading)
    assert muddled.columns is None and "agrees with the top score on 33%" in muddled.note
    one_class = np.array([[3, 1, 0], [4, 2, 1]], np.float32)
    undetermined = check_columns(np.array(["b", "b"]), one_class, reading)
    assert undetermined.columns is None  # one class seen of three: no order is determined


def test_integer_inputs_are_rounded_and_float64_inputs_widened() -> None:
    batch = np.array([[0.4, 1.6, -2.5]], np.float32)
    np.testing.assert_array_equal(as_input(batch, "tensor(int64)"), [[0, 2, -2]])
    assert as_input(batch, "tensor(double)").dtype == np.float64
    assert as_input(batch, "tensor(float)") is batch
    with pytest.raises(ModelError, match=r"'text' has type tensor\(string\)") as err:
        check_input_type("tensor(string)", "text", Path("m.onnx"))
    assert err.value.field == "model.path"


def test_labels_are_read_through_the_models_classes() -> None:
    path = Path("d.npz")
    y, note = class_indices(np.array([9, 1, 5]), [1, 5, 9], path)
    assert y.tolist() == [2, 0, 1] and "1, 5, 9" in note
    y, note = class_indices(np.array([0, 2, 1]), [1, 5, 9], path)  # 0 is no class: indices
    assert y.tolist() == [0, 2, 1] and note == ""
    y, _ = class_indices(np.array(["eel", "cat"]), None, path, names=["cat", "dog", "eel"])
    assert y.tolist() == [2, 0]
    with pytest.raises(DataError, match=r"\['fox'\] that are not classes") as err:
        class_indices(np.array(["cat", "fox"]), ["cat", "dog", "eel"], path)
    assert err.value.field == "data.path"
    with pytest.raises(DataError, match="names no classes"):
        class_indices(np.array(["cat"]), [0, 1], path)


REPRESENTATIVE = (
    "linear_svc_binary",
    "svc_scores_binary",
    "tree_sparse",
    "scaler_logreg_strings_zipmap",
    "standard_mlp_double",
    "scaler_logreg_int64",
)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_standard_assessment_gives_every_goal_a_verdict(name: str, folder: Path, tmp_path: Path) -> None:
    m = _built(name, folder)
    evidence = zoo_models.assess_every_goal(heldout_sklearn.spec(m), tmp_path)
    verdicts = {v["goal_id"]: v for v in evidence["verdicts"]}
    extra = evidence["provenance"]["extra"]  # the auditor sees how outputs and labels were read
    assert extra["model_reading"]["class_labels"] == [
        str(c) if isinstance(c, str) else int(c) for c in m.classes
    ]
    assert (extra["labels_read"] is not None) == (
        not np.issubdtype(m.y.dtype, np.integer) or m.y.min() != 0 or m.y.max() != len(m.classes) - 1
    )
    results = {r["goal_id"]: r for r in evidence["results"]}
    assert results["CLEAN"]["status"] == "completed" and results["ATTACK"]["status"] == "completed"
    assert verdicts["CLEAN"]["verdict"] == "pass", verdicts["CLEAN"]  # labels read right: accurate


def test_a_csv_may_hold_text_labels_and_a_text_feature_is_named(folder: Path, tmp_path: Path) -> None:
    """A CSV whose label column holds scikit-learn's text classes reads as the npz does; a text value
    in a feature column names the line, the column and its header name."""
    m = _built("scaler_logreg_strings", folder)
    run = _runner(m)
    names = [f"f{i}" for i in range(m.x.shape[1])]
    rows = [",".join([*names, "label"])]
    rows += [
        ",".join([*(repr(float(v)) for v in xs), str(label)]) for xs, label in zip(m.x, m.y, strict=True)
    ]
    csv_path = tmp_path / "table.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    from_csv = load_dataset(DataSpec(path=csv_path), run)
    from_npz = load_dataset(DataSpec(**heldout_sklearn.spec(m)["data"]), run)
    np.testing.assert_array_equal(from_csv.y, from_npz.y)
    np.testing.assert_allclose(from_csv.x, from_npz.x, rtol=1e-6)
    assert from_csv.feature_names == tuple(names)

    rows[1] = rows[1].replace(rows[1].split(",")[2], "red", 1)  # a text value in feature f2
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 2, column 3 \('f2'\) is not a number") as info:
        load_dataset(DataSpec(path=csv_path), run)
    assert info.value.field == "data.path" and "categorical" in (info.value.fix or "")
