"""Registered image-perturbation methods: natural corruptions (Annex A / ImageNet-C) and geometric
transforms with the worst case over a parameter grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, TestStatus
from nnassay.schemas.threats import CORRUPTIONS, AnyThreat, Corruption, Geometric
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.empirical.common import check_kind, rate, rate_series, rows_interval
from nnassay.tasks.methods.empirical.corruptions import corrupt, is_identity_on
from nnassay.tasks.methods.empirical.images import affine_warp, from_unit, to_unit
from nnassay.tasks.methods.empirical.pictures import save_examples
from nnassay.tasks.methods.registry import MethodParams, P, RobustnessMethod, RunContext, T, register
from nnassay.tasks.methods.statistical.budget import BUDGET_CUT, cut_facts


def _channels_side(ctx: RunContext) -> tuple[int, int]:
    shape = ctx.data.x.shape
    if ctx.model.layout.value == "NCHW":
        return int(shape[1]), int(min(shape[2:4]))
    return int(shape[-1]), int(min(shape[1:3]))


def mean_rate(per_sample: np.ndarray, ctx: RunContext, description: str) -> Measurement:
    """Mean of per-sample shares in [0, 1] with a bootstrap interval over samples (a rate)."""
    from nnassay.tasks.stats.bootstrap import bootstrap_interval

    values = np.asarray(per_sample, dtype=float)
    interval = (
        bootstrap_interval(
            values, np.mean, ctx.confidence, np.random.default_rng([ctx.seed, 7]), n_resamples=1000
        )
        if len(values) > 1
        else None
    )
    return Measurement(
        value=float(values.mean()) if len(values) else 0.0,
        interval=interval,
        claim=ClaimKind.ESTIMATE,
        n=len(values),
        is_rate=True,
        description=description,
    )


TRANSFORM_DRAWS = 2.0  # one corrupted or warped image costs about this many noise draws ...
TRANSFORM_IMAGE_S = 1e-4  # ... plus this (per-image Python work), timed on digits and a 32x32 CNN
PICTURE_S = 0.2  # drawing the example picture


def stopped_early(outcome: MethodOutcome, done: int, planned: int, what: str, samples: int) -> MethodOutcome:
    """The outcome, made inconclusive with the reason when the time budget stopped the run after
    ``done`` of ``planned`` grid points (each measured on all ``samples`` samples): the metrics
    average over the grid, so a partial grid measures something else, not a noisier estimate."""
    if done == planned:
        return outcome
    why = (
        f"the time budget ran out after {done} of {planned} {what} (each on all {samples} samples); the "
        f"metrics cover those {done} only"
    )
    reason = f"{why}; {outcome.reason}" if outcome.reason else why
    details = {**outcome.details, BUDGET_CUT: cut_facts(done, planned, what)}
    return outcome.model_copy(
        update={"status": TestStatus.INCONCLUSIVE, "reason": reason, "details": details}
    )


def _transforms(images: int) -> Cost:
    return Cost(draws=TRANSFORM_DRAWS * images, fixed_s=PICTURE_S + TRANSFORM_IMAGE_S * images)


class CorruptionParams(MethodParams):
    """Parameters of the corruption benchmark."""

    corruptions: list[str] = Field(default_factory=lambda: list(CORRUPTIONS), description="Corruption names.")
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Severities 1 to 5.")
    examples: int = Field(default=8, ge=0, le=20, description="Corruptions shown in the example picture.")


class _ImageMethod(RobustnessMethod[P, T]):
    family = MethodFamily.EMPIRICAL
    clause = "7.4"
    data_kinds = ("image",)

    def check(self, ctx_threat: AnyThreat, data_kind: str) -> list[str]:
        return check_kind(self.name, self.data_kinds, ctx_threat, data_kind)


@register
class CorruptionAccuracy(_ImageMethod[CorruptionParams, Corruption]):
    """Accuracy under natural image corruptions at five severities (corruption benchmark).

    Reference: ISO/IEC TR 24029-1 Annex A (data perturbation) and 7.4 (benchmarking); Hendrycks &
    Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
    ICLR 2019 (ImageNet-C definitions, spatial parameters scaled to the image size, see
    ``nnassay.tasks.methods.empirical.corruptions``). Threat model: noise, blur, weather and digital corruptions,
    one draw per sample, corruption and severity (the same draw at every severity). Parameters:
    ``corruptions`` (all 20), ``severities`` (1-5). Result: ``mean_accuracy`` over corruptions and
    severities, ``corruption_error`` (1 - mean accuracy), ``relative_robustness`` (mean corrupted
    accuracy / clean accuracy), all with bootstrap intervals over samples; accuracy per corruption
    and severity with Clopper-Pearson intervals in ``details`` and a heat map. Corruptions that
    cannot change the images are skipped and listed in ``details['skipped']``: saturate on grey
    images, and blurs / pixelation scaled below half a pixel on small images (e.g. 8x8 digits).
    """

    name = "empirical.corruption_accuracy"
    threats = ("corruption",)
    metrics = ("mean_accuracy", "corruption_error", "relative_robustness")
    priority = 20

    @classmethod
    def cost(cls, params: CorruptionParams, samples: int) -> Cost:
        """Clean predictions, then one corrupted copy of the data per corruption and severity (a
        corruption costs about ``TRANSFORM_DRAWS`` noise draws: blurs and warps pass over each pixel)."""
        copies = len(params.corruptions) * len(set(params.severities))
        return passes(samples, 1 + copies) + _transforms(samples * copies)

    def derive_params(self, threat: Corruption, overrides: dict[str, Any]) -> CorruptionParams:
        return CorruptionParams(
            **{"corruptions": threat.corruptions, "severities": threat.severities, **overrides}
        )

    def run(self, ctx: RunContext[Corruption], params: CorruptionParams) -> MethodOutcome:
        x, y = ctx.data.x, ctx.data.y
        clean = ctx.model.predict(x) == y
        names = [c for c in params.corruptions if not is_identity_on(c, *_channels_side(ctx))]
        severities = sorted(set(params.severities))
        correct = np.zeros((len(names), len(severities), len(y)), dtype=bool)
        shown: list[np.ndarray] = []
        planned = len(names)
        for i, name in enumerate(names):
            if i and ctx.time_left() <= 0:  # whole corruptions only: each is measured at every severity
                names, correct = names[:i], correct[:i]
                break
            for j, severity in enumerate(severities):
                rng = np.random.default_rng([ctx.seed, CORRUPTIONS.index(name)])
                xc = corrupt(
                    x, name, severity, rng=rng, layout=ctx.model.layout, value_range=ctx.model.value_range
                )
                correct[i, j] = ctx.model.predict(xc) == y
                if j == len(severities) - 1 and len(shown) < params.examples:
                    shown.append(xc[:1])
            ctx.progress(i + 1, len(names))
        outcome = self._outcome(ctx, params, names, severities, correct, clean, shown)
        return stopped_early(outcome, len(names), planned, "corruptions", len(y))

    def _outcome(
        self,
        ctx: RunContext,
        params: CorruptionParams,
        names: list[str],
        severities: list[int],
        correct: np.ndarray,
        clean: np.ndarray,
        shown: list[np.ndarray],
    ) -> MethodOutcome:
        n = len(clean)
        per_sample = correct.reshape(-1, n).mean(axis=0) if correct.size else np.zeros(n)
        pairs = np.stack([per_sample, clean.astype(float)], axis=1)
        relative = _ratio_measurement(pairs, ctx)
        cells: dict[str, JsonValue] = {
            name: {str(s): _cell(int(correct[i, j].sum()), n, ctx) for j, s in enumerate(severities)}
            for i, name in enumerate(names)
        }
        series = [
            rate_series(
                name,
                severities,
                [(int(c.sum()), n) for c in correct[i]],
                ctx,
                "severity",
                "accuracy",
                kind="heatmap",
            )
            for i, name in enumerate(names)
        ]
        series.append(
            rate_series(
                "mean accuracy over corruptions",
                severities,
                [(int(correct[:, j].sum()), n * len(names)) for j in range(len(severities))],
                ctx,
                "severity",
                "accuracy",
            )
        )
        artifacts = save_examples(
            ctx,
            "corruption_examples.png",
            f"Sample 0 under each corruption at severity {severities[-1]}: original, corrupted, difference.",
            np.repeat(ctx.data.x[:1], len(shown), axis=0),
            np.concatenate(shown) if shown else ctx.data.x[:0],
            names,
            params.examples,
        )
        skipped = [c for c in params.corruptions if c not in names]
        return MethodOutcome(
            metrics={
                "mean_accuracy": mean_rate(
                    per_sample,
                    ctx,
                    "Accuracy averaged over the corruptions and "
                    "severities tested (bootstrap interval over samples).",
                ),
                "corruption_error": mean_rate(
                    1 - per_sample,
                    ctx,
                    "Error rate averaged over corruptions and "
                    "severities (ImageNet-C style, not normalised by a baseline).",
                ),
                "relative_robustness": relative,
            },
            series=series,
            artifacts=artifacts,
            details={
                "clean_accuracy": float(clean.mean()),
                "accuracy": cells,
                "skipped": list(skipped),
                "corruption_error_minus_clean_error": float(clean.mean() - per_sample.mean()),
                "definitions": "ImageNet-C (Hendrycks & Dietterich 2019), spatial parameters x side/224",
            },
            reason=f"skipped, no effect on these images (grey, or scaled size under half a pixel): {', '.join(skipped)}"
            if skipped
            else None,
        )


def _cell(k: int, n: int, ctx: RunContext) -> dict[str, JsonValue]:
    m = rate(k, n, ctx, "")
    return {
        "accuracy": m.value,
        "low": m.interval.low if m.interval else m.value,
        "high": m.interval.high if m.interval else m.value,
        "n": n,
    }


def _ratio_measurement(pairs: np.ndarray, ctx: RunContext) -> Measurement:
    def ratio(v: np.ndarray) -> float:
        return float(v[:, 0].mean() / v[:, 1].mean()) if v[:, 1].mean() > 0 else 0.0

    interval = rows_interval(pairs, ratio, ctx, 8) if pairs[:, 1].mean() > 0 else None
    return Measurement(
        value=ratio(pairs),
        interval=interval,
        n=len(pairs),
        description=(
            "Mean accuracy under corruption divided by clean accuracy (1 = no loss; bootstrap interval)."
        ),
    )


class GeometricParams(MethodParams):
    """Parameters of the geometric robustness test."""

    transform: str = Field(default="rotation", description="rotation, translation, scaling or shear.")
    values: list[float] = Field(
        default_factory=lambda: [-15.0, -5.0, 5.0, 15.0], description="Parameter grid."
    )
    examples: int = Field(default=4, ge=0, le=16, description="Example pictures to save.")


def transform_matrix(transform: str, value: float, h: int, w: int) -> np.ndarray:
    """2x3 output->source map about the centre for one transform value (rows, cols coordinates)."""
    if transform == "rotation":
        t = np.deg2rad(value)
        return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0]])
    if transform == "translation":
        return np.array([[1.0, 0.0, -value * h], [0.0, 1.0, -value * w]])
    if transform == "scaling":
        return np.array([[1 / value, 0.0, 0.0], [0.0, 1 / value, 0.0]])
    if transform == "shear":
        return np.array([[1.0, 0.0, 0.0], [np.tan(np.deg2rad(value)), 1.0, 0.0]])
    raise ValueError(f"unknown transform {transform!r}; expected rotation, translation, scaling or shear")


def geometric(
    x: np.ndarray, transform: str, value: float, *, layout: Any, value_range: tuple[float, float]
) -> np.ndarray:
    """Transform model-layout images; uncovered pixels get the low end of the value range."""
    unit = to_unit(x, layout, value_range)
    moved = affine_warp(unit, transform_matrix(transform, value, *unit.shape[1:3]), mode="constant", cval=0.0)
    return from_unit(moved, layout, value_range)


@register
class GeometricWorstCase(_ImageMethod[GeometricParams, Geometric]):
    """Accuracy under rotation, translation, scaling or shear, worst case over a parameter grid.

    Reference: ISO/IEC TR 24029-1 Annex A and 7.4; Engstrom et al., "Exploring the Landscape of
    Spatial Robustness", ICML 2019 (worst-of-grid evaluation). Threat model: one transform about the
    image centre, bilinear resampling, uncovered pixels set to the low end of the value range;
    rotation and shear in degrees, translation as a fraction of the side (both axes), scaling as a
    factor. Parameters: ``transform`` and ``values`` from the threat. Result: ``worst_case_accuracy``
    (correct under every grid value) and ``mean_accuracy`` over the grid, with intervals; the
    accuracy per grid value as a curve.
    """

    name = "empirical.geometric_worst_case"
    threats = ("geometric",)
    metrics = ("worst_case_accuracy", "mean_accuracy")
    priority = 20

    @classmethod
    def cost(cls, params: GeometricParams, samples: int) -> Cost:
        """One transformed copy of the data per value of the grid, plus clean predictions."""
        copies = len(set(params.values))
        return passes(samples, 2 + copies) + _transforms(samples * copies)

    def derive_params(self, threat: Geometric, overrides: dict[str, Any]) -> GeometricParams:
        return GeometricParams(**{"transform": threat.transform, "values": threat.values, **overrides})

    def run(self, ctx: RunContext[Geometric], params: GeometricParams) -> MethodOutcome:
        x, y = ctx.data.x, ctx.data.y
        grid = sorted(set(params.values))
        correct = np.zeros((len(grid), len(y)), dtype=bool)
        moved = []
        planned = len(grid)
        for i, value in enumerate(grid):
            if i and ctx.time_left() <= 0:
                grid, correct = grid[:i], correct[:i]
                break
            xt = geometric(
                x, params.transform, value, layout=ctx.model.layout, value_range=ctx.model.value_range
            )
            correct[i] = ctx.model.predict(xt) == y
            moved.append(xt[:1])
            ctx.progress(i + 1, len(grid))
        return stopped_early(
            self._outcome(ctx, params, grid, correct, moved), len(grid), planned, "values", len(y)
        )

    def _outcome(
        self,
        ctx: RunContext[Geometric],
        params: GeometricParams,
        grid: list[float],
        correct: np.ndarray,
        moved: list[np.ndarray],
    ) -> MethodOutcome:
        x, y = ctx.data.x, ctx.data.y
        worst = correct.all(axis=0)
        unit = {
            "rotation": "degrees",
            "shear": "degrees",
            "translation": "fraction of side",
            "scaling": "factor",
        }[params.transform]
        return MethodOutcome(
            metrics={
                "worst_case_accuracy": rate(
                    int(worst.sum()),
                    len(y),
                    ctx,
                    f"Share of samples classified correctly under every {params.transform} of the grid.",
                ),
                "mean_accuracy": mean_rate(
                    correct.mean(axis=0),
                    ctx,
                    f"Accuracy averaged over the {params.transform} grid (bootstrap interval over samples).",
                ),
            },
            series=[
                rate_series(
                    f"accuracy under {params.transform}",
                    grid,
                    [(int(c.sum()), len(y)) for c in correct],
                    ctx,
                    f"{params.transform} ({unit})",
                    "accuracy",
                )
            ],
            artifacts=save_examples(
                ctx,
                "geometric_examples.png",
                f"Sample 0 under each {params.transform} of the grid.",
                np.repeat(x[:1], len(grid), axis=0),
                np.concatenate(moved),
                [f"{params.transform} {v:g}" for v in grid],
                params.examples,
            ),
            details={
                "clean_accuracy": float((ctx.model.predict(x) == y).mean()),
                "grid": list(grid),
                "accuracy_per_value": {f"{v:g}": float(c.mean()) for v, c in zip(grid, correct, strict=True)},
                "non_robust_indices": [int(i) for i in np.flatnonzero(~worst)],
            },
        )
