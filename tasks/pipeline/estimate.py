"""Time estimates: the model's unit costs, measured once before planning, price each test's work.

A method counts its work in model evaluations (``RobustnessMethod.cost``, or a formula here for the
families whose modules others own); ``UnitCosts.seconds`` prices it with the model's measured call
times: for each engine, the time of one call at a few batch sizes (interpolated between them, the
last slope beyond), because a row costs several times more in a large batch than in a small one
on a busy machine. Each time is the median of a few short windows, so that one stall of the process
on a busy machine (a window ten or a hundred times too slow) does not price every test. Measuring
takes a few timed calls (about a second on small models) and happens once per loaded model.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.empirical.attack_base import AttackMethod, grid_size
from nnassay.tasks.methods.registry import RobustnessMethod, get_method

if TYPE_CHECKING:
    from nnassay.schemas.plan import AssessmentPlan
    from nnassay.tasks.io.model_io import ModelRunner

WINDOW_S = 0.02  # each batch size is timed over windows this long (mean seconds per call) ...
WINDOWS = 3  # ... this many of them, the median kept (one stalled window is an outlier, not the cost)
MIN_CALLS, MAX_CALLS = 1, 2000  # calls per window, at least and at most
FORWARD_BATCHES = (16, 256, 2048)  # ONNX Runtime batch sizes timed (attacks; Monte Carlo batches)
DRAW_BATCH = 1024  # rows of the timed noise draw
BACKWARD_BATCHES = (8, 64, 256)  # torch forward+backward batch sizes timed (the attacks' batches)
CALL_BUDGET_S = 0.02  # larger batches are not timed once one call takes this long
MAX_BATCH_FLOATS = 1 << 22  # nor batches above 16 MB of float32
BACKWARD_PER_FORWARD = 3.0  # a forward+backward priced as this many forwards when torch cannot run
TEST_OVERHEAD_S = 0.05  # per test: context, result and artifact files
FORMAL_START_S = 0.1  # a formal test: loading the graph into the verifier once
FORMAL_SAMPLE_S = 0.02  # a formal test: per sample, besides the bounds (the attack first, the checks)
FORMAL_BOUND_CALLS = 150.0  # a formal test: one sample's bounds cost about this many torch calls ...
FORMAL_BOUND_ROWS = 64  # ... of this many rows (CROWN back-substitutes a batch of neurons at a time)
INVALID_INPUT_S = 0.35e-3  # an invalid input alone: the call's Python work besides the model
ATTACK_UNBROKEN_SHARE = 0.5  # an attack's radii past the smallest: the share of its work expected
CHILD_START_S = 0.3  # a child process (interpreter, numpy, ONNX Runtime) on an idle core, times ...
SLOWDOWN_FAST_S, SLOWDOWN_FAST_WINDOWS = 0.001, 30  # ... the slowdown: Python work in the fastest of
# these short windows (the process running alone on a core) against the median of WINDOWS windows

Curve = tuple[tuple[int, float], ...]  # (rows per call, seconds per call), rows ascending


def call_seconds(curve: Curve, rows: float) -> float:
    """Seconds of one call of ``rows`` rows: interpolated between the timed batch sizes, extended
    beyond the largest with the last segment's slope (and below the smallest in proportion)."""
    rows = max(rows, 1.0)
    (b0, t0), *rest = curve
    if rows <= b0 or not rest:
        return t0 * rows / b0 if rows > b0 else t0
    for (b_lo, t_lo), (b_hi, t_hi) in zip(curve, curve[1:], strict=False):
        if rows <= b_hi:
            return t_lo + (t_hi - t_lo) * (rows - b_lo) / (b_hi - b_lo)
    (b_lo, t_lo), (b_hi, t_hi) = curve[-2], curve[-1]
    return t_hi + max((t_hi - t_lo) / (b_hi - b_lo), 0.0) * (rows - b_hi)


@dataclass(frozen=True)
class UnitCosts:
    """The model's measured unit costs: call times at a few batch sizes (means over short windows).

    Attributes:
        forward: ONNX Runtime call times, (rows, seconds) from one row up.
        backward: torch executor forward+backward (input gradient) call times, (rows, seconds).
        torch_setup_s: building the torch executor from the ONNX file (each gradient test does it).
        draw_s: drawing one input-sized random perturbation in numpy (noise plus clipping), per row.
        executor: True when the torch executor runs the model; else ``backward`` is the forward curve
            times ``BACKWARD_PER_FORWARD``, a guess (nothing was timed).
        measure_s: seconds the measurement itself took.
        slowdown: how much slower Python work runs now than alone on a core (at least 1; the
            machine's load as this process sees it): prices the child processes, whose start is
            interpreter and import work, ``CHILD_START_S`` each on an idle core.
    """

    forward: Curve
    backward: Curve
    torch_setup_s: float
    draw_s: float
    executor: bool
    measure_s: float = 0.0
    slowdown: float = 1.0

    def seconds(self, cost: Cost) -> float:
        """Seconds of the work ``cost`` on this model (the per-test overhead included)."""
        forward_calls, backward_calls = cost.calls()
        total = self.fixed_seconds(cost) + cost.draws * self.draw_s
        if forward_calls > 0:
            total += forward_calls * call_seconds(self.forward, cost.forwards / forward_calls)
        if backward_calls > 0:
            total += backward_calls * call_seconds(self.backward, cost.backwards / backward_calls)
        return total

    def fixed_seconds(self, cost: Cost) -> float:
        """The part of ``seconds(cost)`` that does not grow with the samples: the test's overhead, its
        fixed seconds, child processes and building the torch executor (when it runs)."""
        total = cost.fixed_s + TEST_OVERHEAD_S + cost.children * CHILD_START_S * self.slowdown
        return total + (self.torch_setup_s if cost.calls()[1] > 0 else 0.0)


def measure_unit_costs(runner: ModelRunner, x_sample: np.ndarray) -> UnitCosts:
    """Time the model on ONNX Runtime, and the torch executor's forward+backward when it can run the
    model, from one row up to the batch sizes the methods use (smaller when a call gets slow or the
    batch large), and numpy noise at the largest batch timed."""
    import torch  # noqa: F401  (imported before the clock starts: importing is not measuring)

    began = time.perf_counter()
    rows = np.asarray(x_sample, dtype=np.float32)
    if not len(rows):
        raise ValueError("measure_unit_costs needs at least one sample, got an empty array")
    floats = max(int(np.prod(rows.shape[1:])), 1)
    forward = _curve(lambda b: runner.logits(b, batch_size=len(b)), rows, FORWARD_BATCHES, floats)
    big = _tile(rows, min(forward[-1][0], DRAW_BATCH))
    draw_s = _timed(lambda: _draw(big, runner.value_range)) / len(big)
    slowdown = measure_slowdown()
    measured = _measure_backward(runner, rows, floats)
    if measured is None:
        guess = tuple((b, BACKWARD_PER_FORWARD * t) for b, t in forward)
        return UnitCosts(forward, guess, 0.0, draw_s, False, time.perf_counter() - began, slowdown)
    setup_s, backward = measured
    return UnitCosts(forward, backward, setup_s, draw_s, True, time.perf_counter() - began, slowdown)


def _python_work() -> int:
    total = 0
    for i in range(2000):  # about 0.05 ms alone on a core: many fit in the shortest window
        total += i * i
    return total


def measure_slowdown() -> float:
    """How much slower Python work runs now than alone on a core: the median window's mean (as
    ``_timed``) over the fastest of ``SLOWDOWN_FAST_WINDOWS`` windows of ``SLOWDOWN_FAST_S`` (one
    such window fits in the time slice the scheduler gives the process, so the fastest is the work
    running alone). At least 1; about 0.15 s."""
    fastest = math.inf
    for _ in range(SLOWDOWN_FAST_WINDOWS):
        calls, start = 0, time.perf_counter()
        while calls < 1 or time.perf_counter() - start < SLOWDOWN_FAST_S:
            _python_work()
            calls += 1
        fastest = min(fastest, (time.perf_counter() - start) / calls)
    return max(_timed(_python_work) / fastest, 1.0)


_MEASURED: weakref.WeakKeyDictionary[Any, UnitCosts] = weakref.WeakKeyDictionary()


def unit_costs(runner: ModelRunner, x_sample: np.ndarray) -> UnitCosts:
    """The runner's unit costs, measured on its first use and then remembered (one per loaded model)."""
    if runner not in _MEASURED:
        _MEASURED[runner] = measure_unit_costs(runner, x_sample)
    return _MEASURED[runner]


def _tile(rows: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(rows, (n, *rows.shape[1:])))


def _timed(call: Callable[[], object], windows: int = WINDOWS) -> float:
    """Seconds per call: the median over ``windows`` windows of the mean over a window of ``WINDOW_S``
    (at least ``MIN_CALLS`` calls), after a warm-up call. Means over windows, not the quickest call,
    so that a busy machine's steady sharing of the cores is in the number, as it will be in the
    tests' times; their median, so that one window in which the process stalled is not."""
    call()  # warm-up: first-call allocations and lazy initialisation are not unit costs
    means = []
    for _ in range(max(windows, 1)):
        calls, start = 0, time.perf_counter()
        while calls < MIN_CALLS or (time.perf_counter() - start < WINDOW_S and calls < MAX_CALLS):
            call()
            calls += 1
        means.append((time.perf_counter() - start) / calls)
    return max(float(np.median(means)), 1e-7)


def _curve(
    call: Callable[[np.ndarray], object], rows: np.ndarray, batches: tuple[int, ...], floats: int
) -> Curve:
    """Call times at one row and at each batch size in turn, until a call takes ``CALL_BUDGET_S``
    (the first batch size is always timed: a one-row time alone would price every row as a call)
    or the next batch would pass ``MAX_BATCH_FLOATS``; times never decrease with the batch."""
    points = [(1, _timed(partial(call, rows[:1])))]
    for size in batches:
        if size * floats > MAX_BATCH_FLOATS or (len(points) > 1 and points[-1][1] > CALL_BUDGET_S):
            break
        points.append((size, max(_timed(partial(call, _tile(rows, size))), points[-1][1])))
    return tuple(points)


def _draw(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, 0.1, size=x.shape).astype(np.float32)
    return np.clip(x + noise, *value_range)


def _measure_backward(runner: ModelRunner, rows: np.ndarray, floats: int) -> tuple[float, Curve] | None:
    """(setup seconds, call-time curve) of the torch executor's forward+backward, or None when it
    cannot run the model. Threads as the gradient attacks set them (one for small batches)."""
    import torch

    from nnassay.tasks.methods.empirical.methods_whitebox import torch_threads

    start = time.perf_counter()
    try:
        module = runner.torch_module().eval()
        for p in module.parameters():
            p.requires_grad_(False)
        setup_s = time.perf_counter() - start

        def step(batch: np.ndarray) -> object:
            """One attack step: forward, backward, and the update a gradient attack makes with the
            gradient (sign step, projection on the ball and the value range), which on a small
            model costs as much as the model."""
            x0 = torch.from_numpy(batch)
            x = x0.clone().requires_grad_(True)
            labels = torch.zeros(len(batch), dtype=torch.int64)
            loss = torch.nn.functional.cross_entropy(module(x), labels, reduction="sum")
            grad = torch.autograd.grad(loss, x)[0]
            moved = torch.minimum(torch.maximum(x.detach() + 0.01 * grad.sign(), x0 - 0.1), x0 + 0.1)
            return torch.clamp(moved, float(x0.min()), float(x0.max()))

        with torch_threads(rows, max(BACKWARD_BATCHES)):
            return setup_s, _curve(step, rows, BACKWARD_BATCHES, floats)
    except Exception:  # the executor refuses unsupported models in several exception types
        return None


def method_cost(name: str, params: dict[str, Any], samples: int, clean_accuracy: float | None = None) -> Cost:
    """The work of one planned test: the method's own ``cost``, or this module's formula for it (an
    attack: its expected work, ``attack_expected_cost``, on the share of samples it will attack)."""
    method = get_method(name)
    typed = method.Params.model_validate(params)
    formula = FORMULAS.get(name)
    if formula:
        return formula(typed, samples)
    if isinstance(method, AttackMethod):
        return attack_expected_cost(type(method), typed, samples, clean_accuracy)
    return type(method).cost(typed, samples)


def attacked_samples(samples: int, clean_accuracy: float | None) -> int:
    """How many samples an attack will attack: only those the model classifies correctly (a
    misclassified sample is already a failure), from the clean accuracy measured at planning."""
    if clean_accuracy is None:
        return samples
    return max(1, min(samples, math.ceil(samples * min(max(clean_accuracy, 0.0), 1.0))))


def attack_expected_cost(
    cls: type[AttackMethod[Any]], params: Any, samples: int, clean_accuracy: float | None = None
) -> Cost:
    """An attack's expected work, between the ends of its range: the work of the smallest radius in
    full, and ``ATTACK_UNBROKEN_SHARE`` of the rest (a sample broken at one radius is not attacked
    at the larger ones, nor by an ensemble's later attacks; how many break is what the test measures,
    unknown when planning), plus the ONNX Runtime checks of ``AttackMethod.cost``. ``cls.cost`` is
    the upper end (a model no attack breaks): with the default four radii, this estimate is 0.625
    of it, within 2 times of both that end and a model whose samples all break at the second radius."""
    radii = grid_size(params)
    work = ATTACK_COSTS.get(getattr(cls, "name", ""), cls.attack_cost)
    attacked = attacked_samples(samples, clean_accuracy)
    first, full = work(params, attacked, 1), work(params, attacked, radii)
    share = ATTACK_UNBROKEN_SHARE if radii > 1 else 1.0
    return first.scaled(1.0 - share) + full.scaled(share) + passes(samples, 2 + radii)


def estimate_seconds(
    name: str,
    params: dict[str, Any],
    samples: int,
    units: UnitCosts,
    *,
    time_s: float = math.inf,
    clean_accuracy: float | None = None,
) -> float:
    """Estimated wall time of one planned test (seconds, rounded to 0.1 s, at least 0.1 s).

    The work is priced with the unit costs, then capped by what the test allows itself: its time
    budget ``time_s`` (methods stop when it runs out) and, for the formal methods, the verifier's
    budget per sample.
    """
    seconds = units.seconds(method_cost(name, params, samples, clean_accuracy))
    cap = CAPS.get(name)
    if cap is not None:
        seconds = min(seconds, cap(get_method(name).Params.model_validate(params), samples))
    return within_budget(seconds, time_s)


def within_budget(seconds: float, time_s: float) -> float:
    """An estimate as plans show it: at most the test's budget (methods stop when it runs out) plus its
    overhead, in 0.1 s steps, at least 0.1 s."""
    return max(round(min(seconds, time_s + TEST_OVERHEAD_S), 1), 0.1)


def has_cost(name: str) -> bool:
    """True when a method counts its own work (its ``cost`` or a formula here), not the default."""
    cls = type(get_method(name))
    return name in FORMULAS or any("cost" in vars(c) for c in cls.__mro__ if c is not RobustnessMethod)


def total_estimate_s(plan: AssessmentPlan) -> float | None:
    """Sum of the tests' estimates (tests run one after the other), or None when none has one."""
    known = [t.estimate_s for t in plan.tests if t.estimate_s is not None]
    return round(sum(known), 1) if known else None


def format_duration(seconds: float) -> str:
    """'0.4 s', '42 s', '3 min 20 s', '1 h 05 min'."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def estimate_line(plan: AssessmentPlan) -> str:
    """The line `assess` prints before starting: the plan's total estimated time."""
    total = total_estimate_s(plan)
    if total is None:
        return f"plan: {len(plan.tests)} tests, no time estimate (the model's unit costs were not measured)"
    return f"plan: {len(plan.tests)} tests, estimated {format_duration(total)} of test time (their estimates added up)"


# Formulas for methods whose modules state no cost of their own (formal, tabular, invalid input).


def _formal(params: Any, samples: int) -> Cost:
    """A verifier run per sample: bounds cost about ``FORMAL_BOUND_CALLS`` torch calls of
    ``FORMAL_BOUND_ROWS`` rows (a radius search repeats them per bisection); branch and bound fills
    the budget only on hard samples, so the budget is a cap (see ``CAPS``), not the estimate."""
    probes = (1.0 + (math.ceil(math.log2(1 / params.tol)) + 2 if params.certified_radius else 0.0)) * samples
    return Cost(
        backwards=FORMAL_BOUND_CALLS * FORMAL_BOUND_ROWS * probes,
        backward_calls=FORMAL_BOUND_CALLS * probes,
        fixed_s=FORMAL_START_S + FORMAL_SAMPLE_S * probes,
        forwards=samples,
    )


def _formal_cap(params: Any, samples: int) -> float:
    return FORMAL_START_S + params.time_per_sample_s * samples


def _vnnlib(params: Any, samples: int) -> Cost:
    return Cost(fixed_s=FORMAL_START_S + FORMAL_SAMPLE_S, forwards=samples)


def _vnnlib_cap(params: Any, samples: int) -> float:
    return FORMAL_START_S + params.timeout_s


def _tabular(params: Any, samples: int) -> Cost:
    """Clean predictions plus up to three perturbed copies of the data (one per variant)."""
    return Cost(forwards=4.0 * samples, draws=3.0 * samples, forward_calls=4.0)


def _invalid(params: Any, samples: int) -> Cost:
    """Each case's inputs run alone, one ONNX Runtime call each (so one crash hides nothing)."""
    inputs = float(len(params.cases) * min(params.per_case, samples))
    return Cost(forwards=inputs, forward_calls=inputs, draws=inputs, fixed_s=INVALID_INPUT_S * inputs)


def _tabular_search(params: Any, samples: int, radii: int) -> Cost:
    """Per radius, up to ``queries`` ONNX Runtime calls on the samples not yet broken, each row a
    freshly drawn proposal (the random search of ``empirical.tabular_random_search``)."""
    rows = float(samples * params.queries * radii)
    return Cost(forwards=rows, forward_calls=float(params.queries * radii), draws=rows)


ATTACK_COSTS: dict[str, Callable[[Any, int, int], Cost]] = {  # an attack's work, when it states none
    "empirical.tabular_random_search": _tabular_search,
}
FORMULAS: dict[str, Callable[[Any, int], Cost]] = {
    "formal.local_robustness": _formal,
    "formal.max_stable_space": _formal,
    "formal.vnnlib_property": _vnnlib,
    "empirical.tabular_perturbation": _tabular,
    "empirical.invalid_input": _invalid,
}
CAPS: dict[str, Callable[[Any, int], float]] = {
    "formal.local_robustness": _formal_cap,
    "formal.max_stable_space": _formal_cap,
    "formal.vnnlib_property": _vnnlib_cap,
}
