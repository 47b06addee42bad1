"""Create an ONNX Runtime session in a child process first: a model whose session creation crashes
ONNX Runtime (issue 15: the float16 copy of a two-layer ViT segfaults in the ORT_ENABLE_ALL graph
optimisations of onnxruntime 1.31.1, CPU provider) costs one test an error naming the signal.

This module imports no torch, so the child pays for Python, numpy and onnxruntime only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nnassay.tasks.engine.isolation import run_isolated

if TYPE_CHECKING:
    from onnx import ModelProto

Optimization = Literal["disable", "basic", "extended", "all"]  # ONNX Runtime graph optimisation levels


def isolated_session_check(
    model: bytes | str | os.PathLike[str],
    providers: Sequence[str],
    *,
    timeout_s: float = 300.0,
    memory_limit_bytes: int | None = None,
    threads: int = 0,
    optimization: Optimization = "all",
) -> None:
    """Create an ONNX Runtime session for ``model`` and run one batch of zeros, in a child process.

    The session options mirror ``tasks.io.model_io.open_session`` (``optimization="all"``: ONNX
    Runtime's default graph optimisation level, ``log_severity_level=3``, ``threads`` intra-op
    threads), because the crash this guards against happens in ONNX Runtime's graph optimiser while
    the session is created (issue 15's float16 ViT loads at "extended"). The child imports
    ``onnxruntime`` and ``numpy`` only (no torch).

    Raises:
        ChildCrashed: the session creation or the run killed the process (e.g. SIGSEGV).
        ChildTimeout, ChildMemoryError: as ``run_isolated``.
        Exception: what ONNX Runtime raised for a model it refuses (re-raised from the child).
    """
    source: bytes | str = model if isinstance(model, bytes) else os.fspath(model)
    name = "in-memory model" if isinstance(source, bytes) else Path(source).name
    run_isolated(
        _session_check,
        source,
        list(providers),
        threads,
        optimization,
        step=f"ONNX Runtime session for {name} on {', '.join(providers)} (graph optimisation {optimization})",
        timeout_s=timeout_s,
        memory_limit_bytes=memory_limit_bytes,
        preload=("numpy", "onnxruntime"),
    )


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _session_check(
    source: bytes | str, providers: list[str], threads: int, optimization: Optimization
) -> float:
    """Child side of ``isolated_session_check``: session, one batch of zeros; returns the seconds taken."""
    import numpy as np
    import onnxruntime as ort

    start = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    feeds = {}
    for item in session.get_inputs():
        if item.type not in _ORT_DTYPES:
            return time.perf_counter() - start  # a non-tensor input: the session itself was the check
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in item.shape]
        feeds[item.name] = np.zeros(shape, dtype=_ORT_DTYPES[item.type])
    session.run(None, feeds)
    return time.perf_counter() - start


VARIANTS = ("float16", "int8_dynamic")


def convert_variant(kind: str, source: str | os.PathLike[str], target: str | os.PathLike[str]) -> str:
    """Write the deployment variant ``kind`` of ``source`` to ``target``, as the deployment test makes it:
    float16 by ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``,
    int8_dynamic by ``onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)``."""
    if kind == "float16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(
            convert_float_to_float16(onnx.load(os.fspath(source)), keep_io_types=True), os.fspath(target)
        )
    elif kind == "int8_dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(_one_opset_per_domain(source), os.fspath(target), weight_type=QuantType.QInt8)
    else:
        raise ValueError(f"unknown variant {kind!r}; expected one of {VARIANTS}")
    return os.fspath(target)


def _one_opset_per_domain(source: str | os.PathLike[str]) -> str | ModelProto:
    """The model's path, or the model with one opset import per domain (the highest version) when
    it lists a domain twice: skl2onnx writes ``('', 17)`` twice for some pipelines, and ONNX Runtime's
    quantiser then stops with "Failed to find proper ai.onnx domain"."""
    import onnx

    model = onnx.load(os.fspath(source), load_external_data=False)
    domains = [o.domain or "ai.onnx" for o in model.opset_import]
    if len(set(domains)) == len(domains):
        return os.fspath(source)
    model = onnx.load(os.fspath(source))
    highest: dict[str, int] = {}
    for o in model.opset_import:
        highest[o.domain] = max(highest.get(o.domain, 0), o.version)
    del model.opset_import[:]
    for domain, version in highest.items():
        model.opset_import.add(domain=domain, version=version)
    return model


def isolated_variant(
    kind: str,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    providers: Sequence[str] | None = None,
    timeout_s: float = 600.0,
    memory_limit_bytes: int | None = None,
) -> Path:
    """``convert_variant`` in a child process, then (with ``providers``) ``isolated_session_check`` of
    the result: a converter or session creation that crashes raises ``ChildCrashed`` naming the step."""
    written = run_isolated(
        convert_variant,
        kind,
        os.fspath(source),
        os.fspath(target),
        step=f"{kind} conversion of {Path(source).name}",
        timeout_s=timeout_s,
        memory_limit_bytes=memory_limit_bytes,
    )
    if providers is not None:
        isolated_session_check(written, providers, timeout_s=timeout_s, memory_limit_bytes=memory_limit_bytes)
    return Path(written)


__all__ = ["VARIANTS", "convert_variant", "isolated_session_check", "isolated_variant"]
