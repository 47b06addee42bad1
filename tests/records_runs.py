"""Two real assessments through the CLI, made once per test session and shared by the record tests.

Run A: signed, with --junit-xml. Run B: the same spec with the model taken from the MLflow registry
(--model-uri), so it links to A in the hash chain. Tests copy the folders before tampering.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from conftest import TinyCase, goal, write_spec

HOSTILE = (
    'Accuracy holds <img src="file:///etc/passwd"> <img src="http://example.com/x.png">'
    " <script>alert(1)</script> & more"
)


@dataclass(frozen=True)
class Runs:
    """Where the shared assessments live."""

    root: Path
    a: Path
    b: Path
    uri: str
    key: Path
    junit: Path
    outputs: tuple[str, str]
    exit_codes: tuple[int, int]


def register_model(
    uri: str, model: Path, root: Path, name: str = "tiny-model", extra: dict[str, bytes] | None = None
) -> str:
    """``model`` as version 1 of the registry model ``name`` at ``uri`` (an ONNX file, and ``extra``
    files, in a run's artifacts under ``model/``); returns its models:/ URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment(f"{name}-source", artifact_location=(root / "registry").as_uri())
    run = client.create_run(exp)
    folder = root / f"to-register-{name}"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(model.read_bytes())
    for file, payload in (extra or {}).items():
        (folder / file).write_bytes(payload)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return f"models:/{name}/1"


@functools.cache
def assessed(case: TinyCase) -> Runs:
    """Run A and B (once per session) inside a Prefect test harness."""
    from prefect.testing.utilities import prefect_test_harness

    from nnassay.flows.cli.app import app
    from nnassay.tasks.governance.integrity import generate_key

    root = Path(tempfile.mkdtemp(prefix="nnassay-records-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    key, _ = generate_key(root / "keys" / "sign.pem")
    goals = [
        goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5, statement=HOSTILE),
        goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.05}, "label_flip_rate", "<=", 0.0001),
    ]
    spec = write_spec(
        root / "spec", case, goals, roles={"assessor": "A. Assessor", "approver": "B. Approver"}
    )
    runner, outputs, codes = CliRunner(), [], []
    with prefect_test_harness(server_startup_timeout=120):
        model_uri = register_model(
            uri,
            case.model,
            root,
            extra={"not-loaded.pkl": b"\x80\x04K\x01."},  # never to be loaded
        )
        for name, extra in (
            ("a", ["--junit-xml", str(root / "a.junit.xml")]),
            ("b", ["--model-uri", model_uri]),
        ):
            result = runner.invoke(
                app,
                [
                    "assess",
                    str(spec),
                    "--output",
                    str(root / "hist" / name),
                    "--mlflow-uri",
                    uri,
                    "--sign-key",
                    str(key),
                    "--cpu",
                    *extra,
                ],
            )
            outputs.append(result.output)
            codes.append(result.exit_code)
    return Runs(
        root,
        root / "hist" / "a",
        root / "hist" / "b",
        uri,
        key,
        root / "a.junit.xml",
        (outputs[0], outputs[1]),
        (codes[0], codes[1]),
    )
