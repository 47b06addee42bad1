"""Models from the MLflow model registry: ``models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``).

The version's whole artifact folder is downloaded as MLflow saved it (``mlflow.onnx.log_model`` keeps
the weights of a large model in an external-data file beside ``model.onnx``); only its single ONNX
file is ever loaded (no pickle, no pyfunc: nothing is deserialised but ONNX). A sidecar
``registry.json`` beside the ONNX file names where it came from. After the assessment the version is
tagged with the verdict, run id and evidence digest: a deployment gate (ISO/IEC 42001 A.6.2.5).

Each version is downloaded once per assessment: inside ``download_scope`` (opened by every CLI
command for its whole run) the CLI's input check and the flow share one download, keyed by registry,
name and resolved version, in the assessment's own work folder (removed when it ends); outside a
scope every call downloads into a new folder of its own. No folder is shared between assessments.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnassay.schemas.goals import AssessmentSpec
from nnassay.tasks.errors import ModelError
from nnassay.tasks.io.files import sha256_bytes, write_atomic

PREFIX = "models:/"
SIDECAR = "registry.json"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))$")


@dataclass
class _Scope:
    """One assessment's downloads: its work folder and the ONNX path of each version fetched."""

    folder: Path
    found: dict[str, Path] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SCOPE: _Scope | None = None  # process-wide, not a context variable: Prefect task threads see it


@contextlib.contextmanager
def download_scope(folder: Path | None = None) -> Iterator[Path]:
    """Within this block each registry model version is downloaded once, into ``folder`` (default: a
    new temporary work folder, removed with what it holds when the block ends). A nested scope uses
    the outer one."""
    global _SCOPE
    if _SCOPE is not None:
        yield _SCOPE.folder
        return
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nnassay-work-")))
        _SCOPE = _Scope(folder)
        try:
            yield folder
        finally:
            _SCOPE = None


def is_registry_uri(text: str) -> bool:
    """True for 'models:/...' references."""
    return text.startswith(PREFIX)


def resolve_registered(
    spec: AssessmentSpec, *, model_uri: str | None = None, registry_uri: str | None = None
) -> AssessmentSpec:
    """The spec with a registry model (``model_uri`` when given, else a models:/ model.path)
    downloaded from the registry at ``registry_uri`` (None: MLflow's default)."""
    uri = model_uri or str(spec.model.path)
    if model_uri is None and not is_registry_uri(uri):
        return spec
    local = download_onnx(uri, registry_uri)
    return spec.model_copy(update={"model": spec.model.model_copy(update={"path": local})})


def _client(registry_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)


def download_onnx(uri: str, registry_uri: str | None = None) -> Path:
    """Download a registered model version's artifact folder (holding exactly one ONNX file and any
    external-data files); return the ONNX file's local path."""
    match = _URI.match(uri)
    if match is None:
        raise ModelError(
            f"not a registry model reference: {uri!r}",
            field="model.path",
            fix="write models:/NAME/VERSION or models:/NAME@ALIAS",
        )
    client = _client(registry_uri)
    try:
        version = (
            client.get_model_version_by_alias(match["name"], match["alias"])
            if match["alias"]
            else client.get_model_version(match["name"], match["version"])
        )
        root = client.get_model_version_download_uri(version.name, version.version)
    except Exception as exc:  # MlflowException for unknown names, versions, aliases
        raise ModelError(
            f"the registry at {client._registry_uri} has no {uri}: {str(exc)[:200]}",
            field="model.path",
            fix="check the name and version (mlflow models list)",
        ) from None
    try:
        onnx_files = _onnx_files(root)
        if len(onnx_files) == 1:
            return _fetch(root, onnx_files[0], uri, client._registry_uri, version)
    except Exception as exc:  # artifact stores raise many types (missing files, permissions, network)
        raise ModelError(
            f"cannot download the ONNX file of {uri} from {root}: {str(exc)[:300]}",
            field="model.path",
            fix="check that the registry's artifact store is reachable",
        ) from None
    raise ModelError(
        f"{uri} must hold exactly one .onnx file, found {onnx_files or 'none'}",
        field="model.path",
        fix="register the ONNX file of the model (other formats are never loaded)",
    )


def _onnx_files(root: str) -> list[str]:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(root)
    found: list[str] = []
    pending: list[str | None] = [None]
    while pending:
        for item in repo.list_artifacts(pending.pop()):
            if item.is_dir:
                pending.append(item.path)
            elif item.path.lower().endswith(".onnx"):
                found.append(item.path)
    return sorted(found)


def _fetch(root: str, rel: str, uri: str, registry_uri: str, version: Any) -> Path:
    """The version's ONNX file: the scope's copy when this assessment has it already, else a download."""
    key = sha256_bytes(f"{registry_uri}|{version.name}|{version.version}".encode())[:16]
    scope = _SCOPE
    if scope is None:
        return _download(
            root, rel, uri, registry_uri, version, Path(tempfile.mkdtemp(prefix="nnassay-model-"))
        )
    with scope.lock:  # one download even when two threads ask at once
        known = scope.found.get(key)
        if known is None or not (known.is_file() and (known.parent / SIDECAR).is_file()):
            scope.found[key] = _download(
                root, rel, uri, registry_uri, version, scope.folder / "registry" / key
            )
        return scope.found[key]


def _download(root: str, rel: str, uri: str, registry_uri: str, version: Any, folder: Path) -> Path:
    import shutil

    from mlflow.artifacts import download_artifacts

    shutil.rmtree(folder, ignore_errors=True)  # a fresh, complete copy (a removed file is fetched again)
    folder.mkdir(parents=True)
    local = Path(download_artifacts(artifact_uri=root, dst_path=str(folder), tracking_uri=registry_uri))
    path = local / rel
    write_atomic(
        path.parent / SIDECAR,
        json.dumps(
            {
                "model_uri": uri,
                "registry_uri": registry_uri,
                "name": version.name,
                "version": str(version.version),
                "source": str(version.source),
                "file": rel,
                "model_id": logged_model_id(version),
            },
            indent=2,
        ),
    )
    return path.resolve()


def logged_model_id(version: Any) -> str:
    """The MLflow 3 logged model behind a registered version ('' for one registered from a run path):
    its ``model_id``, else the id in a ``models:/m-...`` source."""
    found = getattr(version, "model_id", None)
    if found:
        return str(found)
    source = str(version.source)
    match = re.match(r"^models:/(m-[0-9a-f]+)$", source)
    return match[1] if match else ""


def origin(model_path: Path) -> dict[str, str] | None:
    """Where a downloaded model came from (the sidecar beside it), or None for a plain file."""
    sidecar = Path(model_path).parent / SIDECAR
    if not sidecar.is_file():
        return None
    data = json.loads(sidecar.read_text())
    return data if Path(model_path).name == Path(data.get("file", "")).name else None


def model_files(model_path: Path) -> list[Path]:
    """The ONNX file and the external-data files it names (read without loading any tensor)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    tensors = list(model.graph.initializer) + [
        a.t for node in model.graph.node for a in node.attribute if a.HasField("t")
    ]
    names = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    folder = model_path.parent.resolve()
    found = [(folder / n).resolve() for n in sorted(names)]
    return [model_path] + [f for f in found if f.is_file() and f.is_relative_to(folder)]  # never outside


def registry_uri_of(model_path: Path) -> str | None:
    """'models:/NAME/VERSION' of a downloaded registry model, or None for a plain file."""
    found = origin(model_path)
    return f"models:/{found['name']}/{found['version']}" if found else None


def tag_version(found: dict[str, str], tags: dict[str, str]) -> None:
    """Set tags on the registered model version the assessment was about (deployment gate record)."""
    client = _client(found["registry_uri"])
    for key, value in tags.items():
        client.set_model_version_tag(found["name"], found["version"], key, value)
