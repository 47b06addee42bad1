"""MLflow records as its users expect: data sets and the model as run inputs, MLflow's system tags and
note, each test's artifacts on its nested run, a per-goal table, no "None" params; registry models
saved by ``mlflow.onnx.log_model`` with external data; and one project store shared by default runs
(history without flags). Local SQLite stores; the MLflow server case is in test_prefect_records.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import goal

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _shift(tmp_path: Path, data: Path) -> Path:
    arrays = np.load(data)
    x = np.clip(arrays["x"] + np.random.default_rng(0).normal(0, 0.05, arrays["x"].shape), 0, 1)
    path = tmp_path / "shift.npz"
    np.savez(path, x=x.astype(np.float32), y=arrays["y"])
    return path


def test_parent_run_has_inputs_model_system_tags_note_and_table(
    tmp_path: Path, image_case: Any, spec_writer: Any, prefect_harness: None
) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest
    from nnassay.tasks.io.files import sha256_file

    shift = _shift(tmp_path, image_case.data)
    spec = spec_writer(
        image_case,
        [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
            goal("SHIFT", {"kind": "domain_shift", "path": str(shift)}, "accuracy", ">=", 0.5),
        ],
    )
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    request = AssessRequest(
        spec_path=spec, output=out, mlflow_tracking_uri=uri, prefer_cuda=False, command="nnassay assess x"
    )
    bundle = assess_runner(None)(request)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(bundle.provenance.mlflow_run_id)

    # data sets: name, digest (the file's sha256 prefix), source path, context
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {Path(image_case.data).stem, "shift"}
    test_input = inputs[Path(image_case.data).stem]
    assert test_input.dataset.digest == bundle.plan.data_sha256[:16]
    assert str(Path(image_case.data).resolve()) in test_input.dataset.source
    assert json.loads(test_input.dataset.profile)  # read from the arrays: shape and size
    contexts = {
        d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for d in inputs.values()
    }
    assert contexts == {Path(image_case.data).stem: "test", "shift": "domain_shift"}
    assert inputs["shift"].dataset.digest == sha256_file(shift)[:16]

    # the model: an external logged model with the ONNX digest, linked as the run's input
    (model_input,) = run.inputs.model_inputs
    model = client.get_logged_model(model_input.model_id)
    assert model.tags["nnassay.model_sha256"] == bundle.plan.model_sha256
    assert model.tags["nnassay.model_uri"] == Path(image_case.model).resolve().as_uri()
    assert run.data.tags["nnassay.model_id"] == model.model_id

    # MLflow's system tags and the note (the run description) from summary.md
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"] == "nnassay assess x"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.note.content"] == (out / "summary.md").read_text()[:8000]
    assert all(v != "None" for v in run.data.params.values())

    # the per-goal table, and each test's files on its nested run (none left on the parent)
    parent_files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "goals.json" in parent_files and not {"results", "tests"} & parent_files
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "goals.json", str(tmp_path))).read_text()
    )
    assert [row[0] for row in table["data"]] == ["CLEAN", "SHIFT"] and "verdict" in table["columns"]
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    for child in children:
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert f"{child.info.run_name.replace('/', '__')}.json" in names, names

    # a second assessment of the same model reuses its logged model
    again = assess_runner(None)(request.model_copy(update={"output": tmp_path / "run2"}))
    second = client.get_run(again.provenance.mlflow_run_id)
    assert second.inputs.model_inputs[0].model_id == model.model_id


def _register_with_external_data(model: Path, uri: str, name: str) -> None:
    import mlflow
    import mlflow.onnx
    import onnx

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run():
        mlflow.onnx.log_model(onnx.load(str(model)), name="model", registered_model_name=name)  # defaults


def test_registry_model_saved_with_external_data_is_assessed(
    tmp_path: Path, image_case: Any, spec_writer: Any, prefect_harness: None
) -> None:
    """`mlflow.onnx.log_model` with its defaults keeps every tensor above 1 KiB in an external-data
    file: the whole version folder is downloaded, only ONNX is loaded, the run folder keeps both."""
    from mlflow.tracking import MlflowClient

    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest
    from nnassay.tasks.io.registry_models import download_onnx, model_files

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    _register_with_external_data(image_case.model, uri, "tiny-external")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("tiny-external", "1")
    local = download_onnx("models:/tiny-external/1", uri)
    files = model_files(local)
    assert len(files) == 2 and files[1].stat().st_size >= 36 * 16 * 4  # the weights are outside model.onnx

    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    out = tmp_path / "run"
    request = AssessRequest(
        spec_path=spec,
        output=out,
        mlflow_tracking_uri=uri,
        prefer_cuda=False,
        model_uri="models:/tiny-external/1",
    )
    bundle = assess_runner(None)(request)
    assert bundle.overall.value == "pass"
    assert bundle.provenance.model_registry_uri == "models:/tiny-external/1"
    copied = {a.path for a in bundle.manifest if a.role == "model" and a.path.startswith("model/")}
    assert copied == {f"model/{f.name}" for f in files}
    run = client.get_run(bundle.provenance.mlflow_run_id)
    logged = version.source.removeprefix("models:/")  # MLflow 3: the version's logged model
    assert [m.model_id for m in run.inputs.model_inputs] == [logged] and logged.startswith("m-")
    tags = client.get_model_version("tiny-external", "1").tags
    assert tags["nnassay.verdict"] == "pass" and tags["nnassay.mlflow_run_id"] == run.info.run_id


def test_default_runs_of_a_spec_share_one_store_and_chain(
    tmp_path: Path, image_case: Any, spec_writer: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two default runs (no URI anywhere) under runs/: runs/mlflow.db links the second to the first."""
    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest, Settings
    from nnassay.tasks.io.files import sha256_file

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NNASSAY_MLFLOW_TRACKING_URI", raising=False)
    assert Settings().mlflow_tracking_uri is None
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    runs = tmp_path / "runs"
    first = assess_runner(None)(AssessRequest(spec_path=spec, output=runs / "a", prefer_cuda=False))
    second = assess_runner(None)(AssessRequest(spec_path=spec, output=runs / "b", prefer_cuda=False))
    store = f"sqlite:///{(runs / 'mlflow.db').resolve()}"
    assert first.provenance.mlflow_tracking_uri == second.provenance.mlflow_tracking_uri == store
    assert second.previous_evidence_sha256 == sha256_file(runs / "a" / "evidence.json")
    assert (runs / "mlartifacts").is_dir() and not (runs / "a" / "mlflow.db").exists()


def test_project_store_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnassay.schemas.settings import AssessRequest, project_store

    monkeypatch.chdir(tmp_path)
    assert project_store(Path("runs/a")) == tmp_path / "runs" / "mlflow.db"
    assert project_store(Path("out")) == tmp_path / "mlflow.db"
    assert project_store(Path(".")) == tmp_path / "mlflow.db"  # never above the working folder
    assert project_store(Path("/")) == Path("/mlflow.db")
    explicit = AssessRequest(spec_path=Path("s.yaml"), output=Path("runs/a"), mlflow_tracking_uri="http://x")
    assert explicit.tracking_uri() == "http://x"  # --mlflow-uri and $MLFLOW_TRACKING_URI win


def test_none_params_are_omitted(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.tasks.governance.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, artifact_root=tmp_path / "mlartifacts")
    run_id = tracker.start("nnassay/x", "x-1", {}, {"kept": 1, "dropped": None})
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.params == {"kept": "1"}
