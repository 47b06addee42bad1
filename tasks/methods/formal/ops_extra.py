"""Bound operators for the ops real exporters emit beyond plain CNNs (torch opsets 13-20, skl2onnx).

Single computed input: smooth activations (``relax_smooth``), HardSigmoid (exact, as a clip),
PRelu, reductions and resizing (affine probes), ReduceMax (a max-pool), Softmax, Layer- and
InstanceNormalization inside the network (``relax_attention``), Max/Min with a constant (exact,
ReLUs), and the numeric ``ai.onnx.ml`` ops. Ops on two computed inputs are in ``ops_combine``.
"""

from __future__ import annotations

import math

import torch

from nnassay.tasks.methods.formal.layers import (
    Activation,
    Dense,
    Diag,
    Layer,
    MaxPool,
    PRelu,
    Relu,
    Select,
    Sigmoid,
)
from nnassay.tasks.methods.formal.op_context import (
    BoundOp,
    BoundOpError,
    OpContext,
    no_layer,
    probe_affine,
)
from nnassay.tasks.methods.formal.relax_attention import ScaleNorm, SoftmaxMap
from nnassay.tasks.methods.formal.relax_smooth import (
    Elu,
    Erf,
    Exp,
    Gelu,
    HardSwish,
    Log,
    Reciprocal,
    Softplus,
    Sqrt,
    Square,
)

Tensor = torch.Tensor
ML = "ai.onnx.ml:"
FLOAT_TYPES = (1, 10, 11, 16)  # ONNX float, float16, double, bfloat16


def clip_layers(n: int, low: float, high: float) -> list[Layer]:
    """``clip(x, a, b) = b - relu((b - a) - relu(x - a))``: exact with two ReLU layers."""
    ones = torch.ones(n, dtype=torch.float64)
    if math.isinf(low) and math.isinf(high):
        return []
    if math.isinf(high):
        return [Diag(ones, -low * ones), Relu(n), Diag(ones, low * ones)]
    if math.isinf(low):
        return [Diag(-ones, high * ones), Relu(n), Diag(-ones, high * ones)]
    return [
        Diag(ones, -low * ones),
        Relu(n),
        Diag(-ones, (high - low) * ones),
        Relu(n),
        Diag(-ones, high * ones),
    ]


def _hard_sigmoid(ctx: OpContext) -> list[Layer]:
    alpha, beta = float(ctx.node.attr("alpha", 0.2)), float(ctx.node.attr("beta", 0.5))
    ones = torch.ones(ctx.n_in, dtype=torch.float64)
    return [Diag(alpha * ones, beta * ones), *clip_layers(ctx.n_in, 0.0, 1.0)]


def _activation(make: type[Activation]) -> BoundOp:
    def op(ctx: OpContext) -> list[Layer]:
        return [make(ctx.n_in)]

    op.__name__ = f"_bound_{make.__name__}"
    return op


def _gelu(ctx: OpContext) -> list[Layer]:
    return [Gelu(ctx.n_in, str(ctx.node.attr("approximate", "none")))]


def _elu(ctx: OpContext) -> list[Layer]:
    return [Elu(ctx.n_in, float(ctx.node.attr("alpha", 1.0)))]


def _selu(ctx: OpContext) -> list[Layer]:
    alpha = float(ctx.node.attr("alpha", 1.67326319217681884765625))
    return [Elu(ctx.n_in, alpha, float(ctx.node.attr("gamma", 1.05070102214813232421875)))]


def _softplus(ctx: OpContext) -> list[Layer]:
    return [Softplus(ctx.n_in)]


def _pow(ctx: OpContext) -> list[Layer]:
    if ctx.live_index != 0:
        raise BoundOpError("a power with a computed exponent is not supported")
    exponent = ctx.consts[1]
    value = float(exponent.reshape(-1)[0]) if exponent.numel() else math.nan
    if not bool((exponent == value).all()) or value not in (0.5, 1.0, 2.0):
        raise BoundOpError(f"exponent {exponent.tolist()} is not supported; expected 0.5, 1 or 2")
    if ctx.in_shape != ctx.out_shape:
        raise BoundOpError("a power that broadcasts its base is not supported")
    if value == 1.0:
        return []
    return [Sqrt(ctx.n_in)] if value == 0.5 else [Square(ctx.n_in)]


def _groups(shape: tuple[int, ...], axes: list[int]) -> Tensor:
    """Flat positions of a tensor of ``shape`` grouped by the other axes: (groups, prod of ``axes``)."""
    axes = sorted(a % len(shape) for a in axes)
    idx = torch.arange(math.prod(shape)).reshape(shape)
    rest = [a for a in range(len(shape)) if a not in axes]
    return idx.permute(*rest, *axes).reshape(-1, math.prod(shape[a] for a in axes))


def _axes(ctx: OpContext) -> list[int]:
    """Reduction axes of a Reduce* node, per sample (the batch axis must not be reduced)."""
    node, rank, off = ctx.node, len(ctx.in_shape) + ctx.axis_offset, ctx.axis_offset
    axes = node.attr("axes")
    if axes is None and len(ctx.consts) > 1 and ctx.consts[1] is not None:
        axes = [int(a) for a in ctx.consts[1].reshape(-1).tolist()]
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return []
        axes = list(range(1, rank))
    axes = [a % rank for a in axes]
    if ctx.in_layout[0] in axes:
        raise BoundOpError("a reduction over the batch axis is not supported")
    return [a - off for a in axes]


def _reduce_max(ctx: OpContext) -> list[Layer]:
    axes = _axes(ctx)
    if not axes:
        return []
    pool = MaxPool(_groups(ctx.in_shape, axes), ctx.n_in)
    if ctx.node.op_type == "ReduceMax":
        return [pool]
    minus = -torch.ones(ctx.n_in, dtype=torch.float64)
    return [Diag(minus, 0 * minus), pool, Diag(minus[: pool.n_out], 0 * minus[: pool.n_out])]


def _softmax_inside(ctx: OpContext) -> list[Layer]:
    """A final Softmax is dropped (argmax properties, see ``Network.output_softmax``); inside: bounds."""
    if ctx.is_last:
        ctx.dropped_tail = True
        return []
    rank = len(ctx.in_shape) + ctx.axis_offset
    axis = int(ctx.node.attr("axis", -1 if ctx.node.opset >= 13 else 1)) % rank
    if axis == ctx.in_layout[0]:
        raise BoundOpError("Softmax over the batch axis is not supported")
    if ctx.node.opset < 13:
        if not ctx.axis_offset:
            raise BoundOpError("Softmax (opset < 13) with the batch axis not first is not supported")
        return [SoftmaxMap(0, torch.arange(ctx.n_in).reshape(-1, math.prod(ctx.in_shape[axis - 1 :])))]
    return [SoftmaxMap(0, _groups(ctx.in_shape, [axis - ctx.axis_offset]))]


def _normalise(ctx: OpContext, groups: Tensor, scale: Tensor, bias: Tensor) -> list[Layer]:
    """Centre each group (exact, a ``Select``), divide by its root mean square (``ScaleNorm``), then
    ``scale * y + bias`` (``scale`` and ``bias`` hold one value per flat input)."""
    d = groups.shape[1]
    idx = torch.zeros(ctx.n_in, d + 1, dtype=torch.long)
    weight = torch.full((ctx.n_in, d + 1), -1.0 / d, dtype=torch.float64)
    idx[groups.reshape(-1), 0] = groups.reshape(-1)
    idx[groups.reshape(-1), 1:] = groups.repeat_interleave(d, 0)
    weight[:, 0] = 1.0
    centre = Select(idx, weight, torch.zeros(ctx.n_in, dtype=torch.float64), ctx.n_in)
    norm = ScaleNorm(0, groups, 1.0 / d, float(ctx.node.attr("epsilon", 1e-5)))
    return [centre, norm, Diag(scale, bias)]


def _layer_normalization(ctx: OpContext) -> list[Layer]:
    """Normalisation over the trailing axes from ``axis``, with an elementwise scale and bias."""
    if ctx.live_index != 0:
        raise BoundOpError("LayerNormalization with a computed scale or bias is not supported")
    rank, off = len(ctx.in_shape) + ctx.axis_offset, ctx.axis_offset
    axis = int(ctx.node.attr("axis", -1)) % rank
    if axis <= ctx.in_layout[0]:
        raise BoundOpError("LayerNormalization over the batch axis is not supported")
    groups = _groups(ctx.in_shape, list(range(axis - off, len(ctx.in_shape))))
    d = groups.shape[1]
    scale = (
        torch.ones(d, dtype=torch.float64) if ctx.consts[1] is None else ctx.consts[1].double().reshape(-1)
    )
    bias = torch.zeros(d, dtype=torch.float64)
    if len(ctx.consts) > 2 and ctx.consts[2] is not None:
        bias = ctx.consts[2].double().reshape(-1)
    s, t = torch.empty(ctx.n_in, dtype=torch.float64), torch.empty(ctx.n_in, dtype=torch.float64)
    s[groups.reshape(-1)] = scale.expand(d).repeat(groups.shape[0])
    t[groups.reshape(-1)] = bias.expand(d).repeat(groups.shape[0])
    return _normalise(ctx, groups, s, t)


def _instance_normalization(ctx: OpContext) -> list[Layer]:
    """Normalisation of each channel over its spatial positions, with a per-channel scale and bias
    (what torch's InstanceNorm and GroupNorm export to)."""
    if ctx.live_index != 0 or ctx.in_layout[0] != 0 or len(ctx.in_shape) < 2:
        raise BoundOpError("InstanceNormalization needs a constant scale and bias and an (N, C, ...) input")
    channels, spatial = ctx.in_shape[0], math.prod(ctx.in_shape[1:])
    groups = torch.arange(ctx.n_in).reshape(channels, spatial)
    scale = ctx.consts[1].double().reshape(-1).repeat_interleave(spatial)
    bias = ctx.consts[2].double().reshape(-1).repeat_interleave(spatial)
    return _normalise(ctx, groups, scale, bias)


def _prelu(ctx: OpContext) -> list[Layer]:
    """PRelu with a constant slope, broadcast to the input (per channel from torch)."""
    if ctx.live_index != 0 or ctx.in_layout[0] != 0:
        raise BoundOpError("PRelu with a computed slope is not supported")
    slope = torch.broadcast_to(ctx.consts[1].double(), (1, *ctx.in_shape)).reshape(-1)
    return [PRelu(slope)]


def _max_min_const(ctx: OpContext) -> list[Layer]:
    """``max(x, c) = c + relu(x - c)`` and ``min(x, c) = c - relu(c - x)`` for a constant ``c``: exact."""
    others = [cst for i, cst in enumerate(ctx.consts) if i != ctx.live_index]
    if len(others) != 1 or ctx.in_shape != ctx.out_shape or not isinstance(others[0], Tensor):
        raise BoundOpError("Max/Min of a computed tensor with exactly one constant of its shape is supported")
    try:
        c = torch.broadcast_to(others[0].double(), (1, *ctx.in_shape)).reshape(-1)
    except RuntimeError as exc:
        raise BoundOpError("the constant does not broadcast to the computed tensor") from exc
    ones = torch.ones(ctx.n_in, dtype=torch.float64)
    if ctx.node.op_type == "Max":
        return [Diag(ones, -c), Relu(ctx.n_in), Diag(ones, c)]
    return [Diag(-ones, c), Relu(ctx.n_in), Diag(-ones, c)]


def _cast(ctx: OpContext) -> list[Layer]:
    if int(ctx.node.attr("to", 1)) not in FLOAT_TYPES:
        raise BoundOpError("a cast of a computed tensor to a non-float type is not supported")
    return []


def _ml_normalizer(ctx: OpContext) -> list[Layer]:
    norm = str(ctx.node.attr("norm", "MAX"))
    if norm == "L2":
        return [ScaleNorm(0, torch.arange(ctx.n_in).reshape(-1, ctx.in_shape[-1]), 1.0, 0.0)]
    if ctx.is_last and ctx.tail_dropped:  # positive inputs (a dropped Softmax/logistic): order kept
        return []
    raise BoundOpError(f"Normalizer norm={norm} is supported only at the end after Softmax or logistic")


def _ml_linear_classifier(ctx: OpContext) -> list[Layer]:
    """The scores output: affine with ``post_transform`` NONE; logits when Softmax/logistic ends the graph."""
    node = ctx.node
    how = str(node.attr("post_transform", "NONE"))
    if ctx.output_index != 1:
        raise BoundOpError("only the scores output of LinearClassifier can be bounded")
    if how == "NONE":
        return probe_affine(ctx)
    if how not in ("SOFTMAX", "LOGISTIC"):
        raise BoundOpError(f"post_transform {how} is not supported; expected NONE, SOFTMAX or LOGISTIC")
    n_feat = ctx.n_in
    w = torch.tensor(list(node.attr("coefficients")), dtype=torch.float64).reshape(-1, n_feat)
    intercepts = node.attr("intercepts")
    b = (
        torch.tensor(list(intercepts), dtype=torch.float64)
        if intercepts
        else torch.zeros(w.shape[0], dtype=torch.float64)
    )
    if w.shape[0] == 1 and ctx.n_out == 2:  # binary [1 - p, p] with p = sigmoid(s): same order as [0, s]
        w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros(1, dtype=torch.float64), b])
    if ctx.is_last:
        ctx.dropped_tail = True
        return [Dense(w, b)]
    if how == "LOGISTIC" and w.shape[0] == ctx.n_out:
        return [Dense(w, b), Sigmoid(ctx.n_out)]
    if how == "SOFTMAX" and w.shape[0] == ctx.n_out:
        return [Dense(w, b), SoftmaxMap(0, torch.arange(ctx.n_out).reshape(1, -1))]
    raise BoundOpError("a binary LinearClassifier with Softmax/logistic is supported only at the end")


def _ml_imputer(ctx: OpContext) -> list[Layer]:
    replaced = float(ctx.node.attr("replaced_value_float", math.nan))
    if math.isnan(replaced):
        return []  # boxes hold no NaN, so nothing is imputed
    raise BoundOpError("Imputer replacing a number (not NaN) on a computed tensor is not supported")


EXTRA_BOUND_OPS: dict[str, BoundOp] = {
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _activation(HardSwish),
    "Erf": _activation(Erf),
    "Gelu": _gelu,
    "Exp": _activation(Exp),
    "Log": _activation(Log),
    "Sqrt": _activation(Sqrt),
    "Reciprocal": _activation(Reciprocal),
    "Softplus": _softplus,
    "Elu": _elu,
    "Selu": _selu,
    "Pow": _pow,
    "Cast": _cast,
    "Max": _max_min_const,
    "Min": _max_min_const,
    "ReduceMean": probe_affine,
    "ReduceSum": probe_affine,
    "ReduceMax": _reduce_max,
    "ReduceMin": _reduce_max,
    "Resize": probe_affine,
    "Upsample": probe_affine,
    "Expand": probe_affine,
    "Tile": probe_affine,
    "Mean": probe_affine,
    "Sum": probe_affine,
    "Where": probe_affine,
    "Softmax": _softmax_inside,
    "LayerNormalization": _layer_normalization,
    "InstanceNormalization": _instance_normalization,
    "PRelu": _prelu,
    "Split": no_layer,  # the graph walk maps its outputs (``split_layers``)
    f"{ML}Scaler": probe_affine,
    f"{ML}ArrayFeatureExtractor": probe_affine,
    f"{ML}Normalizer": _ml_normalizer,
    f"{ML}LinearClassifier": _ml_linear_classifier,
    f"{ML}Imputer": _ml_imputer,
}
