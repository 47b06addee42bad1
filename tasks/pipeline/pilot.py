"""Pilots: an attack's or a proof's time estimate checked by running it on a few of its own samples.

The model's unit costs price work that is known before a test runs (``estimate``). Attacks and proofs
do work that depends on what they find: a sample broken at the first radius is not attacked at the
larger ones, a proof the first bounds give needs no branching, a misclassified sample needs no proof.
No count made beforehand knows how much (the full-width zoo in BENCHMARKS.md had a MobileNetV3 attack
at a fifth of its estimate and a ViT proof at a hundredth). A pilot measures it: planning runs the
test's method on the first samples of the test that the model classifies correctly, then

- attacks: scales the work the unit costs price by what the pilot took against what they price for
  the same samples (the share of the radius grid really attacked; the pilot's small batch is priced
  as small, so its own overhead cancels out);
- proofs: takes the pilot's time per sample, each sample stopped at ``FORMAL_STOP`` of the method's
  per-sample budget (one still undecided then is priced at twice its pilot time: the whole budget,
  within 2x of what it will take), times the samples classified correctly (a misclassified sample is
  refuted at once), plus the verifier's start.

Only tests estimated at ``PILOT_MIN_S`` or more get a pilot (below, a wrong estimate costs little); an
attack pilot attacks as many samples as fit in ``ATTACK_PILOT_SHARE`` of the test's estimate (none
when two do not: on a large model its estimate stands), a proof pilot stops once it has used
``PROOF_PILOT_SHARE`` of the estimate it makes (one sample at least). Pilots are remembered per loaded
model, so the CLI's preflight and the flow run each once; one that fails leaves the unit-cost
estimate. They write into a temporary folder, never into the run's. Methods are run as in
``execute.run_test``, without Prefect.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnassay.schemas.common import MethodFamily
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.schemas.results import TestStatus
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.attack_base import AttackMethod
from nnassay.tasks.methods.registry import RunContext, get_method
from nnassay.tasks.pipeline.estimate import (
    CAPS,
    FORMAL_SAMPLE_S,
    FORMAL_START_S,
    TEST_OVERHEAD_S,
    UnitCosts,
    method_cost,
    within_budget,
)
from nnassay.tasks.pipeline.planning import PlanFacts

LOG = logging.getLogger(__name__)
PILOT_MIN_S = 3.0  # tests estimated below this many seconds are not piloted
ATTACK_PILOT_SHARE = 0.15  # an attack pilot: as many samples as the unit costs price within this
ATTACK_PILOT_SAMPLES = (2, 16)  # share of the test's estimate, at least and at most this many (and
# fewer than the test attacks); none when even the fewest do not fit
FORMAL_STOP = 0.5  # a proof pilot stops each sample at this share of the per-sample budget ...
PROOF_PILOT_SHARE = 0.1  # ... and takes samples until it has used this share of its estimate
RATIO_BOUNDS = (0.05, 20.0)  # an attack pilot's work against the priced work, kept within these


@dataclass(frozen=True)
class Pilot:
    """What a pilot found: the test's new estimate and, in words, what was run and measured."""

    estimate_s: float
    note: str


@dataclass(frozen=True)
class Trial:
    """What a pilot works with: the planned test, its method, its samples and which of them the model
    classifies correctly, the unit costs, and a method context for some samples in a folder."""

    test: TestSpec
    method: Any
    rows: Dataset
    correct: np.ndarray
    units: UnitCosts
    context_for: Callable[[Dataset, Path, float], RunContext]


_PILOTS: weakref.WeakKeyDictionary[ModelRunner, dict[str, Pilot | None]] = weakref.WeakKeyDictionary()


def pilot_plan(
    plan: AssessmentPlan, spec: AssessmentSpec, model: ModelRunner, data: Dataset, facts: PlanFacts
) -> AssessmentPlan:
    """``plan`` with the estimates of its long attacks and proofs replaced by their pilots'."""
    units = facts.unit_costs
    if units is None:
        return plan
    tests = [_piloted(test, spec, model, data, units) for test in plan.tests]
    return plan.model_copy(update={"tests": tests})


def _piloted(
    test: TestSpec, spec: AssessmentSpec, model: ModelRunner, data: Dataset, units: UnitCosts
) -> TestSpec:
    method = get_method(test.method)
    if test.estimate_s is None or test.estimate_s < PILOT_MIN_S:
        return test
    if isinstance(method, AttackMethod):
        run: Callable[[Trial], Pilot | None] = _attack_pilot
    elif method.family == MethodFamily.FORMAL and hasattr(method, "run_part"):
        run = _proof_pilot
        if "time_per_sample_s" not in test.params:
            return test
    else:
        return test
    key = json.dumps([test.method, test.params, test.samples, test.seed, test.time_s, data.sha256])
    known = _PILOTS.setdefault(model, {})
    if key not in known:
        from nnassay.tasks.pipeline.execute import method_context

        rows = data.subset(test.samples)
        correct = np.flatnonzero(model.predict(rows.x) == rows.y)

        def context_for(samples: Dataset, folder: Path, time_s: float) -> RunContext:
            return method_context(test, spec, model, samples, folder, folder, time_s=time_s)

        try:
            known[key] = run(Trial(test, method, rows, correct, units, context_for))
        except Exception as exc:  # a pilot is a check of an estimate: the test itself reports its errors
            LOG.debug("pilot of %s failed: %s: %s", test.test_id, type(exc).__name__, exc)
            known[key] = None
    pilot = known[key]
    if pilot is None:
        return test
    return test.model_copy(update={"estimate_s": pilot.estimate_s, "estimate_pilot": pilot.note})


def _attack_pilot(trial: Trial) -> Pilot | None:
    """The attack on ``k`` correctly classified samples; the priced work scaled by what it took."""
    test, method, rows, correct, units = trial.test, trial.method, trial.rows, trial.correct, trial.units
    low, high = ATTACK_PILOT_SAMPLES
    budget = ATTACK_PILOT_SHARE * (test.estimate_s or 0.0)
    sizes = [k for k in range(min(high, len(correct)), low - 1, -1) if k < len(correct)]
    affordable = [k for k in sizes if units.seconds(method_cost(test.method, test.params, k, 1.0)) <= budget]
    if not affordable:
        return None  # too few samples, or a pilot would cost too much of the test: the estimate stands
    k = affordable[0]
    params = method.Params.model_validate(test.params)
    with tempfile.TemporaryDirectory(prefix="nnassay-pilot-") as folder:
        began = time.perf_counter()
        outcome = method.run(trial.context_for(rows.rows(correct[:k]), Path(folder), test.time_s), params)
        took = time.perf_counter() - began
    if outcome.status == TestStatus.ERROR:
        return None
    pilot_cost = method_cost(test.method, test.params, k, 1.0)
    full_cost = method_cost(test.method, test.params, test.samples, len(correct) / len(rows))
    priced, fixed = units.seconds(pilot_cost), units.fixed_seconds(pilot_cost)
    ratio = min(max((took - fixed) / max(priced - fixed, 1e-3), RATIO_BOUNDS[0]), RATIO_BOUNDS[1])
    full, full_fixed = units.seconds(full_cost), units.fixed_seconds(full_cost)
    seconds = full_fixed + (full - full_fixed) * ratio
    note = (
        f"ran the attack on {k} of the {len(correct)} correctly classified samples in {took:.1f} s, "
        f"{ratio:.2g} x the work the unit costs price for them"
    )
    return Pilot(within_budget(seconds, test.time_s), note)


def _proof_pilot(trial: Trial) -> Pilot | None:
    """The proof of correctly classified samples in a random order (seeded by the test's seed: the
    first samples are no easier or harder than the rest), each stopped at ``FORMAL_STOP`` of its
    budget, until the pilot has used ``PROOF_PILOT_SHARE`` of the estimate it makes; their mean time
    per sample (doubled for one stopped undecided) prices every correctly classified sample."""
    test, method, rows, correct = trial.test, trial.method, trial.rows, trial.correct
    params = method.Params.model_validate(test.params)
    stop_s = FORMAL_STOP * params.time_per_sample_s
    short = params.model_copy(update={"time_per_sample_s": stop_s})
    per_sample: list[float] = []
    wrong = len(rows) - len(correct)

    def estimate() -> float:
        mean = float(np.mean(per_sample)) if per_sample else 0.0
        return TEST_OVERHEAD_S + FORMAL_START_S + mean * len(correct) + FORMAL_SAMPLE_S * wrong

    with tempfile.TemporaryDirectory(prefix="nnassay-pilot-") as folder:
        ctx = trial.context_for(rows, Path(folder), math.inf)  # the pilot's own limit is per sample
        began = time.perf_counter()
        for index in np.random.default_rng(test.seed).permutation(correct):
            start = time.perf_counter()
            method.run_part(ctx, short, int(index), int(index) + 1)
            took = time.perf_counter() - start
            per_sample.append(took / FORMAL_STOP if took >= 0.9 * stop_s else took)
            if time.perf_counter() - began >= PROOF_PILOT_SHARE * estimate():
                break
    seconds = estimate()
    cap = CAPS.get(test.method)
    if cap is not None:
        seconds = min(seconds, cap(params, test.samples))
    note = (
        f"ran the verifier on {len(per_sample)} of the {len(correct)} correctly classified samples, "
        f"{np.mean(per_sample):.2f} s per sample (the {wrong} misclassified need no proof)"
        if per_sample
        else f"all {wrong} samples are misclassified: refuted without a proof"
    )
    return Pilot(within_budget(seconds, test.time_s), note)
