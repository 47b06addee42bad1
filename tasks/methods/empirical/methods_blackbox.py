"""Registered black-box attacks: they query ONNX Runtime only, so they serve every loadable model."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from nnassay.schemas.goals import Layout
from nnassay.tasks.methods.empirical.attack_base import (
    AttackMethod,
    AttackParams,
    AttackRun,
    Ball,
    Search,
    distances,
    norm_of,
)
from nnassay.tasks.methods.empirical.attacks_blackbox import square_l2, square_linf
from nnassay.tasks.methods.empirical.common import check_kind, ort_wrong
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


class _Square(AttackMethod[SquareParams]):
    """Square Attack base (abstract)."""

    data_kinds = ("image",)

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
    or L-inf, inside the value range; the attack minimises the distance, so one run gives the whole
    curve. Parameters: ``queries`` (1000 per sample), ``init_evals`` (50), ``max_evals`` (200).
    Result: ``robust_accuracy`` / ``attack_success_rate`` at the goal's eps, and the smallest
    distance found per sample (``median_min_eps``, ``mean_min_eps``: upper bounds of the true
    minimal distance, each sample's own).
    """

    name = "empirical.hop_skip_jump"
    metrics = ("robust_accuracy", "attack_success_rate", "median_min_eps", "mean_min_eps")
    priority = 95

    def search(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: HsjParams,
        x: np.ndarray,
        y: np.ndarray,
        grid: list[float],
    ) -> Search:
        norm = norm_of(ctx.threat)
        found, x_adv = np.full(len(x), np.inf), x.copy()
        queries = 0
        for i in range(len(x)):
            if ctx.time_left() <= 0:
                break
            result = hop_skip_jump(
                _misclassified(ctx, int(y[i])),
                x[i],
                norm=norm,
                max_queries=params.queries,
                value_range=ctx.model.value_range,
                rng=np.random.default_rng([ctx.seed, i]),
                init_evals=params.init_evals,
                max_evals=params.max_evals,
            )
            queries += result.queries
            if result.x_adv is not None:
                x_adv[i] = result.x_adv
            ctx.progress(i + 1, len(x))
        ok = ort_wrong(ctx, x_adv, y)
        found[ok] = distances(x_adv[ok], x[ok], norm)
        cap = max(max(grid), float(found[np.isfinite(found)].max()) if np.isfinite(found).any() else 0.0)
        return Search(broken_at=found, x_adv=x_adv, min_eps=found, cap=cap, info={"queries": queries})


def _misclassified(ctx: RunContext, label: int) -> IsAdversarial:
    """The label-only oracle of one sample: ONNX Runtime predicts another class."""

    def is_adv(batch: np.ndarray) -> np.ndarray:
        return np.asarray(ctx.model.predict(batch) != label)

    return is_adv
