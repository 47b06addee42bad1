"""The work of one test run, counted in model evaluations, so planning can turn it into seconds.

A method states its own count next to its code (``RobustnessMethod.cost``); planning prices it with
the model's measured unit costs (``nnassay.tasks.pipeline.estimate``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FORWARD_BATCH = 1024  # rows per ONNX Runtime call when a method does not say (ModelRunner.scores)
DEFAULT_BACKWARD_BATCH = 256  # rows per torch forward+backward when a method does not say (attack batch)


@dataclass(frozen=True)
class Cost:
    """Work of one run: evaluations of the model, random perturbations drawn, and fixed seconds.

    Attributes:
        forwards: rows sent through ONNX Runtime (one row: one input sample).
        backwards: rows sent through the torch executor with a gradient (forward plus backward).
        fixed_s: seconds that do not scale with the model (building variants, a verifier's start).
        forward_calls: ONNX Runtime calls, when known; default: ``forwards / forward_batch``.
        backward_calls: torch calls, when known; default: ``backwards / backward_batch``.
        draws: input-sized random perturbations drawn in numpy (noise, corruptions, invalid inputs).
        children: child processes started (``nnassay.tasks.engine.isolation``: a new interpreter
            importing numpy and ONNX Runtime), priced by the machine's measured slowdown.
        forward_batch: rows per ONNX Runtime call, used when ``forward_calls`` is not given.
        backward_batch: rows per torch call, used when ``backward_calls`` is not given.
    """

    forwards: float = 0.0
    backwards: float = 0.0
    fixed_s: float = 0.0
    forward_calls: float | None = None
    backward_calls: float | None = None
    draws: float = 0.0
    children: float = 0.0
    forward_batch: int = DEFAULT_FORWARD_BATCH
    backward_batch: int = DEFAULT_BACKWARD_BATCH

    def calls(self) -> tuple[float, float]:
        """(ONNX Runtime calls, torch calls): the given counts, else rows over the batch size, rounded up."""
        fwd = (
            self.forward_calls if self.forward_calls is not None else _ceil(self.forwards, self.forward_batch)
        )
        bwd = (
            self.backward_calls
            if self.backward_calls is not None
            else _ceil(self.backwards, self.backward_batch)
        )
        return fwd, bwd

    def scaled(self, factor: float) -> Cost:
        """The same work ``factor`` times over (counts and fixed seconds times ``factor``, batch
        sizes kept; call counts made explicit)."""
        fwd, bwd = self.calls()
        return Cost(
            forwards=self.forwards * factor,
            backwards=self.backwards * factor,
            fixed_s=self.fixed_s * factor,
            forward_calls=fwd * factor,
            backward_calls=bwd * factor,
            draws=self.draws * factor,
            children=self.children * factor,
        )

    def __add__(self, other: Cost) -> Cost:
        """Two pieces of work done one after the other (counts add up; call counts are made explicit)."""
        mine, theirs = self.calls(), other.calls()
        return Cost(
            forwards=self.forwards + other.forwards,
            backwards=self.backwards + other.backwards,
            fixed_s=self.fixed_s + other.fixed_s,
            forward_calls=mine[0] + theirs[0],
            backward_calls=mine[1] + theirs[1],
            draws=self.draws + other.draws,
            children=self.children + other.children,
        )


def _ceil(rows: float, batch: int) -> float:
    return float(-(-rows // max(batch, 1))) if rows > 0 else 0.0


def passes(
    rows: float, count: float = 1.0, *, batch: int = DEFAULT_FORWARD_BATCH, drawn: bool = False
) -> Cost:
    """``count`` ONNX Runtime passes over ``rows`` rows, in calls of at most ``batch`` rows; ``drawn``:
    every row of those passes is a freshly drawn random perturbation."""
    return Cost(
        forwards=rows * count,
        forward_calls=_ceil(rows, batch) * count,
        draws=rows * count if drawn else 0.0,
    )


def conservative_cost(samples: int) -> Cost:
    """The cost of a method that states none: 100 evaluations per sample in single-row calls, plus a
    second (deliberately pessimistic, so an unknown method is never estimated as cheap)."""
    return Cost(forwards=100.0 * samples, forward_calls=100.0 * samples, draws=100.0 * samples, fixed_s=1.0)
