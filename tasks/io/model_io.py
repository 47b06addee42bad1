"""Model I/O: load an ONNX classifier on ONNX Runtime (CUDA when it really works, else CPU).

``ModelRunner`` takes data in *data space* (the model's layout, inside ``value_range``), applies the
declared preprocessing, runs batches and returns float32 class scores from the chosen output (logits,
or log-probabilities for a model that outputs probabilities). It records the provider used, the
output read and whether it holds logits or probabilities.
"""

from __future__ import annotations

import ctypes
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnassay.schemas.goals import Layout, ModelSpec
from nnassay.tasks.errors import ModelError
from nnassay.tasks.io.files import model_sha256
from nnassay.tasks.io.model_outputs import (
    TINY,
    OutputInfo,
    OutputKind,
    TorchTarget,
    as_input,
    check_columns,
    check_input_type,
    choose_output,
    detect_kind,
    listing,
    log_probabilities,
    pruned,
    read_scores,
    score_reading,
    torch_target,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    import torch

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
LOG_TINY = float(np.log(TINY))


def cuda_available() -> bool:
    """True when ONNX Runtime offers CUDA and the CUDA driver library loads."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def open_session(
    path: Path, *, prefer_cuda: bool = True, providers: list[str] | None = None, threads: int = 0
) -> ort.InferenceSession:
    """An ONNX Runtime session; CUDA is tried only when it can really work. ``threads``: intra-op
    threads (0: ONNX Runtime's default; 1 for one-thread Dask workers, so they do not contend)."""
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(
            f"model file {path} does not exist",
            file=str(path),
            field="model.path",
            fix="point model.path at an existing .onnx file (relative to the spec)",
        )
    chosen = providers or ([CUDA, CPU] if prefer_cuda and cuda_available() else [CPU])
    options = ort.SessionOptions()
    # fatal only: a failing run raises, and nnassay records the error where it happened (an invalid
    # input's case, a crash rate); ONNX Runtime's own "Non-zero status code" lines would repeat it on
    # the terminal once per failing call
    options.log_severity_level = 4
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ModelError(
            f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}",
            file=str(path),
            field="model.path",
            fix="export the model as a valid ONNX file (opset 7 or newer) with standard operators",
        ) from exc


def check_layout(layout: Layout, shape: list[int | str | None], path: Path) -> None:
    """Refuse a declared image layout the model's input plainly contradicts: the declared channel axis
    holds more than 4 values while the other layout's channel axis holds 1 or 3 and leaves an image
    of at least 8 x 8 (``[N, 1, 16, 16]`` declared NHWC, ``[N, 64, 64, 3]`` declared NCHW). Symbolic
    or other shapes are not judged."""
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        return
    first, mid, last = (int(d) for d in shape[1:])  # type: ignore[arg-type]
    other = None
    if layout == Layout.NHWC and last > 4 and first in (1, 3) and min(mid, last) >= 8:
        other = Layout.NCHW
    elif layout == Layout.NCHW and first > 4 and last in (1, 3) and min(first, mid) >= 8:
        other = Layout.NHWC
    if other is not None:
        axis = 1 if other == Layout.NCHW else 3
        raise ModelError(
            f"model.layout is {layout.value} but the model's input {list(shape)} has {shape[axis]} "
            f"channel(s) on axis {axis}, as in {other.value}",
            file=str(path),
            field="model.layout",
            fix=f"set model.layout: {other.value} (the axis order of the model's input)",
        )


class ModelRunner:
    """A loaded ONNX classifier that takes data-space inputs. Thread-safe for ``logits``."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        prefer_cuda: bool = True,
        providers: list[str] | None = None,
        threads: int = 0,
    ):
        self.spec = spec
        self.path = Path(spec.path)
        self.session = open_session(self.path, prefer_cuda=prefer_cuda, providers=providers, threads=threads)
        self.provider: str = self.session.get_providers()[0]
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = spec.input_name or names[0]
        if self.input_name not in names:
            raise ModelError(
                f"the model has no input {self.input_name!r}; its inputs are {names}",
                file=str(self.path),
                field="model.input_name",
                fix=f"set model.input_name to one of {names}",
            )
        if len(inputs) > 1:
            raise ModelError(
                f"the model has {len(inputs)} inputs {names}; nnassay supports one",
                file=str(self.path),
                field="model.path",
                fix="export a model with a single input tensor",
            )
        declared = inputs[0].shape
        self.input_shape: list[int | str | None] = list(declared)
        self.input_type: str = inputs[0].type  # float32 batches are cast to it (model_outputs.as_input)
        check_input_type(self.input_type, self.input_name, self.path)
        check_layout(spec.layout, self.input_shape, self.path)
        self.outputs = [OutputInfo.of(o) for o in self.session.get_outputs()]
        self.output = choose_output(self.outputs, spec.output_name, self.path, lambda: self._onnx)
        self.output_name = self.output.name
        self.reading = score_reading(lambda: self._onnx, self.output, self.outputs)  # class of each column
        self.class_labels = list(self.reading.classes) if self.reading.classes is not None else None
        self._kind: OutputKind | None = spec.output
        self.output_kind_source = "declared in model.output" if spec.output else "not yet detected"
        self._lock = threading.Lock()
        self._check_scores()

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the ONNX file."""
        return model_sha256(self.path)

    @property
    def layout(self) -> Layout:
        """Axis order of the model's input (and of every array a method handles)."""
        return self.spec.layout

    @property
    def value_range(self) -> tuple[float, float]:
        """Valid data range before preprocessing."""
        return self.spec.value_range

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph insists on, when its first axis is a number."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    def sample_shape(self) -> tuple[int, ...] | None:
        """Declared per-sample shape, or None when some axis is symbolic."""
        rest = self.input_shape[1:]
        if all(isinstance(d, int) and d > 0 for d in rest):
            return tuple(int(d) for d in rest)  # type: ignore[arg-type]
        return None

    def _stats(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        pre = self.spec.preprocessing
        mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
        if ndim >= 3 and self.layout == Layout.NCHW:
            shape = (1, -1) + (1,) * (ndim - 2)
        else:
            shape = (1,) * (ndim - 1) + (-1,)
        return mean.reshape(shape), std.reshape(shape)

    @cached_property
    def identity_preprocessing(self) -> bool:
        """True when the declared preprocessing changes nothing (scale 1, mean 0, std 1)."""
        pre = self.spec.preprocessing
        return pre.scale == 1.0 and all(m == 0.0 for m in pre.mean) and all(s == 1.0 for s in pre.std)

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Data space to model space: ``(x * scale - mean) / std`` per channel, float32, C order.

        The identity preprocessing (scale 1, mean 0, std 1) returns a float32 C-contiguous input as
        it is, without a pass over it (the Monte Carlo methods send millions of rows through here);
        otherwise one new array is made and each non-trivial step runs in place on it. The result
        may share memory with ``x``: treat it as read-only.
        """
        if self.identity_preprocessing:
            return np.ascontiguousarray(x, dtype=np.float32)
        pre = self.spec.preprocessing
        mean, std = self._stats(x.ndim)
        out = np.array(x, dtype=np.float32, order="C", copy=True)
        if pre.scale != 1.0:
            out *= np.float32(pre.scale)
        if np.any(mean != 0.0):
            out -= mean
        if np.any(std != 1.0):
            out /= std
        return out

    @cached_property
    def _onnx(self) -> onnx.ModelProto:
        import onnx

        return onnx.load(str(self.path))

    def _check_scores(self) -> None:
        """Score a few random in-range inputs (when the input shape is known): the output must give
        one score per class, and an undeclared output kind is detected from it (a property of the
        function, so any input shows it: a softmax sums to 1 everywhere)."""
        sample = self.sample_shape()
        if sample is None:
            return
        low, high = self.value_range
        rng = np.random.default_rng(0)
        probe = rng.uniform(low, high, (self.fixed_batch or 8, *sample)).astype(np.float32)
        try:
            self._check_columns(probe)
            scores = self.scores(probe)
        except Exception:  # onnxruntime raises several unrelated types; running the data reports it
            self._kind = self.spec.output
            return
        self.__dict__["n_classes"] = self._classes_in(scores)
        if self.spec.output is None:
            self._kind, why = detect_kind(scores)
            self.output_kind_source = f"detected: {why} (random inputs in model.value_range)"

    def _check_columns(self, probe: np.ndarray) -> None:
        """The model's own label output on the probe must name the top score's class (else the
        columns are reordered when one order agrees; see model_outputs.check_columns)."""
        label = next((o.name for o in self.outputs if o.is_label), None)
        if label is None or self.reading.classes is None or self.output.is_zipmap:
            return
        feed = {self.input_name: as_input(self.preprocess(probe), self.input_type)}
        out, labels = self.session.run([self.output_name, label], feed)
        self.reading = check_columns(labels, read_scores(out, len(probe), self.reading), self.reading)

    def _classes_in(self, scores: np.ndarray) -> int:
        if scores.shape[1] < 2:
            raise ModelError(
                f"output {self.output_name!r} gives {scores.shape[1]} score per sample, not one per "
                f"class; the model's outputs are: {self.outputs_listing()}",
                file=str(self.path),
                field="model.output_name",
                fix="set model.output_name to the output with one score per class (float [N, classes])",
            )
        return int(scores.shape[1])

    @property
    def output_kind(self) -> OutputKind:
        """Whether the chosen output holds logits or probabilities (declared or detected)."""
        return self._kind or "logits"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: as_input(batch, self.input_type)})[0]
        scores = read_scores(out, batch.shape[0], self.reading)
        if self._kind is None:  # input shape unknown before: the first batch scored shows it
            self._kind, why = detect_kind(scores)
            self.output_kind_source = f"detected: {why} (the first batch scored)"
        return scores

    def logits(self, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        """Logits for data-space inputs, shape (N, classes), float32: the output itself, or for a
        model that outputs probabilities ``log p`` (p floored at 1e-30), whose softmax is ``p``."""
        scores = self.scores(x, batch_size=batch_size)
        return log_probabilities(scores) if self.output_kind == "probabilities" else scores

    def scores(self, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        """The chosen output as it is (logits or probabilities), shape (N, classes), float32."""
        model_x = self.preprocess(x)
        fixed = self.fixed_batch
        step = fixed or batch_size
        outs = []
        for start in range(0, len(model_x), step):
            chunk = model_x[start : start + step]
            if fixed and len(chunk) < fixed:
                pad = np.repeat(chunk[-1:], fixed - len(chunk), axis=0)
                outs.append(self._run(np.concatenate([chunk, pad]))[: len(chunk)])
            else:
                outs.append(self._run(chunk))
        if not outs:
            return np.zeros((0, self.n_classes), np.float32)
        return np.concatenate(outs)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax of logits, or the output itself if it is probabilities."""
        return to_probabilities(self.scores(x), self.output_kind)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class index per sample (int64)."""
        return np.argmax(self.scores(x), axis=1).astype(np.int64)

    @cached_property
    def n_classes(self) -> int:
        """Number of class scores the chosen output gives per sample."""
        shape = self.output.shape
        last = shape[-1] if shape else None
        if isinstance(last, int) and last > 0 and len(shape) == 2:
            return last
        if self.class_labels is not None:
            return len(self.class_labels)
        sample = self.sample_shape()
        if sample is None:
            raise ModelError(
                "cannot tell the number of classes from a symbolic output shape",
                file=str(self.path),
                fix="export the model with a fixed output size",
            )
        return self._classes_in(self._run(np.zeros((self.fixed_batch or 1, *sample), np.float32)))

    def torch_module(self) -> torch.nn.Module:
        """Data space -> logits as a torch module (preprocessing + the ONNX graph), for gradients.

        Its output equals ``logits()``: for a probabilities output, the log-softmax of the Softmax
        input when a Softmax makes them, else ``log p``, floored as ``logits()`` floors it. Only the
        part of the graph the chosen output needs is run (not a label output's ArgMax, say).
        """
        import torch

        from nnassay.tasks.engine.onnx_torch import load_onnx_module

        target = torch_target(self._onnx, self.output_name, self.output_kind, self.reading)
        whole = len(self.outputs) == 1 and target.tensor == self.output_name
        graph = load_onnx_module(self.path if whole else pruned(self._onnx, target.tensor))
        pre = self.spec.preprocessing
        stats = (torch.from_numpy(a) for a in self._stats(len(self.input_shape) or 2))
        return _Preprocessed(graph, target, pre.scale, *stats)

    def score_graph(self) -> onnx.ModelProto:
        """The ONNX graph cut to one output: the chosen scores, or the input of the Softmax making
        them (the logits: same argmax and margins). What the torch executor runs, and what a
        verifier should bound instead of the whole file (no label output, ArgMax or ZipMap)."""
        target = torch_target(self._onnx, self.output_name, self.output_kind)
        return pruned(self._onnx, target.tensor, self.reading)  # columns in class order

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model for the evidence."""
        return {
            "provider": self.provider,
            "input_name": self.input_name,
            "input_shape": [d if isinstance(d, int) else str(d) for d in self.input_shape],
            "n_classes": self.n_classes,
            "layout": self.layout.value,
            **self.output_facts(),
        }

    def outputs_listing(self) -> str:
        """Every output of the model with its type and shape, for messages."""
        return listing(self.outputs)

    def output_facts(self) -> dict[str, Any]:
        """Which output is read, every output's type and shape, and logits or probabilities (why)."""
        return {
            "output_name": self.output_name,
            "output_kind": self.output_kind,
            "output_kind_source": self.output_kind_source,
            "class_labels": self.class_labels,
            "class_columns_note": self.reading.note or None,  # columns reordered, or label output disagreeing
            "outputs": [
                {
                    "name": o.name,
                    "type": o.type,
                    "shape": [d if isinstance(d, int) else str(d) for d in o.shape],
                }
                for o in self.outputs
            ],
        }


def to_probabilities(out: np.ndarray, kind: str | None) -> np.ndarray:
    """Softmax rows of logits (stable); probabilities are returned as they are."""
    if kind == "probabilities":
        return out
    shifted = out - out.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _preprocessed_module() -> type:
    import torch

    class Preprocessed(torch.nn.Module):
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(
            self, graph: torch.nn.Module, target: TorchTarget, scale: float, mean: Any, std: Any
        ) -> None:
            super().__init__()
            self.graph, self.target, self.scale = graph, target, scale
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            model_x = (x * self.scale - self.mean.to(x.dtype)) / self.std.to(x.dtype)
            target = self.target
            out = target.arrange(self.graph(model_x))  # class order; a binary single score widened
            if target.transform == "log_softmax":
                out = out.flatten(target.axis) if target.flatten else out
                out = torch.log_softmax(out, dim=target.axis).clamp_min(LOG_TINY)
            elif target.transform == "log":
                out = torch.log(out.clamp_min(TINY))
            return out.reshape(out.shape[0], -1)

    return Preprocessed


def _Preprocessed(*args: Any) -> Any:  # noqa: N802 - builds the class lazily (torch import)
    return _preprocessed_module()(*args)
