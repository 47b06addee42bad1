"""Template of every adversarial-attack method: eps sweep, ONNX Runtime re-check, metrics, artifacts.

Subclasses write only ``attack`` (candidates at one eps) or ``search`` (per-sample minimal eps). The
base owns the invariant plumbing (Foolbox style): clean predictions, attacking only samples still
robust, keeping a candidate only if it lies in the ball and the value range and ONNX Runtime
misclassifies it, monotone robust-accuracy curves, and the evidence files.

On tabular data eps is in units of each feature's scale (``features.FeatureBox``): the ball is
x +- eps x scale (L-inf) or ``||delta / scale||_2 <= eps`` (L2), inside each feature's bounds, with
immutable and categorical features fixed and integer features whole. On images eps is in data units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import ClaimKind, MethodFamily
from nnassay.schemas.results import ArtifactRef, MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import AnyThreat, L2Ball, LinfBall
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.empirical.common import (
    mean_with_interval,
    ort_wrong,
    rate,
    rate_series,
    save_npz,
    strength_grid,
)
from nnassay.tasks.methods.empirical.features import FeatureBox, tabular_box
from nnassay.tasks.methods.empirical.pictures import save_examples
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext
from nnassay.tasks.methods.statistical.budget import BUDGET_CUT, cut_facts


class AttackParams(MethodParams):
    """Parameters every attack shares."""

    eps: float | None = Field(
        default=None,
        gt=0,
        description="Ball radius, from the threat: data units on images, units of each feature's "
        "scale on tabular data.",
    )
    sweep: list[float] = Field(default_factory=list, description="Radii of the robust-accuracy curve.")
    batch_size: int = Field(default=256, ge=1, description="Samples attacked together.")
    examples: int = Field(default=4, ge=0, le=16, description="Example pictures to save.")


@dataclass
class AttackRun:
    """Candidates for the attacked samples at one eps, and counters worth keeping."""

    candidates: np.ndarray
    info: dict[str, int] = field(default_factory=dict)


@dataclass
class Search:
    """Per sample: the smallest radius at which a checked adversarial input was found (inf: none)."""

    broken_at: np.ndarray
    x_adv: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    min_eps: np.ndarray | None = None  # for minimal-perturbation attacks: distance found (inf: none)
    cap: float = 0.0  # largest radius the minimal search looked at


def norm_of(threat: AnyThreat) -> str:
    """'linf' or 'l2' from a ball threat."""
    return "linf" if isinstance(threat, LinfBall) else "l2"


def checked(
    ctx: RunContext, candidates: np.ndarray, x: np.ndarray, y: np.ndarray, eps: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates fitted to the feature constraints (tabular), and per sample whether each lies in
    the ball of radius eps and ONNX Runtime misclassifies it."""
    box = tabular_box(ctx)
    if box is not None:
        candidates = box.constrain(candidates, x)
    dist = distances(candidates, x, norm_of(ctx.threat), box)
    return candidates, (dist <= np.asarray(eps) * (1 + 1e-6)) & ort_wrong(ctx, candidates, y)


def distances(x_adv: np.ndarray, x: np.ndarray, norm: str, box: FeatureBox | None = None) -> np.ndarray:
    """Per-sample L-inf or L2 distance (tabular with a box: in units of each feature's scale)."""
    if box is not None:
        return box.distances(x_adv, x, norm)
    delta = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    return np.abs(delta).max(axis=1) if norm == "linf" else np.sqrt((delta**2).sum(axis=1))


def grid_size(params: AttackParams) -> int:
    """Radii an attack runs at: the sweep and the goal's eps."""
    return len({*params.sweep, params.eps} - {None}) or 1


AP = TypeVar("AP", bound=AttackParams)
Ball = LinfBall | L2Ball  # the threats every attack tests


class AttackMethod(RobustnessMethod[AP, Ball]):
    """Base of the adversarial attacks (abstract: subclasses implement ``attack`` or ``search``).

    Generic in the attack's parameter model: ``class Apgd(WhiteBoxAttack[ApgdParams])``.
    """

    family = MethodFamily.EMPIRICAL
    clause = "7.3"
    threats: ClassVar[tuple[str, ...]] = ("linf_ball", "l2_ball")
    metrics: ClassVar[tuple[str, ...]] = ("robust_accuracy", "attack_success_rate")
    claim = ClaimKind.OBSERVATION
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")

    @classmethod
    def cost(cls, params: AP, samples: int) -> Cost:
        """The attack's own work (``attack_cost``) plus the ONNX Runtime checks every attack makes."""
        return cls.attack_cost(params, samples, grid_size(params)) + passes(samples, 2 + grid_size(params))

    @classmethod
    def attack_cost(cls, params: AP, samples: int, radii: int) -> Cost:
        """The attack's work at ``radii`` radii on ``samples`` samples, every sample attacked at every
        radius (the upper end: a sample broken at one radius is not attacked at the larger ones)."""
        return Cost(forwards=100.0 * samples * radii, forward_calls=100.0 * samples * radii)

    def derive_params(self, threat: Ball, overrides: dict[str, Any]) -> AP:
        return super().derive_params(
            threat, {"eps": threat.eps, "sweep": strength_grid(threat.eps, threat.sweep), **overrides}
        )

    def prepare(self, ctx: RunContext[Ball], params: AP) -> tuple[Any, MethodOutcome | None]:
        """Build what the attack needs (e.g. the torch module); an outcome instead means 'cannot run'."""
        return None, None

    def attack(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: AP,
        x: np.ndarray,
        y: np.ndarray,
        eps: float,
    ) -> AttackRun:
        """Candidate adversarial inputs for (x, y) at radius eps."""
        raise NotImplementedError(f"{type(self).__name__} must implement attack or search")

    def search(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: AP,
        x: np.ndarray,
        y: np.ndarray,
        grid: list[float],
    ) -> Search:
        """Attack at every radius of the grid, ascending, each time only samples not broken yet."""
        broken_at, x_adv = np.full(len(x), np.inf), x.copy()
        info: dict[str, Any] = {}
        for step, eps in enumerate(grid):
            todo = np.flatnonzero(np.isinf(broken_at))
            if step and ctx.time_left() <= 0:  # the smallest radius always starts (its first batch at least)
                info["stopped_before_eps"] = eps
                break
            for start in range(0, len(todo), params.batch_size):
                if start and ctx.time_left() <= 0:
                    info.update(stopped_at_eps=eps, attacked_at_stop=int(start), to_attack_at_stop=len(todo))
                    break
                chunk = todo[start : start + params.batch_size]
                run = self.attack(setup, ctx, params, x[chunk], y[chunk], eps)
                candidates, ok = checked(ctx, run.candidates, x[chunk], y[chunk], eps)
                broken_at[chunk[ok]], x_adv[chunk[ok]] = eps, candidates[ok]
                for key, value in run.info.items():
                    info[f"{key}@{eps:g}"] = info.get(f"{key}@{eps:g}", 0) + int(value)
            ctx.progress(step + 1, len(grid))
            if "stopped_at_eps" in info:
                break
        return Search(broken_at, x_adv, info)

    def run(self, ctx: RunContext[Ball], params: AP) -> MethodOutcome:
        eps = params.eps if params.eps is not None else float(getattr(ctx.threat, "eps", 0.03))
        grid = sorted({*params.sweep, eps})
        setup, refusal = self.prepare(ctx, params)
        if refusal is not None:
            return refusal
        x, y = ctx.data.x, ctx.data.y
        correct = ~ort_wrong(ctx, x, y)
        idx = np.flatnonzero(correct)
        found = self.search(setup, ctx, params, x[idx], y[idx], grid)
        return self.summarise(ctx, params, eps, grid, correct, idx, found, setup)

    def extra_details(self, setup: Any) -> dict[str, JsonValue]:
        """Facts about the setup for the evidence (e.g. executor deviation from ONNX Runtime)."""
        return {}

    def caveat(self, setup: Any) -> str | None:
        """A caveat about the setup for the result's reason (e.g. executor far from ONNX Runtime)."""
        return None

    def summarise(
        self,
        ctx: RunContext[Ball],
        params: AP,
        eps: float,
        grid: list[float],
        correct: np.ndarray,
        idx: np.ndarray,
        found: Search,
        setup: Any,
    ) -> MethodOutcome:
        """Metrics, curves, artifacts and details from the per-sample search results."""
        n, n_correct = len(correct), int(correct.sum())
        norm = norm_of(ctx.threat)
        broken = found.broken_at <= eps
        robust = n_correct - int(broken.sum())
        units = "units of each feature's scale" if tabular_box(ctx) is not None else "data units"
        unit = f"eps ({'L-inf' if norm == 'linf' else 'L2'}, {units})"
        metrics = {
            "robust_accuracy": rate(
                robust,
                n,
                ctx,
                f"Share of test samples classified correctly and not "
                f"broken by {self.name} within {'L-inf' if norm == 'linf' else 'L2'} eps {eps:g} ({units}),"
                " checked on ONNX Runtime (an upper bound of the true robust accuracy).",
                ClaimKind.OBSERVATION,
            ),
            "attack_success_rate": rate(
                int(broken.sum()),
                n_correct,
                ctx,
                "Share of correctly classified "
                f"samples for which the attack found an adversarial input within "
                f"eps {eps:g} (checked on ONNX Runtime).",
                ClaimKind.OBSERVATION,
            ),
        }
        counts = [(n_correct - int((found.broken_at <= e).sum()), n) for e in grid]
        series = [
            rate_series(
                f"{self.name} robust accuracy",
                [0.0, *grid],
                [(n_correct, n), *counts],
                ctx,
                unit,
                "robust accuracy",
            )
        ]
        if found.min_eps is not None:
            metrics.update(self._min_eps_metrics(ctx, found.min_eps, found.cap or eps, unit))
            series.append(self._histogram(found.min_eps, unit))
        rows = idx[broken]
        artifacts = self._artifacts(ctx, params, rows, found.x_adv[broken], eps)
        details: dict[str, JsonValue] = {
            "eps": eps,
            "norm": norm,
            "eps_units": units,
            **(box.details() if (box := tabular_box(ctx)) is not None else {}),
            "grid": list(grid),
            "clean_correct": n_correct,
            "successful_indices": [int(i) for i in rows],
            "broken_per_eps": {f"{e:g}": int((found.broken_at <= e).sum()) for e in grid},
            **{k: v for k, v in found.info.items()},
            **self.extra_details(setup),
        }
        notes = [self.caveat(setup)]
        if "stopped_before_eps" in found.info:
            notes.append(
                f"the time budget ran out before eps {found.info['stopped_before_eps']:g}; robust "
                "accuracy at that eps and above counts only the attacks that ran (an upper bound)"
            )
        if "attacked_at_stop" in found.info:
            at = f" at eps {found.info['stopped_at_eps']:g}" if "stopped_at_eps" in found.info else ""
            notes.append(
                f"the time budget ran out{at} after {found.info['attacked_at_stop']} of the "
                f"{found.info['to_attack_at_stop']} samples to attack{at} were attacked; the others count "
                "as robust (an upper bound)"
            )
        if "attacked_at_stop" in found.info:
            details[BUDGET_CUT] = cut_facts(
                int(found.info["attacked_at_stop"]),
                int(found.info["to_attack_at_stop"]),
                f"samples to attack at eps {found.info.get('stopped_at_eps', eps):g}",
            )
        elif "stopped_before_eps" in found.info:
            done = sum(e < found.info["stopped_before_eps"] for e in grid)
            details[BUDGET_CUT] = cut_facts(done, len(grid), "radii")
        reason = "; ".join(n for n in notes if n) or None
        return MethodOutcome(
            status=TestStatus.COMPLETED,
            metrics=metrics,
            series=series,
            artifacts=artifacts,
            details=details,
            reason=reason,
        )

    def _min_eps_metrics(self, ctx: RunContext, min_eps: np.ndarray, cap: float, unit: str) -> dict[str, Any]:
        capped = np.minimum(min_eps, cap)
        note = (
            f" Samples not broken up to {cap:g} count as {cap:g}, so the value is a lower bound of the "
            "true mean of the attack's minimal eps"
            if np.isinf(min_eps).any()
            else ""
        )
        return {
            "median_min_eps": mean_with_interval(
                capped,
                ctx,
                f"Median over correctly classified samples of "
                f"the smallest {unit} at which an adversarial input was "
                f"found.{note}",
                np.median,
            ),
            "mean_min_eps": mean_with_interval(
                capped,
                ctx,
                f"Mean over correctly classified samples of the "
                f"smallest {unit} at which an adversarial input was found."
                f"{note}",
            ),
        }

    def _histogram(self, min_eps: np.ndarray, unit: str) -> Series:
        finite = min_eps[np.isfinite(min_eps)]
        edges = np.histogram_bin_edges(finite if len(finite) else np.zeros(1), bins=20)
        counts, _ = np.histogram(finite, bins=edges)
        return Series(
            name=f"{self.name} minimal eps distribution",
            x_label=f"minimal {unit}",
            y_label="samples",
            x=[float(v) for v in edges[1:]],
            y=[float(c) for c in counts],
            kind="histogram",
        )

    def _artifacts(
        self, ctx: RunContext, params: AttackParams, rows: np.ndarray, x_adv: np.ndarray, eps: float
    ) -> list[ArtifactRef]:
        short = self.name.split(".")[1]
        refs = [
            save_npz(
                ctx,
                f"{short}_adversarial.npz",
                f"Adversarial inputs found by {self.name} within "
                f"eps {eps:g} (x_adv) and their rows in the test data (index).",
                x_adv=x_adv.astype(np.float32),
                index=rows.astype(np.int64),
                label=ctx.data.y[rows],
                adv_label=ctx.model.predict(x_adv) if len(rows) else np.zeros(0, np.int64),
            )
        ]
        if len(rows) and params.examples:
            pred = ctx.model.predict(x_adv[: params.examples])
            labels = [f"adv: {int(ctx.data.y[r])} -> {int(p)}" for r, p in zip(rows, pred, strict=False)]
            refs += save_examples(
                ctx,
                f"{short}_examples.png",
                f"Inputs broken by {self.name} at eps {eps:g}: original, adversarial, difference.",
                ctx.data.x[rows],
                x_adv,
                labels,
                params.examples,
            )
        return refs
