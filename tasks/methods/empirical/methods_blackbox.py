"""Registered black-box attacks: they query ONNX Runtime only, so they serve every loadable model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from nnassay.schemas.goals import Layout
from nnassay.tasks.methods.cost import Cost
from nnassay.tasks.methods.empirical.attack_base import (
    AttackMethod,
    AttackParams,
    AttackRun,
    Ball,
    Search,
    distances,
    norm_of,
    tabular_box,
)
from nnassay.tasks.methods.empirical.attacks_blackbox import square_l2, square_linf
from nnassay.tasks.methods.empirical.common import check_kind, ort_wrong
from nnassay.tasks.methods.empirical.features import FeatureBox
from nnassay.tasks.methods.empirical.hopskipjump import IsAdversarial, hop_skip_jump
from nnassay.tasks.methods.registry import RunContext, register


def _nchw(ctx: RunContext, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2)) if ctx.model.layout == Layout.NHWC else x


def _model_layout(ctx: RunContext, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)) if ctx.model.layout == Layout.NHWC else x)


def square_candidates(
    ctx: RunContext,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    queries: int,
    stream: int,
    p_init: float | None = None,
) -> np.ndarray:
    """Square Attack (L-inf or L2 by the threat) on ONNX Runtime logits; model-layout images in and out."""
    rng = np.random.default_rng([ctx.seed, stream, int(round(eps * 1e9)) % 2**32, len(x)])
    logits = lambda b: ctx.model.logits(_model_layout(ctx, b))  # noqa: E731
    attack = square_linf if norm_of(ctx.threat) == "linf" else square_l2
    extra = {"p_init": p_init} if p_init else {}
    state = attack(
        logits,
        np.ascontiguousarray(_nchw(ctx, x)),
        y,
        eps,
        n_queries=queries,
        value_range=ctx.model.value_range,
        rng=rng,
        **extra,
    )
    return _model_layout(ctx, state.x_best)


class SquareParams(AttackParams):
    """Parameters of Square Attack."""

    queries: int = Field(default=1000, ge=2, description="Query budget per sample (ONNX Runtime calls).")
    p_init: float | None = Field(
        default=None, gt=0, le=1, description="Initial square size (share of pixels); 0.05 L-inf, 0.1 L2."
    )


def square_cost(samples: int, radii: int, queries: int, batch_size: int) -> Cost:
    """Square Attack: one ONNX Runtime call per query on the batch's unbroken samples, each query a
    fresh random candidate per sample."""
    rows = float(samples * radii * queries)
    return Cost(forwards=rows, forward_calls=float(-(-samples // batch_size) * radii * queries), draws=rows)


class _Square(AttackMethod[SquareParams]):
    """Square Attack base (abstract)."""

    data_kinds = ("image",)

    @classmethod
    def attack_cost(cls, params: SquareParams, samples: int, radii: int) -> Cost:
        return square_cost(samples, radii, params.queries, params.batch_size)

    def check(self, ctx_threat: Any, data_kind: str) -> list[str]:
        return check_kind(self.name, self.data_kinds, ctx_threat, data_kind)

    def attack(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: SquareParams,
        x: np.ndarray,
        y: np.ndarray,
        eps: float,
    ) -> AttackRun:
        cand = square_candidates(ctx, x, y, eps, params.queries, 1, params.p_init)
        return AttackRun(cand, {"queries": params.queries * len(x)})


@register
class SquareLinf(_Square):
    """Square Attack in the L-inf ball: random square updates, query-efficient, no gradients.

    Reference: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", ECCV 2020; ISO/IEC TR 24029-1 clause 7. Threat model:
    black box (ONNX Runtime logits only; serves models the torch executor cannot run), L-inf ball of
    radius ``eps`` inside the value range, images. Parameters: ``queries`` (1000 per sample),
    ``p_init`` (0.05). Result: ``robust_accuracy`` (upper bound) and ``attack_success_rate``.
    """

    name = "empirical.square_linf"
    threats = ("linf_ball",)
    priority = 85


@register
class SquareL2(_Square):
    """Square Attack in the L2 ball: pseudo-Gaussian square updates on the sphere, no gradients.

    Reference: Andriushchenko et al., ECCV 2020; ISO/IEC TR 24029-1 clause 7. Threat model: black box
    (ONNX Runtime logits only), L2 ball of radius ``eps`` inside the value range, images.
    Parameters: ``queries`` (1000 per sample), ``p_init`` (0.1). Result: ``robust_accuracy`` (upper
    bound) and ``attack_success_rate``, checked on ONNX Runtime.
    """

    name = "empirical.square_l2"
    threats = ("l2_ball",)
    priority = 85


HSJ_ROWS_PER_CALL = 8  # HopSkipJump's queries per ONNX Runtime call, on average (counted on digits)


class HsjParams(AttackParams):
    """Parameters of HopSkipJump."""

    queries: int = Field(default=1000, ge=50, description="Label queries per sample.")
    init_evals: int = Field(default=50, ge=5, description="Gradient-estimate queries at iteration 1.")
    max_evals: int = Field(default=200, ge=5, description="Largest gradient-estimate query batch.")


@register
class HopSkipJump(AttackMethod[HsjParams]):
    """HopSkipJump: decision-based minimal perturbation from predicted labels only.

    Reference: Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
    Attack", IEEE S&P 2020; ISO/IEC TR 24029-1 clause 7. Threat model: black box, labels only, L2
    or L-inf, inside the value range (tabular: distances in units of each feature's scale, inside
    each feature's box); the attack minimises the distance, so one run gives the whole
    curve. Parameters: ``queries`` (1000 per sample), ``init_evals`` (50), ``max_evals`` (200).
    Result: ``robust_accuracy`` / ``attack_success_rate`` at the goal's eps, and the smallest
    distance found per sample (``median_min_eps``, ``mean_min_eps``: upper bounds of the true
    minimal distance, each sample's own).
    """

    name = "empirical.hop_skip_jump"
    metrics = ("robust_accuracy", "attack_success_rate", "median_min_eps", "mean_min_eps")
    priority = 95

    @classmethod
    def attack_cost(cls, params: HsjParams, samples: int, radii: int) -> Cost:
        """One run per sample whatever the radii: ``queries`` label queries, in about one call per
        HSJ_ROWS_PER_CALL rows (gradient-estimate batches, then single-row boundary searches)."""
        rows = float(samples * params.queries)
        return Cost(forwards=rows, forward_calls=rows / HSJ_ROWS_PER_CALL, draws=rows)

    def search(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: HsjParams,
        x: np.ndarray,
        y: np.ndarray,
        grid: list[float],
    ) -> Search:
        norm, box = norm_of(ctx.threat), tabular_box(ctx)
        found, x_adv = np.full(len(x), np.inf), x.copy()
        queries, stopped = 0, {}
        unit = np.ones(x.shape[1:]) if box is None else box.scale  # tabular: search in delta / scale
        value_range = (
            ctx.model.value_range
            if box is None
            else (float((box.low / unit).min()), float((box.high / unit).max()))
        )
        for i in range(len(x)):
            if i and ctx.time_left() <= 0:
                stopped = {"attacked_at_stop": i, "to_attack_at_stop": len(x)}
                break
            result = hop_skip_jump(
                _misclassified(ctx, int(y[i]), _to_data(x[i], unit, box)),
                x[i] if box is None else x[i] / unit,
                norm=norm,
                max_queries=params.queries,
                value_range=value_range,
                rng=np.random.default_rng([ctx.seed, i]),
                init_evals=params.init_evals,
                max_evals=params.max_evals,
            )
            queries += result.queries
            if result.x_adv is not None:
                x_adv[i] = _in_data_space(result.x_adv[None], x[i], unit, box)[0]
            ctx.progress(i + 1, len(x))
        ok = ort_wrong(ctx, x_adv, y)
        found[ok] = distances(x_adv[ok], x[ok], norm, box)
        cap = max(max(grid), float(found[np.isfinite(found)].max()) if np.isfinite(found).any() else 0.0)
        info = {"queries": queries, **stopped}
        return Search(broken_at=found, x_adv=x_adv, min_eps=found, cap=cap, info=info)


def _in_data_space(z: np.ndarray, x: np.ndarray, unit: np.ndarray, box: FeatureBox | None) -> np.ndarray:
    """Points of the search space (x / unit) back in data space, fitted to the feature constraints."""
    if box is None:
        return z
    return box.constrain(z * unit, np.broadcast_to(x, z.shape))


def _to_data(x: np.ndarray, unit: np.ndarray, box: FeatureBox | None) -> Callable[[np.ndarray], np.ndarray]:
    """``_in_data_space`` for one sample's search points."""

    def to_data(z: np.ndarray) -> np.ndarray:
        return _in_data_space(z, x, unit, box)

    return to_data


def _misclassified(
    ctx: RunContext, label: int, to_data: Callable[[np.ndarray], np.ndarray] = lambda z: z
) -> IsAdversarial:
    """The label-only oracle of one sample: ONNX Runtime predicts another class."""

    def is_adv(batch: np.ndarray) -> np.ndarray:
        return np.asarray(ctx.model.predict(np.ascontiguousarray(to_data(batch), dtype=np.float32)) != label)

    return is_adv
