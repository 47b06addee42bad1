"""Foundation statistical methods: clean accuracy and accuracy / label flips under random noise.

ISO/IEC TR 24029-1 5.2.3 (classification measures) and 5.3.2 (contrastive measures): each rate
carries a confidence interval at the goal's confidence level.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, Series
from nnassay.schemas.threats import GaussianNoise, NoThreat, UniformNoise
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical.budget import budget_cut
from nnassay.tasks.methods.statistical.feature_noise import (
    DATA_UNITS,
    EPS_UNITS,
    FeatureNoise,
    features_of,
    perturb_features,
)
from nnassay.tasks.stats.intervals import proportion_interval

DEFAULT_INTERVAL = "clopper-pearson"


def interval_method(ctx: RunContext, method: str | None = None) -> str:
    """The interval for rates: ``method`` when given, else the goal's (``criterion.interval``, carried
    by the context), else exact Clopper-Pearson."""
    return method or ctx.interval or DEFAULT_INTERVAL


def rate(
    successes: int,
    n: int,
    ctx: RunContext,
    description: str,
    claim: ClaimKind = ClaimKind.ESTIMATE,
    method: str | None = None,
) -> Measurement:
    """A rate with its confidence interval at the test's confidence level.

    The interval is Clopper-Pearson unless ``method`` or the goal (see ``interval_method``) asks
    for Wilson; the claim kind is stated on the measurement.
    """
    return Measurement(
        value=successes / n if n else 0.0,
        interval=proportion_interval(successes, n, ctx.confidence, interval_method(ctx, method)),
        claim=claim,
        n=n,
        successes=successes,
        is_rate=True,
        description=description,
    )


BLOCK = 64  # samples per noise stream; shards are whole blocks, so any sharding draws the same noise
MAX_CHUNK_BLOCKS = 64  # blocks measured between two looks at the time budget (4096 samples)
MAX_OUTCOME_BITS = 2_000_000  # per-sample outcomes larger than this are not kept in details


def pack_outcomes(flags: np.ndarray) -> dict[str, JsonValue]:
    """Per-sample boolean outcomes as compact JSON (bit-packed, base64), for paired comparisons."""
    flat = np.asarray(flags, dtype=bool).ravel()
    return {"n": int(flat.size), "bits": base64.b64encode(np.packbits(flat).tobytes()).decode("ascii")}


def unpack_outcomes(packed: dict[str, Any]) -> np.ndarray:
    """The boolean array stored by ``pack_outcomes``."""
    raw = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(raw, count=int(packed["n"])).astype(bool)


def per_sample(**flags: np.ndarray) -> dict[str, JsonValue]:
    """details['per_sample']: metric name -> packed per-sample flags whose mean is the metric."""
    return {name: pack_outcomes(f) for name, f in flags.items() if np.size(f) <= MAX_OUTCOME_BITS}


class CleanParams(MethodParams):
    """Clean accuracy takes no tuning parameters."""

    interval: Literal["clopper-pearson", "wilson"] | None = Field(
        default=None,
        description="Interval for rates: exact Clopper-Pearson or Wilson; default: the "
        "goal's criterion.interval (Clopper-Pearson unless it says wilson).",
    )


@register
class CleanAccuracy(RobustnessMethod[CleanParams, NoThreat]):
    """Accuracy on the unperturbed test data, with an exact confidence interval.

    Reference: ISO/IEC TR 24029-1 5.2.3. Threat model: none (the reference every other goal is
    contrasted with). Result: ``accuracy`` and ``error_rate`` with Clopper-Pearson intervals.
    """

    name = "statistical.clean_accuracy"
    family = MethodFamily.STATISTICAL
    clause = "5.2.3"
    threats = ("none",)
    metrics = ("accuracy", "error_rate")
    claim = ClaimKind.BOUND
    priority = 10

    @classmethod
    def cost(cls, params: CleanParams, samples: int) -> Cost:
        return passes(samples)

    def run(self, ctx: RunContext[NoThreat], params: CleanParams) -> MethodOutcome:
        pred = ctx.model.predict(ctx.data.x)
        correct = int((pred == ctx.data.y).sum())
        n = len(ctx.data)
        ctx.progress(n, n)
        return MethodOutcome(
            metrics={
                "accuracy": rate(
                    correct,
                    n,
                    ctx,
                    "Share of test samples classified correctly.",
                    ClaimKind.BOUND,
                    params.interval,
                ),
                "error_rate": rate(
                    n - correct,
                    n,
                    ctx,
                    "Share of test samples misclassified.",
                    ClaimKind.BOUND,
                    params.interval,
                ),
            },
            details={
                "per_class_accuracy": _per_class(pred, ctx.data.y),
                "per_sample": per_sample(accuracy=pred == ctx.data.y, error_rate=pred != ctx.data.y),
            },
        )


def _per_class(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {str(c): float((pred[y == c] == c).mean()) for c in np.unique(y)}


class NoiseParams(MethodParams):
    """Parameters of the random-noise measurement."""

    strength: float | None = Field(default=None, gt=0, description="Sigma or eps; from the threat.")
    sweep: list[float] = Field(default_factory=list, description="Strengths for the chart.")
    draws: int = Field(default=1, ge=1, le=1000, description="Noise draws per sample.")
    interval: Literal["clopper-pearson", "wilson"] | None = Field(
        default=None,
        description="Interval for rates: exact Clopper-Pearson or Wilson; default: the "
        "goal's criterion.interval (Clopper-Pearson unless it says wilson).",
    )


Noise = GaussianNoise | UniformNoise  # the threats of the noise measurements


def perturb(
    x: np.ndarray,
    threat: Noise,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
    features: FeatureNoise | None = None,
) -> np.ndarray:
    """Add Gaussian (sigma) or uniform L-inf (eps) noise and clip to the value range; with
    ``features`` (tabular data), noise in units of each feature's scale inside each feature's bounds
    (``feature_noise``)."""
    if features is not None:
        return perturb_features(x, features, isinstance(threat, GaussianNoise), strength, rng)
    if isinstance(threat, GaussianNoise):
        noise = rng.normal(0.0, strength, size=x.shape)
    else:
        noise = rng.uniform(-strength, strength, size=x.shape)
    return np.clip(x + noise.astype(np.float32), *value_range).astype(np.float32)


@register
class NoiseAccuracy(RobustnessMethod[NoiseParams, Noise]):
    """Accuracy and label-flip rate under random Gaussian or uniform L-inf noise.

    Reference: ISO/IEC TR 24029-1 5.3.2 (contrastive measures) and Annex A (data perturbation).
    Threat model: additive Gaussian noise of std ``sigma``, or uniform noise in the L-inf ball of
    radius ``eps``, clipped to the declared value range. On tabular data the strength is in units of
    each feature's scale, fixed features keep their values, integer features are rounded and every
    feature stays in its bounds (``feature_noise``). Parameters: ``draws`` noise draws per sample
    (default 1, so samples are independent and the binomial interval is exact). Result: ``accuracy``
    under noise, ``label_flip_rate`` (prediction differs from the clean one) and ``accuracy_drop``,
    each at every strength of the sweep (chart) and at the goal's strength (headline). A spent time
    budget stops the run between blocks of samples; the metrics then cover the samples done
    (``nnassay.tasks.methods.statistical.budget``).
    """

    name = "statistical.noise_accuracy"
    family = MethodFamily.STATISTICAL
    clause = "5.3.2"
    threats = ("gaussian_noise", "uniform_noise")
    metrics = ("accuracy", "label_flip_rate", "accuracy_drop")
    claim = ClaimKind.BOUND
    priority = 10

    def derive_params(self, threat: Noise, overrides: dict[str, Any]) -> NoiseParams:
        strength = threat.sigma if isinstance(threat, GaussianNoise) else threat.eps
        sweep = threat.sweep or [strength * k / 4 for k in (1, 2, 3)]
        sweep = sorted({round(s, 12) for s in [*sweep, strength]})
        return NoiseParams(**{"strength": strength, "sweep": sweep, **overrides})

    @classmethod
    def cost(cls, params: NoiseParams, samples: int) -> Cost:
        """Clean predictions, then one noisy pass per strength of the sweep and draw."""
        strengths = len({*params.sweep, params.strength} - {None}) or 1
        return passes(samples) + passes(samples, strengths * params.draws, drawn=True)

    def run(self, ctx: RunContext[Noise], params: NoiseParams) -> MethodOutcome:
        return self.merge_parts(ctx, params, [self.run_part(ctx, params, 0, len(ctx.data))])

    shard_unit = (
        BLOCK  # nnassay.tasks.pipeline.sharding: shards of this method start at multiples of BLOCK samples
    )

    def run_part(self, ctx: RunContext[Noise], params: NoiseParams, start: int, stop: int) -> NoisePart:
        """Counts for samples [start, stop); the noise of block b, strength step s and draw d comes
        from its own stream seeded (seed, s, d, b), so shards reproduce the unsharded run exactly.

        Blocks are measured in chunks (1, 2, 4, ... up to ``MAX_CHUNK_BLOCKS`` blocks); once the
        time budget is spent the part stops after the current chunk, with the samples done so far.
        """
        assert params.strength is not None and start % BLOCK == 0
        began = time.monotonic()
        strengths = sorted({*params.sweep, params.strength})
        blocks = list(range(start // BLOCK, -(-stop // BLOCK)))
        features = features_of(ctx)
        chunks: list[tuple[np.ndarray, ...]] = []
        taken, size = 0, 1
        while taken < len(blocks) and (not taken or ctx.time_left() > 0):
            chunk = blocks[taken : taken + size]
            lo, hi = chunk[0] * BLOCK, min((chunk[-1] + 1) * BLOCK, stop)
            x, y = ctx.data.x[lo:hi], ctx.data.y[lo:hi]
            chunks.append(self._measure(ctx, params, strengths, chunk, x, y, features))
            taken, size = taken + len(chunk), min(2 * size, MAX_CHUNK_BLOCKS)
            ctx.progress(hi - start, stop - start)
        clean, correct, flipped = (np.concatenate(parts, axis=1) for parts in zip(*chunks, strict=True))
        head = strengths.index(params.strength)
        return NoisePart(
            start=start,
            correct=correct.sum(axis=(1, 2)),
            flips=flipped.sum(axis=(1, 2)),
            clean_correct=clean[0],
            head_correct=correct[head],
            head_flipped=flipped[head],
            time_s=time.monotonic() - began,
            total=stop - start,
        )

    @staticmethod
    def _measure(
        ctx: RunContext[Noise],
        params: NoiseParams,
        strengths: list[float],
        blocks: list[int],
        x: np.ndarray,
        y: np.ndarray,
        features: FeatureNoise | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clean correct [1, n], correct [strengths, n, draws], flipped [strengths, n, draws]) of
        the samples of consecutive ``blocks``."""
        clean = ctx.model.predict(x)
        correct = np.zeros((len(strengths), len(y), params.draws), dtype=bool)
        flipped = np.zeros_like(correct)
        for step, strength in enumerate(strengths):
            for draw in range(params.draws):
                noisy = np.concatenate(
                    [
                        perturb(
                            x[k * BLOCK : (k + 1) * BLOCK],
                            ctx.threat,
                            strength,
                            np.random.default_rng([ctx.seed, step, draw, b]),
                            ctx.model.value_range,
                            features,
                        )
                        for k, b in enumerate(blocks)
                    ]
                )
                pred = ctx.model.predict(noisy)
                correct[step, :, draw], flipped[step, :, draw] = pred == y, pred != clean
        return (clean == y)[None], correct, flipped

    def merge_parts(
        self, ctx: RunContext[Noise], params: NoiseParams, parts: list[NoisePart]
    ) -> MethodOutcome:
        """The outcome of the whole test from its parts (sums and concatenations: exact)."""
        assert params.strength is not None
        parts = _prefix(sorted(parts, key=lambda p: p.start))
        strengths = sorted({*params.sweep, params.strength})
        n_all = sum(len(p.clean_correct) for p in parts) * params.draws
        correct_all = np.sum([p.correct for p in parts], axis=0)
        flips_all = np.sum([p.flips for p in parts], axis=0)
        totals = [(int(c), int(f), n_all) for c, f in zip(correct_all, flips_all, strict=True)]
        curve = dict(zip(strengths, totals, strict=True))
        correct, flips, n = curve[params.strength]
        clean_correct = np.concatenate([p.clean_correct for p in parts])
        clean_acc = float(clean_correct.mean())
        head_correct = np.concatenate([p.head_correct for p in parts])
        head_flipped = np.concatenate([p.head_flipped for p in parts])
        features = features_of(ctx)
        units = DATA_UNITS if features is None else EPS_UNITS
        unit = "sigma" if isinstance(ctx.threat, GaussianNoise) else "eps (L-inf)"
        drop, test = accuracy_drop(clean_correct, head_correct, ctx)
        outcome = MethodOutcome(
            metrics={
                "accuracy": rate(
                    correct,
                    n,
                    ctx,
                    f"Accuracy on noisy inputs at {unit} {params.strength:g} ({units}).",
                    ClaimKind.BOUND,
                    params.interval,
                ),
                "label_flip_rate": rate(
                    flips,
                    n,
                    ctx,
                    "Share of noisy inputs whose prediction differs from the clean prediction.",
                    ClaimKind.BOUND,
                    params.interval,
                ),
                "accuracy_drop": drop,
            },
            series=_curves(curve, f"{unit}, {units}", ctx, params.interval, clean_acc),
            details={
                "clean_accuracy": clean_acc,
                "draws": params.draws,
                "noise": unit,
                **({"eps_units": DATA_UNITS} if features is None else features.details()),
                "accuracy_drop_test": test,
                "per_sample": per_sample(accuracy=head_correct, label_flip_rate=head_flipped),
            },
        )
        return budget_cut(outcome, len(clean_correct), len(ctx.data))


def accuracy_drop(
    clean_correct: np.ndarray, noisy_correct: np.ndarray, ctx: RunContext
) -> tuple[Measurement, dict[str, JsonValue]]:
    """Clean accuracy minus accuracy under noise on the same samples, with a paired interval.

    One draw per sample: Newcombe's paired hybrid-score interval and McNemar's exact test
    (``nnassay.tasks.stats.contrast.compare_paired``). Several draws per sample: the draws of one sample
    are not independent, so the interval is a bootstrap over samples of each sample's drop (clean
    outcome minus its share of correct noisy draws). The value is the same either way.
    """
    from nnassay.tasks.stats.bootstrap import bootstrap_interval
    from nnassay.tasks.stats.contrast import compare_paired

    clean = np.asarray(clean_correct, dtype=bool)
    noisy = np.asarray(noisy_correct, dtype=bool).reshape(len(clean), -1)
    per_sample_drop = clean.astype(float) - noisy.mean(axis=1)
    value = float(per_sample_drop.mean()) if len(clean) else 0.0
    test: dict[str, JsonValue] = {}
    interval = None
    if noisy.shape[1] == 1 and len(clean):
        contrast = compare_paired(clean, noisy[:, 0], ctx.confidence)
        value = -contrast.difference
        interval = contrast.interval.model_copy(
            update={"low": -contrast.interval.high, "high": -contrast.interval.low}
        )
        test = {
            "test": contrast.test,
            "p_value": contrast.p_value,
            "significant": contrast.significant,
            "discordant_clean_right_noisy_wrong": contrast.discordant[0] if contrast.discordant else 0,
            "discordant_clean_wrong_noisy_right": contrast.discordant[1] if contrast.discordant else 0,
        }
    elif len(clean) >= 2:
        interval = bootstrap_interval(
            per_sample_drop, np.mean, ctx.confidence, np.random.default_rng([ctx.seed, 31]), n_resamples=1000
        )
        test = {"test": "bootstrap over samples (several draws per sample)"}
    how = (
        "Newcombe paired interval; McNemar's exact test in details"
        if test.get("p_value") is not None
        else "bootstrap interval over samples"
    )
    return Measurement(
        value=value,
        interval=interval,
        n=len(clean),
        claim=ClaimKind.ESTIMATE,
        description=(
            f"Clean accuracy minus accuracy under noise on the same samples ({how}); positive: noise costs "
            "accuracy."
        ),
    ), test


@dataclass(frozen=True)
class NoisePart:
    """Counts of one range of whole blocks of samples; parts merge by sums and concatenation."""

    start: int  # first sample of the part
    correct: np.ndarray  # correct predictions per strength (all draws)
    flips: np.ndarray  # predictions differing from the clean one, per strength
    clean_correct: np.ndarray  # bool per sample
    head_correct: np.ndarray  # bool (samples, draws) at the goal's strength
    head_flipped: np.ndarray  # bool (samples, draws) at the goal's strength
    time_s: float = 0.0
    total: int | None = None  # samples asked for (more than measured when the time budget cut it)

    @property
    def complete(self) -> bool:
        return self.total is None or len(self.clean_correct) >= self.total


def _prefix(parts: list[NoisePart]) -> list[NoisePart]:
    """Parts up to and including the first incomplete one (later samples would leave a gap)."""
    kept = []
    for part in parts:
        kept.append(part)
        if not part.complete:
            break
    return kept


def _curves(
    curve: dict[float, tuple[int, int, int]], unit: str, ctx: RunContext, method: str | None, clean_acc: float
) -> list[Series]:
    xs = [0.0, *curve]
    acc = [rate(c, n, ctx, "", method=method) for c, _, n in curve.values()]
    flip = [rate(f, n, ctx, "", method=method) for _, f, n in curve.values()]
    series = []
    for name, points, first in (("accuracy", acc, clean_acc), ("label flip rate", flip, 0.0)):
        series.append(
            Series(
                name=name,
                x_label=f"noise strength ({unit})",
                y_label=name,
                x=xs,
                y=[first, *(p.value for p in points)],
                y_low=[first, *(p.interval.low for p in points if p.interval)],
                y_high=[first, *(p.interval.high for p in points if p.interval)],
            )
        )
    return series
