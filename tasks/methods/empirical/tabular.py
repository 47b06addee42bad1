"""Perturbations of tabular features declared in ``data.features`` and the method that measures them.

Features without a declaration are numeric, with the range observed in the test data and their
standard deviation as scale (see ``features``). Immutable features are never perturbed; integer
features stay whole; categorical features change only by a swap to another allowed code. Pure
numpy; randomness from the test's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import MethodFamily
from nnassay.schemas.results import MethodOutcome, TestStatus
from nnassay.schemas.threats import AnyThreat, TabularPerturbation
from nnassay.tasks.methods.empirical.common import check_kind, rate, save_npz
from nnassay.tasks.methods.empirical.features import Column, data_columns
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register


def _pick(rng: np.random.Generator, shape: tuple[int, ...], cols: list[Column], share: float) -> np.ndarray:
    """Bool (n, features): a share of the given columns per sample, at least one each."""
    n = shape[0]
    mask = np.zeros((n, shape[1]), dtype=bool)
    if not cols:
        return mask
    idx = np.array([c.index for c in cols])
    count = max(1, int(round(share * len(cols))))
    for row in range(n):
        mask[row, rng.choice(idx, size=min(count, len(idx)), replace=False)] = True
    return mask


def perturb_tabular(
    x: np.ndarray,
    cols: list[Column],
    kind: str,
    strength: float,
    rng: np.random.Generator,
    reference: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Perturbed copies of x by variant name; the first variant is the headline one. ``reference``:
    the data whose column means impute missing values (default x; the method passes the whole data,
    so that a goal's subset imputes as the whole data file would)."""
    movable = [c for c in cols if not c.immutable]
    numeric = [c for c in movable if c.kind in ("numeric", "integer")]
    num_idx = np.array([c.index for c in numeric], dtype=int)
    whole = np.array([c.kind == "integer" for c in numeric], dtype=bool)
    out = x.astype(np.float32).copy()
    if kind == "numeric_noise":
        spread = np.array([c.spread for c in numeric])
        low, high = np.array([c.low for c in numeric]), np.array([c.high for c in numeric])
        noisy = x[:, num_idx] + rng.standard_normal((len(x), len(num_idx))) * strength * spread
        out[:, num_idx] = np.clip(np.where(whole, np.round(noisy), noisy), low, high)
        return {"noise": out}
    if kind == "multiplicative":
        scaled = x[:, num_idx] * (1 + rng.uniform(-strength, strength, (len(x), len(num_idx))))
        out[:, num_idx] = np.where(whole, np.round(scaled), scaled)
        return {"multiplicative": out}
    if kind == "missing":
        mask = _pick(rng, x.shape, movable, strength)
        imputed = out.copy()
        out[mask] = np.nan
        imputed[mask] = np.broadcast_to(_typed_mean(x if reference is None else reference, cols), x.shape)[
            mask
        ]
        return {"nan_fed": out, "mean_imputed": imputed}
    if kind == "categorical_swap":
        categorical = [c for c in movable if c.kind == "categorical" and len(c.values) > 1]
        mask = _pick(rng, x.shape, categorical, strength)
        for c in categorical:
            rows = np.flatnonzero(mask[:, c.index])
            for r in rows:
                out[r, c.index] = rng.choice([v for v in c.values if v != x[r, c.index]])
        return {"swap": out}
    if kind == "range_edge":
        mask = _pick(rng, x.shape, numeric, strength)
        side = rng.random(x.shape) < 0.5
        low = np.array([next((c.low for c in numeric if c.index == i), 0.0) for i in range(x.shape[1])])
        high = np.array([next((c.high for c in numeric if c.index == i), 0.0) for i in range(x.shape[1])])
        at = np.where(side, low, high)
        beyond = np.where(side, low - 0.5 * (high - low), high + 0.5 * (high - low))
        integer = np.array([c.kind == "integer" for c in cols])
        beyond = np.where(integer, np.where(side, np.floor(beyond), np.ceil(beyond)), beyond)
        return {
            "beyond_range": np.where(mask, beyond, x).astype(np.float32),
            "at_range_edge": np.where(mask, at, x).astype(np.float32),
        }
    raise ValueError(f"unknown tabular perturbation {kind!r}")


def _typed_mean(x: np.ndarray, cols: list[Column]) -> np.ndarray:
    """Column means for imputation, kept to each feature's type (integers rounded, categories: mode)."""
    mean = x.mean(axis=0)
    for c in cols:
        if c.kind == "integer":
            mean[c.index] = np.round(mean[c.index])
        elif c.kind == "categorical":
            codes, counts = np.unique(x[:, c.index], return_counts=True)
            mean[c.index] = codes[np.argmax(counts)]
    return mean


class TabularParams(MethodParams):
    """Parameters of the tabular perturbation test."""

    perturbation: str = Field(default="numeric_noise", description="Which perturbation (see the threat).")
    strength: float = Field(default=0.1, ge=0, description="Relative strength (see the threat).")


@register
class TabularRobustness(RobustnessMethod[TabularParams, TabularPerturbation]):
    """Accuracy and label flips under perturbations of declared tabular features.

    Reference: ISO/IEC TR 24029-1 Annex A (data perturbation) and 5.3.2 / 7.4. Threat model:
    ``numeric_noise`` (Gaussian, std = strength x the feature's spread, clipped to its range),
    ``multiplicative`` (x (1 + U(-strength, strength))), ``missing`` (a share ``strength`` of features
    per sample: NaN fed to the model (headline) and, separately, replaced by the column mean),
    ``categorical_swap`` (another allowed code), ``range_edge`` (values beyond the declared range by
    half its span (headline) and exactly at its ends). Spreads and ranges are each feature's own
    (declared in ``data.features``, else its standard deviation and range in the test data);
    immutable features are never perturbed, integer features stay whole (rounded), categorical ones
    change only by a swap. Parameters: from the threat. Result:
    ``accuracy`` and ``label_flip_rate`` of the headline variant; every variant's rates with
    Clopper-Pearson intervals in ``details['variants']``.
    """

    name = "empirical.tabular_perturbation"
    family = MethodFamily.EMPIRICAL
    clause = "7.4"
    threats = ("tabular",)
    metrics = ("accuracy", "label_flip_rate")
    data_kinds = ("tabular",)
    priority = 20

    def check(self, ctx_threat: AnyThreat, data_kind: str) -> list[str]:
        return check_kind(self.name, self.data_kinds, ctx_threat, data_kind)

    def derive_params(self, threat: TabularPerturbation, overrides: dict[str, Any]) -> TabularParams:
        return TabularParams(
            **{"perturbation": threat.perturbation, "strength": threat.strength, **overrides}
        )

    def run(self, ctx: RunContext[TabularPerturbation], params: TabularParams) -> MethodOutcome:
        x, y = ctx.data.x, ctx.data.y
        if x.ndim != 2:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                reason=f"tabular perturbations need (samples, features) data, got shape {list(x.shape)}",
            )
        cols = data_columns(ctx.data)  # scales and ranges of the whole data, not the subset
        if params.perturbation == "categorical_swap" and not any(
            c.kind == "categorical" and len(c.values) > 1 for c in cols
        ):
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                reason="no categorical feature with two or more "
                "values is declared; declare them in data.features (kind: categorical, values)",
            )
        clean = ctx.model.predict(x)
        variants = perturb_tabular(
            x, cols, params.perturbation, params.strength, ctx.rng, reference=ctx.data.whole_x
        )
        results: dict[str, JsonValue] = {}
        head = next(iter(variants))
        metrics = {}
        for label, xv in variants.items():
            pred, finite = self._predict(ctx, xv)
            acc = rate(
                int(((pred == y) & finite).sum()),
                len(y),
                ctx,
                f"Accuracy under {params.perturbation} ({label}, strength {params.strength:g}).",
            )
            flip = rate(
                int(((pred != clean) | ~finite).sum()),
                len(y),
                ctx,
                "Share of samples whose "
                f"prediction changes under {params.perturbation} ({label}); non-finite outputs count.",
            )
            results[label] = {
                "accuracy": acc.model_dump(mode="json"),
                "label_flip_rate": flip.model_dump(mode="json"),
                "non_finite_outputs": int((~finite).sum()),
            }
            if label == head:
                metrics = {"accuracy": acc, "label_flip_rate": flip}
        artifacts = [
            save_npz(
                ctx,
                "tabular_perturbed.npz",
                f"Inputs under {params.perturbation} ({head}) and their rows in the test data.",
                x_pert=variants[head],
                index=np.arange(len(y)),
            )
        ]
        return MethodOutcome(
            metrics=metrics,
            artifacts=artifacts,
            details={
                "headline_variant": head,
                "variants": results,
                "clean_accuracy": float((clean == y).mean()),
                "features": [
                    {
                        "index": c.index,
                        "kind": c.kind,
                        "range": [c.low, c.high],
                        "spread": c.spread,
                        "immutable": c.immutable,
                    }
                    for c in cols
                ],
            },
        )

    @staticmethod
    def _predict(ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = ctx.model.logits(x)
        finite = np.isfinite(logits).all(axis=1)
        return np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1), finite
