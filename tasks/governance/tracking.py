"""Tracking: one MLflow parent run per assessment and a nested run per test.

``Tracker`` is the protocol the flow uses; ``MlflowTracker`` talks to any MLflow tracking URI
(the embedded SQLite default or a real server); ``InMemoryTracker`` keeps everything in memory.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nnassay.schemas.results import MethodResult

MAX_PARAM = 500  # MLflow rejects longer parameter values


class Tracker(Protocol):
    """What the flow needs from an experiment tracker."""

    uri: str

    def start(self, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        """Open the parent run; return its id."""

    def log_test(self, parent_id: str, result: MethodResult, params: dict[str, Any]) -> str:
        """Log one test as a nested run; return its id."""

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

        items = [Param(_clean_key(k), str(v)[:MAX_PARAM]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_test(self, parent_id: str, result: MethodResult, params: dict[str, Any]) -> str:
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
        self.finish(run_id, "FINISHED" if result.status.value != "error" else "FAILED")
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_clean_key(k), float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[start : start + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(_clean_key(k), str(v)[:5000]) for k, v in tags.items()])

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
        self.runs[run_id]["params"].update(params)
        return run_id

    def log_test(self, parent_id: str, result: MethodResult, params: dict[str, Any]) -> str:
        run_id = self._new(name=result.test_id, parent=parent_id)
        self.runs[run_id]["params"].update(params)
        self.log_metrics(run_id, result_metrics(result))
        self.finish(run_id)
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.runs[run_id]["metrics"].update(metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.runs[run_id]["tags"].update(tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.runs[run_id]["artifacts"].append(str(Path(artifact_path or "") / path.name))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.runs[run_id]["status"] = status
