"""Model I/O: load an ONNX classifier on ONNX Runtime (CUDA when it really works, else CPU).

``ModelRunner`` takes data in *data space* (the model's layout, inside ``value_range``), applies the
declared preprocessing, runs batches and returns float32 logits. It records the provider used.
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
from nnassay.tasks.io.files import sha256_file

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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
    options.log_severity_level = 3
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
        self.output_name = self.session.get_outputs()[0].name
        self._lock = threading.Lock()

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the ONNX file."""
        return sha256_file(self.path)

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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1)

    def logits(self, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
        """Raw first output for data-space inputs, shape (N, classes), float32."""
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
        return to_probabilities(self.logits(x), self.spec.output)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class index per sample (int64)."""
        return np.argmax(self.logits(x), axis=1).astype(np.int64)

    @cached_property
    def n_classes(self) -> int:
        """Number of outputs of the classifier."""
        shape = self.session.get_outputs()[0].shape
        last = shape[-1] if shape else None
        if isinstance(last, int) and last > 0 and len(shape) == 2:
            return last
        sample = self.sample_shape()
        if sample is None:
            raise ModelError(
                "cannot tell the number of classes from a symbolic output shape",
                file=str(self.path),
                fix="export the model with a fixed output size",
            )
        return int(self._run(np.zeros((self.fixed_batch or 1, *sample), np.float32)).shape[1])

    def torch_module(self) -> torch.nn.Module:
        """Data space -> logits as a torch module (preprocessing + the ONNX graph), for gradients."""
        import torch

        from nnassay.tasks.engine.onnx_torch import load_onnx_module

        graph = load_onnx_module(self.path)
        pre = self.spec.preprocessing
        return _Preprocessed(
            graph, pre.scale, *(torch.from_numpy(a) for a in self._stats(len(self.input_shape) or 2))
        )

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model for the evidence."""
        return {
            "provider": self.provider,
            "input_name": self.input_name,
            "input_shape": [d if isinstance(d, int) else str(d) for d in self.input_shape],
            "n_classes": self.n_classes,
            "layout": self.layout.value,
        }


def to_probabilities(out: np.ndarray, kind: str) -> np.ndarray:
    """Softmax rows of logits (stable); probabilities are returned as they are."""
    if kind == "probabilities":
        return out
    shifted = out - out.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _preprocessed_module() -> type:
    import torch

    class Preprocessed(torch.nn.Module):
        def __init__(self, graph: torch.nn.Module, scale: float, mean: Any, std: Any) -> None:
            super().__init__()
            self.graph, self.scale = graph, scale
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            model_x = (x * self.scale - self.mean.to(x.dtype)) / self.std.to(x.dtype)
            out = self.graph(model_x)
            return out.reshape(out.shape[0], -1)

    return Preprocessed


def _Preprocessed(*args: Any) -> Any:  # noqa: N802 - builds the class lazily (torch import)
    return _preprocessed_module()(*args)
