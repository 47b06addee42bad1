"""Executor handlers for the ops that common exporters emit beyond plain CNNs and MLPs.

Activations of mobile nets (HardSwish, HardSigmoid, ReLU6 as Clip), transformers (Erf/Gelu,
LayerNormalization and its decomposed form, Softmax and MatMul inside the network), the shape
arithmetic of dynamic exports (Where/Equal/Expand/Mod/Range on constants), and element-wise math.
Each handler follows the ONNX operator definition (onnx.ai/onnx/operators) for opsets 13 to 20.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812

if TYPE_CHECKING:
    from nnassay.tasks.engine.onnx_torch import Node, RunContext

Tensor = torch.Tensor


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0])

    return handler


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0], xs[1])

    return handler


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return handler


def _hard_sigmoid(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return torch.clamp(alpha * xs[0] + beta, 0.0, 1.0)


def _hard_swish(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0] * torch.clamp(xs[0] / 6.0 + 0.5, 0.0, 1.0)


def _gelu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return F.gelu(xs[0], approximate="tanh" if node.attr("approximate", "none") == "tanh" else "none")


def _elu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return F.elu(xs[0], alpha=float(node.attr("alpha", 1.0)))


def _selu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    return gamma * torch.where(xs[0] > 0, xs[0], alpha * (torch.exp(xs[0]) - 1.0))


def _pow(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    base, exponent = xs[0], xs[1]
    if exponent.numel() == 1 and float(exponent) == 2.0:
        return base * base  # exact and with a defined gradient at 0
    return torch.pow(base, exponent.to(base.dtype) if base.is_floating_point() else exponent)


def _where(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    cond, a, b = xs[0].to(torch.bool), xs[1], xs[2]
    if a.is_floating_point() != b.is_floating_point():
        dtype = a.dtype if a.is_floating_point() else b.dtype
        a, b = a.to(dtype), b.to(dtype)
    return torch.where(cond, a, b)


def _compare(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        a, b = xs[0], xs[1]
        if a.dtype != b.dtype:
            common = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(common), b.to(common)
        return fn(a, b)

    return handler


def _mod(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.fmod(xs[0], xs[1]) if node.attr("fmod", 0) else torch.remainder(xs[0], xs[1])


def _expand(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, shape = xs[0], [int(v) for v in xs[1].tolist()]
    rank = max(x.dim(), len(shape))
    target = [1] * (rank - len(shape)) + shape
    current = [1] * (rank - x.dim()) + list(x.shape)
    out = [c if t == 1 else t for c, t in zip(current, target, strict=True)]
    return x.reshape(current).expand(out)


def _range(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    start, limit, delta = (x.reshape(()) for x in xs[:3])
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _split(node: Node, xs: list[Any], ctx: RunContext) -> tuple[Tensor, ...]:
    x, axis = xs[0], int(node.attr("axis", 0))
    sizes = xs[1].tolist() if len(xs) > 1 and xs[1] is not None else node.attr("split")
    if sizes is None:
        parts = int(node.attr("num_outputs", len(node.outputs)))
        chunk = math.ceil(x.shape[axis] / parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    return tuple(torch.split(x, [int(s) for s in sizes], dim=axis))


def _tile(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0].repeat(*[int(v) for v in xs[1].tolist()])


def _reduce_axes(node: Node, xs: list[Any], x: Tensor) -> list[int] | None:
    if node.opset >= 18 or node.op_type == "ReduceSum" and node.opset >= 13:
        axes = xs[1].tolist() if len(xs) > 1 and xs[1] is not None and xs[1].numel() else None
    else:
        axes = node.attr("axes")
    if axes is None:
        return None if not node.attr("noop_with_empty_axes", 0) else []
    return [int(a) % x.dim() for a in axes]


def _reduce(
    fn: Callable[[Tensor, list[int], bool], Tensor],
) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        x, keep = xs[0], bool(node.attr("keepdims", 1))
        axes = _reduce_axes(node, xs, x)
        if axes == []:
            return x
        return fn(x, list(range(x.dim())) if axes is None else axes, keep)

    return handler


def _amax(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amax(x, dim=axes, keepdim=keep)


def _amin(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amin(x, dim=axes, keepdim=keep)


def _arg(fn: Callable[..., Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        x, axis, keep = xs[0], int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
        if node.attr("select_last_index", 0):
            flipped = fn(torch.flip(x, [axis]), dim=axis, keepdim=keep)
            return x.shape[axis] - 1 - flipped
        return fn(x, dim=axis, keepdim=keep)

    return handler


def _layer_normalization(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    axis = int(node.attr("axis", -1)) % x.dim()
    return F.layer_norm(x, list(x.shape[axis:]), scale, bias, eps=float(node.attr("epsilon", 1e-5)))


def _resize(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    mode = node.attr("mode", "nearest")
    sizes = xs[3] if len(xs) > 3 and xs[3] is not None and xs[3].numel() else None
    scales = xs[2] if len(xs) > 2 and xs[2] is not None and xs[2].numel() else None
    size = [int(s) for s in sizes.tolist()[2:]] if sizes is not None else None
    factor = [float(s) for s in scales.tolist()[2:]] if scales is not None and size is None else None
    torch_mode = {
        "nearest": "nearest",
        "linear": "bilinear" if x.dim() == 4 else "linear",
        "cubic": "bicubic",
    }[mode]
    align = node.attr("coordinate_transformation_mode", "half_pixel") == "align_corners"
    kwargs: dict[str, Any] = {} if torch_mode == "nearest" else {"align_corners": align}
    return F.interpolate(x, size=size, scale_factor=factor, mode=torch_mode, **kwargs)


def _bool_binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0].to(torch.bool), xs[1].to(torch.bool))

    return handler


def _mean(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return _variadic(torch.add)(node, xs, ctx) / len(xs)


HANDLERS: dict[str, Callable[[Node, list[Any], RunContext], Any]] = {
    "Abs": _unary(torch.abs),
    "And": _bool_binary(torch.logical_and),
    "ArgMax": _arg(torch.argmax),
    "ArgMin": _arg(torch.argmin),
    "Ceil": _unary(torch.ceil),
    "Elu": _elu,
    "Equal": _compare(torch.eq),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Expand": _expand,
    "Floor": _unary(torch.floor),
    "Gelu": _gelu,
    "Greater": _compare(torch.gt),
    "GreaterOrEqual": _compare(torch.ge),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "LayerNormalization": _layer_normalization,
    "Less": _compare(torch.lt),
    "LessOrEqual": _compare(torch.le),
    "Log": _unary(torch.log),
    "Max": _variadic(torch.maximum),
    "Mean": _mean,
    "Min": _variadic(torch.minimum),
    "Mod": _mod,
    "Not": _unary(torch.logical_not),
    "Or": _bool_binary(torch.logical_or),
    "Pow": _pow,
    "Range": _range,
    "Reciprocal": _unary(torch.reciprocal),
    "ReduceL2": _reduce(lambda x, a, k: torch.sqrt(torch.sum(x * x, dim=a, keepdim=k))),
    "ReduceLogSumExp": _reduce(lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k)),
    "ReduceMax": _reduce(_amax),
    "ReduceMean": _reduce(lambda x, a, k: torch.mean(x, dim=a, keepdim=k)),
    "ReduceMin": _reduce(_amin),
    "ReduceSum": _reduce(lambda x, a, k: torch.sum(x, dim=a, keepdim=k)),
    "ReduceSumSquare": _reduce(lambda x, a, k: torch.sum(x * x, dim=a, keepdim=k)),
    "Resize": _resize,
    "Selu": _selu,
    "Sign": _unary(torch.sign),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Split": _split,
    "Sqrt": _unary(torch.sqrt),
    "Sum": _variadic(torch.add),
    "Tile": _tile,
    "Where": _where,
    "Xor": _bool_binary(torch.logical_xor),
}
