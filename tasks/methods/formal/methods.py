"""Formal methods of the registry: local robustness proofs, VNN-LIB properties, certified radii.

ISO/IEC TR 24029-1 clause 6. The verifier (``nnassay.tasks.methods.formal.verifier``, which loads torch) is imported
when a method runs, not when the registry lists methods. A sample or property the verifier cannot
decide is ``unknown``/``inconclusive`` with the reason, never a verdict it did not prove.
The verifier works on the ONNX graph (model space); L-inf balls are given in data space and mapped
through the declared preprocessing ``(x * scale - mean) / std``, which is monotone per value, so a
box maps to a box (widened by a few float32 ulps so the proof covers the float32 preprocessing).
On tabular data the ball is the attacks' per-feature box (``features.FeatureBox.ball``): eps in
units of each feature's scale, within each feature's bounds, immutable and categorical features
fixed; integer features are relaxed to their continuous interval (sound for proofs), and a
counterexample counts only once snapped to whole values and re-checked on ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.goals import Layout
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import LinfBall, VnnlibProperty
from nnassay.tasks.methods.empirical.features import FeatureBox, tabular_box
from nnassay.tasks.methods.formal.method_artifacts import save_counterexamples
from nnassay.tasks.methods.formal.property import Box, robustness_property
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.stats.intervals import proportion_interval

ULPS = 4.0  # float32 ulps added on each side of a mapped box
RELAXATION = (
    "the proof covers each feature's continuous interval (integer features relaxed: a sound "
    "over-approximation); immutable and categorical features stay at the sample's value; a "
    "counterexample counts only after integer features are snapped to whole values inside the box "
    "and ONNX Runtime still misclassifies it"
)


def load_engine() -> Any:
    """The verifier module (imported on first use; tests may substitute it)."""
    from nnassay.tasks.methods.formal import verifier

    return verifier


@dataclass(frozen=True)
class Affine:
    """Data space to model space per value: ``model = a * data + b`` (a > 0), float64, sample shape."""

    a: np.ndarray
    b: np.ndarray

    def box(self, lower: np.ndarray, upper: np.ndarray) -> Box:
        """The model-space box of a data-space box, widened so float32 preprocessing stays inside."""
        lo, hi = self.a * lower + self.b, self.a * upper + self.b
        lo_f, hi_f = lo.reshape(-1), hi.reshape(-1)
        return Box(lower=lo_f - ULPS * _ulp(lo_f), upper=hi_f + ULPS * _ulp(hi_f))

    def to_data(self, x_model: np.ndarray) -> np.ndarray:
        return (np.asarray(x_model, np.float64).reshape(self.a.shape) - self.b) / self.a

    @property
    def uniform(self) -> bool:
        """True when every value is scaled alike, so an L-inf ball maps to an L-inf ball."""
        return bool(np.ptp(self.a) == 0.0)


def _ulp(v: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)


@dataclass(frozen=True)
class Space:
    """Where one test's balls live: the data-to-model map, and the per-feature box on tabular data
    (None on images, where eps is in data units and the ball is clipped to the value range)."""

    affine: Affine
    box: FeatureBox | None = None

    def ball(self, ctx: RunContext, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Data-space corners (float64, shape of x) of the L-inf ball of radius eps around x."""
        if self.box is not None:
            lower, upper = self.box.ball(x.reshape(-1), eps)
            return lower.reshape(x.shape), upper.reshape(x.shape)
        low, high = ctx.model.value_range
        return np.clip(x - eps, low, high).astype(np.float64), np.clip(x + eps, low, high).astype(np.float64)

    def valid(
        self, x_adv: np.ndarray, x: np.ndarray, lower: np.ndarray, upper: np.ndarray
    ) -> list[np.ndarray]:
        """Candidates a counterexample may be reported as: itself on images; on tables the attacks'
        constraints (``FeatureBox.constrain``) applied to it, integer features truncated towards x
        or rounded to the nearest whole value of the ball, keeping only points inside the ball."""
        if self.box is None:
            return [x_adv]
        flat, x0, lo, hi = (np.asarray(v, np.float64).reshape(1, -1) for v in (x_adv, x, lower, upper))
        rounded = np.where(self.box.integer, np.clip(np.round(flat), np.ceil(lo), np.floor(hi)), flat)
        out = [self.box.constrain(c, x0) for c in (flat, rounded)]
        slack = 1e-6 * np.maximum(np.abs(lo), np.abs(hi)) + 1e-30
        return [c.reshape(x.shape) for c in out if np.all(c >= lo - slack) and np.all(c <= hi + slack)]

    @property
    def units(self) -> str:
        return "units of each feature's scale" if self.box is not None else "data units"

    def details(self) -> dict[str, JsonValue]:
        """The ball's units for the evidence (tabular: each feature's name, scale and bounds)."""
        if self.box is None:
            return {"eps_units": self.units}
        return {"eps_units": self.units, **self.box.details(), "box_relaxation": RELAXATION}


def space_of(ctx: RunContext) -> Space:
    """The data-to-model map of ``ctx`` and, on tabular data, the attacks' per-feature box."""
    return Space(affine_of(ctx), tabular_box(ctx))


def affine_of(ctx: RunContext) -> Affine:
    """The preprocessing of ``ctx.model`` as per-value factors over one sample's shape."""
    pre = ctx.model.spec.preprocessing
    shape = ctx.data.x.shape[1:]
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    if len(shape) >= 3 and ctx.model.layout == Layout.NCHW:
        view = (-1,) + (1,) * (len(shape) - 1)
    else:
        view = (1,) * (len(shape) - 1) + (-1,)
    mean = np.broadcast_to(mean.reshape(view), shape)
    std = np.broadcast_to(std.reshape(view), shape)
    return Affine(a=np.asarray(pre.scale / std, np.float64), b=np.asarray(-mean / std, np.float64))


@dataclass
class SampleResult:
    """The verdict for one test sample."""

    index: int
    label: int
    verdict: str  # robust | falsified | unknown
    time_s: float = 0.0
    method: str = ""
    reason: str = ""
    x_adv: np.ndarray | None = None  # data space
    radius: tuple[float, float | None] | None = None
    device: str = ""  # torch device the bounds ran on

    def as_json(self) -> dict[str, JsonValue]:
        row: dict[str, JsonValue] = {
            "index": self.index,
            "label": self.label,
            "verdict": self.verdict,
            "time_s": round(self.time_s, 4),
            "method": self.method,
        }
        if self.reason:
            row["reason"] = self.reason
        if self.radius is not None:
            row["radius_lower"], row["radius_upper"] = self.radius[0], self.radius[1]
        return row


class LocalParams(MethodParams):
    """Parameters of the local-robustness proof."""

    eps: float | None = Field(
        default=None,
        gt=0,
        description="L-inf radius, from the threat: data units on images, units of each feature's "
        "scale on tabular data.",
    )
    time_per_sample_s: float = Field(default=10.0, gt=0, description="Verifier budget per sample.")
    certified_radius: bool = Field(default=False, description="Also search each sample's certified radius.")
    eps_max: float | None = Field(default=None, gt=0, description="Largest radius searched (default 4 eps).")
    tol: float = Field(default=0.05, gt=0, lt=1, description="Radius search stops at this relative gap.")


LP = TypeVar("LP", bound=LocalParams)


class _FormalBase(RobustnessMethod[LP, LinfBall]):
    family = MethodFamily.FORMAL
    claim = ClaimKind.PROOF
    priority = 50

    def derive_params(self, threat: LinfBall, overrides: dict[str, Any]) -> LP:
        return super().derive_params(threat, {"eps": threat.eps, **overrides})

    def verify_sample(
        self, engine: Any, ctx: RunContext, index: int, budget: float, eps: float, space: Space
    ) -> SampleResult:
        """Prove or refute robustness of one sample at ``eps``; counterexamples are re-run on ORT
        (on tables after snapping integer features, see ``Space.valid``)."""
        x, label = ctx.data.x[index], int(ctx.data.y[index])
        pred = int(ctx.model.predict(x[None])[0])
        if pred != label:
            return SampleResult(
                index,
                label,
                "falsified",
                method="clean",
                x_adv=x.copy(),
                reason="misclassified without perturbation",
            )
        lower, upper = space.ball(ctx, x, eps)
        prop = robustness_property(
            space.affine.box(lower, upper),
            label,
            ctx.model.n_classes,
            f"local_robustness(label={label}, eps={eps:g} {space.units}) (model space)",
        )
        began = time.monotonic()
        try:
            outcome = engine.verify(score_model_path(ctx), prop, timeout_s=budget)
        except Exception as exc:  # the engine failed on this sample: undecided, with the reason
            return SampleResult(
                index, label, "unknown", time.monotonic() - began, reason=f"{type(exc).__name__}: {exc}"
            )
        result = SampleResult(
            index,
            label,
            "unknown",
            float(getattr(outcome, "time_s", 0.0) or 0.0),
            str(getattr(outcome, "method", "") or ""),
            str(getattr(outcome, "reason", "") or ""),
            device=str(getattr(outcome, "device", "") or ""),
        )
        if outcome.verdict == "unsat":
            result.verdict = "robust"
        elif outcome.verdict == "sat" and outcome.counterexample is not None:
            x_adv = np.clip(space.affine.to_data(outcome.counterexample[0]), lower, upper).astype(np.float32)
            candidates = space.valid(x_adv, x, lower, upper)
            wrong = ctx.model.predict(np.stack(candidates)) != label if candidates else np.zeros(0, bool)
            if wrong.any():
                result.verdict, result.x_adv = "falsified", candidates[int(np.argmax(wrong))]
            elif space.box is not None:
                result.reason = (
                    "the verifier's counterexample is not misclassified once integer features are "
                    "whole and fixed features at the sample's value (checked on ONNX Runtime)"
                )
            else:
                result.reason = "the verifier's counterexample is not misclassified after preprocessing"
        elif outcome.verdict != "sat":
            result.reason = result.reason or outcome.verdict
        return result

    def radius(
        self,
        engine: Any,
        ctx: RunContext,
        index: int,
        budget: float,
        eps_max: float,
        tol: float,
        space: Space,
        known: float = 0.0,
    ) -> tuple[float, float | None]:
        """Certified L-inf radius of one sample (data units; on tables units of each feature's scale):
        (proved lower bound, refuted upper bound).

        ``known`` is a radius already proved (the lower bound never drops below it).
        """
        x, label = ctx.data.x[index], int(ctx.data.y[index])
        low, high = ctx.model.value_range
        affine = space.affine
        if space.box is None and affine.uniform and hasattr(engine, "certified_radius"):
            a, b = float(affine.a.reshape(-1)[0]), float(affine.b.reshape(-1)[0])
            r_lo, r_hi = engine.certified_radius(
                score_model_path(ctx),
                (affine.a * x + affine.b).reshape(-1),
                label,
                lower=a * low + b,
                upper=a * high + b,
                eps_max=eps_max * a,
                timeout_s=budget,
                tol=tol,
            )
            return max(float(r_lo) / a, known), (None if r_hi is None else float(r_hi) / a)
        return self.bisect(engine, ctx, index, budget, eps_max, tol, space, known)

    def bisect(
        self,
        engine: Any,
        ctx: RunContext,
        index: int,
        budget: float,
        eps_max: float,
        tol: float,
        space: Space,
        known: float,
    ) -> tuple[float, float | None]:
        """Bisection on eps with one proof per step: probe eps_max, then halve [proved, not proved]."""
        stop = time.monotonic() + budget
        lo, cap, refuted = known, eps_max, None
        eps = eps_max
        while lo < cap and time.monotonic() < stop:
            res = self.verify_sample(engine, ctx, index, max(stop - time.monotonic(), 0.01), eps, space)
            if res.verdict == "robust":
                lo = eps
            else:
                cap = eps
                refuted = eps if res.verdict == "falsified" else refuted
            if cap - lo <= tol * cap:
                break
            eps = (lo + cap) / 2
        return lo, refuted


def score_model_path(ctx: RunContext) -> str:
    """The ONNX file the verifier bounds: the model cut to its class scores (``ModelRunner.score_graph``:
    no label output, ArgMax or ZipMap; the logits before a final Softmax), written once per content."""
    model = ctx.model
    graph = model.score_graph() if hasattr(model, "score_graph") else None
    if graph is None:
        return str(model.path)
    data = graph.SerializeToString()
    path = Path(tempfile.gettempdir()) / f"nnassay-scores-{hashlib.sha256(data).hexdigest()[:24]}.onnx"
    if not path.exists():
        part = path.with_suffix(f".{os.getpid()}.part")
        part.write_bytes(data)
        part.replace(path)
    return str(path)


def fair_share(ctx: RunContext, per_sample: float, remaining: int) -> float:
    """The budget of the next sample: its own limit, within an equal share of the test's time left."""
    return max(min(per_sample, ctx.time_left() / max(remaining, 1)), 0.0)


@register
class LocalRobustness(_FormalBase[LocalParams]):
    """Proof of local robustness on each test sample: no input in its L-inf ball changes the class.

    Reference: ISO/IEC TR 24029-1 6.3.4 (abstract interpretation: sound bound propagation with branch
    and bound) for the maximum stable space property of 6.2.3. Threat model: L-inf ball of radius
    ``eps`` in data units, clipped to the value range; on tabular data the attacks' per-feature box
    (eps x each feature's scale within its bounds, immutable and categorical features fixed, integer
    features relaxed for the proof and whole in counterexamples). Parameters: ``time_per_sample_s`` (10),
    ``certified_radius`` (off). Result: ``verified_fraction`` (samples proved robust, a lower bound
    of the robust fraction on these samples) and ``falsified_fraction`` (samples with a counterexample
    re-executed on ONNX Runtime, misclassified ones included); the rest are undecided.
    """

    name = "formal.local_robustness"
    clause = "6.3.4"
    threats = ("linf_ball",)
    metrics = ("verified_fraction", "falsified_fraction")

    shard_unit = (
        1  # nnassay.tasks.pipeline.sharding: samples are verified independently, so shards may be any range
    )
    shard_size = 1  # one verification instance per task (each shows, runs and resumes on its own)

    def run(self, ctx: RunContext[LinfBall], params: LocalParams) -> MethodOutcome:
        return self.merge_parts(ctx, params, [self.run_part(ctx, params, 0, len(ctx.data))])

    def run_part(
        self, ctx: RunContext[LinfBall], params: LocalParams, start: int, stop: int
    ) -> list[SampleResult]:
        """Verdicts of samples [start, stop)."""
        assert params.eps is not None
        engine = load_engine()
        space, results = space_of(ctx), []
        for i in range(start, stop):
            budget = fair_share(ctx, params.time_per_sample_s, stop - i)
            res = self.verify_sample(engine, ctx, i, budget, params.eps, space)
            if params.certified_radius and res.verdict == "robust":
                res.radius = self.radius(
                    engine,
                    ctx,
                    i,
                    budget,
                    params.eps_max or 4 * params.eps,
                    params.tol,
                    space,
                    known=params.eps,
                )
            results.append(res)
            ctx.progress(i - start + 1, stop - start)
        return results

    def merge_parts(
        self, ctx: RunContext[LinfBall], params: LocalParams, parts: list[list[SampleResult]]
    ) -> MethodOutcome:
        assert params.eps is not None
        results = sorted((r for p in parts for r in p), key=lambda r: r.index)
        return summarize(ctx, results, params.eps)


def summarize(ctx: RunContext, results: list[SampleResult], eps: float) -> MethodOutcome:
    """Counts, rates with intervals, per-sample details and counterexample artifacts."""
    n = len(results)
    proved = [r.index for r in results if r.verdict == "robust"]
    broken = [r.index for r in results if r.verdict == "falsified"]
    undecided = n - len(proved) - len(broken)
    if n and undecided == n:
        reasons = sorted({r.reason for r in results if r.reason})
        return MethodOutcome(
            status=TestStatus.INCONCLUSIVE,
            reason=f"no sample was decided at eps {eps:g}: " + "; ".join(reasons[:3]),
            details={"per_sample": [r.as_json() for r in results], **space_of(ctx).details()},
        )
    metrics = {
        "verified_fraction": _rate(
            len(proved),
            n - len(broken),
            n,
            ctx,
            "Fraction of the N samples proved robust at eps "
            f"{eps:g}; a lower bound of the true robust fraction on these samples.",
        ),
        "falsified_fraction": _rate(
            len(broken),
            n - len(proved),
            n,
            ctx,
            "Fraction of the N samples with a counterexample "
            "checked on ONNX Runtime (misclassified ones included); one minus it "
            "bounds the robust fraction on these samples from above.",
        ),
    }
    details: dict[str, JsonValue] = {
        "eps": eps,
        "verified": len(proved),
        "falsified": len(broken),
        "unknown": undecided,
        "verified_indices": list(proved),
        "falsified_indices": list(broken),
        "per_sample": [r.as_json() for r in results],
        "verifier": "nnassay sound bound propagation + branch and bound (nnassay.tasks.methods.formal.verifier)",
        "verifier_devices": list(sorted({r.device for r in results if r.device})),
        **space_of(ctx).details(),
    }
    reason = f"{undecided} of {n} samples undecided: {_undecided_why(results)}" if undecided else None
    found = [(r.index, r.label, r.x_adv, r.method == "clean") for r in results if r.x_adv is not None]
    return MethodOutcome(
        metrics=metrics, details=details, artifacts=save_counterexamples(ctx, found), reason=reason
    )


def _undecided_why(results: list[SampleResult]) -> str:
    """Why the undecided samples are undecided, most frequent first (a timeout when none says)."""
    why = Counter(
        (r.reason or "the time budget ran out")[:160]
        for r in results
        if r.verdict not in ("robust", "falsified")
    )
    return "; ".join(f"{count} x {text}" for text, count in why.most_common(3))


def _rate(k: int, k_most: int, n: int, ctx: RunContext, text: str) -> Measurement:
    """The share k / n decided so, with an interval for the share it stands for: from the lower end
    for the k decided samples to the upper end for ``k_most`` (the decided ones plus every undecided
    sample). Undecided samples could go either way, so a proof goal fails only on counterexamples
    (enough refuted samples), never on samples the verifier did not decide; with every sample
    decided it is the usual interval of k / n."""
    low = proportion_interval(k, n, ctx.confidence, ctx.interval)
    high = proportion_interval(k_most, n, ctx.confidence, ctx.interval)
    return Measurement(
        value=k / n if n else 0.0,
        interval=low.model_copy(update={"high": high.high}),
        claim=ClaimKind.PROOF,
        n=n,
        successes=k,
        is_rate=True,
        description=text
        + (
            f" Its interval spans the {k_most - k} undecided sample(s) either way (they may be robust or not)."
            if k_most > k
            else ""
        ),
    )


class VnnlibParams(MethodParams):
    """Parameters of the VNN-LIB property check."""

    timeout_s: float = Field(default=300.0, gt=0, description="Verifier time limit for the property.")


@register
class VnnlibPropertyCheck(RobustnessMethod[VnnlibParams, VnnlibProperty]):
    """Check of a VNN-LIB property (VNN-COMP semantics) on the ONNX model with the sound verifier.

    Reference: ISO/IEC TR 24029-1 6.2 (property specification) and 6.3 (verdict per property). Threat
    model: the input set and violation condition written in the file, over the raw ONNX input (model
    space, no preprocessing applied). Parameters: ``timeout_s`` (300). Result: ``property_holds`` is 1
    when the violation is proved impossible (unsat), 0 when a counterexample re-executed on ONNX
    Runtime violates it (sat); unknown or timeout leaves the test inconclusive with the reason.
    """

    name = "formal.vnnlib_property"
    family = MethodFamily.FORMAL
    clause = "6.3"
    threats = ("vnnlib",)
    metrics = ("property_holds",)
    claim = ClaimKind.PROOF
    priority = 50

    def run(self, ctx: RunContext[VnnlibProperty], params: VnnlibParams) -> MethodOutcome:
        from nnassay.tasks.methods.formal.command import check_counterexample, run_model
        from nnassay.tasks.methods.formal.vnnlib import VnnlibError, parse_vnnlib

        shape = ctx.data.x.shape[1:]
        try:
            prop = parse_vnnlib(ctx.threat.path, int(np.prod(shape)), ctx.model.n_classes)
        except VnnlibError as exc:
            return MethodOutcome(status=TestStatus.INCONCLUSIVE, reason=f"the property cannot be read: {exc}")
        engine = load_engine()
        try:
            outcome = engine.verify(
                ctx.model.path, prop, timeout_s=max(min(params.timeout_s, ctx.time_left()), 0.0)
            )
        except Exception as exc:  # the engine failed: the property stays undecided, with the reason
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE, reason=f"the verifier failed: {type(exc).__name__}: {exc}"
            )
        details: dict[str, JsonValue] = {
            "verdict": outcome.verdict,
            "verifier_method": str(getattr(outcome, "method", "")),
            "property": str(ctx.threat.path),
            "regions": len(prop.regions),
            "time_s": float(getattr(outcome, "time_s", 0.0) or 0.0),
            "verifier_device": str(getattr(outcome, "device", "") or ""),
        }
        ctx.progress(1, 1)
        if outcome.verdict == "unsat":
            return MethodOutcome(
                metrics={
                    "property_holds": _holds(
                        1.0, "proved: no input of the input set satisfies the violation condition"
                    )
                },
                details=details,
            )
        if outcome.verdict == "sat" and outcome.counterexample is not None:
            x = np.asarray(outcome.counterexample[0], np.float32).reshape(-1)
            y = run_model(ctx.model.path, x)
            problem = check_counterexample(prop, x, y)
            if problem is None:
                buffer = io.BytesIO()
                np.savez_compressed(buffer, x=x, y=y)
                ref = ctx.save_artifact(
                    "vnnlib_counterexample.npz",
                    buffer.getvalue(),
                    "application/x-npz",
                    "counterexample of the VNN-LIB property: x (ONNX input, flat), y",
                )
                return MethodOutcome(
                    metrics={
                        "property_holds": _holds(
                            0.0, "violated: a counterexample re-executed on ONNX Runtime"
                        )
                    },
                    details=details,
                    artifacts=[ref],
                )
            details["rejected_counterexample"] = problem
        reason = str(getattr(outcome, "reason", "") or outcome.verdict)
        return MethodOutcome(
            status=TestStatus.INCONCLUSIVE,
            details=details,
            reason=f"the verifier could not decide the property ({outcome.verdict}): {reason}",
        )


def _holds(value: float, text: str) -> Measurement:
    return Measurement(
        value=value, claim=ClaimKind.PROOF, n=1, description=f"1 if the property holds, 0 if not; {text}."
    )


class StableSpaceParams(LocalParams):
    """Parameters of the certified-radius search."""

    certified_radius: bool = Field(default=True, description="Always on for this method.")
    sweep: list[float] = Field(default_factory=list, description="Radii for the certified-accuracy curve.")


@register
class MaxStableSpace(_FormalBase[StableSpaceParams]):
    """Maximum stable space per sample: the largest L-inf radius proved not to change the class.

    Reference: ISO/IEC TR 24029-1 6.2.3 (maximum stable space for perturbation resistance), proved by
    abstract interpretation (6.3.4). Threat model: L-inf balls in data units, clipped to the value
    range (on tabular data the attacks' per-feature box, radii in units of each feature's scale),
    searched up to ``eps_max`` (4 eps). Parameters: ``time_per_sample_s`` (10), ``tol`` (0.05
    relative). Result: ``mean_certified_radius`` (mean proved radius, 0 for misclassified samples)
    and ``certified_fraction_at_eps`` (samples whose proved radius reaches eps), plus the certified
    accuracy curve over the sweep. Used only when a goal names it (slow). The radius search stops on
    a wall-clock budget per sample: on a loaded machine a search can end earlier, with a smaller
    (still proved) radius, so the same seed gives the same radii only when no search hits its budget.
    """

    name = "formal.max_stable_space"
    clause = "6.2.3"
    threats = ("linf_ball",)
    metrics = ("mean_certified_radius", "certified_fraction_at_eps")
    default = False

    def derive_params(self, threat: LinfBall, overrides: dict[str, Any]) -> StableSpaceParams:
        sweep = sorted({*(threat.sweep or [threat.eps * k / 4 for k in (1, 2, 3)]), threat.eps})
        return StableSpaceParams(**{"eps": threat.eps, "sweep": sweep, **overrides})

    shard_unit = 1  # nnassay.tasks.pipeline.sharding: radii are searched per sample
    shard_size = 1  # one radius search per task

    def run(self, ctx: RunContext[LinfBall], params: StableSpaceParams) -> MethodOutcome:
        return self.merge_parts(ctx, params, [self.run_part(ctx, params, 0, len(ctx.data))])

    def run_part(
        self, ctx: RunContext[LinfBall], params: StableSpaceParams, start: int, stop: int
    ) -> list[tuple[int, float, float | None]]:
        """(index, proved radius, refuted radius) of samples [start, stop)."""
        assert params.eps is not None
        engine = load_engine()
        space, eps_max = space_of(ctx), params.eps_max or 4 * params.eps
        predicted = ctx.model.predict(ctx.data.x[start:stop])
        radii: list[tuple[int, float, float | None]] = []
        for i in range(start, stop):
            if predicted[i - start] != ctx.data.y[i]:
                radii.append((i, 0.0, 0.0))
            else:
                budget = fair_share(ctx, params.time_per_sample_s, stop - i)
                radii.append((i, *self.radius(engine, ctx, i, budget, eps_max, params.tol, space)))
            ctx.progress(i - start + 1, stop - start)
        return radii

    def merge_parts(
        self,
        ctx: RunContext[LinfBall],
        params: StableSpaceParams,
        parts: list[list[tuple[int, float, float | None]]],
    ) -> MethodOutcome:
        assert params.eps is not None
        rows = sorted(r for p in parts for r in p)
        return self.outcome(ctx, params, [(lo, hi) for _, lo, hi in rows], params.eps_max or 4 * params.eps)

    def outcome(
        self,
        ctx: RunContext,
        params: StableSpaceParams,
        radii: list[tuple[float, float | None]],
        eps_max: float,
    ) -> MethodOutcome:
        assert params.eps is not None
        lower = np.array([r[0] for r in radii])
        n = len(radii)
        space = space_of(ctx)
        certified = [i for i in range(n) if lower[i] >= params.eps]
        grid = sorted({*params.sweep, params.eps})
        curve = [float((lower >= e).mean()) if n else 0.0 for e in grid]
        return MethodOutcome(
            metrics={
                "mean_certified_radius": Measurement(
                    value=float(lower.mean()) if n else 0.0,
                    claim=ClaimKind.PROOF,
                    n=n,
                    description="Mean over the N samples of the largest "
                    f"L-inf radius proved robust (searched up to {eps_max:g};"
                    " 0 for misclassified samples); a lower bound per sample.",
                ),
                "certified_fraction_at_eps": _rate(
                    len(certified),
                    sum(1 for _, hi in radii if hi is None or hi > params.eps),  # not refuted at eps
                    n,
                    ctx,
                    f"Fraction of the N samples whose proved radius reaches eps {params.eps:g}.",
                ),
            },
            series=[
                Series(
                    name="certified accuracy",
                    x_label=f"eps (L-inf, {space.units})",
                    y_label="fraction of samples",
                    x=grid,
                    y=curve,
                )
            ],
            details={
                "radius_lower": [float(r[0]) for r in radii],
                "radius_upper": [None if r[1] is None else float(r[1]) for r in radii],
                "verified_indices": list(certified),
                "eps_max": eps_max,
                **space.details(),
            },
        )
