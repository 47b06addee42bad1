"""The one method registry: the protocol every robustness method follows, and its lookup.

Methods never import Prefect; ``nnassay.tasks.pipeline.execute`` runs any of them as a generic task. Method modules
are listed in ``nnassay.tasks.methods.catalog`` so that registration is explicit, not a hidden import side effect.
"""

from __future__ import annotations

import difflib
import time
import types
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, Union, cast, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict

from nnassay.schemas.common import ClaimKind, MethodFamily
from nnassay.schemas.results import ArtifactRef, MethodOutcome
from nnassay.schemas.threats import AnyThreat
from nnassay.tasks.methods.cost import Cost, conservative_cost

if TYPE_CHECKING:
    from nnassay.tasks.io.data_io import Dataset
    from nnassay.tasks.io.model_io import ModelRunner


class MethodParams(BaseModel):
    """Base of every method's parameters: every field has a default, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Progress = Callable[[int, int], None]  # (done, total)
P = TypeVar("P", bound=MethodParams)  # a method's parameter model
T = TypeVar("T", bound=AnyThreat)  # the threat classes a method tests (one class or a union)


@dataclass
class RunContext(Generic[T]):
    """Everything a method receives besides its parameters."""

    model: ModelRunner
    data: Dataset  # the samples this test uses, already subset
    threat: T
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


class RobustnessMethod(ABC, Generic[P, T]):
    """Template of a method: subclasses declare metadata and write ``run``.

    A method states its parameter model and the threat classes it tests as type arguments,
    ``class PgdLinf(RobustnessMethod[PgdParams, LinfBall])``, so ``run`` receives typed parameters
    and a typed ``ctx.threat``. The base checks once, at its entry point ``params_for``, that the
    threat is one of the declared classes; ``Params`` defaults to the declared parameter model.

    Class attributes:
        name: 'family.snake_name', unique in the registry.
        family: TR 24029-1 method class.
        clause: TR 24029-1 clause the method belongs to (from shared/reference/STANDARDS.md).
        threats: threat kinds the method can test (each the kind of a declared threat class).
        metrics: metric names the method reports (a goal's metric must be one of them).
        claim: what kind of claim the method's headline numbers make.
        data_kinds: data kinds accepted: 'image', 'tabular' or both.
        Params: parameter model; ``Params()`` must construct (every field has a default).
        threat_classes: the declared threat classes (from the type argument ``T``).
        known_gaps: conformance check name -> reason it does not apply (becomes a strict xfail).
        priority: lower runs first when the planner chooses methods for a threat.
        needs_executor: True when the method runs the model through the torch executor (gradients),
            so it cannot run on a model with ops the executor lacks (planning then falls back).
    """

    name: ClassVar[str]
    family: ClassVar[MethodFamily]
    clause: ClassVar[str]
    threats: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    claim: ClassVar[ClaimKind] = ClaimKind.ESTIMATE
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "tabular")
    Params: ClassVar[type[MethodParams]] = MethodParams
    threat_classes: ClassVar[tuple[type[BaseModel], ...]] = get_args(AnyThreat)
    known_gaps: ClassVar[dict[str, str]] = {}
    priority: ClassVar[int] = 100
    default: ClassVar[bool] = True  # chosen by the planner when the goal names no methods
    needs_executor: ClassVar[bool] = False
    _type_args: ClassVar[tuple[Any, Any]]  # (params, threat) as given by the subclass's generic bases

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._type_args = _type_args_of(cls)
        declared = _bound(cls._type_args[0])
        if "Params" not in cls.__dict__:
            cls.Params = declared
        elif not issubclass(cls.Params, declared):
            raise TypeError(
                f"{cls.__name__}.Params is {cls.Params.__name__}, expected a subclass of the declared "
                f"parameter model {declared.__name__}"
            )
        cls.threat_classes = _classes(_bound(cls._type_args[1]))

    def params_for(self, threat: AnyThreat, overrides: dict[str, Any]) -> P:
        """The parameters for a threat, after checking it is one of the declared threat classes."""
        return self.derive_params(self.accept(threat), overrides)

    def accept(self, threat: AnyThreat) -> T:
        """The threat, typed; a threat of another class is a ``TypeError`` naming the accepted ones."""
        if not isinstance(threat, self.threat_classes):
            raise TypeError(
                f"method {self.name!r} tests {' or '.join(c.__name__ for c in self.threat_classes)} "
                f"threats, got {type(threat).__name__} (kind {getattr(threat, 'kind', None)!r})"
            )
        return cast(T, threat)

    def derive_params(self, threat: T, overrides: dict[str, Any]) -> P:
        """Build the parameters for a checked threat; override to derive fields from the threat."""
        return cast(P, self.Params(**overrides))  # Params subclasses P (checked at class creation)

    def check(self, ctx_threat: AnyThreat, data_kind: str) -> list[str]:
        """Problems that make this method unfit for a threat and data kind (empty when fit)."""
        problems = []
        if data_kind not in self.data_kinds:
            problems.append(
                f"method {self.name!r} needs {' or '.join(self.data_kinds)} data, the data is {data_kind}"
            )
        return problems

    def unfit(self, threat: AnyThreat, data_kind: str, *, executor_ok: bool = True) -> list[str]:
        """Every reason planning would refuse this method for a threat, data kind and model."""
        if threat.kind not in self.threats:
            return [
                f"method {self.name!r} does not test threat {threat.kind!r} (it tests {list(self.threats)})"
            ]
        problems = self.check(threat, data_kind)
        if self.needs_executor and not executor_ok:
            problems.append(f"method {self.name!r} needs the torch executor, which cannot run this model")
        return problems

    @abstractmethod
    def run(self, ctx: RunContext[T], params: P) -> MethodOutcome:
        """Run the method and return its measurements."""

    @classmethod
    def cost(cls, params: P, samples: int) -> Cost:
        """The work of a run on ``samples`` samples, in model evaluations (planning turns it into
        seconds). Override with the method's own count; this default is deliberately pessimistic."""
        return conservative_cost(samples)


def _type_args_of(cls: type) -> tuple[Any, Any]:
    """The (params, threat) type arguments of ``RobustnessMethod`` as seen from ``cls``.

    Follows the generic bases (``class Apgd(WhiteBoxAttack[ApgdParams])`` through
    ``class AttackMethod(RobustnessMethod[AP, LinfBall | L2Ball])``); a type variable left open
    stays a type variable (its bound is then used).
    """
    for base in cls.__dict__.get("__orig_bases__", cls.__bases__):
        origin = get_origin(base) or base
        if not (isinstance(origin, type) and issubclass(origin, RobustnessMethod)):
            continue
        parent = _open_args() if origin is RobustnessMethod else origin._type_args
        given = dict(zip(getattr(origin, "__parameters__", ()), get_args(base), strict=False))
        params, threat = (given.get(a, a) if isinstance(a, TypeVar) else a for a in parent)
        return params, threat
    return _open_args()


def _open_args() -> tuple[Any, Any]:
    """``RobustnessMethod``'s own (params, threat) type variables."""
    params, threat = vars(RobustnessMethod)["__parameters__"]
    return params, threat


def _bound(arg: Any) -> Any:
    """A type argument, or the bound of an open type variable."""
    return arg.__bound__ if isinstance(arg, TypeVar) else arg


def _classes(arg: Any) -> tuple[type[BaseModel], ...]:
    """The classes of a union (``LinfBall | L2Ball``) or of a single class."""
    return get_args(arg) if get_origin(arg) in (Union, types.UnionType) else (arg,)


def threat_kind(threat_class: type[BaseModel]) -> str:
    """The ``kind`` literal of a threat class ('linf_ball' for ``LinfBall``)."""
    return str(get_args(threat_class.model_fields["kind"].annotation)[0])


_METHODS: dict[str, type[RobustnessMethod[Any, Any]]] = {}
M = TypeVar("M", bound=type[RobustnessMethod[Any, Any]])


def register(cls: M) -> M:
    """Class decorator adding a method to the registry; rejects duplicate or malformed definitions."""
    name = cls.name
    family, _, short = name.partition(".")
    if family != cls.family.value or not short:
        raise ValueError(f"method name {name!r} must be '{cls.family.value}.<name>'")
    declared = [threat_kind(c) for c in cls.threat_classes]
    if undeclared := sorted(set(cls.threats) - set(declared)):
        raise ValueError(
            f"method {name!r} lists threat kinds {undeclared} that are not among its declared threat "
            f"classes {[c.__name__ for c in cls.threat_classes]}; widen the type argument T"
        )
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


def get_method(name: str) -> RobustnessMethod[Any, Any]:
    """An instance of the named method; an unknown name lists the valid ones."""
    _load_catalog()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list_methods(), n=1, cutoff=0.85)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {list_methods()}"
        raise KeyError(f"unknown method {name!r}; {hint} (`nnassay methods` lists them)")
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


def usable_methods(
    threat: AnyThreat, data_kind: str, metric: str | None = None, *, executor_ok: bool = True
) -> list[str]:
    """Default methods planning would accept for this threat, data kind and model, by priority.

    The same checks as planning (threat kind, data kind, torch executor), so advice built from this
    list never names a method that would be refused.
    """
    return [
        n
        for n in methods_for(threat.kind, metric)
        if not _METHODS[n]().unfit(threat, data_kind, executor_ok=executor_ok)
    ]


def metrics_for(threat_kind: str) -> list[str]:
    """Every metric some registered method reports for a threat kind."""
    _load_catalog()
    return sorted({m for c in _METHODS.values() if threat_kind in c.threats for m in c.metrics})
