"""Small file helpers: digests (of files and of ONNX models with external data), atomic writes, and
the memory budget input files are checked against before they are loaded."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nnassay.tasks.errors import ModelError, OutputError

MEMORY_SHARE = 0.5  # share of the available memory one input file may take once loaded


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


def model_sha256(path: Path) -> str:
    """SHA-256 of an ONNX model *and* every external-data file its graph references.

    A model without external data keeps the plain SHA-256 of its file (earlier evidence stays
    comparable). With external data (``model.onnx`` + ``model.onnx.data``) the digest covers the graph
    file and each referenced file, in sorted location order, so changing one weight byte changes it.

    Raises:
        ModelError: a location escapes the model's folder, or a referenced file is missing.
    """
    graph = sha256_file(path)
    locations = external_data_files(path)
    if not locations:
        return graph
    digest = hashlib.sha256(b"nnassay-model-v1\0graph\0" + graph.encode())
    for location, file in locations:
        digest.update(b"\0external\0" + location.encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def external_data_files(path: Path) -> list[tuple[str, Path]]:
    """(location, file) of every external-data file the ONNX graph at ``path`` references, sorted.

    Reads only the graph (``load_external_data=False``); an unreadable graph has none (loading the
    model reports that). Locations must stay inside the model's folder.
    """
    if not path.is_file():
        return []
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 (not a readable ONNX graph: the model loader says why)
        return []
    locations = sorted({loc for loc in _external_locations(proto) if loc})
    return [(loc, _inside(path, loc)) for loc in locations]


def _external_locations(proto: Any) -> list[str]:
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    return [ExternalDataInfo(t).location for t in _all_tensors(proto) if uses_external_data(t)]


def _all_tensors(proto: Any) -> list[Any]:
    """Every TensorProto of a model: initializers, sparse tensors and tensor attributes, in subgraphs
    and functions too."""
    tensors: list[Any] = []
    graphs = [proto.graph]
    nodes = [n for f in proto.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            tensors += list(graph.initializer)
            tensors += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
            nodes += list(graph.node)
            continue
        for attr in nodes.pop().attribute:
            tensors += [attr.t, *attr.tensors]
            tensors += [t for s in [attr.sparse_tensor, *attr.sparse_tensors] for t in (s.values, s.indices)]
            graphs += [attr.g, *attr.graphs] if attr.HasField("g") else list(attr.graphs)
    return tensors


def _inside(model: Path, location: str) -> Path:
    folder = model.resolve().parent
    file = (folder / location).resolve()
    if Path(location).is_absolute() or not file.is_relative_to(folder):
        raise ModelError(
            f"the graph references external data at {location!r}, outside the model's folder {folder}",
            file=str(model),
            field="model.path",
            fix="save the model with its external data beside it (onnx.save(...,"
            " save_as_external_data=True, location='model.onnx.data'))",
        )
    if not file.is_file():
        raise ModelError(
            f"the graph references external data {location!r}, which is missing",
            file=str(model),
            field="model.path",
            fix="copy the external-data file(s) saved with the model into its folder",
        )
    return file


def available_memory_bytes() -> int | None:
    """Memory this process may still take: MemAvailable, capped by a cgroup limit; None when unknown."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            cap = int(Path(limit).read_text().strip())
            found.append(max(cap - int(Path(usage).read_text().strip()), 0))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def memory_budget() -> tuple[int | None, str]:
    """(bytes one input file may take once loaded, how that was worked out); None: no known limit."""
    available = available_memory_bytes()
    if available is None:
        return None, "available memory unknown"
    return int(available * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the {human_bytes(available)} available"


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(min(size, 1 << 100))  # a forged header can claim more than a float holds
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` gives new files (read once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def write_atomic(path: Path, payload: bytes | str, *, mode: int | None = None) -> Path:
    """Write to a temporary file beside ``path``, then rename it into place (a link at ``path`` is replaced,
    never followed; links inside the run folder are refused up front by ``ensure_writable_dir``).
    ``mode``: the file's permissions (default: what ``open()`` gives under the umask), set before any
    byte is written."""
    data = payload.encode() if isinstance(payload, str) else payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE if mode is None else mode)  # mkstemp makes 0600; default like open()
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


def linked_entries(folder: Path) -> list[Path]:
    """Symbolic links inside ``folder`` (not followed), which would let writes escape it."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        found += [Path(root, n) for n in dirs + files if Path(root, n).is_symlink()]
    return sorted(found)


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written in it and none of its entries is a
    link (a ``results/`` linked elsewhere would make the run write outside ``--output``)."""
    links = linked_entries(path) if path.is_dir() else []
    if links:
        shown = ", ".join(str(p) for p in links[:5])
        raise OutputError(
            f"output folder {path} holds symbolic links ({shown}): writing through them could leave the folder",
            file=str(path),
            fix="remove the links or choose a new output folder",
        )
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
