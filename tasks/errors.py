"""The error hierarchy: every error names the file, the field and the fix."""

from __future__ import annotations


class AssessmentError(Exception):
    """Bad input or an impossible run; the CLI turns it into exit code 2 and one clear message."""

    def __init__(
        self, message: str, *, file: str | None = None, field: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.field = field
        self.fix = fix

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if self.field:
            parts.append(f"field '{self.field}'")
        where = ": ".join(parts)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class SpecError(AssessmentError):
    """The assessment spec (goals file) is malformed."""


class DataError(AssessmentError):
    """The test data cannot be used."""


class ModelError(AssessmentError):
    """The model is missing, corrupt, unsupported or does not fit the data."""


class PlanError(AssessmentError):
    """The goals cannot be turned into a test plan."""


class OutputError(AssessmentError):
    """An output cannot be written."""
