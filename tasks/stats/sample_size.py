"""Sample-size planning: how many samples (or draws) a rate goal needs, and whether it can decide.

The verdict rule (``nnassay.tasks.pipeline.interpret``) passes a goal only when the whole two-sided interval at the
goal's confidence clears the threshold and fails it when the whole interval misses. These functions
use that same rule and the goal's interval method, so a plan that says "n samples suffice" agrees
with the verdict later. Note the two-sided rule: showing a failure rate below 1e-3 at 95% with zero
failures needs 3,688 draws, not the 2,995 of the one-sided rule of three.
"""

from __future__ import annotations

from collections.abc import Callable

from nnassay.schemas.common import Comparator
from nnassay.schemas.goals import Criterion
from nnassay.tasks.stats.intervals import proportion_interval

LIMIT = 100_000_000


def _meets(value: float, criterion: Criterion) -> bool:
    t = criterion.threshold
    return {
        Comparator.GE: value >= t,
        Comparator.GT: value > t,
        Comparator.LE: value <= t,
        Comparator.LT: value < t,
    }[criterion.comparator]


def _outcome(successes: int, n: int, criterion: Criterion) -> str:
    """'pass', 'fail' or 'inconclusive' for an observed count, by the verdict rule."""
    ci = proportion_interval(successes, n, criterion.confidence, criterion.interval)
    low, high = _meets(ci.low, criterion), _meets(ci.high, criterion)
    return "pass" if low and high else "fail" if not (low or high) else "inconclusive"


def _best_count(n: int, criterion: Criterion) -> int:
    """The count most favourable to the model: all successes ('>='), no failures ('<=')."""
    return n if criterion.comparator.higher_is_better else 0


def _worst_count(n: int, criterion: Criterion) -> int:
    return 0 if criterion.comparator.higher_is_better else n


def _smallest(ok: Callable[[int], bool], limit: int) -> int | None:
    """Smallest n in [1, limit] with ok(n), by doubling then bisection (ok assumed monotone)."""
    high = 1
    while not ok(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


def samples_needed(
    criterion: Criterion, expected_rate: float | None = None, *, limit: int = LIMIT
) -> int | None:
    """How many samples or draws a rate goal needs before its verdict can be decided.

    Args:
        criterion: the goal's criterion (comparator, threshold, confidence, interval method).
        expected_rate: the rate the assessor expects to observe. None asks for the fewest samples
            with which the best possible outcome (every sample a success for '>=' goals, no failure
            for '<=' goals) would pass: below that count a pass is impossible.
        limit: largest sample size considered.

    Returns:
        The smallest n (exact when ``expected_rate`` is None; within 1% otherwise, because the
        observed count round(rate * n) makes the search slightly non-monotone) at which the
        interval around the rate clears the threshold on one side, i.e. the goal would pass or
        fail; None when no n up to ``limit`` decides (the expected rate sits on the threshold, the
        threshold is at the end of [0, 1] where a pass is impossible, or the threshold is not a
        rate at all).

    Example:
        A failure rate '<= 0.001' at 95% with zero failures: 3,688 draws (two-sided
        Clopper-Pearson, as the verdict uses); an accuracy '>= 0.9' expected at 0.95: about 127 samples.
    """
    if not 0.0 <= criterion.threshold <= 1.0:
        return None
    if expected_rate is None:
        return _smallest(lambda n: _outcome(_best_count(n, criterion), n, criterion) == "pass", limit)
    if not 0.0 <= expected_rate <= 1.0:
        raise ValueError(f"expected_rate must lie in [0, 1], got {expected_rate!r}")
    if expected_rate == criterion.threshold:
        return None

    def decides(n: int) -> bool:
        return _outcome(round(expected_rate * n), n, criterion) != "inconclusive"

    high = _smallest(decides, limit)
    if high is None or high <= 2:
        return high
    low = high // 2
    while high - low > max(1, low // 100):
        mid = (low + high) // 2
        low, high = (low, mid) if decides(mid) else (mid, high)
    return high


def can_ever_decide(n_available: int, criterion: Criterion) -> tuple[bool, str]:
    """Whether ``n_available`` samples can give both a pass and a fail, with the reason.

    Checks the two extreme outcomes under the verdict rule: the best one (all successes for '>=',
    no failures for '<=') must pass, and the worst one (no success, all failures) must fail. When
    either is impossible whatever the model does, the goal cannot be decided with these samples.

    Returns:
        (True, why) when both verdicts are reachable (or the threshold is not a rate, so sample
        size does not limit the verdict); (False, why) naming the outcome that can never occur,
        the interval bound that blocks it and the samples needed.
    """
    c = criterion
    if not 0.0 <= c.threshold <= 1.0:
        return True, f"threshold {c.threshold:g} is not a rate; the sample size does not limit the verdict"
    if n_available <= 0:
        return False, "no samples are available, so nothing can be measured"
    rule = f"{c.comparator.value} {c.threshold:g} at {c.confidence:.0%} confidence ({c.interval})"
    best, worst = _best_count(n_available, c), _worst_count(n_available, c)
    if _outcome(best, n_available, c) != "pass":
        ci = proportion_interval(best, n_available, c.confidence, c.interval)
        bound, side = (ci.low, "lower") if c.comparator.higher_is_better else (ci.high, "upper")
        perfect = "all successes" if c.comparator.higher_is_better else "0 failures"
        needed = samples_needed(c)
        more = f"; at least {needed} samples are needed" if needed else "; no sample size suffices"
        return False, (
            f"a pass is impossible: even with {perfect} in all {n_available} samples the "
            f"{side} bound {bound:.4g} does not meet {rule}{more}"
        )
    if _outcome(worst, n_available, c) != "fail":
        ci = proportion_interval(worst, n_available, c.confidence, c.interval)
        bound = ci.high if c.comparator.higher_is_better else ci.low
        return False, (
            f"a fail is impossible: even the worst outcome ({worst} of {n_available}) "
            f"leaves the interval bound {bound:.4g} on the passing side of {rule}"
        )
    return True, f"{n_available} samples can show either a pass or a fail of {rule}"
