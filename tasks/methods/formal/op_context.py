"""What a bound operator sees (``OpContext``), its error type, and the generic affine probe.

Shared by ``ops`` (the op map and graph walk) and the modules adding bound operators to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnassay.tasks.engine.onnx_torch import Node, RunContext, handler_for
from nnassay.tasks.methods.formal.layers import Dense, Layer

Tensor = torch.Tensor
MAX_PROBE_ENTRIES = 30_000_000  # largest dense matrix built by probing a generic affine op
PROBE_CHUNK_BYTES = 64 * 2**20  # basis vectors and their images sent through the op at once


Layout = tuple[int, int, int]  # (axis, outer, inner): that axis holds outer x batch x inner values
STANDARD: Layout = (0, 1, 1)


def layout_of(v2: Any, v3: Any, v1: Any) -> Layout | None:
    """The batch layout of a tensor traced at batch 2 (``v2``), 3 (``v3``) and on sample 0 alone
    (``v1``): the axis whose size follows the batch, and how the batch is nested in it (an axis
    ``T * B`` from a reshape of (T, B, D) has the batch inside, ``B * heads`` outside). None when unclear."""
    if not all(isinstance(v, Tensor) for v in (v1, v2, v3)) or not v1.dim() == v2.dim() == v3.dim():
        return None
    changed = [a for a in range(v2.dim()) if v2.shape[a] != v3.shape[a]]
    if len(changed) != 1:
        return None
    a = changed[0]
    m = v2.shape[a] // 2
    if v2.shape[a] != 2 * m or v3.shape[a] != 3 * m or v1.shape[a] != m or m == 0:
        return None
    for outer in (o for o in range(1, m + 1) if m % o == 0):
        lay = (a, outer, m // outer)
        if torch.allclose(first_sample(v2, lay).double(), v1.double(), rtol=1e-9, atol=1e-12):
            return lay
    return None


def sample_shape(v: Tensor, layout: Layout) -> tuple[int, ...]:
    """Per-sample shape: the batch axis dropped (standard layout) or without the batch's share."""
    if layout == STANDARD:
        return tuple(v.shape[1:])
    a, outer, inner = layout
    return (*v.shape[:a], outer * inner, *v.shape[a + 1 :])


def first_sample(v: Tensor, layout: Layout) -> Tensor:
    """Sample 0 of a tensor traced at batch 2, in its per-sample shape."""
    if layout == STANDARD:
        return v[0]
    a, outer, inner = layout
    split = v.reshape(*v.shape[:a], outer, 2, inner, *v.shape[a + 1 :]).select(a + 1, 0)
    return split.reshape(*v.shape[:a], outer * inner, *v.shape[a + 1 :])


def to_full(x: Tensor, shape: tuple[int, ...], layout: Layout) -> Tensor:
    """Flat samples (N, n) as the graph's tensor with the batch where ``layout`` says."""
    if layout == STANDARD:
        return x.reshape(x.shape[0], *shape)
    a, outer, inner = layout
    n = x.shape[0]
    split = x.reshape(n, *shape[:a], outer, inner, *shape[a + 1 :]).movedim(0, a + 1)
    return split.reshape(*shape[:a], outer * n * inner, *shape[a + 1 :])


def to_flat(out: Tensor, n: int, layout: Layout) -> Tensor:
    """The graph's tensor (batch where ``layout`` says) as flat samples (N, n_out)."""
    if layout == STANDARD:
        return out.reshape(n, -1)
    a, outer, inner = layout
    split = out.reshape(*out.shape[:a], outer, n, inner, *out.shape[a + 1 :])
    return split.movedim(a + 1, 0).reshape(n, -1)


@dataclass
class OpContext:
    """What a bound operator sees: its node, constant inputs (None for the live one), shapes."""

    node: Node
    consts: list[Any]
    live_index: int
    in_shape: tuple[int, ...]  # per sample, batch axis dropped
    out_shape: tuple[int, ...]
    is_last: bool
    output_index: int = 0  # which output of the node is bounded (LinearClassifier: 1, the scores)
    tail_dropped: bool = False  # an order-keeping final op (Softmax, logistic) was dropped before this one
    dropped_tail: bool = False  # set by the op when it drops itself as such a final op
    batch_consts: tuple[int, ...] = ()  # inputs that are constants with a batch axis (Expand to the batch)
    batch_ints: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # shapes at batch 2 and 3
    in_layout: Layout = STANDARD  # where the batch sits in the live input and the output
    out_layout: Layout = STANDARD

    @property
    def axis_offset(self) -> int:
        """Full-rank axis minus per-sample axis: 1 when the batch axis was dropped, else 0."""
        return 1 if self.in_layout == STANDARD else 0

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    def apply(self, x: Tensor) -> Tensor:
        """Run the ONNX op on a batch of flat live inputs (constants filled in), flat output."""
        args = list(self.consts)
        for i in self.batch_consts:
            args[i] = args[i][:1].expand(x.shape[0], *args[i].shape[1:])
        for i, (two, three) in self.batch_ints.items():
            args[i] = two + (x.shape[0] - 2) * (three - two)
        args[self.live_index] = to_full(x, self.in_shape, self.in_layout)
        args = [a.double() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args]
        out = handler_for(self.node.op_type)(self.node, args, RunContext(x.shape[0], None))  # type: ignore[misc]
        out = out[self.output_index] if isinstance(out, tuple) else out
        return to_flat(out, x.shape[0], self.out_layout)


class BoundOpError(ValueError):
    """This node cannot be turned into IR layers; the message says why and what would work."""


BoundOp = Callable[[OpContext], list[Layer]]


def no_layer(ctx: OpContext) -> list[Layer]:
    return []  # row-major order of the sample is unchanged: nothing to do on flat vectors


def probe_bytes(n_in: int, n_out: int, chunk: int) -> int:
    """Bytes ``probe_affine`` allocates: the dense matrix and its absolute value (``Dense``), plus per
    chunk the basis vectors and their images."""
    return 8 * (2 * n_in * n_out + chunk * (n_in + 2 * n_out))


def probe_affine(ctx: OpContext) -> list[Layer]:
    """Any affine op as a dense layer: ``b = f(0)``, column ``i`` of ``W`` = ``f(e_i) - f(0)``.

    The basis vectors go through the op ``PROBE_CHUNK_BYTES`` at a time (never the whole identity
    matrix); the matrix must stay within ``MAX_PROBE_ENTRIES`` and, with a chunk, the memory budget.
    """
    from nnassay.tasks.engine.isolation import format_bytes
    from nnassay.tasks.engine.memory import budget_bytes

    n_in, n_out = ctx.n_in, ctx.n_out
    chunk = max(1, min(n_in, PROBE_CHUNK_BYTES // (8 * (n_in + 2 * n_out))))
    if n_in * n_out > MAX_PROBE_ENTRIES:
        raise BoundOpError(
            f"{ctx.node.op_type} as a dense {n_out}x{n_in} matrix is too large (limit {MAX_PROBE_ENTRIES} "
            "entries); it was not probed"
        )
    need, budget = probe_bytes(n_in, n_out, chunk), budget_bytes()
    if need > budget:
        raise BoundOpError(
            f"{ctx.node.op_type} as a dense {n_out}x{n_in} matrix would need about {format_bytes(need)}, "
            f"more than the memory budget of {format_bytes(budget)}; it was not probed"
        )
    weight = torch.empty(n_out, n_in, dtype=torch.float64)
    with torch.no_grad():
        zero = ctx.apply(torch.zeros(1, n_in, dtype=torch.float64))[0]
        for j in range(0, n_in, chunk):
            k = min(chunk, n_in - j)
            basis = torch.zeros(k, n_in, dtype=torch.float64)
            basis[torch.arange(k), torch.arange(j, j + k)] = 1.0
            weight[:, j : j + k] = (ctx.apply(basis) - zero).T
    return [Dense(weight, zero)]
