"""The result cache of resumable runs: JSON only, each entry checked against its digest before reuse.

Prefect persists a task result as a record naming the serializer that reads it back, so a file
planted in the cache could name Prefect's pickle serializer and run code when read. Results are
written with ``DigestJSONSerializer`` (Prefect's JSON serializer: the value as JSON beside its
SHA-256). Before a test is submitted, ``screen`` reads its cache entries as plain JSON: an entry is
left for Prefect only when it names exactly that serializer and its value matches its digest and
decodes; anything else is moved, unread, to ``rejected/`` with a note saying why, so Prefect finds
no cached result and computes the test again, and the run's evidence says so (``rejections``). The
codec rebuilds only nnassay's own pydantic models, dataclasses and enums, and numpy arrays of plain
dtypes; it never imports anything outside nnassay.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prefect.serializers import JSONSerializer
from pydantic import BaseModel, Field

from nnassay.tasks.io.files import sha256_bytes, write_atomic

CACHE_DIR = ".nnassay-cache"  # under the run folder: persisted task results, keyed by test key
REJECTED = "rejected"  # under the cache folder: entries refused, each with a note saying why
SERIALIZER = "nnassay-digest-json"  # the serializer type every cached record must name
TAG = "__nnassay__"  # marks an encoded object in the JSON of a cached result
_OWN = "nnassay."  # only classes of these modules are rebuilt


class CacheEntryError(ValueError):
    """A cache entry that is not exactly what nnassay wrote: never read, the test is computed again."""


class DigestJSONSerializer(JSONSerializer[Any]):
    """Prefect's JSON serializer for test results: the value as JSON (``encode_object`` /
    ``decode_object``) stored beside its SHA-256, which ``loads`` checks before decoding."""

    type: str = Field(default=SERIALIZER, frozen=True)
    object_encoder: str | None = Field(default=f"{__name__}.encode_object", frozen=True)
    object_decoder: str | None = Field(default=f"{__name__}.decode_object", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        value = json.dumps(obj, default=encode_object)
        return json.dumps({"sha256": sha256_bytes(value.encode()), "value": value}).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(_checked_value(blob), object_hook=decode_object)


def result_serializer() -> DigestJSONSerializer:
    """The serializer of persisted test results."""
    return DigestJSONSerializer()


def _checked_value(blob: bytes | str) -> str:
    """The JSON value of a serialized result, after checking it against its digest."""
    try:
        wrapper = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CacheEntryError("the result is not JSON") from None
    if not isinstance(wrapper, dict) or not isinstance(wrapper.get("value"), str):
        raise CacheEntryError("the result carries no digest")
    value: str = wrapper["value"]
    actual = sha256_bytes(value.encode())
    if actual != wrapper.get("sha256"):
        raise CacheEntryError(
            f"digest mismatch: the entry records sha256 {str(wrapper.get('sha256'))[:64]}, its value has {actual}"
        )
    return value


# ---------------------------------------------------------------- the JSON codec


def encode_object(obj: Any) -> Any:
    """``json.dumps`` default hook: a tagged form of an object JSON cannot hold."""
    if isinstance(obj, BaseModel):
        return {TAG: "model", "class": _name(type(obj)), "data": obj.model_dump(mode="json")}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        return {TAG: "dataclass", "class": _name(type(obj)), "fields": fields}
    if isinstance(obj, enum.Enum):
        return {TAG: "enum", "class": _name(type(obj)), "value": obj.value}
    if isinstance(obj, np.ndarray | np.generic):
        array = np.asarray(obj)
        if array.dtype.hasobject:
            raise TypeError("a numpy array of Python objects cannot be cached as JSON")
        return {
            TAG: "ndarray",
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "scalar": isinstance(obj, np.generic),
            "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode(),
        }
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"a {type(obj).__name__} cannot be cached as JSON")


def decode_object(data: dict[str, Any]) -> Any:
    """``json.loads`` object hook: rebuild what ``encode_object`` tagged; plain dicts stay dicts."""
    kind = data.get(TAG)
    if kind is None:
        return data
    if kind == "ndarray":
        dtype = np.dtype(str(data["dtype"]))
        if dtype.hasobject:
            raise CacheEntryError("a cached array of Python objects")
        array = np.frombuffer(base64.b64decode(data["data"]), dtype=dtype).reshape(data["shape"]).copy()
        return array[()] if data.get("scalar") else array
    cls = _own_class(str(data.get("class")))
    if kind == "model" and issubclass(cls, BaseModel):
        return cls.model_validate(data["data"])
    if kind == "dataclass" and dataclasses.is_dataclass(cls):
        return cls(**data["fields"])
    if kind == "enum" and issubclass(cls, enum.Enum):
        return cls(data["value"])
    raise CacheEntryError(f"cached object of kind {kind!r} and class {data.get('class')!r} is not allowed")


def _name(cls: type) -> str:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not name.startswith(_OWN):
        raise TypeError(f"{name} is not an nnassay class: it cannot be cached")
    return name


def _own_class(name: str) -> type:
    """An nnassay class by qualified name; a name outside nnassay is refused before any import."""
    module, _, attr = name.rpartition(".")
    if not name.startswith(_OWN) or not module or "." in attr:
        raise CacheEntryError(f"cached class {name!r} is not an nnassay class")
    found = getattr(importlib.import_module(module), attr, None)
    if not isinstance(found, type):
        raise CacheEntryError(f"cached class {name!r} does not exist")
    return found


# ---------------------------------------------------------------- screening the entries


def expected_serializer() -> dict[str, Any]:
    """The serializer entry every cached record must carry, exactly, as Prefect writes it."""
    return result_serializer().model_dump(mode="json")


def check_entry(payload: bytes) -> None:
    """Raise CacheEntryError unless ``payload`` is a result record as nnassay writes it: JSON naming
    exactly ``DigestJSONSerializer``, its value matching its digest and decoding to nnassay objects.
    Nothing is unpickled or imported from outside nnassay."""
    try:
        record = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CacheEntryError("not a JSON result record (pickle or other binary data)") from None
    serializer = record.get("metadata", {}).get("serializer") if isinstance(record, dict) else None
    if serializer != expected_serializer():
        shown = serializer.get("type") if isinstance(serializer, dict) else None
        raise CacheEntryError(
            f"the record names serializer {str(shown)[:40]!r} ({json.dumps(serializer)[:120]}), "
            f"not nnassay's {SERIALIZER!r}"
        )
    if not isinstance(record.get("result"), str):
        raise CacheEntryError("the record holds no serialized result")
    try:
        result_serializer().loads(record["result"].encode())
    except CacheEntryError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CacheEntryError(f"the result does not decode: {type(exc).__name__}: {str(exc)[:200]}") from None


def screen(entry: Path) -> str | None:
    """Before Prefect may read a cache entry: leave it when ``check_entry`` accepts it, else move it,
    unread by Prefect, to ``rejected/`` beside a note; return why it was refused (None: accepted or
    absent)."""
    if not entry.is_file():
        return None
    payload = entry.read_bytes()
    try:
        check_entry(payload)
    except CacheEntryError as exc:
        _reject(entry, payload, str(exc))
        return str(exc)
    return None


def _reject(file: Path, payload: bytes, reason: str) -> None:
    """Move a refused entry to ``rejected/`` beside a note saying why and when."""
    folder = file.parent / REJECTED
    folder.mkdir(exist_ok=True)
    note = {
        "key": file.name,
        "reason": reason,
        "sha256": sha256_bytes(payload),
        "at": datetime.now(UTC).isoformat(),
    }
    write_atomic(folder / f"{file.name}.json", json.dumps(note))
    file.replace(folder / f"{file.name}.refused")


def rejections(cache: Path, *, since: datetime | None = None) -> list[dict[str, str]]:
    """The notes of entries refused (since a time): key, reason, digest and time, oldest first."""
    folder = cache / REJECTED
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            note = json.loads(path.read_bytes()[:65536])
            at = datetime.fromisoformat(str(note["at"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if since is None or at >= since:
            found.append({k: str(note.get(k, ""))[:500] for k in ("key", "reason", "sha256", "at")})
    return sorted(found, key=lambda n: n["at"])
