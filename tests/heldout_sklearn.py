"""Held-out scikit-learn classifiers, exported with skl2onnx in the variants users bring: models the
team never built the reading of (SVMs, trees, boosting, neighbours, naive Bayes, pipelines), binary
and multi-class, string and non-contiguous integer class labels, ZipMap or plain tensor outputs,
float64 and int64 inputs, an input with its own name. (HistGradientBoostingClassifier is absent: the
pinned skl2onnx 1.20 cannot convert scikit-learn 1.9's, it fails while writing the tree node.)

Each builder is tiny and deterministic (no download): it fits on a small synthetic table, writes
``<name>.onnx`` and ``<name>.npz`` (x as the model takes it, y as scikit-learn's labels, the way a
user saves them) and returns the fitted estimator, the ground truth of every reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 5
STRING_CLASSES = np.array(["cat", "dog", "eel"])
SPARSE_CLASSES = np.array([1, 5, 9])


@dataclass(frozen=True)
class Recipe:
    """How one held-out model is made: estimator, labels, output and input variant."""

    estimator: Callable[[], Any]
    classes: str = "multi"  # multi (0, 1, 2) | binary (0, 1) | strings | sparse (1, 5, 9)
    zipmap: bool = False
    input: str = "float"  # float | double | int64
    input_name: str = "X"


def _svc(**kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        return make_pipeline(StandardScaler(), SVC(random_state=0, **kw))

    return make


def _linear_svc() -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(random_state=0)


def _tree() -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=4, random_state=0)


def _gboost() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0)


def _knn() -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5)


def _gnb() -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB()


def _sgd() -> Any:
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(max_iter=200, tol=None, random_state=0)


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def _mlp(scaler: str) -> Callable[[], Any]:
    def make() -> Any:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

        pre = {"minmax": MinMaxScaler(), "normalizer": Normalizer(), "standard": StandardScaler()}[scaler]
        return make_pipeline(pre, MLPClassifier((8,), max_iter=300, random_state=0))

    return make


RECIPES: dict[str, Recipe] = {
    "svc_proba": Recipe(_svc(probability=True)),
    "svc_scores": Recipe(_svc()),
    "linear_svc": Recipe(_linear_svc),
    "tree": Recipe(_tree),
    "gboost": Recipe(_gboost),
    "knn": Recipe(_knn),
    "gaussian_nb": Recipe(_gnb),
    "sgd": Recipe(_sgd),
    "scaler_logreg": Recipe(_logreg),
    "minmax_mlp": Recipe(_mlp("minmax")),
    "normalizer_mlp": Recipe(_mlp("normalizer")),
    # binary variants
    "svc_proba_binary": Recipe(_svc(probability=True), classes="binary"),
    "svc_scores_binary": Recipe(_svc(), classes="binary"),
    "linear_svc_binary": Recipe(_linear_svc, classes="binary"),
    "sgd_binary": Recipe(_sgd, classes="binary"),
    "tree_binary": Recipe(_tree, classes="binary"),
    "gboost_binary": Recipe(_gboost, classes="binary"),
    "scaler_logreg_binary": Recipe(_logreg, classes="binary"),
    "minmax_mlp_binary": Recipe(_mlp("minmax"), classes="binary"),
    # labels, outputs and inputs
    "scaler_logreg_strings": Recipe(_logreg, classes="strings"),
    "scaler_logreg_strings_zipmap": Recipe(_logreg, classes="strings", zipmap=True),
    "tree_strings": Recipe(_tree, classes="strings"),
    "minmax_mlp_strings_zipmap": Recipe(_mlp("minmax"), classes="strings", zipmap=True),
    "gaussian_nb_zipmap": Recipe(_gnb, zipmap=True),
    "knn_zipmap": Recipe(_knn, zipmap=True),
    "scaler_logreg_sparse": Recipe(_logreg, classes="sparse"),
    "scaler_logreg_sparse_zipmap": Recipe(_logreg, classes="sparse", zipmap=True),
    "tree_sparse": Recipe(_tree, classes="sparse"),
    "scaler_logreg_double": Recipe(_logreg, input="double"),
    "standard_mlp_double": Recipe(_mlp("standard"), input="double"),
    "scaler_logreg_int64": Recipe(_logreg, input="int64"),
    "standard_mlp_named_input": Recipe(_mlp("standard"), input_name="features"),
}
NAMES = tuple(RECIPES)


@dataclass(frozen=True)
class HeldoutModel:
    """A built held-out model: its files, the fitted estimator and the data as the model takes it."""

    name: str
    path: Path
    data: Path
    estimator: Any
    x: np.ndarray
    y: np.ndarray  # scikit-learn's labels (strings, or integers that need not be 0..C-1)

    @property
    def classes(self) -> np.ndarray:
        """scikit-learn's ``classes_``: the label of each score column, in column order."""
        return np.asarray(self.estimator.classes_)


def table(
    classes: str, *, integer: bool = False, n: int = 240, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A small table (features on scales 0.1 to 100) with labels of the kind named."""
    from sklearn.datasets import make_classification

    k = 2 if classes == "binary" else 3
    x, y = make_classification(
        n_samples=n,
        n_features=N_FEATURES,
        n_informative=3,
        n_redundant=1,
        n_classes=k,
        class_sep=1.5,
        random_state=seed,
    )
    x = (x - x.min(0)) * np.array([0.1, 1.0, 5.0, 20.0, 100.0])[:N_FEATURES]
    if integer:
        x = np.round(x)
    labels: np.ndarray = y.astype(np.int64)
    if classes == "strings":
        labels = STRING_CLASSES[y]
    elif classes == "sparse":
        labels = SPARSE_CLASSES[y]
    return x, labels


def build(name: str, folder: Path, *, seed: int = 0) -> HeldoutModel:
    """Fit and export one held-out model by name into folder, with its data."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    recipe = RECIPES[name]
    folder.mkdir(parents=True, exist_ok=True)
    x, y = table(recipe.classes, integer=recipe.input == "int64", seed=seed)
    dtype = {"float": np.float32, "double": np.float64, "int64": np.int64}[recipe.input]
    x = x.astype(dtype)
    est = recipe.estimator().fit(x, y)
    tensor = {"float": FloatTensorType, "double": DoubleTensorType, "int64": Int64TensorType}[recipe.input]
    types = [(recipe.input_name, tensor([None, N_FEATURES]))]
    opsets = {"": 17, "ai.onnx.ml": 3}
    try:
        options = None if recipe.zipmap else {"zipmap": False}
        onx = to_onnx(est, initial_types=types, options=options, target_opset=opsets)
    except NameError:  # a converter without a ZipMap option (LinearSVC: decision scores only)
        onx = to_onnx(est, initial_types=types, target_opset=opsets)
    path = folder / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    data = folder / f"{name}.npz"
    np.savez(data, x=x, y=y)
    return HeldoutModel(name, path, data, est, x, y)


def spec(m: HeldoutModel, *, samples: int = 60) -> dict[str, Any]:
    """The zoo's standard tabular spec (clean, noise, attack, invalid input, formal, deployment)."""
    import zoo_models

    zoo = zoo_models.ZooModel(m.name, m.path, m.data, "tabular", "NC", None, len(m.classes))
    out = zoo_models.standard_spec(zoo, samples=samples)
    out["id"] = f"heldout-{m.name}"
    out["title"] = f"Held-out scikit-learn model: {m.name}"
    return out
