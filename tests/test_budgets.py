"""Time budgets (issue 15, item 7): a method that measures sample by sample stops once the budget is
spent and reports on the samples done: n equal to those samples, intervals wider than a full run's,
``details['budget_cut']`` and a reason naming the cut; too few samples done is inconclusive.

Time is a fake clock (``Looks``): the budget lasts a fixed number of looks at ``ctx.time_left``, so
where each method stops is deterministic and nothing here depends on how fast the machine is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from conftest import TinyCase
from nnassay.schemas.goals import DataSpec, ModelSpec
from nnassay.schemas.results import MethodOutcome, TestStatus
from nnassay.schemas.threats import Threat
from nnassay.tasks.io.data_io import load_dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.registry import RunContext, get_method
from nnassay.tasks.methods.statistical.budget import BUDGET_CUT, MIN_SAMPLES


class Looks:
    """A clock whose budget lasts ``looks`` looks at the time left; every later look finds it spent."""

    def __init__(self, looks: int) -> None:
        self.left, self.seen = looks, 0

    def __call__(self) -> float:
        self.seen += 1
        return 1.0 if self.seen <= self.left else -1.0


def context(case: TinyCase, threat: dict[str, Any], out: Path, looks: int | None = None) -> RunContext:
    """A context on the tiny image case (120 samples); ``looks`` set: the budget lasts that many looks."""
    model = ModelRunner(
        ModelSpec(path=case.model, layout=case.layout, value_range=(0.0, 1.0)), prefer_cuda=False
    )
    data = load_dataset(DataSpec(path=case.data), model)
    out.mkdir(parents=True, exist_ok=True)
    ctx: RunContext = RunContext(
        model=model,
        data=data,
        threat=TypeAdapter(Threat).validate_python(threat),
        metric="",
        seed=0,
        out_dir=out,
        run_dir=out,
    )
    if looks is not None:
        ctx.time_left = Looks(looks)  # type: ignore[method-assign]
    return ctx


@dataclass(frozen=True)
class Case:
    method: str
    threat: dict[str, Any]
    params: dict[str, Any]
    metric: str  # a rate whose n counts samples
    looks: int  # budget of the cut run, in looks at the clock
    planned: int  # samples the full run measures


CASES = [
    Case(
        "statistical.noise_accuracy",
        {"kind": "gaussian_noise", "sigma": 0.3},
        {"sweep": []},
        "accuracy",
        0,
        120,
    ),
    Case(
        "statistical.probabilistic_robustness",
        {"kind": "gaussian_noise", "sigma": 0.3},
        {"draws": 300, "batch": 300},  # one sample per ONNX Runtime batch, one look per batch
        "robust_sample_fraction",
        30,
        120,
    ),
    Case(
        "statistical.randomized_smoothing",
        {"kind": "l2_ball", "eps": 0.1},
        {"n0": 20, "n": 100, "batch": 100},  # selection: 5 samples a batch; estimation: 1
        "certified_accuracy",
        24 + 1 + 20,  # all 24 selection batches, the look that ends them, then 20 estimation batches
        120,
    ),
    Case(
        "statistical.clever",
        {"kind": "linf_ball", "eps": 0.05},
        {"max_samples": 40, "n_batches": 3, "batch_size": 8},
        "fraction_clever_above_eps",
        15,
        40,
    ),
    Case(
        "statistical.rare_event_ams",
        {"kind": "linf_ball", "eps": 0.05},
        {"max_samples": 40, "particles": 10, "mh_steps": 1, "log10_floor": -2.0},
        "rare_event_robust_fraction",
        1000,
        40,
    ),
    Case("empirical.invalid_input", {"kind": "invalid_input"}, {"per_case": 60}, "crash_rate", 19, 60),
]


def _run(case: Case, ctx: RunContext) -> MethodOutcome:
    method = get_method(case.method)
    return method.run(ctx, method.params_for(ctx.threat, case.params))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.method)
def test_a_spent_budget_reports_the_samples_done_with_wider_intervals(
    case: Case, image_case: TinyCase, tmp_path: Path
) -> None:
    full = _run(case, context(image_case, case.threat, tmp_path / "full"))
    cut = _run(case, context(image_case, case.threat, tmp_path / "cut", looks=case.looks))
    assert BUDGET_CUT not in full.details and full.status == TestStatus.COMPLETED, full.reason
    stop = cut.details[BUDGET_CUT]
    assert isinstance(stop, dict) and stop["planned"] == case.planned
    assert MIN_SAMPLES <= stop["done"] < case.planned, stop
    assert cut.status == TestStatus.COMPLETED and "time budget ran out" in (cut.reason or "")
    assert f"after {stop['done']} of {case.planned}" in (cut.reason or "")
    m_full, m_cut = full.metrics[case.metric], cut.metrics[case.metric]
    per_sample = (m_full.n or 0) // case.planned  # rates over inputs: cases (invalid input) per sample
    assert m_full.n == case.planned * per_sample and m_cut.n == stop["done"] * per_sample
    assert m_full.interval is not None and m_cut.interval is not None
    assert m_cut.interval.high - m_cut.interval.low > m_full.interval.high - m_full.interval.low


def test_a_cut_noise_run_equals_a_full_run_on_the_samples_done(image_case: TinyCase, tmp_path: Path) -> None:
    case = CASES[0]
    cut = _run(case, context(image_case, case.threat, tmp_path / "cut", looks=0))
    assert cut.details[BUDGET_CUT]["done"] == 64  # the first block of 64 samples always runs
    first = context(image_case, case.threat, tmp_path / "first")
    first.data = first.data.subset(64)
    alone = _run(case, first)
    for name in ("accuracy", "label_flip_rate"):
        assert cut.metrics[name].successes == alone.metrics[name].successes
        assert cut.metrics[name].n == alone.metrics[name].n == 64


def test_too_few_samples_done_is_inconclusive(image_case: TinyCase, tmp_path: Path) -> None:
    case = CASES[-1]
    cut = _run(case, context(image_case, case.threat, tmp_path, looks=0))
    assert cut.details[BUDGET_CUT] == {"done": 1, "planned": 60, "unit": "inputs per case"}
    assert cut.status == TestStatus.INCONCLUSIVE and "too few to decide" in (cut.reason or "")
    assert cut.metrics["crash_rate"].n == len(cut.details["per_case"])  # one input of each case


def test_an_attack_cut_by_the_budget_says_so(image_case: TinyCase, tmp_path: Path) -> None:
    """Attacks keep n (the samples not attacked count as robust: robust accuracy stays an upper
    bound) and name the cut in details and reason."""
    ctx = context(image_case, {"kind": "linf_ball", "eps": 0.1}, tmp_path, looks=3)
    method = get_method("empirical.fgsm")
    outcome = method.run(ctx, method.params_for(ctx.threat, {"batch_size": 8, "sweep": []}))
    stop = outcome.details[BUDGET_CUT]
    assert isinstance(stop, dict) and stop["done"] == 32 and stop["planned"] > 32, stop
    assert "time budget ran out" in (outcome.reason or "") and "upper bound" in (outcome.reason or "")
    assert outcome.metrics["robust_accuracy"].n == len(ctx.data)
