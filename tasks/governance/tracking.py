"""Tracking: one MLflow parent run per assessment and a nested run per test.

``Tracker`` is the protocol the flow uses; ``MlflowTracker`` talks to any MLflow tracking URI
(the embedded SQLite default or a real server); ``InMemoryTracker`` keeps everything in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nnassay.schemas.results import MethodResult

if TYPE_CHECKING:
    import numpy as np

    from nnassay.schemas.explain import ExplanationSet

MAX_PARAM = 500  # MLflow rejects longer parameter values
MAX_TAG = 8000  # MLflow's longest tag value
DIGEST_CHARS = 16  # dataset digests shown in the MLflow UI: the file's sha256 prefix


@dataclass(frozen=True)
class DatasetRef:
    """A data file the assessment read, for the run's inputs (``mlflow.log_input``)."""

    name: str
    path: Path
    sha256: str
    context: str  # test, domain_shift, ood, ...
    x: np.ndarray | None = None  # features when readable (schema and profile in the UI)
    y: np.ndarray | None = None


@dataclass(frozen=True)
class ModelRef:
    """The assessed model, for the run's model input: a registry version or a local ONNX file."""

    name: str
    path: Path
    sha256: str
    registry: dict[str, str] | None = None  # registry.json of a models:/ download

    @property
    def uri(self) -> str:
        """'models:/NAME/VERSION' for a registry model, else the file's URI."""
        if self.registry:
            return f"models:/{self.registry['name']}/{self.registry['version']}"
        return self.path.resolve().as_uri()


Artifact = tuple[Path, "str | None"]  # a file or folder, and the artifact folder it goes to


class Tracker(Protocol):
    """What the flow needs from an experiment tracker."""

    uri: str

    def start(self, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        """Open the parent run; return its id."""

    def log_test(
        self,
        parent_id: str,
        result: MethodResult,
        params: dict[str, Any],
        artifacts: Sequence[Artifact] = (),
    ) -> str:
        """Log one test as a nested run with its own artifacts; return its id."""

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetRef], model: ModelRef | None) -> str | None:
        """Link the data sets and the model the run read; return the model's id in the tracker."""

    def log_table(self, run_id: str, columns: dict[str, list[Any]], artifact_file: str) -> None:
        """Log a table viewable in the tracker's UI."""

    def run_link(self, run_id: str) -> str:
        """Where a person opens the run (a URL for a server, else the store URI and run id)."""

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log numeric metrics on a run."""

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags on a run."""

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder as an artifact."""

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run as FINISHED or FAILED."""


def result_metrics(result: MethodResult) -> dict[str, float]:
    """Flatten a result's measurements (value and interval ends) into MLflow metric names."""
    flat: dict[str, float] = {"time_s": result.time_s}
    for name, m in result.metrics.items():
        flat[name] = m.value
        if m.interval:
            flat[f"{name}.ci_low"], flat[f"{name}.ci_high"] = m.interval.low, m.interval.high
    return {k: float(v) for k, v in flat.items() if math.isfinite(v)}


def explanation_metrics(sets: Sequence[ExplanationSet]) -> dict[str, float]:
    """Per goal and attribution method: faithfulness (the deletion gain over random order with its
    interval, AOPC, insertion AUC, beats random 1/0) and the sanity check's rank correlation."""
    flat: dict[str, float] = {}
    for es in sets:
        goal = f"explain.{es.goal_id}"
        flat |= {f"{goal}.samples": len(es.samples), f"{goal}.time_s": es.time_s}
        for f in es.faithfulness:
            key = f"{goal}.{f.method}"
            flat |= {
                f"{key}.deletion_gain_low": f.gain_interval.low,
                f"{key}.deletion_gain_high": f.gain_interval.high,
                f"{key}.deletion_aopc": f.deletion_aopc,
                f"{key}.deletion_aopc_random": f.deletion_aopc_random,
                f"{key}.insertion_auc": f.insertion_auc,
                f"{key}.insertion_auc_random": f.insertion_auc_random,
                f"{key}.beats_random": float(f.beats_random),
            }
        flat |= {f"{goal}.{c.method}.sanity_rank_correlation": c.rank_correlation for c in es.sanity}
    return {k: float(v) for k, v in flat.items() if math.isfinite(v)}


def _clean_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)[:250]


class MlflowTracker:
    """Tracker on an MLflow tracking URI, through ``MlflowClient`` (thread-safe, no global run)."""

    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.artifact_root = artifact_root
        self._experiment_id: str | None = None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def start(self, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        self._experiment_id = self._experiment(experiment)
        run = self.client.create_run(self._experiment_id, run_name=run_name, tags=tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_clean_key(k), str(v)[:MAX_PARAM]) for k, v in params.items() if v is not None]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_test(
        self,
        parent_id: str,
        result: MethodResult,
        params: dict[str, Any],
        artifacts: Sequence[Artifact] = (),
    ) -> str:
        assert self._experiment_id is not None, "start() first"
        tags = {
            "mlflow.parentRunId": parent_id,
            "nnassay.goal_id": result.goal_id,
            "nnassay.method": result.method,
            "nnassay.family": result.family.value,
            "nnassay.status": result.status.value,
            "nnassay.provider": result.provider,
        }
        run = self.client.create_run(self._experiment_id, run_name=result.test_id, tags=tags)
        run_id = run.info.run_id
        self._log_params(run_id, {**params, "seed": result.seed})
        self.log_metrics(run_id, result_metrics(result))
        for path, folder in artifacts:
            if path.exists():
                self.log_artifact(run_id, path, folder)
        self.finish(run_id, "FINISHED" if result.status.value != "error" else "FAILED")
        return run_id

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetRef], model: ModelRef | None) -> str | None:
        from mlflow.entities import LoggedModelInput

        model_id = self._model_id(model) if model else None
        self.client.log_inputs(
            run_id,
            datasets=[_dataset_input(d) for d in datasets],
            models=[LoggedModelInput(model_id)] if model_id else None,
        )
        return model_id

    def _model_id(self, model: ModelRef) -> str:
        """The logged model of a registry version (MLflow 3), else an external logged model that
        references the ONNX file by URI and digest (reused across assessments of the same file)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

        assert self._experiment_id is not None, "start() first"
        if model.registry and model.registry.get("model_id"):
            return model.registry["model_id"]
        tags = {"nnassay.model_sha256": model.sha256, "nnassay.model_uri": model.uri}
        found = self.client.search_logged_models(
            [self._experiment_id],
            filter_string=f"tags.`nnassay.model_sha256` = '{model.sha256}'",
            max_results=50,
        )
        for logged in found:
            if logged.tags.get("nnassay.model_uri") == model.uri:
                return str(logged.model_id)
        created = self.client.create_logged_model(
            self._experiment_id,
            name=model.name,
            tags={**tags, MLFLOW_MODEL_IS_EXTERNAL: "true"},
            model_type="onnx",
        )
        self.client.finalize_logged_model(created.model_id, LoggedModelStatus.READY)
        return str(created.model_id)

    def log_table(self, run_id: str, columns: dict[str, list[Any]], artifact_file: str) -> None:
        self.client.log_table(run_id, data=columns, artifact_file=artifact_file)

    def run_link(self, run_id: str) -> str:
        experiment = self._experiment_id or self.client.get_run(run_id).info.experiment_id
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
        return f"run {run_id} in {self.uri} (mlflow ui --backend-store-uri {self.uri})"

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_clean_key(k), float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[start : start + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(_clean_key(k), str(v)[:MAX_TAG]) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


@dataclass
class InMemoryTracker:
    """A tracker that keeps runs in memory, for tests and dry runs."""

    uri: str = "memory://"
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _new(self, **fields: Any) -> str:
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {
            "metrics": {},
            "tags": {},
            "params": {},
            "artifacts": [],
            "status": "RUNNING",
            **fields,
        }
        return run_id

    def start(self, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        run_id = self._new(experiment=experiment, name=run_name, parent=None)
        self.runs[run_id]["tags"].update(tags)
        self.runs[run_id]["params"].update({k: v for k, v in params.items() if v is not None})
        return run_id

    def log_test(
        self,
        parent_id: str,
        result: MethodResult,
        params: dict[str, Any],
        artifacts: Sequence[Artifact] = (),
    ) -> str:
        run_id = self._new(name=result.test_id, parent=parent_id)
        self.runs[run_id]["params"].update({k: v for k, v in params.items() if v is not None})
        self.log_metrics(run_id, result_metrics(result))
        for path, folder in artifacts:
            self.log_artifact(run_id, path, folder)
        self.finish(run_id)
        return run_id

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetRef], model: ModelRef | None) -> str | None:
        self.runs[run_id]["inputs"] = [(d.context, d.name, d.sha256) for d in datasets]
        self.runs[run_id]["model"] = model.uri if model else None
        return model.uri if model else None

    def log_table(self, run_id: str, columns: dict[str, list[Any]], artifact_file: str) -> None:
        self.runs[run_id].setdefault("tables", {})[artifact_file] = columns

    def run_link(self, run_id: str) -> str:
        return f"{self.uri}{run_id}"

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.runs[run_id]["metrics"].update(metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.runs[run_id]["tags"].update(tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():  # as MLflow's log_artifacts: the folder's files under artifact_path
            files = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file())
            self.runs[run_id]["artifacts"] += [str(Path(artifact_path or "") / f) for f in files]
            return
        self.runs[run_id]["artifacts"].append(str(Path(artifact_path or "") / path.name))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.runs[run_id]["status"] = status


def _dataset_input(ref: DatasetRef) -> Any:
    """An MLflow dataset input: name, the file's digest, its path as source, and the context tag
    (from the arrays when they were readable: schema and profile; else metadata only)."""
    from mlflow.data import sources
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    # created at import by MLflow (one class per artifact store): invisible to type checkers
    local_source = sources.LocalArtifactDatasetSource  # type: ignore[attr-defined]
    source = local_source(str(ref.path.resolve()))
    digest = ref.sha256[:DIGEST_CHARS]
    if ref.x is not None:
        targets = {"targets": ref.y} if ref.y is not None else {}
        dataset: Any = from_numpy(ref.x, source=source, name=ref.name, digest=digest, **targets)
    else:
        dataset = MetaDataset(source, name=ref.name, digest=digest)  # type: ignore[abstract]  # MLflow's own class
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, ref.context), InputTag("nnassay.sha256", ref.sha256)]
    return DatasetInput(dataset._to_mlflow_entity(), tags=tags)
