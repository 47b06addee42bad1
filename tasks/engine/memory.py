"""Memory plan: estimate peak memory before allocating, pick batch sizes that fit a budget.

Three estimators, all returning a ``MemoryEstimate`` (``fixed_bytes + batch * per_sample_bytes``):

- ``activation_estimate``: from ONNX shape inference, the largest set of activations alive at once
  in graph order (ONNX Runtime reuses buffers once a tensor's last consumer ran), or with
  ``mode="autograd"`` every activation (the torch executor keeps them for the backward pass);
- ``probe_estimate``: run batches of two sizes, measure the peak resident memory of each and
  extrapolate linearly (for models whose shapes inference cannot resolve);
- ``crown_estimate``: the verifier's linear bounds. Bounding the ``r`` rows (neurons) of layer ``k``
  of a sub-domain builds a coefficient matrix (2r x n_k) and carries it backward to the input, so it
  holds (2r x n_j) float64 values at every earlier layer ``j`` (CROWN's A-matrices): about
  ``8 * 2r * (n_k + copies * max_j n_j)`` bytes per sub-domain.

``budget_bytes`` is half the available memory by default; ``fit_batch`` picks the largest batch
that fits, 0 when not even one sample does, in which case the caller answers ``unknown`` /
``inconclusive`` with ``too_large_reason`` (the estimate and the budget, in words).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from nnassay.tasks.engine.isolation import format_bytes

if TYPE_CHECKING:
    import onnx

BUDGET_SHARE = 0.5  # default budget: this share of the memory available now
ACTIVATION_COPIES = 4  # A, its negative part, A * slope and the result live together at an activation
ALL_ROWS_UP_TO = 256  # keep in step with formal/bounds.py: narrower layers get CROWN on every neuron
_ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of a step as ``fixed_bytes + batch * per_sample_bytes``; ``source`` says how it was found."""

    fixed_bytes: int
    per_sample_bytes: int
    source: str

    def total(self, batch: int) -> int:
        """Peak bytes for a batch of ``batch`` samples (sub-domains for the verifier)."""
        return self.fixed_bytes + batch * self.per_sample_bytes


class MemoryBudgetError(MemoryError):
    """Not even one sample fits the budget; the message names the estimate and the budget."""

    def __init__(self, what: str, estimate: MemoryEstimate, budget: int) -> None:
        super().__init__(too_large_reason(what, estimate, budget))
        self.estimate, self.budget = estimate, budget


def available_bytes() -> int:
    """Memory the system can give without swapping now (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def budget_bytes(share: float = BUDGET_SHARE) -> int:
    """The default memory budget of one step: ``share`` of the available memory."""
    return int(share * available_bytes())


def fit_batch(estimate: MemoryEstimate | int, budget: int, *, max_batch: int | None = None) -> int:
    """The largest batch whose estimate fits ``budget`` (0 when one sample does not fit).

    ``estimate`` is a ``MemoryEstimate`` or bytes per sample (no fixed part).
    """
    est = estimate if isinstance(estimate, MemoryEstimate) else MemoryEstimate(0, int(estimate), "per sample")
    room = budget - est.fixed_bytes
    if room < max(est.per_sample_bytes, 0) or room <= 0:
        return 0
    batch = room // est.per_sample_bytes if est.per_sample_bytes > 0 else max_batch or 2**31
    return int(min(batch, max_batch) if max_batch is not None else batch)


def check_fits(what: str, estimate: MemoryEstimate, budget: int | None = None, *, batch: int = 1) -> None:
    """Raise ``MemoryBudgetError`` when ``batch`` samples of ``what`` do not fit the budget."""
    limit = budget_bytes() if budget is None else budget
    if estimate.total(batch) > limit:
        raise MemoryBudgetError(what, estimate, limit)


def too_large_reason(what: str, estimate: MemoryEstimate, budget: int) -> str:
    """The sentence for an ``unknown`` / ``inconclusive`` result: estimate, budget and the fix."""
    return (
        f"{what} would need about {format_bytes(estimate.total(1))} for one sample "
        f"({estimate.source}), more than the memory budget of {format_bytes(budget)} (by default half "
        "of the available memory), so it was not run. Run it on a machine with more memory, or "
        "choose a smaller model or a cheaper method"
    )


# ---------------------------------------------------------------- ONNX activations


def activation_estimate(
    model: onnx.ModelProto | str | Path,
    *,
    mode: Literal["inference", "autograd"] = "inference",
    dtype_bytes: int | None = None,
) -> MemoryEstimate:
    """Peak activation memory of one forward pass (``"inference"``, ONNX Runtime) or of a forward
    and backward pass on the torch executor (``"autograd"``), from ONNX shape inference.

    The first axis of every graph input is the batch: the graph is inferred at batch 1 and 2 and
    the difference is the per-sample part. ``dtype_bytes`` overrides each tensor's element size
    (8 for the verifier's float64 copy). Weights are the fixed part.
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    one, _ = _graph_bytes(proto, 1, mode, dtype_bytes)
    two, unknown = _graph_bytes(proto, 2, mode, dtype_bytes)
    weights = sum(_tensor_bytes(t.data_type, list(t.dims), dtype_bytes) for t in proto.graph.initializer)
    per_sample = max(two - one, 0)
    kind = "live activations" if mode == "inference" else "activations kept for the backward pass"
    if unknown:
        kind += (
            f"; {unknown} tensor(s) of unknown shape counted as 1 per unknown axis (probe_estimate measures)"
        )
    return MemoryEstimate(weights + max(one - per_sample, 0), per_sample, f"ONNX shape inference, {kind}")


def _graph_bytes(model: onnx.ModelProto, batch: int, mode: str, dtype_bytes: int | None) -> tuple[int, int]:
    """Peak bytes of the (non-weight) tensors of the graph at ``batch`` in execution order, and the
    number of node outputs whose shape inference left an axis unknown."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [t for t in model.graph.initializer if _shape_like(t)]  # Reshape/Expand targets: values needed
    del copy.graph.initializer[:]  # weights: only their shapes matter (declared as inputs below)
    copy.graph.initializer.extend(kept)
    copy.graph.input.extend(_initializer_inputs(model, {t.name for t in kept}))
    del copy.graph.value_info[:]  # exporters' own (symbolic) shapes would stay as they are
    for value in [*copy.graph.input, *copy.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    sizes, unsure = _value_sizes(inferred, dtype_bytes)
    weights = {t.name for t in model.graph.initializer}
    nodes = list(model.graph.node)
    unknown = sum(1 for node in nodes for out in node.output if out and (out in unsure or out not in sizes))
    if mode == "autograd":
        produced = [sizes.get(out, 0) for node in nodes for out in node.output]
        return 2 * sum(produced) + 2 * max(produced, default=0), unknown  # kept, gradients, two in flight
    last_use = {name: len(nodes) for name in (o.name for o in model.graph.output)}
    for i, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = max(last_use.get(name, i), i)
    live = {v.name: sizes.get(v.name, 0) for v in model.graph.input if v.name not in weights}
    peak = sum(live.values())
    for i, node in enumerate(nodes):
        live.update({out: sizes.get(out, 0) for out in node.output if out})
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, i) <= i]:
            del live[name]
    return peak, unknown


def _shape_like(tensor: onnx.TensorProto) -> bool:
    """Integer or tiny constants: shape inference needs their values (shapes, axes, indices)."""
    from onnx import TensorProto

    integer = tensor.data_type in (TensorProto.INT64, TensorProto.INT32)
    return integer or math.prod(tensor.dims) <= 16


def _initializer_inputs(model: onnx.ModelProto, skip: set[str]) -> list[onnx.ValueInfoProto]:
    from onnx import helper

    declared = {v.name for v in model.graph.input} | skip
    return [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
        if t.name not in declared
    ]


def _value_sizes(model: onnx.ModelProto, dtype_bytes: int | None) -> tuple[dict[str, int], set[str]]:
    """Bytes of every value shape inference typed, and the names with an unknown axis (or rank)."""
    out: dict[str, int] = {}
    unsure: set[str] = set()
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        if not tensor.HasField("shape") or any(not d.HasField("dim_value") for d in tensor.shape.dim):
            unsure.add(value.name)
        out[value.name] = _tensor_bytes(tensor.elem_type, dims, dtype_bytes)
    return out, unsure


def _tensor_bytes(elem_type: int, dims: Sequence[int], dtype_bytes: int | None) -> int:
    return math.prod(max(int(d), 1) for d in dims) * (dtype_bytes or _ELEM_BYTES.get(elem_type, 4))


# ---------------------------------------------------------------- measured probe


def peak_rss_during(fn: Callable[[], object]) -> int:
    """Bytes the resident set grew to above its level before ``fn()`` ran (peak, not final).

    Uses the kernel's high-water mark (reset through ``/proc/self/clear_refs``); where that is not
    allowed, samples the resident size every millisecond. Measure in a fresh process
    (``run_isolated``) for a clean figure: memory freed earlier in this one is reused unseen.
    """
    import psutil

    proc = psutil.Process()
    before = int(proc.memory_info().rss)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _sampled_peak(fn, proc, before)
    fn()
    return max(_high_water_mark() - before, 0)


def _high_water_mark() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _sampled_peak(fn: Callable[[], object], proc: object, before: int) -> int:
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak[0] = max(peak[0], int(proc.memory_info().rss))  # type: ignore[attr-defined]

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        fn()
    finally:
        done.set()
        watcher.join()
    return max(peak[0] - before, 0)


def probe_estimate(
    run_batch: Callable[[int], object], *, batches: tuple[int, int] = (1, 8)
) -> MemoryEstimate:
    """Measure the peak memory of ``run_batch(b)`` at two batch sizes and extrapolate linearly."""
    small, large = batches
    first = peak_rss_during(lambda: run_batch(small))
    second = peak_rss_during(lambda: run_batch(large))
    per_sample = max(second - first, 0) // max(large - small, 1)
    return MemoryEstimate(
        max(first - small * per_sample, 0), per_sample, f"measured at batches {small} and {large}"
    )


# ---------------------------------------------------------------- the verifier's linear bounds


class BoundLayer(Protocol):
    """What ``crown_estimate`` reads of a ``formal.layers.Layer``."""

    n_in: int
    n_out: int
    nonlinear: bool


def crown_layer_bytes(layers: Sequence[BoundLayer], k: int, rows: int, *, dtype_bytes: int = 8) -> int:
    """Peak bytes of one backward CROWN pass of ``rows`` objective rows (2 per neuron bounded, lower
    and upper, summed over the sub-domains of the batch) on the input of layer ``k`` (``k ==
    len(layers)``: the network output): the objective matrix stays alive while the coefficients
    travel back to the input through layers ``k-1 .. 0``."""
    if rows <= 0:
        return 0
    width = layers[k].n_in if k < len(layers) else (layers[-1].n_out if layers else 0)
    widest = max((_backward_width(layer) for layer in layers[:k]), default=0)
    return dtype_bytes * rows * (width + widest)


def _backward_width(layer: BoundLayer) -> int:
    """Values per row held while the coefficients pass backward through ``layer``."""
    if layer.nonlinear:
        return ACTIVATION_COPIES * layer.n_in
    terms = getattr(getattr(layer, "idx", None), "shape", (0, 1))[1]  # Select: one product per term
    return layer.n_out * (1 + int(terms)) + layer.n_in if terms > 1 else layer.n_out + layer.n_in


def crown_estimate(
    layers: Sequence[BoundLayer],
    *,
    outputs: int = 9,
    unstable: Mapping[int, int] | None = None,
    dtype_bytes: int = 8,
) -> MemoryEstimate:
    """Peak bytes of CROWN (``formal.bounds.crown(method="crown")``) per sub-domain.

    For each nonlinear layer whose input bounds need CROWN (all but those after at most one
    non-diagonal affine layer), the rows bounded are every neuron for narrow layers (up to
    ``ALL_ROWS_UP_TO``) and the unstable ones otherwise: ``unstable[k]`` when known, else every neuron
    (worst case, before any bound is known). ``outputs``: rows of the final objective.
    """
    worst, where = 0, "final objective"
    for k, layer in enumerate(layers):
        if not layer.nonlinear or _ibp_exact(layers, k):
            continue
        width = layer.n_in - int(getattr(layer, "keep", 0))
        rows = width if width <= ALL_ROWS_UP_TO or unstable is None else min(unstable.get(k, width), width)
        need = crown_layer_bytes(layers, k, 2 * rows, dtype_bytes=dtype_bytes)
        if need > worst:
            worst, where = need, f"layer {k}: {rows} rows x {layer.n_in} values"
    final = crown_layer_bytes(layers, len(layers), outputs, dtype_bytes=dtype_bytes)
    if final > worst:
        worst, where = final, f"the final objective ({outputs} rows)"
    shown = "worst case, every neuron unstable" if unstable is None else "unstable neurons as bounded"
    return MemoryEstimate(0, worst, f"CROWN coefficient matrices at {where}, {shown}")


def _ibp_exact(layers: Sequence[BoundLayer], k: int) -> bool:
    """Mirror of ``bounds._only_affine_before``: IBP is exact, so CROWN is not run for layer ``k``."""
    before = layers[:k]
    dense = sum(1 for layer in before if not layer.nonlinear and type(layer).__name__ != "Diag")
    return dense <= 1 and not any(layer.nonlinear for layer in before)


__all__ = [
    "BUDGET_SHARE",
    "MemoryBudgetError",
    "MemoryEstimate",
    "activation_estimate",
    "available_bytes",
    "budget_bytes",
    "check_fits",
    "crown_estimate",
    "crown_layer_bytes",
    "fit_batch",
    "peak_rss_during",
    "probe_estimate",
    "too_large_reason",
]
