"""Attributions of a decision to input features: gradients through the torch executor (Captum), or
occlusion / feature ablation on ONNX Runtime alone when the executor cannot run the model.

Every method attributes the *contrast score* ``logit[a] - logit[b]``: for a failure, ``a`` is the
class the model chose and ``b`` the true class; for a correct answer ``b`` is the runner-up. A
positive attribution pushed the decision towards ``a``. Arrays are in data space, shaped like the
samples (the model's layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from nnassay.schemas.explain import AttributionMethodName
from nnassay.schemas.goals import Layout
from nnassay.tasks.engine.onnx_torch import UnsupportedOpsError
from nnassay.tasks.errors import ModelError
from nnassay.tasks.methods.empirical.methods_whitebox import torch_threads  # one thread for small batches

GRADIENT_METHODS: tuple[AttributionMethodName, ...] = ("integrated_gradients", "saliency")
Engine = Literal["torch_executor", "onnx_runtime"]


class Scorer(Protocol):
    """What the black-box path needs of a model: data-space inputs to logits (``ModelRunner``)."""

    def logits(self, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray: ...


class Differentiable(Protocol):
    """A model that can also give its torch module (``ModelRunner.torch_module``)."""

    def torch_module(self) -> torch.nn.Module: ...


@dataclass(frozen=True)
class Units:
    """Groups of input elements explained, ranked and removed together: features or pixel patches."""

    masks: np.ndarray  # (n_units, *sample_shape) bool, each element in exactly one unit
    names: tuple[str, ...]

    def scores(self, attribution: np.ndarray) -> np.ndarray:
        """Per-unit attribution (sum over the unit's elements) for one sample."""
        flat = self.masks.reshape(len(self.masks), -1).astype(np.float64)
        return flat @ attribution.reshape(-1).astype(np.float64)

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Element-level array from per-unit values, each shared evenly by the unit's elements."""
        flat = self.masks.reshape(len(self.masks), -1).astype(np.float64)
        per_element = values / flat.sum(axis=1)
        return (per_element @ flat).reshape(self.masks.shape[1:])


def feature_units(n_features: int, names: tuple[str, ...] = (), shape: tuple[int, ...] = ()) -> Units:
    """One unit per tabular feature, named by column (or 'feature <i>'); ``shape``: the sample's shape
    when it is not a flat row (a sequence [T, F]: one unit per element, masks in that shape)."""
    labels = names if len(names) == n_features else tuple(f"feature {i}" for i in range(n_features))
    return Units(np.eye(n_features, dtype=bool).reshape(n_features, *(shape or (n_features,))), labels)


def spatial_axes(sample_shape: tuple[int, ...], layout: Layout) -> tuple[int, int]:
    """The (row, column) axes of one image sample in ``layout``."""
    if len(sample_shape) == 2:
        return 0, 1
    return (1, 2) if layout == Layout.NCHW else (0, 1)


def default_patch(height: int, width: int) -> int:
    """Patch side giving at most 8 x 8 regions, and at least 2 pixels unless the image is tiny."""
    return max(min(2, height, width), math.ceil(min(height, width) / 8))


def patch_units(sample_shape: tuple[int, ...], layout: Layout, patch: int | None = None) -> Units:
    """Square pixel regions (all channels together), named 'rows 0-1, cols 2-3'."""
    rows_axis, cols_axis = spatial_axes(sample_shape, layout)
    height, width = sample_shape[rows_axis], sample_shape[cols_axis]
    side = patch or default_patch(height, width)
    masks, names = [], []
    for top in range(0, height, side):
        for left in range(0, width, side):
            mask = np.zeros(sample_shape, dtype=bool)
            index: list[slice] = [slice(None)] * len(sample_shape)
            index[rows_axis], index[cols_axis] = slice(top, top + side), slice(left, left + side)
            mask[tuple(index)] = True
            masks.append(mask)
            bottom, right = min(top + side, height) - 1, min(left + side, width) - 1
            names.append(f"rows {top}-{bottom}, cols {left}-{right}")
    return Units(np.stack(masks), tuple(names))


def contrast_weights(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows of +1 at class a and -1 at class b: the weights of the contrast score on the logits."""
    weights = np.zeros((len(a), n_classes), np.float32)
    weights[np.arange(len(a)), a] += 1.0
    weights[np.arange(len(b)), b] -= 1.0
    return weights


class ContrastScore(torch.nn.Module):
    """``logit[a] - logit[b]`` per sample, the weights passed beside the input (Captum expands them)."""

    def __init__(self, logits: torch.nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (self.logits(x) * weights.to(x.dtype)).sum(dim=1)
        return out


def torch_executor(runner: Differentiable) -> tuple[torch.nn.Module | None, str]:
    """The runner's differentiable module (shared with the white-box attacks), or None and why not."""
    try:
        module = runner.torch_module().eval()
    except UnsupportedOpsError as exc:
        ops = sorted({op for _, op in exc.nodes})
        return None, f"the torch executor lacks the op(s) {ops}; attributions come from ONNX Runtime alone"
    except (ValueError, NotImplementedError, ModelError) as exc:  # e.g. two graph inputs, auto_pad
        return None, f"the torch executor cannot run the model ({exc}); attributions come from ONNX Runtime"
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module, "gradients through the torch executor of the ONNX graph"


def _tensors(x: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(weights)


def integrated_gradients(
    module: torch.nn.Module, x: np.ndarray, weights: np.ndarray, baseline: np.ndarray, *, steps: int = 32
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017) of the contrast score, from ``baseline`` to x."""
    from captum.attr import IntegratedGradients

    xt, wt = _tensors(x, weights)
    base = torch.from_numpy(np.broadcast_to(baseline, x.shape).astype(np.float32))
    ig = IntegratedGradients(ContrastScore(module))
    out = ig.attribute(
        xt, baselines=base, additional_forward_args=(wt,), n_steps=steps, internal_batch_size=256
    )
    return np.asarray(out.detach().numpy(), np.float32)


def saliency(module: torch.nn.Module, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Saliency (Simonyan et al. 2014): |gradient| of the contrast score at x."""
    from captum.attr import Saliency

    xt, wt = _tensors(x, weights)
    out = Saliency(ContrastScore(module)).attribute(
        xt.requires_grad_(True), additional_forward_args=(wt,), abs=True
    )
    return np.asarray(out.detach().numpy(), np.float32)


# Black box: a numpy loop on ONNX Runtime rather than Captum's Occlusion / FeatureAblation (which take
# any callable, so they could drive ORT through a torch <-> numpy wrapper). Measured on
# examples/digits/model.onnx, 8 samples, 16 regions of 2x2 pixels, median of 30 runs on 2 shared
# cores: this loop 0.3 ms; Captum Occlusion / FeatureAblation 1.0 ms with perturbations_per_eval >= 17
# and 20-30 ms with their default of 1 (one ORT call per region). Attributions agree to 5e-7. The loop
# wins on speed, makes one ORT call per batch, and takes the same named units (feature columns, pixel
# regions) that the ranking and the faithfulness test use, for images and tables alike.
def occlusion(
    model: Scorer, x: np.ndarray, weights: np.ndarray, baseline: np.ndarray, units: Units
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014) / feature ablation: the drop of the contrast score when one
    unit is replaced by the baseline, shared evenly by the unit's elements. One ORT call in all."""
    n, k = len(x), len(units.masks)
    masks = units.masks[None]  # (1, k, *shape)
    occluded = np.where(masks, baseline[None, None], x[:, None])  # (n, k, *shape)
    batch = np.concatenate([x, occluded.reshape(n * k, *x.shape[1:])]).astype(np.float32)
    logits = model.logits(batch).astype(np.float64)
    score = (logits * np.concatenate([weights, np.repeat(weights, k, axis=0)])).sum(axis=1)
    drops = score[:n, None] - score[n:].reshape(n, k)
    return np.stack([units.spread(d) for d in drops]).astype(np.float32)


def black_box_method(kind: str) -> AttributionMethodName:
    """Occlusion of patches for images, feature ablation for tables."""
    return "occlusion" if kind == "image" else "feature_ablation"


@dataclass(frozen=True)
class Attributor:
    """Everything needed to attribute a batch: the engine, its module, the reference input, units."""

    scorer: Scorer
    module: torch.nn.Module | None
    baseline: np.ndarray
    units: Units
    n_classes: int
    steps: int = 32

    def run(self, method: AttributionMethodName, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Attributions of ``logit[a] - logit[b]`` for the batch x, shaped like x."""
        weights = contrast_weights(a, b, self.n_classes)
        if method in ("occlusion", "feature_ablation"):
            return occlusion(self.scorer, x, weights, self.baseline, self.units)
        if self.module is None:
            raise ValueError(f"method {method!r} needs the torch executor; use occlusion or feature_ablation")
        with torch_threads(x, len(x) * self.steps):
            if method == "saliency":
                return saliency(self.module, x, weights)
            return integrated_gradients(self.module, x, weights, self.baseline, steps=self.steps)
