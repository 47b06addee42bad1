"""Small file helpers: digests and atomic writes, so nothing is ever left half-written."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nnassay.tasks.errors import OutputError


def sha256_bytes(payload: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(payload).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (or of every file of a folder, in sorted path order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, payload: bytes | str) -> Path:
    """Write to a temporary file beside ``path``, then rename it into place."""
    data = payload.encode() if isinstance(payload, str) else payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}",
            file=str(path),
            fix="choose an output folder you can write to (--output DIR)",
        ) from exc
    return path


def write_json(path: Path, value: BaseModel | dict[str, Any] | list[Any]) -> Path:
    """Write a pydantic model or JSON value atomically, pretty-printed."""
    text = (
        value.model_dump_json(indent=2)
        if isinstance(value, BaseModel)
        else json.dumps(value, indent=2, sort_keys=True)
    )
    return write_atomic(path, text + "\n")


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".nnassay-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"output folder {path} is not writable: {exc.strerror or exc}",
            file=str(path),
            fix="pass --output with a folder you can write to",
        ) from exc
    return path
