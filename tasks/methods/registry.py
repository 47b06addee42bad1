"""The one method registry: the protocol every robustness method follows, and its lookup.

Methods never import Prefect; ``nnassay.tasks.pipeline.execute`` runs any of them as a generic task. Method modules
are listed in ``nnassay.tasks.methods.catalog`` so that registration is explicit, not a hidden import side effect.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from nnassay.schemas.common import ClaimKind, MethodFamily
from nnassay.schemas.results import ArtifactRef, MethodOutcome

if TYPE_CHECKING:
    from nnassay.schemas.threats import Threat
    from nnassay.tasks.io.data_io import Dataset
    from nnassay.tasks.io.model_io import ModelRunner


class MethodParams(BaseModel):
    """Base of every method's parameters: every field has a default, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class RunContext:
    """Everything a method receives besides its parameters."""

    model: ModelRunner
    data: Dataset  # the samples this test uses, already subset
    threat: Threat
    metric: str
    seed: int
    out_dir: Path  # where the test may write artifacts (relative paths are recorded)
    run_dir: Path  # the run folder; artifact paths are stored relative to it
    time_s: float = 600.0
    confidence: float = 0.95
    interval: str = "clopper-pearson"  # the goal's interval for rates (criterion.interval)
    progress: Progress = field(default=lambda done, total: None)
    started: float = field(default_factory=time.monotonic)

    @property
    def rng(self) -> np.random.Generator:
        """A fresh generator seeded with the test's seed (same seed, same numbers)."""
        return np.random.default_rng(self.seed)

    def time_left(self) -> float:
        """Seconds of the test's budget still available."""
        return self.time_s - (time.monotonic() - self.started)

    def save_artifact(self, name: str, payload: bytes, media_type: str, caption: str = "") -> ArtifactRef:
        """Write a file into the test's folder atomically and return its reference."""
        from nnassay.tasks.io.files import sha256_bytes, write_atomic

        path = self.out_dir / name
        write_atomic(path, payload)
        return ArtifactRef(
            path=str(path.relative_to(self.run_dir)),
            sha256=sha256_bytes(payload),
            media_type=media_type,
            caption=caption,
        )


class RobustnessMethod(ABC):
    """Template of a method: subclasses declare metadata and write ``run``.

    Class attributes:
        name: 'family.snake_name', unique in the registry.
        family: TR 24029-1 method class.
        clause: TR 24029-1 clause the method belongs to (from shared/reference/STANDARDS.md).
        threats: threat kinds the method can test.
        metrics: metric names the method reports (a goal's metric must be one of them).
        claim: what kind of claim the method's headline numbers make.
        data_kinds: data kinds accepted: 'image', 'tabular' or both.
        Params: parameter model; ``Params()`` must construct (every field has a default).
        known_gaps: conformance check name -> reason it does not apply (becomes an xfail).
        priority: lower runs first when the planner chooses methods for a threat.
    """

    name: ClassVar[str]
    family: ClassVar[MethodFamily]
    clause: ClassVar[str]
    threats: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    claim: ClassVar[ClaimKind] = ClaimKind.ESTIMATE
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")
    Params: ClassVar[type[MethodParams]] = MethodParams
    known_gaps: ClassVar[dict[str, str]] = {}
    priority: ClassVar[int] = 100
    default: ClassVar[bool] = True  # chosen by the planner when the goal names no methods

    def params_for(self, threat: Threat, overrides: dict[str, Any]) -> MethodParams:
        """Build the parameters for a threat; override to derive fields from the threat."""
        return self.Params(**overrides)

    def check(self, ctx_threat: Threat, data_kind: str) -> list[str]:
        """Problems that make this method unfit for a threat and data kind (empty when fit)."""
        problems = []
        if data_kind not in self.data_kinds:
            problems.append(
                f"method {self.name!r} needs {' or '.join(self.data_kinds)} data, the data is {data_kind}"
            )
        return problems

    @abstractmethod
    def run(self, ctx: RunContext, params: MethodParams) -> MethodOutcome:
        """Run the method and return its measurements."""


_METHODS: dict[str, type[RobustnessMethod]] = {}
M = TypeVar("M", bound=type[RobustnessMethod])


def register(cls: M) -> M:
    """Class decorator adding a method to the registry; rejects duplicate or malformed names."""
    name = cls.name
    family, _, short = name.partition(".")
    if family != cls.family.value or not short:
        raise ValueError(f"method name {name!r} must be '{cls.family.value}.<name>'")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is registered twice")
    _METHODS[name] = cls
    return cls


def _load_catalog() -> None:
    import nnassay.tasks.methods.catalog  # noqa: F401  (explicit list of method modules)


def list_methods(family: MethodFamily | None = None) -> list[str]:
    """Names of all registered methods, optionally of one family, sorted."""
    _load_catalog()
    return sorted(n for n, c in _METHODS.items() if family is None or c.family == family)


def get_method(name: str) -> RobustnessMethod:
    """An instance of the named method; an unknown name lists the valid ones."""
    _load_catalog()
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of {list_methods()}")
    return _METHODS[name]()


def methods_for(threat_kind: str, metric: str | None = None) -> list[str]:
    """Default methods that test a threat kind (and report the metric), by priority."""
    _load_catalog()
    found = [
        c
        for c in _METHODS.values()
        if c.default and threat_kind in c.threats and (metric is None or metric in c.metrics)
    ]
    return [c.name for c in sorted(found, key=lambda c: (c.priority, c.name))]


def metrics_for(threat_kind: str) -> list[str]:
    """Every metric some registered method reports for a threat kind."""
    _load_catalog()
    return sorted({m for c in _METHODS.values() if threat_kind in c.threats for m in c.metrics})
