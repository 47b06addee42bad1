"""Shared building blocks of every persisted nnassay record: base model, enums, measurements."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Final = "1"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Confidence = Annotated[float, Field(gt=0.0, lt=1.0)]


def reject_nul(value: Any) -> Any:
    """Return ``value`` unchanged, or raise ValueError naming where a text (or key) holds a NUL.

    For a ``mode="before"`` validator on a whole user-written document: NUL characters truncate
    strings in C libraries and logs, so no field may carry one. Shared lists and dicts are visited once.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError(f"{where or 'the value'} contains a NUL character (\\x00); remove it")
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and "\x00" in key:
                    raise ValueError(f"a key in {where or 'the spec'} contains a NUL character (\\x00)")
                stack.append((child, f"{where}.{key}".lstrip(".")))
    return value


class Record(BaseModel):
    """Base of every schema: immutable, and a typo in a file is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class MethodFamily(StrEnum):
    """The three classes of methods of ISO/IEC TR 24029-1 clause 4.2."""

    STATISTICAL = "statistical"
    FORMAL = "formal"
    EMPIRICAL = "empirical"


class Verdict(StrEnum):
    """Outcome of comparing a measurement with its acceptance criterion."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Comparator(StrEnum):
    """How a measured value must relate to the threshold for the goal to pass."""

    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"

    @property
    def higher_is_better(self) -> bool:
        """True when larger measured values are the desirable direction."""
        return self in (Comparator.GE, Comparator.GT)


class ClaimKind(StrEnum):
    """What kind of statement a number makes; the dossier words each kind differently."""

    ESTIMATE = "estimate"  # point estimate, possibly with an interval, no guarantee
    BOUND = "bound"  # a bound that holds at confidence 1-alpha
    CERTIFICATE = "certificate"  # probabilistic certificate (e.g. randomized smoothing)
    PROOF = "proof"  # formally proved (sound verifier)
    OBSERVATION = "observation"  # a count or rate observed on the data, e.g. attack success


class Interval(Record):
    """A two-sided confidence interval around a measured value."""

    low: float = Field(description="Lower end of the interval.")
    high: float = Field(description="Upper end of the interval.")
    confidence: Confidence = Field(description="Confidence level of the interval, e.g. 0.95.")
    method: str = Field(description="How the interval was computed, e.g. 'clopper-pearson'.")

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.low > self.high:
            raise ValueError(f"interval low {self.low} is above high {self.high}")
        return self


class Measurement(Record):
    """One measured number with its uncertainty and the kind of claim it makes."""

    value: float = Field(description="The measured value (point estimate).")
    interval: Interval | None = Field(
        default=None, description="Confidence interval of the value, when it has one."
    )
    claim: ClaimKind = Field(
        default=ClaimKind.ESTIMATE, description="What kind of statement this number makes."
    )
    n: int | None = Field(
        default=None, ge=0, description="Number of samples or draws the value is computed from."
    )
    successes: int | None = Field(
        default=None,
        ge=0,
        description="For rates: the count behind the rate (rate = successes / n).",
    )
    is_rate: bool = Field(default=False, description="True when the value is a proportion in [0, 1].")
    description: str = Field(default="", description="What the number means, in one sentence.")
