"""Model outputs: which ONNX output holds the class scores, how to read it as [N, C] in class order,
and whether the scores are logits or probabilities (declared, or detected from the values).

Also what the graph says about the classes (the label of each score column, from a ZipMap, an
``ai.onnx.ml`` classifier or the label lookup table of skl2onnx) and how to feed the input (float32,
float64 or integer tensors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from nnassay.tasks.errors import ModelError

OutputKind = Literal["logits", "probabilities"]
SCORE_TENSORS = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)"})
TINY = 1e-30  # probabilities below this count as this when taking logs (float32 normal range)
SUM_TOLERANCE = 1e-2  # rows summing to 1 within this are probabilities (float16 variants too)
PASS_THROUGH = frozenset({"Identity", "Cast"})  # ops between a Softmax and the output
LABEL_TENSORS = frozenset({"tensor(int64)", "tensor(int32)", "tensor(string)"})
CLASS_LABEL_ATTRS = ("classlabels_ints", "classlabels_int64s", "classlabels_strings")
INPUT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}
Label = int | str


@dataclass(frozen=True)
class OutputInfo:
    """One graph output as ONNX Runtime declares it."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]

    @classmethod
    def of(cls, node_arg: Any) -> OutputInfo:
        """From an ``onnxruntime.NodeArg``."""
        return cls(node_arg.name, node_arg.type, tuple(node_arg.shape or ()))

    @property
    def is_zipmap(self) -> bool:
        """A sequence of {class: probability} maps (skl2onnx's default classifier output)."""
        return self.type.startswith("seq(map(") and "float" in self.type

    @property
    def single_score(self) -> bool:
        """True when the declared shape gives one number per sample (a label or a single score)."""
        rest = [d for d in self.shape[1:] if isinstance(d, int)]
        return len(self.shape) == 1 or (
            bool(rest) and len(rest) == len(self.shape) - 1 and math.prod(rest) == 1
        )

    binary: bool = False  # one float score standing for a two-class classifier's positive class

    @property
    def readable(self) -> bool:
        """Can be read as one score per class: a float tensor [N, C] (C > 1), a ZipMap, or the single
        score of a binary classifier."""
        return self.is_zipmap or (self.type in SCORE_TENSORS and (self.binary or not self.single_score))

    @property
    def is_label(self) -> bool:
        """One integer or string class label per sample (a classifier's decision)."""
        return self.type in LABEL_TENSORS and self.single_score

    def shown(self) -> str:
        dims = ", ".join("N" if d is None and i == 0 else str(d) for i, d in enumerate(self.shape))
        return f"{self.name!r} {self.type} [{dims}]"


def listing(outputs: Sequence[OutputInfo]) -> str:
    """Every output with its type and shape, for error messages."""
    return "; ".join(o.shown() for o in outputs)


def choose_output(
    outputs: Sequence[OutputInfo],
    requested: str | None,
    path: Path,
    model: Callable[[], onnx.ModelProto] | None = None,
) -> OutputInfo:
    """The output holding the class scores: the one named, else the only one readable as scores.
    With ``model`` (the graph, loaded when needed), a binary classifier's single float score column
    is readable too (LinearSVC, a one-logit or one-sigmoid net): it is read as two columns.

    Raises:
        ModelError: naming every output with its type and shape, and how to choose one.
    """
    if model is not None and not any(o.readable for o in outputs):
        alone = sum(_single_float(o) for o in outputs) == 1
        outputs = [_binary_single(o, model, alone) for o in outputs]
    readable = [o for o in outputs if o.readable]
    names = [o.name for o in readable or outputs]
    fix = f"set model.output_name to the output with one score per class, one of {names}"
    if requested is not None:
        chosen = next((o for o in outputs if o.name == requested), None)
        if chosen is None:
            raise ModelError(
                f"the model has no output {requested!r}; its outputs are: {listing(outputs)}",
                file=str(path),
                field="model.output_name",
                fix=fix,
            )
        candidates = [chosen]
    else:
        candidates = readable
    if len(candidates) == 1 and candidates[0].readable:
        return candidates[0]
    if requested is not None:
        problem = f"output {requested!r} cannot be read as class scores"
    elif candidates:
        problem = "more than one output could hold the class scores"
    else:
        problem = "no output can be read as class scores"
    raise ModelError(
        f"{problem} (expected a float tensor [N, classes] or a ZipMap sequence of maps); "
        f"the model's outputs are: {listing(outputs)}",
        file=str(path),
        field="model.output_name",
        fix=f"{fix}, e.g. 'model.output_name: {readable[0].name}'"
        if readable
        else "export the classifier with an output giving one float score per class ([N, classes])",
    )


def _single_float(o: OutputInfo) -> bool:
    return o.type in SCORE_TENSORS and o.single_score and len(o.shape) == 2


def _binary_single(o: OutputInfo, model: Callable[[], onnx.ModelProto], alone: bool) -> OutputInfo:
    """``o`` marked as a binary classifier's single score: a float [N, 1] whose graph names two
    classes, or the model's only float [N, 1] output when the graph names none (a classifier with one
    logit or one sigmoid probability: nothing else can hold its scores)."""
    if not _single_float(o):
        return o
    labels = class_labels(model(), o.name)
    if (labels is not None and len(labels) == 2) or (labels is None and alone):
        return replace(o, binary=True)
    return o


def _labels_of(node: onnx.NodeProto) -> list[Label] | None:
    for attr in node.attribute:
        if attr.name in CLASS_LABEL_ATTRS:
            values = onnx.helper.get_attribute_value(attr)
            if values:
                return [v.decode() if isinstance(v, bytes) else v for v in values]
    return None


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    found = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return found


def _ancestors(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    """The nodes ``tensor`` depends on, nearest first (breadth first)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    order, seen, queue = [], set(), [tensor]
    while queue:
        node = producers.get(queue.pop(0))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        queue.extend(i for i in node.input if i)
    return order


def class_labels(model: onnx.ModelProto, output: str) -> list[Label] | None:
    """The class label of each column of ``output``, in column order, when the graph says it.

    From the nearest ZipMap or ``ai.onnx.ml`` classifier (SVM, linear, tree ensemble: their
    ``classlabels_*``) that ``output`` comes from; else from the lookup table a label output is read
    from (skl2onnx's ``ArrayFeatureExtractor(classes, ArgMax(scores))`` for MLP, naive Bayes, SGD,
    neighbours). None for a graph that names no classes (a torch net).
    """
    for node in _ancestors(model, output):
        labels = _labels_of(node)
        if labels is not None:
            return [int(v) if isinstance(v, int | np.integer) else str(v) for v in labels]
    constants = _constants(model)
    label_outputs = [o.name for o in model.graph.output if o.name != output]
    for name in label_outputs:
        for node in _ancestors(model, name):
            table = constants.get(node.input[0]) if node.op_type == "ArrayFeatureExtractor" else None
            if table is not None and table.ndim <= 2 and table.dtype.kind in "iuUSO":
                return [v.decode() if isinstance(v, bytes) else v for v in table.reshape(-1).tolist()]
    return None


def zipmap_classes(model: onnx.ModelProto, output: str) -> list[Label] | None:
    """The class labels of the ZipMap node producing ``output``, in column order."""
    for node in model.graph.node:
        if node.op_type == "ZipMap" and output in node.output:
            labels = _labels_of(node)
            return [int(v) if isinstance(v, int) else str(v) for v in labels] if labels else None
    return None


@dataclass(frozen=True)
class Reading:
    """How one output becomes [N, C] scores in class order.

    ``classes``: the label of each result column; ``columns``: result column k is output column
    ``columns[k]`` (when the label output showed the columns out of order); ``single``: how a binary
    classifier's one column becomes two ("score": [0, s], logits whose softmax is sigmoid(s);
    "probability": [1 - p, p]).
    """

    classes: tuple[Label, ...] | None = None
    columns: tuple[int, ...] | None = None
    single: Literal["score", "probability"] | None = None
    note: str = ""


def score_reading(
    model: Callable[[], onnx.ModelProto], output: OutputInfo, outputs: Sequence[OutputInfo]
) -> Reading:
    """What the graph says about the chosen output's columns (the graph is loaded only for a model
    with a ZipMap, a label output or a single binary score: the classifiers that name classes)."""
    if not (output.is_zipmap or output.binary or any(o.is_label for o in outputs)):
        return Reading()
    graph = model()
    labels = class_labels(graph, output.name)
    width = output.shape[-1] if len(output.shape) == 2 else None
    if labels is not None and isinstance(width, int) and width not in (1, len(labels)):
        labels = None  # the graph's classes do not name these columns
    single: Literal["score", "probability"] | None = None
    if output.binary:
        single = "probability" if _made_by_sigmoid(graph, output.name) else "score"
    return Reading(tuple(labels) if labels is not None else None, single=single)


def _made_by_sigmoid(model: onnx.ModelProto, output: str) -> bool:
    for node in _ancestors(model, output):
        if node.op_type == "Sigmoid":
            return True
        how = next((a.s for a in node.attribute if a.name == "post_transform"), b"")
        if how:
            return how in (b"LOGISTIC", b"SOFTMAX")
        if node.op_type not in {*PASS_THROUGH, "ArrayFeatureExtractor", "Reshape", "Flatten", "Slice"}:
            return False
    return False


def check_columns(labels: np.ndarray, scores: np.ndarray, reading: Reading) -> Reading:
    """Check the columns against the model's own label output on the same rows: the label of the
    top-scoring column must be the label the model outputs. Where it is not, but one reordering of
    the columns makes every row agree (ONNX Runtime's binary SVM without probabilities writes
    [s, -s]), the reading takes that order; otherwise it is left as it is, with a note."""
    classes = reading.classes
    if classes is None or scores.ndim != 2 or scores.shape[1] != len(classes) or not len(scores):
        return reading
    top = np.sort(scores, axis=1)
    clear = top[:, -1] > top[:, -2] if scores.shape[1] > 1 else np.ones(len(scores), bool)
    index = {c: k for k, c in enumerate(classes)}
    said = np.array([index.get(_label(v), -1) for v in np.asarray(labels).reshape(-1)])
    if len(said) != len(scores) or not clear.any():
        return reading
    said, argmax = said[clear], scores[clear].argmax(axis=1)
    if np.array_equal(said, argmax):
        return reading
    order = _reordering(said, argmax, len(classes))
    if order is None:
        agree = float(np.mean(said == argmax))
        return replace(reading, note=f"the label output agrees with the top score on {agree:.0%} of probes")
    return replace(
        reading,
        columns=order,
        note=f"score columns reordered to {list(order)} so that the top score names the label output",
    )


def _label(v: Any) -> Label:
    if isinstance(v, bytes):
        return v.decode()
    return int(v) if isinstance(v, int | np.integer) else str(v)


def _reordering(said: np.ndarray, argmax: np.ndarray, n: int) -> tuple[int, ...] | None:
    """The permutation ``order`` (result column k = output column order[k]) under which each row's
    top column names the label said, when the rows determine it (at most one class unseen: a
    binary model's probes may all fall in one class); None otherwise."""
    order = [-1] * n
    for column in range(n):
        named = np.unique(said[argmax == column])
        if len(named) > 1 or (len(named) == 1 and (named[0] < 0 or order[named[0]] != -1)):
            return None
        if len(named) == 1:
            order[int(named[0])] = column
    free = [c for c in range(n) if c not in order]
    if len(free) > 1:
        return None
    order = [c if c >= 0 else free.pop(0) for c in order]
    return tuple(order) if sorted(order) == list(range(n)) else None


def read_scores(out: Any, n_rows: int, classes: Sequence[Label] | Reading | None) -> np.ndarray:
    """An output as float32 [n_rows, C]; a sequence of maps becomes columns in ``classes`` order,
    and a ``Reading`` reorders columns or widens a binary classifier's single score."""
    reading = classes if isinstance(classes, Reading) else Reading(tuple(classes) if classes else None)
    labels = reading.classes
    if isinstance(out, list) and (not out or isinstance(out[0], dict)):
        if not out:
            return np.zeros((0, len(labels or ())), np.float32)
        keys = list(labels) if labels is not None else sorted(out[0])
        if list(out[0]) == keys:
            rows = [list(row.values()) for row in out]
        else:
            rows = [[row[k] for k in keys] for row in out]
        return np.asarray(rows, dtype=np.float32).reshape(n_rows, len(keys))
    scores = np.asarray(out, dtype=np.float32).reshape(n_rows, -1)
    if reading.single is not None and scores.shape[1] == 1:
        low = 1.0 - scores if reading.single == "probability" else np.zeros_like(scores)
        scores = np.concatenate([low, scores], axis=1)
    if reading.columns is not None:
        scores = scores[:, list(reading.columns)]
    return scores


def as_input(batch: np.ndarray, onnx_type: str) -> np.ndarray:
    """A float32 batch as the model's input type: float64, float16, or integers (rounded to the
    nearest whole number: perturbed values of an integer input are read as the model reads them)."""
    dtype = INPUT_DTYPES.get(onnx_type, np.float32)
    if dtype is np.float32 or batch.dtype == dtype:
        return batch
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
    return batch.astype(dtype)


def check_input_type(onnx_type: str, name: str, path: Path) -> None:
    """Raise when the input cannot take numbers (strings, maps, sequences).

    Raises:
        ModelError: naming the input, its type and the types nnassay feeds.
    """
    if onnx_type not in INPUT_DTYPES:
        raise ModelError(
            f"the model input {name!r} has type {onnx_type}; nnassay feeds numeric tensors "
            f"({', '.join(sorted(INPUT_DTYPES))})",
            file=str(path),
            field="model.path",
            fix="export the model with a numeric input tensor (encode strings as numbers before it)",
        )


def detect_kind(scores: np.ndarray) -> tuple[OutputKind, str]:
    """Probabilities when every row is non-negative and sums to 1; otherwise logits. With why."""
    finite = scores[np.isfinite(scores).all(axis=1)]
    if not len(finite):
        return "logits", "no finite output to inspect; treated as logits"
    sums = finite.astype(np.float64).sum(axis=1)
    if finite.min() >= -1e-6 and np.abs(sums - 1.0).max() <= SUM_TOLERANCE:
        return "probabilities", f"rows non-negative and summing to 1 on {len(finite)} inputs"
    return "logits", f"rows not all non-negative and summing to 1 on {len(finite)} inputs"


def log_probabilities(p: np.ndarray) -> np.ndarray:
    """log p with p floored at ``TINY``: logits whose softmax is ``p`` (NaN and inf pass through)."""
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(p, np.float32(TINY))).astype(np.float32)


# ------------------------------------------------------------------------- the torch executor's target
@dataclass(frozen=True)
class TorchTarget:
    """Which graph tensor the torch executor computes, and the transform that makes it logits."""

    tensor: str
    transform: Literal["identity", "log", "log_softmax"]
    axis: int = -1
    flatten: bool = False  # Softmax before opset 13 works on the input flattened from ``axis``
    reading: Reading = Reading()

    def arrange(self, out: Any) -> Any:
        """The graph's [N, C] tensor in class order (torch): columns reordered, or a binary
        classifier's single score widened to two columns, as ``read_scores`` does."""
        import torch

        if out.dim() != 2:
            return out
        if self.reading.single is not None and out.shape[1] == 1:
            low = 1.0 - out if self.reading.single == "probability" else torch.zeros_like(out)
            out = torch.cat([low, out], dim=1)
        if self.reading.columns is not None:
            out = out[:, list(self.reading.columns)]
        return out


def torch_target(
    model: onnx.ModelProto, output: str, kind: OutputKind, reading: Reading | None = None
) -> TorchTarget:
    """Logits for gradients: the output itself, or the input of its Softmax, or log of it.

    A ZipMap is read through its input tensor. For probabilities made by a Softmax (through Identity
    or Cast), the Softmax input gives ``log_softmax`` exactly, without the floor of ``log p``.
    """
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(output)
    tensor = node.input[0] if node is not None and node.op_type == "ZipMap" else output
    reading = reading or Reading()
    if kind == "logits":
        return TorchTarget(tensor, "identity", reading=reading)
    walk = producers.get(tensor)
    while walk is not None and walk.op_type in PASS_THROUGH:
        walk = producers.get(walk.input[0])
    if walk is None or walk.op_type != "Softmax" or reading.single is not None:
        return TorchTarget(tensor, "log", reading=reading)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in walk.attribute}
    axis = int(attrs.get("axis", -1 if opset >= 13 else 1))
    return TorchTarget(walk.input[0], "log_softmax", axis, flatten=opset < 13, reading=reading)


def pruned(model: onnx.ModelProto, tensor: str, reading: Reading | None = None) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``tensor`` (its single output) and what it depends on;
    with a ``reading`` that reorders or widens columns, its output is the [N, C] scores in class
    order (what a verifier bounds), made by a few standard nodes appended (Mul, Sub, Concat, Gather)."""
    out = _pruned(model, tensor)
    if reading is None or (reading.single is None and reading.columns is None):
        return out
    return _arranged(out, tensor, reading)


def _arranged(model: onnx.ModelProto, tensor: str, reading: Reading) -> onnx.ModelProto:
    helper, graph, name = onnx.helper, model.graph, tensor
    const = f"{tensor}__classes_const"
    if reading.single is not None:  # [N, 1] -> [0, s] (a score) or [1 - p, p] (a probability)
        scalar = 1.0 if reading.single == "probability" else 0.0
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(scalar, np.float32), const))
        low = f"{tensor}__low"
        if reading.single == "probability":
            graph.node.append(helper.make_node("Sub", [const, name], [low]))
        else:
            graph.node.append(helper.make_node("Mul", [name, const], [low]))
        graph.node.append(helper.make_node("Concat", [low, name], [f"{tensor}__two"], axis=1))
        name = f"{tensor}__two"
    if reading.columns is not None:
        order = f"{tensor}__order"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(reading.columns, np.int64), order))
        graph.node.append(helper.make_node("Gather", [name, order], [f"{tensor}__ordered"], axis=1))
        name = f"{tensor}__ordered"
    width = len(reading.classes) if reading.classes is not None else None
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None, width]))
    return model


def _pruned(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    needed, keep = {tensor}, []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.node[:]
    graph.node.extend(reversed(keep))
    known = {v.name: v for v in [*model.graph.output, *model.graph.value_info]}
    del graph.output[:]
    graph.output.append(known.get(tensor) or onnx.helper.make_empty_tensor_value_info(tensor))
    kept = [i for i in model.graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out
