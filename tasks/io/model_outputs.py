"""Model outputs: which ONNX output holds the class scores, how to read it as [N, C] in class order,
and whether the scores are logits or probabilities (declared, or detected from the values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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

    @property
    def readable(self) -> bool:
        """Can be read as one score per class: a float tensor [N, C] (C > 1) or a ZipMap."""
        return self.is_zipmap or (self.type in SCORE_TENSORS and not self.single_score)

    def shown(self) -> str:
        dims = ", ".join("N" if d is None and i == 0 else str(d) for i, d in enumerate(self.shape))
        return f"{self.name!r} {self.type} [{dims}]"


def listing(outputs: Sequence[OutputInfo]) -> str:
    """Every output with its type and shape, for error messages."""
    return "; ".join(o.shown() for o in outputs)


def choose_output(outputs: Sequence[OutputInfo], requested: str | None, path: Path) -> OutputInfo:
    """The output holding the class scores: the one named, else the only one readable as scores.

    Raises:
        ModelError: naming every output with its type and shape, and how to choose one.
    """
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


def zipmap_classes(model: onnx.ModelProto, output: str) -> list[int | str] | None:
    """The class labels of the ZipMap node producing ``output``, in column order."""
    for node in model.graph.node:
        if node.op_type == "ZipMap" and output in node.output:
            for attr in node.attribute:
                values = onnx.helper.get_attribute_value(attr)
                if attr.name == "classlabels_int64s" and values:
                    return [int(v) for v in values]
                if attr.name == "classlabels_strings" and values:
                    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return None


def read_scores(out: Any, n_rows: int, classes: Sequence[int | str] | None) -> np.ndarray:
    """An output as float32 [n_rows, C]; a sequence of maps becomes columns in ``classes`` order."""
    if isinstance(out, list) and (not out or isinstance(out[0], dict)):
        if not out:
            return np.zeros((0, len(classes or ())), np.float32)
        keys = list(classes) if classes is not None else sorted(out[0])
        if list(out[0]) == keys:
            rows = [list(row.values()) for row in out]
        else:
            rows = [[row[k] for k in keys] for row in out]
        return np.asarray(rows, dtype=np.float32).reshape(n_rows, len(keys))
    return np.asarray(out, dtype=np.float32).reshape(n_rows, -1)


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


def torch_target(model: onnx.ModelProto, output: str, kind: OutputKind) -> TorchTarget:
    """Logits for gradients: the output itself, or the input of its Softmax, or log of it.

    A ZipMap is read through its input tensor. For probabilities made by a Softmax (through Identity
    or Cast), the Softmax input gives ``log_softmax`` exactly, without the floor of ``log p``.
    """
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(output)
    tensor = node.input[0] if node is not None and node.op_type == "ZipMap" else output
    if kind == "logits":
        return TorchTarget(tensor, "identity")
    walk = producers.get(tensor)
    while walk is not None and walk.op_type in PASS_THROUGH:
        walk = producers.get(walk.input[0])
    if walk is None or walk.op_type != "Softmax":
        return TorchTarget(tensor, "log")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in walk.attribute}
    axis = int(attrs.get("axis", -1 if opset >= 13 else 1))
    return TorchTarget(walk.input[0], "log_softmax", axis, flatten=opset < 13)


def pruned(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``tensor`` (its single output) and what it depends on."""
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
