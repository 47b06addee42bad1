"""Executor handlers for the numeric ``ai.onnx.ml`` ops that scikit-learn converters (skl2onnx) emit on
the class-score path: scaling, normalisation, imputation, linear classifiers, one-hot encoding and
ZipMap (read as the [N, C] score tensor it wraps, columns in class order).

Tree ensembles have no handler: they are not differentiable, and such models are assessed with
black-box methods on ONNX Runtime instead. Definitions: onnx.ai/onnx/operators (ai.onnx.ml domain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nnassay.tasks.engine.onnx_torch import Node, RunContext

Tensor = torch.Tensor
DOMAIN = "ai.onnx.ml"


def _floats(node: Node, key: str) -> Tensor | None:
    values = node.attr(key)
    return None if values is None or len(values) == 0 else torch.tensor(list(values), dtype=torch.float32)


def _scaler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0].to(torch.float32) if not xs[0].is_floating_point() else xs[0]
    offset, scale = _floats(node, "offset"), _floats(node, "scale")
    out = x - offset.to(x.dtype) if offset is not None else x
    return out * scale.to(x.dtype) if scale is not None else out


def _normalizer(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, norm = xs[0], node.attr("norm", "MAX")
    if norm == "MAX":
        return x / torch.amax(x, dim=-1, keepdim=True)
    if norm == "L1":
        return x / torch.sum(torch.abs(x), dim=-1, keepdim=True)
    return x / torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True))


def _post_transform(scores: Tensor, how: str) -> Tensor:
    if how == "SOFTMAX":
        return torch.softmax(scores, dim=-1)
    if how == "LOGISTIC":
        return torch.sigmoid(scores)
    if how == "SOFTMAX_ZERO":
        exp = torch.where(
            scores == 0, torch.zeros_like(scores), torch.exp(scores - scores.amax(-1, keepdim=True))
        )
        return exp / exp.sum(-1, keepdim=True).clamp_min(1e-30)
    if how == "NONE":
        return scores
    raise ValueError(
        f"post_transform {how!r} is not supported; expected NONE, SOFTMAX, LOGISTIC or SOFTMAX_ZERO"
    )


def _labels(node: Node, index: Tensor) -> Tensor:
    ints = node.attr("classlabels_ints")
    return torch.tensor(list(ints), dtype=torch.int64)[index] if ints else index


def _linear_classifier(node: Node, xs: list[Any], ctx: RunContext) -> tuple[Tensor, Tensor]:
    x = xs[0].to(torch.float32) if not xs[0].is_floating_point() else xs[0]
    coef = _floats(node, "coefficients")
    intercepts = _floats(node, "intercepts")
    assert coef is not None, "LinearClassifier without coefficients"
    w = coef.to(x.dtype).reshape(-1, x.shape[-1])
    scores = x @ w.T + (intercepts.to(x.dtype) if intercepts is not None else 0.0)
    n_labels = len(node.attr("classlabels_ints") or node.attr("classlabels_strings") or [])
    if w.shape[0] == 1 and n_labels == 2:  # binary: one score row stands for the positive class
        how = node.attr("post_transform", "NONE")
        positive = _post_transform(scores, how) if how != "SOFTMAX" else torch.sigmoid(scores)
        scores = torch.cat([1.0 - positive, positive], dim=-1)  # as ONNX Runtime, NONE included
    else:
        scores = _post_transform(scores, node.attr("post_transform", "NONE"))
    return _labels(node, torch.argmax(scores, dim=-1)), scores


def _array_feature_extractor(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.index_select(xs[0], -1 % xs[0].dim(), xs[1].reshape(-1).to(torch.int64))


def _imputer(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    values = _floats(node, "imputed_value_floats")
    if values is None:
        raise ValueError("Imputer without imputed_value_floats (integer imputation) is not supported")
    replaced = float(node.attr("replaced_value_float", float("nan")))
    missing = torch.isnan(x) if replaced != replaced else x == replaced
    return torch.where(missing, values.to(x.dtype).expand_as(x), x)


def _one_hot_encoder(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    cats = node.attr("cats_int64s")
    if not cats:
        raise ValueError("OneHotEncoder over strings is not supported by the torch executor")
    return (xs[0].to(torch.int64).unsqueeze(-1) == torch.tensor(list(cats))).to(torch.float32)


def _binarizer(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return (xs[0] > float(node.attr("threshold", 0.0))).to(xs[0].dtype)


def _zip_map(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0]  # the [N, C] scores; ZipMap only names the columns by class label


HANDLERS: dict[str, Callable[[Node, list[Any], RunContext], Any]] = {
    f"{DOMAIN}:ArrayFeatureExtractor": _array_feature_extractor,
    f"{DOMAIN}:Binarizer": _binarizer,
    f"{DOMAIN}:Imputer": _imputer,
    f"{DOMAIN}:LinearClassifier": _linear_classifier,
    f"{DOMAIN}:Normalizer": _normalizer,
    f"{DOMAIN}:OneHotEncoder": _one_hot_encoder,
    f"{DOMAIN}:Scaler": _scaler,
    f"{DOMAIN}:ZipMap": _zip_map,
}
