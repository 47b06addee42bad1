"""A proof goal's verdict with undecided samples: they may be robust or not, so the interval of the
verified (or falsified) share spans them either way; a goal fails only on counterexamples.

A new-user trial saw a tree ensemble (no bound operator: 16 of 20 samples undecided, 4 misclassified)
judged 'fail' with 'use certified training' advice: the verified share's interval [0, 0.17] was the
interval of what was proved, not of the robust share it stands for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nnassay.schemas.common import Verdict
from nnassay.schemas.goals import Comparator, Criterion
from nnassay.tasks.methods.formal.methods import SampleResult, _rate, _undecided_why
from nnassay.tasks.pipeline.interpret import decide
from nnassay.tasks.stats.intervals import proportion_interval

CTX = SimpleNamespace(confidence=0.95, interval="clopper-pearson")
AT_LEAST_HALF = Criterion(comparator=Comparator.GE, threshold=0.5)


def test_undecided_samples_leave_a_proof_goal_inconclusive_not_failed() -> None:
    verified = _rate(0, 16, 20, CTX, "verified")  # 0 proved, 4 refuted, 16 undecided
    assert verified.value == 0.0 and verified.interval is not None
    assert verified.interval.low == 0.0 and verified.interval.high == pytest.approx(
        proportion_interval(16, 20).high
    )
    verdict, reason, _ = decide(verified, AT_LEAST_HALF)
    assert verdict == Verdict.INCONCLUSIVE and "straddles" in reason
    assert "undecided" in verified.description


def test_enough_counterexamples_fail_it_and_enough_proofs_pass_it() -> None:
    refuted = _rate(0, 4, 20, CTX, "verified")  # 16 refuted, 4 undecided: at most 4 robust
    assert decide(refuted, AT_LEAST_HALF)[0] == Verdict.FAIL
    proved = _rate(18, 20, 20, CTX, "verified")  # 18 proved, 2 undecided
    assert decide(proved, AT_LEAST_HALF)[0] == Verdict.PASS


def test_with_every_sample_decided_it_is_the_usual_interval() -> None:
    usual = proportion_interval(7, 20)
    decided = _rate(7, 7, 20, CTX, "verified")
    assert decided.interval is not None
    assert (decided.interval.low, decided.interval.high) == pytest.approx((usual.low, usual.high))
    assert "undecided" not in decided.description


def test_the_reason_names_why_samples_are_undecided() -> None:
    results = [
        SampleResult(0, 1, "unknown", reason="1 unsupported node(s): tree (TreeEnsembleClassifier)"),
        SampleResult(1, 1, "unknown", reason="1 unsupported node(s): tree (TreeEnsembleClassifier)"),
        SampleResult(2, 0, "unknown"),
        SampleResult(3, 0, "falsified"),
    ]
    why = _undecided_why(results)
    assert why.startswith("2 x 1 unsupported node(s): tree (TreeEnsembleClassifier)")
    assert "1 x the time budget ran out" in why and "falsified" not in why
