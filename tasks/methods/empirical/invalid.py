"""Invalid input: NaN, infinities, out-of-range, extreme, constant and noise inputs, and how the
deployed model (ONNX Runtime) reacts: crashes, non-finite outputs, confident answers to garbage."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import MethodFamily
from nnassay.schemas.results import MethodOutcome
from nnassay.schemas.threats import InvalidInput
from nnassay.tasks.io.model_io import to_probabilities
from nnassay.tasks.methods.empirical.common import rate, rate_series
from nnassay.tasks.methods.empirical.features import data_columns
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical.budget import budget_cut

CASES = ("nan", "pos_inf", "neg_inf", "out_of_range", "extreme", "constant", "random_noise")


Bounds = tuple[float, float] | tuple[np.ndarray, np.ndarray]  # one range, or one per feature


def invalid_inputs(
    x: np.ndarray, case: str, value_range: Bounds, rng: np.random.Generator, share: float = 0.1
) -> np.ndarray:
    """Invalid versions of x for one case (same shape, float32).

    nan / pos_inf / neg_inf: a share of the values of each sample (at least one) replaced;
    out_of_range: every value pushed 1 to 2 spans outside the range; extreme: values of magnitude
    1e20 x span with random signs; constant: one random in-range level per sample; random_noise:
    uniform noise over the range. ``value_range`` is one range for every value, or for tabular data
    per-feature arrays (low, high) of shape (features,): then out_of_range leaves each feature's own
    range by 1 to 2 of its own spans, and ``constant`` puts every feature at the same quantile of
    its range.
    """
    low, high = value_range
    span = high - low
    flat: np.ndarray = x.reshape(len(x), -1).astype(np.float32).copy()
    if case in ("nan", "pos_inf", "neg_inf"):
        hit = rng.random(flat.shape) < share
        hit[np.arange(len(flat)), rng.integers(0, flat.shape[1], len(flat))] = True
        flat[hit] = {"nan": np.nan, "pos_inf": np.inf, "neg_inf": -np.inf}[case]
    elif case == "out_of_range":
        up = rng.random(flat.shape) < 0.5
        flat = np.where(
            up, high + span * (1 + rng.random(flat.shape)), low - span * (1 + rng.random(flat.shape))
        )
    elif case == "extreme":
        flat = rng.choice([-1.0, 1.0], size=flat.shape) * 1e20 * span
    elif case == "constant" and isinstance(low, np.ndarray):
        flat = np.broadcast_to(low + rng.uniform(0, 1, (len(flat), 1)) * span, flat.shape).copy()
    elif case == "constant":
        flat = np.broadcast_to(rng.uniform(low, high, (len(flat), 1)), flat.shape).copy()
    elif case == "random_noise":
        flat = rng.uniform(low, high, flat.shape)
    else:
        raise ValueError(f"unknown invalid-input case {case!r}; expected one of {list(CASES)}")
    return flat.reshape(x.shape).astype(np.float32)


REACTIONS = ("crashed", "non_finite", "confident")


def react(ctx: RunContext, x: np.ndarray, confidence_level: float) -> tuple[str | None, str]:
    """Run one input alone on ONNX Runtime, so one crash does not hide the others.

    Returns the reaction, ``crashed``, ``non_finite`` (some output is NaN or infinite), ``confident``
    (finite output with top-class probability above ``confidence_level``) or None, and the first
    line of the error message of a crash ('' otherwise).
    """
    try:
        out = ctx.model.logits(x[None])
    except Exception as exc:  # onnxruntime raises several unrelated types
        return "crashed", str(exc).splitlines()[0][:200]
    if not np.isfinite(out).all():
        return "non_finite", ""
    confident = to_probabilities(out, "logits").max() > confidence_level  # logits(): log p for probabilities
    return ("confident" if confident else None), ""


def react_all(
    ctx: RunContext, inputs: list[np.ndarray], confidence_level: float
) -> tuple[int, list[dict[str, np.ndarray]], list[set[str]]]:
    """Reactions to every case's inputs, row by row across the cases, so a time budget that runs out
    leaves every case measured on the same first rows.

    Returns the rows done, and per case the reaction flags (bool arrays over the rows done) and the
    error messages seen.
    """
    rows = len(inputs[0]) if inputs else 0
    flags = [{k: np.zeros(rows, dtype=bool) for k in REACTIONS} for _ in inputs]
    messages: list[set[str]] = [set() for _ in inputs]
    done = rows
    for row in range(rows):
        if row and ctx.time_left() <= 0:
            done = row
            break
        for case, batch in enumerate(inputs):
            reaction, message = react(ctx, batch[row], confidence_level)
            if reaction is not None:
                flags[case][reaction][row] = True
            if message:
                messages[case].add(message)
        ctx.progress(row + 1, rows)
    return done, [{k: v[:done] for k, v in f.items()} for f in flags], messages


def _bounds(ctx: RunContext) -> Bounds:
    """The model's value range for images; each feature's own range (declared, else observed) for tables."""
    if ctx.data.kind != "tabular" or ctx.data.x.ndim != 2:
        return ctx.model.value_range
    cols = data_columns(ctx.data)  # the whole data's ranges, not the subset's
    low, high = np.array([c.low for c in cols]), np.array([c.high for c in cols])
    return low, np.where(high > low, high, low + np.array([c.spread for c in cols]))


class InvalidParams(MethodParams):
    """Parameters of the invalid-input test."""

    cases: list[str] = Field(default_factory=lambda: list(CASES), description="Kinds of invalid input.")
    confidence_level: float = Field(
        default=0.9, ge=0, le=1, description="Top-class probability counted as a confident answer."
    )
    per_case: int = Field(default=50, ge=1, description="Inputs per case (from the first test samples).")


@register
class InvalidInputReaction(RobustnessMethod[InvalidParams, InvalidInput]):
    """How the deployed model reacts to invalid input: crashes, NaN outputs, confident garbage answers.

    Reference: ISO/IEC TR 24029-1 7.3 (a posteriori testing) and Annex A; EU AI Act Art. 15(4)
    (resilience to errors and inconsistencies of inputs). Threat model: NaN / +-Inf in 10% of the
    values, out-of-range and extreme-magnitude values, constant and uniform-noise inputs, each run
    alone on ONNX Runtime. On tabular data the ranges are each feature's own (declared in
    ``data.features``, else observed in the test data), not ``model.value_range``. Parameters: ``cases`` (all), ``confidence_level`` (0.9), ``per_case``
    (50). Result: ``crash_rate``, ``non_finite_rate`` and ``confident_garbage_rate`` over all invalid
    inputs (a well-behaved model rejects or flags them: all rates near 0), each per case in
    ``details`` with Clopper-Pearson intervals. A spent time budget stops the run between rows: every
    case is measured on the same first rows (``details['budget_cut']``).
    """

    name = "empirical.invalid_input"
    family = MethodFamily.EMPIRICAL
    clause = "7.3"
    threats = ("invalid_input",)
    metrics = ("confident_garbage_rate", "crash_rate", "non_finite_rate")
    priority = 20

    def derive_params(self, threat: InvalidInput, overrides: dict[str, Any]) -> InvalidParams:
        return InvalidParams(
            **{"cases": list(threat.cases), "confidence_level": threat.confidence_level, **overrides}
        )

    def run(self, ctx: RunContext[InvalidInput], params: InvalidParams) -> MethodOutcome:
        x = ctx.data.x[: params.per_case]
        inputs = [
            invalid_inputs(x, case, _bounds(ctx), np.random.default_rng([ctx.seed, i]))
            for i, case in enumerate(params.cases)
        ]
        rows, flags, messages = react_all(ctx, inputs, params.confidence_level)
        totals = {k: sum(int(f[k].sum()) for f in flags) for k in REACTIONS}
        counts = {k: [(int(f[k].sum()), rows) for f in flags] for k in REACTIONS}
        per_case: dict[str, JsonValue] = {}
        for case, f, m in zip(params.cases, flags, messages, strict=True):
            facts: dict[str, JsonValue] = {
                k: rate(int(f[k].sum()), rows, ctx, "").model_dump(mode="json") for k in REACTIONS
            }
            per_case[case] = facts | {"errors": list(sorted(m)[:5])}
        outcome = self._outcome(ctx, params, rows, totals, counts, per_case)
        return budget_cut(outcome, rows, len(x), "inputs per case")

    def _outcome(
        self,
        ctx: RunContext[InvalidInput],
        params: InvalidParams,
        rows: int,
        totals: dict[str, int],
        counts: dict[str, list[tuple[int, int]]],
        per_case: dict[str, JsonValue],
    ) -> MethodOutcome:
        n = rows * len(params.cases)
        label = "case (" + ", ".join(f"{i}={c}" for i, c in enumerate(params.cases)) + ")"
        return MethodOutcome(
            metrics={
                "confident_garbage_rate": rate(
                    totals["confident"],
                    n,
                    ctx,
                    "Share of invalid inputs answered "
                    f"with a top-class probability above {params.confidence_level:g}.",
                ),
                "crash_rate": rate(
                    totals["crashed"],
                    n,
                    ctx,
                    "Share of invalid inputs on which ONNX Runtime raised an error.",
                ),
                "non_finite_rate": rate(
                    totals["non_finite"],
                    n,
                    ctx,
                    "Share of invalid inputs whose output holds NaN or infinite values.",
                ),
            },
            series=[
                rate_series(name, list(range(len(params.cases))), counts[key], ctx, label, "rate", kind="bar")
                for key, name in (
                    ("confident", "confident answers"),
                    ("crashed", "crashes"),
                    ("non_finite", "non-finite outputs"),
                )
            ],
            details={"per_case": per_case, "inputs_per_case": rows},
        )
