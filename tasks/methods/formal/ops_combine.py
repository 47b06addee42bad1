"""Bound layers for ops that combine two computed tensors, and Split into several computed outputs.

Mul/MatMul/Div become McCormick products (``relax_attention.Bilinear``; Div through a reciprocal),
torch's exact GELU ``x * (1 + erf(x / sqrt 2))`` is fused into one GELU, Max/Min become max-pools.
Every combination is checked on the traced sample before it is used.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from nnassay.tasks.engine.onnx_torch import Node, RunContext, handler_for
from nnassay.tasks.methods.formal.layers import (
    Activation,
    Dense,
    Diag,
    Embedded,
    EmbeddedActivation,
    Layer,
    MaxPool,
    Select,
)
from nnassay.tasks.methods.formal.op_context import BoundOpError, Layout, first_sample
from nnassay.tasks.methods.formal.relax_attention import Bilinear, NonlinearMap
from nnassay.tasks.methods.formal.relax_smooth import Gelu, Reciprocal, Square

Tensor = torch.Tensor


class StateLike(Protocol):
    """The part of ``ops._State`` the combinations here use."""

    slots: list[tuple[str, int]]

    @property
    def size(self) -> int: ...

    @property
    def sizes(self) -> dict[str, int]: ...

    def route(self, keep: list[str], tail: list[str]) -> list[Layer]: ...


def _run(node: Node, args: list[Any]) -> Any:
    return handler_for(node.op_type)(node, args, RunContext(1, None))  # type: ignore[misc]


def split_layers(state: StateLike, node: Node, src: str, keep: list[str], env: dict[str, Any]) -> list[Layer]:
    """Split of a computed tensor: the state becomes the kept slots then every output, in order."""
    layers = state.route(keep, [src])
    head = state.size - state.sizes[src]
    base = env[src][:1]
    args = [env[name] if name and name != src else None for name in node.inputs]
    args[node.inputs.index(src)] = (torch.arange(base.numel(), dtype=torch.float64) + 1).reshape(base.shape)
    outs = _run(node, args)
    outs = list(outs) if isinstance(outs, tuple | list) else [outs]
    coded = torch.cat([o.reshape(-1) for o in outs]).round().long() - 1 + head
    idx = torch.cat([torch.arange(head), coded]).unsqueeze(1)
    ones = torch.ones(idx.shape, dtype=torch.float64)
    layers.append(Select(idx, ones, torch.zeros(idx.shape[0], dtype=torch.float64), state.size))
    state.slots = state.slots[:-1] + [(o, env[o].numel() // 2) for o in node.outputs if o]
    return layers


def _product_terms(node: Node, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Index pairs ``(p, q)`` (n_out, terms) of ``Mul`` (broadcast) or ``MatMul`` of per-sample shapes."""
    ia = torch.arange(math.prod(shape_a)).reshape(shape_a)
    ib = torch.arange(math.prod(shape_b)).reshape(shape_b)
    if node.op_type == "Mul":
        pa, pb = torch.broadcast_tensors(ia, ib)
        return pa.reshape(-1, 1), pb.reshape(-1, 1)
    if len(shape_a) < 2 or len(shape_b) < 2:
        raise BoundOpError("MatMul of computed vectors (rank 1 per sample) is not supported")
    pa, pb = torch.broadcast_tensors(ia.unsqueeze(-1), ib.unsqueeze(-3))  # (..., n, k, m)
    return pa.transpose(-1, -2).reshape(-1, shape_a[-1]), pb.transpose(-1, -2).reshape(-1, shape_a[-1])


def _gelu_source(node: Node, producers: dict[str, Node], env: dict[str, Any]) -> str | None:
    """``a`` when ``node`` is ``Mul(a, 1 + erf(a / sqrt 2))`` (torch's exact GELU before the 0.5)."""

    def const(name: str, value: float) -> bool:
        c = env.get(name)
        return isinstance(c, Tensor) and c.numel() == 1 and abs(float(c) - value) < 1e-6 * abs(value)

    for a, b in (node.inputs, node.inputs[::-1]):
        add = producers.get(b)
        if add is None or add.op_type != "Add":
            continue
        erf_out = next((x for x in add.inputs if not const(x, 1.0)), "")
        erf = producers.get(erf_out)
        if erf is None or erf.op_type != "Erf" or not all(const(x, 1.0) or x == erf_out for x in add.inputs):
            continue
        scale = producers.get(erf.inputs[0])
        if scale is None or scale.inputs[0] != a:
            continue
        if (scale.op_type == "Div" and const(scale.inputs[1], math.sqrt(2))) or (
            scale.op_type == "Mul" and const(scale.inputs[1], 1 / math.sqrt(2))
        ):
            return a
    return None


def combine_nonlinear(
    state: StateLike,
    node: Node,
    live_idx: list[int],
    keep: list[str],
    env: dict[str, Any],
    producers: dict[str, Node],
    layouts: dict[str, Layout],
) -> list[Layer]:
    """Layers for a nonlinear op on two computed tensors; the state becomes the kept slots, then the output.

    The layers are checked on the traced sample (they must reproduce the op's output exactly), so a
    broadcast or batch layout they would misread is reported instead of bounded.
    """
    out, op = node.outputs[0], node.op_type
    if len(live_idx) != 2 or op not in ("Mul", "MatMul", "Div", "Max", "Min"):
        raise BoundOpError(
            "only Add, Sub, Concat, Where, Mul, MatMul, Div, Max and Min may combine computed tensors"
        )
    a, b = (node.inputs[j] for j in live_idx)
    if any(layouts.get(name) is None for name in (a, b, out)):
        raise BoundOpError("mixes the batch axis")
    samples = {name: first_sample(env[name], layouts[name]) for name in (a, b, out)}
    size = samples[out].numel()
    gelu = _gelu_source(node, producers, env) if op == "Mul" else None
    if gelu is not None or (a == b and op == "Mul"):
        srcs = [gelu or a]
        if samples[a].shape != samples[b].shape:
            raise BoundOpError("a broadcasting product of a tensor with itself is not supported")
        two = torch.full((size,), 2.0, dtype=torch.float64)
        inner: list[Layer] = [Gelu(size), Diag(two, 0 * two)] if gelu else [Square(size)]
    else:
        srcs = [a, b]
        inner = _pair_layers(op, tuple(samples[a].shape), tuple(samples[b].shape), node, size)
    _check(inner, torch.cat([samples[n].reshape(-1) for n in srcs]), samples[out].reshape(-1))
    layers = state.route(keep, srcs)
    head = state.size - sum(state.sizes[n] for n in srcs)
    layers += [_embed_one(layer, head) for layer in inner]
    state.slots = state.slots[: len(keep)] + [(out, size)]
    return layers


def _check(layers: list[Layer], x: Tensor, expected: Tensor) -> None:
    y = x.double().unsqueeze(0)
    for layer in layers:
        y = layer.forward(y)
    if y.shape[1] != expected.numel() or not torch.allclose(y[0], expected.double(), rtol=1e-7, atol=1e-9):
        raise BoundOpError("the product does not reproduce the traced output (broadcast or batch layout)")


def _pair_layers(
    op: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...], node: Node, size: int
) -> list[Layer]:
    n_a, n_b = math.prod(shape_a), math.prod(shape_b)
    if op in ("Max", "Min"):
        p, q = _product_terms(Node(node.name, "Mul", node.inputs, node.outputs), shape_a, shape_b)
        pool = MaxPool(torch.cat([p, q + n_a], 1), n_a + n_b)
        if op == "Max":
            return [pool]
        neg_in, neg_out = -torch.ones(n_a + n_b, dtype=torch.float64), -torch.ones(size, dtype=torch.float64)
        return [Diag(neg_in, 0 * neg_in), pool, Diag(neg_out, 0 * neg_out)]
    p, q = _product_terms(
        Node(node.name, "Mul" if op == "Div" else op, node.inputs, node.outputs), shape_a, shape_b
    )
    product = Bilinear(0, n_a, n_b, p, q)
    if op == "Div":
        return [EmbeddedActivation(Reciprocal(n_b), n_a), product]
    return [product]


def _embed_one(layer: Layer, keep: int) -> Layer:
    """``layer`` on the state's last values, the first ``keep`` passing through."""
    if keep == 0:
        return layer
    if isinstance(layer, Diag | Dense | Select):
        return Embedded(layer, keep)
    if isinstance(layer, Activation):
        if isinstance(layer, EmbeddedActivation):
            return EmbeddedActivation(layer.inner, keep + layer.keep)
        return EmbeddedActivation(layer, keep)
    if isinstance(layer, NonlinearMap):
        return layer.embedded(keep)
    if isinstance(layer, MaxPool):
        head = torch.full((keep, layer.windows.shape[1]), -1, dtype=torch.long)
        head[:, 0] = torch.arange(keep)
        windows = torch.where(layer.windows >= 0, layer.windows + keep, layer.windows)
        return MaxPool(torch.cat([head, windows]), keep + layer.n_in)
    raise BoundOpError(f"{type(layer).__name__} cannot act on one branch of a graph")
