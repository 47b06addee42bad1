"""Checks on data files before they are loaded: sizes from headers against the memory budget.

An npz's ``.npy`` headers, a CSV's line count and an image's size are read first; a file that would
take more memory than ``memory_budget()`` allows, claims more data than it holds or stores object
arrays is refused with the numbers, before any large allocation.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from nnassay.tasks.errors import DataError
from nnassay.tasks.io.files import human_bytes, memory_budget

# what zipfile, zlib and numpy raise on damaged or forged archives and headers (numpy parses a
# header's dtype with ast.literal_eval: SyntaxError)
NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, ValueError, EOFError,
              NotImplementedError, RuntimeError, KeyError, SyntaxError, TypeError, OverflowError)  # fmt: skip
WORKING_BYTES = 8  # per value: the float32 copy in the model's layout plus one conversion
ROW_BYTES_PER_CHAR = 64  # a CSV line of n characters becomes up to n/2 Python strings while parsed
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArrayHeader:
    """What an ``.npy`` member of an npz declares, read without loading it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored_bytes: int  # the member's uncompressed size

    @property
    def count(self) -> int:
        """Number of values."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the array as stored."""
        return self.count * self.dtype.itemsize


def check_npz(path: Path, names: tuple[str, ...] = ("x", "y")) -> dict[str, ArrayHeader]:
    """Read the headers of the named arrays of an npz and refuse what cannot or should not be loaded.

    Raises:
        DataError: not an npz, an array missing, a header unreadable, an object or non-numeric
            dtype, a header claiming more bytes than stored, or more memory than the budget.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(n).stem if n.endswith(".npy") else n: n for n in archive.namelist()}
            missing = [n for n in names if n not in members]
            if missing:
                listed = [name[:64] for name in sorted(members)[:10]]
                raise _npz_error(path, f"the npz holds arrays {listed}, expected {_quoted(names)}")
            headers = {n: _read_header(archive, members[n], n, path) for n in names}
    except zipfile.BadZipFile:
        raise _npz_error(path, "not an npz file (a zip archive of .npy arrays)") from None
    except NPZ_ERRORS as exc:
        raise _npz_error(path, f"cannot read the npz file: {reason(exc)}") from None
    _check_budget(path, headers)
    for header in headers.values():
        _check_stored(path, header)
    return headers


def _read_header(archive: zipfile.ZipFile, member: str, name: str, path: Path) -> ArrayHeader:
    with archive.open(member) as handle:
        try:
            version = npy.read_magic(handle)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = reader(handle)
        except Exception as exc:  # noqa: BLE001 (numpy's parser of forged headers raises ValueError, SyntaxError, TokenError...)
            raise _npz_error(path, f"the .npy header of array {name!r} is not valid: {reason(exc)}") from None
        offset = handle.tell()
    header = ArrayHeader(name, tuple(shape), dtype, archive.getinfo(member).file_size - offset)
    _check_header(path, header)
    return header


def _check_header(path: Path, header: ArrayHeader) -> None:
    name = header.name
    if header.dtype.hasobject:
        raise _npz_error(path, f"array {name!r} holds Python objects; nnassay never unpickles data")
    text_labels = name == "y" and header.dtype.kind in "US"  # class labels as text ('cat', 'dog')
    if header.dtype.kind not in "biuf" and not text_labels or header.dtype.fields:
        raise _npz_error(path, f"array {name!r} has dtype {header.dtype.str!r}, expected numbers")
    if any(d < 0 for d in header.shape) or not header.shape:
        raise _npz_error(path, f"array {name!r} has shape {list(header.shape)}; expected samples first")
    if name == "y" and len(header.shape) != 1:
        raise _npz_error(path, f"y has shape {list(header.shape)}; expected one label per sample (1-D)")
    if name == "x" and 0 in header.shape[1:]:
        raise _npz_error(path, f"x has shape {list(header.shape)}, an empty sample axis")


def _check_stored(path: Path, header: ArrayHeader) -> None:
    name = header.name
    if header.nbytes > header.stored_bytes:
        raise _npz_error(
            path,
            f"the header of array {name!r} claims shape {list(header.shape)} of {header.dtype}"
            f" ({human_bytes(header.nbytes)}) but the file holds {human_bytes(header.stored_bytes)}",
        )


def _check_budget(path: Path, headers: dict[str, ArrayHeader]) -> None:
    budget, how = memory_budget()
    needs = {n: h.nbytes + h.count * WORKING_BYTES for n, h in headers.items()}
    if budget is None or sum(needs.values()) <= budget:
        return
    name = max(needs, key=lambda n: needs[n])
    header = headers[name]
    raise DataError(
        f"array {name!r} claims shape {list(header.shape)} of {header.dtype}"
        f" ({human_bytes(header.nbytes)}); loading the data needs about"
        f" {human_bytes(sum(needs.values()))}, above the memory budget of {human_bytes(budget)} ({how})",
        file=str(path),
        field="data.path",
        fix="store fewer samples in the file, or run on a machine with more free memory",
    )


def check_csv(path: Path) -> tuple[int, int]:
    """(an upper bound on the CSV's rows, its longest line in bytes), read in 1 MiB chunks.

    Raises:
        DataError: the longest line alone would take more memory than the budget while parsed.
    """
    longest, run, newline, carriage = 0, 0, 0, 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            codes = np.frombuffer(chunk, dtype=np.uint8)
            ends = np.flatnonzero((codes == 10) | (codes == 13))
            newline += int(np.count_nonzero(codes == 10))
            carriage += int(np.count_nonzero(codes == 13))
            if len(ends) == 0:
                run += len(chunk)
            else:
                gaps = np.diff(ends) if len(ends) > 1 else np.zeros(1, dtype=np.int64)
                longest = max(longest, run + int(ends[0]), int(gaps.max()))
                run = len(chunk) - int(ends[-1]) - 1
    longest = max(longest, run)
    check_csv_budget(path, 0, 0, longest)
    return max(newline, carriage) + 1, longest


def check_csv_budget(path: Path, rows: int, columns: int, longest: int) -> None:
    """Refuse a CSV whose values (``rows`` x ``columns``) or longest line would exceed the budget."""
    budget, how = memory_budget()
    need = rows * columns * (8 + WORKING_BYTES) + longest * ROW_BYTES_PER_CHAR
    if budget is None or need <= budget:
        return
    shape = f"up to {rows} rows x {columns} columns" if rows else f"a line of {human_bytes(longest)}"
    raise DataError(
        f"the CSV ({shape}) needs about {human_bytes(need)} once parsed, above the memory"
        f" budget of {human_bytes(budget)} ({how})",
        file=str(path),
        field="data.path",
        fix="use fewer rows, or store the data as npz",
    )


def check_image_budget(path: Path, pixels_so_far: int) -> None:
    """Refuse an image folder whose decoded pixels (so far) would exceed the budget."""
    budget, how = memory_budget()
    need = pixels_so_far * (1 + 4 + WORKING_BYTES)  # uint8 decoded, float32 stack, working copies
    if budget is not None and need > budget:
        raise DataError(
            f"the images need about {human_bytes(need)} once decoded, above the memory budget of"
            f" {human_bytes(budget)} ({how})",
            file=str(path),
            field="data.path",
            fix="use fewer or smaller images",
        )


def _npz_error(path: Path, message: str) -> DataError:
    return DataError(
        message, file=str(path), field="data.path", fix="save the file with np.savez(path, x=..., y=...)"
    )


def _quoted(names: tuple[str, ...]) -> str:
    return " and ".join(repr(n) for n in names)


def reason(exc: BaseException) -> str:
    """The first clause of an exception's message (numpy quotes the header text after a colon)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(": ", 1)[0].split("; ", 1)[0][:160]


def first_bad_utf8_line(path: Path) -> int | None:
    """The 1-based line of the first bytes that are not UTF-8 (lines are bounded by ``check_csv``)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
