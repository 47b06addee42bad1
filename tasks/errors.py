"""The error hierarchy: every error names the file, the field and the fix."""

from __future__ import annotations

import unicodedata

# control, format (bidi overrides, zero-width), separator, surrogate, private and unassigned characters
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def shown(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with invisible or reordering characters escaped (``\\u202e``), safe for a terminal or log.

    Newlines and tabs stay when ``keep_newlines`` (multi-line messages); everything else in the
    control, format (bidi overrides), separator and unassigned categories is shown as an escape.
    """
    kept = "\n\t" if keep_newlines else ""
    return "".join(c if c in kept or unicodedata.category(c) not in _HIDDEN else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


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
            parts.append(shown(self.file))
        if self.field:
            parts.append(f"field '{shown(self.field)}'")
        where = ": ".join(parts)
        message = shown(self.message, keep_newlines=True)
        text = f"{where}: {message}" if where else message
        return f"{text}\n  fix: {shown(self.fix, keep_newlines=True)}" if self.fix else text


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


class FeatureError(DataError):
    """The tabular feature declaration (``data.features``) does not match the data."""
