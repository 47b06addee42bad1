"""Checks on stores nnassay hands to other libraries (the MLflow SQLite file) before they touch them."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import unquote

from nnassay.tasks.errors import OutputError

SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (``sqlite:////abs`` or ``sqlite:///rel``); None otherwise.

    In-memory stores (``sqlite://``, ``sqlite:///:memory:``) and other schemes have no file.
    """
    if not uri.lower().startswith("sqlite:///"):
        return None
    rest = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(rest) if rest and rest != ":memory:" else None


def check_tracking_store(uri: str) -> None:
    """Refuse a ``sqlite:///`` tracking URI whose file exists but is not an SQLite database.

    MLflow would otherwise fail deep inside SQLAlchemy with a traceback. A missing or empty file is
    fine (MLflow creates the store).

    Raises:
        OutputError: naming the file and the fix.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _not_sqlite(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_sqlite(path, "is not a regular file")
    if info.st_size == 0:
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise _not_sqlite(path, f"cannot be read ({exc.strerror or exc})") from None
    if head != SQLITE_MAGIC:
        raise _not_sqlite(path, "is not an SQLite database (no 'SQLite format 3' header)")


def _not_sqlite(path: Path, why: str) -> OutputError:
    return OutputError(
        f"the MLflow tracking store {why}",
        file=str(path),
        field="mlflow tracking URI",
        fix="move that file away, or pass --mlflow-uri with another store (or --no-track)",
    )
