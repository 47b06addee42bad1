"""Sharding: split a large test into sample shards that run as separate tasks and merge exactly.

A method opts in by implementing ``Shardable``: ``run_part`` measures a range of samples that starts
at a multiple of ``shard_unit`` and ``merge_parts`` combines the parts by sums and concatenations.
The method seeds its randomness per unit (not per shard), so a merged run equals the unsharded one
bit for bit whatever the shard size. No Prefect here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from nnassay.schemas.plan import TestSpec
from nnassay.schemas.results import MethodOutcome
from nnassay.tasks.methods.registry import MethodParams, RunContext, get_method


@runtime_checkable
class Shardable(Protocol):
    """A method whose work splits over ranges of samples."""

    shard_unit: ClassVar[int]  # shards start at multiples of this many samples
    # Optional ``shard_size: ClassVar[int]``: the most samples one shard should hold, for methods whose
    # samples are expensive (formal verification: one instance per task).

    def run_part(self, ctx: RunContext, params: MethodParams, start: int, stop: int) -> Any:
        """Measure samples [start, stop) of ``ctx.data``; the result must be picklable."""

    def merge_parts(self, ctx: RunContext, params: MethodParams, parts: list[Any]) -> MethodOutcome:
        """The whole test's outcome from all its parts."""


@dataclass(frozen=True)
class Shard:
    """One range of samples of a test."""

    index: int
    count: int
    start: int
    stop: int

    @property
    def label(self) -> str:
        """'3/8' style label for task names."""
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class ShardResult:
    """What one shard task returns: the method's part, or why it failed."""

    shard: Shard
    part: Any | None
    error: str | None = None
    traceback: str | None = None
    time_s: float = 0.0


def shard_ranges(n: int, unit: int, target: int) -> list[tuple[int, int]]:
    """Ranges covering [0, n) of about ``target`` samples each, starting at multiples of ``unit``."""
    if n <= 0:
        return []
    size = max(unit, (max(target, 1) + unit - 1) // unit * unit)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def plan_shards(test: TestSpec, shard_samples: int) -> list[Shard]:
    """The shards of a test, or [] when it runs whole (method not shardable, or small enough)."""
    if shard_samples <= 0:
        return []
    method = get_method(test.method)
    if not isinstance(method, Shardable):
        return []
    target = min(shard_samples, getattr(method, "shard_size", shard_samples))
    if test.samples <= target:
        return []
    ranges = shard_ranges(test.samples, method.shard_unit, target)
    if len(ranges) < 2:
        return []
    return [Shard(i, len(ranges), a, b) for i, (a, b) in enumerate(ranges)]
