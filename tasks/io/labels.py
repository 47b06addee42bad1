"""Class labels of the test data as class indices: the column of the model's scores each label names.

Users save ``y`` as their classifier knows it: indices 0..C-1, text labels ('cat', 'dog') or the
integer labels the classifier was fitted on (1, 5, 9). The model's classes, read from the graph
(``model_outputs.class_labels``) or declared in ``model.labels``, translate them to indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnassay.tasks.errors import DataError

Label = int | str


def class_indices(
    y: np.ndarray, classes: Sequence[Label] | None, path: Path, names: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    """``y`` as class indices, with a note saying how they were read ("" when y held indices).

    ``classes``: the model's class of each score column, from the graph; ``names``: the class
    names declared in ``model.labels``. Text labels are looked up in the graph's classes when they
    are text, else in ``names``. Integer labels are read as the model's class labels
    when the model's classes are integers other than 0..C-1 and every label in ``y`` is one of them
    (scikit-learn's ``classes_``, which ``y`` was fitted with); otherwise they are class indices.

    Raises:
        DataError: text labels the model does not name, or text labels for a model naming no classes.
    """
    if y.dtype.kind in "USO":
        text_classes = classes if any(isinstance(c, str) for c in classes or ()) else names
        return _text_labels(y, text_classes, path)
    ints = [c for c in classes or () if isinstance(c, int)]
    if not ints or len(ints) != len(classes or ()) or ints == list(range(len(ints))):
        return y, ""
    if not np.all(np.equal(np.mod(y, 1), 0)):
        return y, ""  # the whole-number check names the problem
    seen = np.unique(y.astype(np.int64))
    if not set(seen.tolist()) <= set(ints):
        return y, ""
    index = {c: k for k, c in enumerate(ints)}
    mapped = np.array([index[int(v)] for v in y.astype(np.int64)], dtype=np.int64)
    return mapped, f"integer labels read as the model's classes {ints}, in score-column order"


def _text_labels(y: np.ndarray, classes: Sequence[Label] | None, path: Path) -> tuple[np.ndarray, str]:
    text = [str(v) for v in y.reshape(-1).tolist()]
    names = [str(c) for c in classes] if classes is not None else None
    if names is None:
        raise DataError(
            f"y holds text labels ({sorted(set(text))[:5]}...) but the model names no classes",
            file=str(path),
            field="data.path",
            fix="set model.labels to the class names in the order of the model's score columns, "
            "or store y as class indices 0..C-1",
        )
    index = {c: k for k, c in enumerate(names)}
    unknown = sorted({t for t in text if t not in index})
    if unknown:
        raise DataError(
            f"y holds labels {unknown[:10]} that are not classes of the model; its classes, in "
            f"score-column order, are {names}",
            file=str(path),
            field="data.path",
            fix="store y with the model's class labels (or indices 0..C-1), or correct model.labels",
        )
    return np.array(
        [index[t] for t in text], dtype=np.int64
    ), f"text labels read as the model's classes {names}"
