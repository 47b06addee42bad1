"""Runtime settings (infrastructure, not assessment content); the only module reading the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where records go and how work is run. Environment variables use the prefix NNASSAY_."""

    model_config = SettingsConfigDict(env_prefix="NNASSAY_", extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NNASSAY_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default: the project store <folder holding the run folders>/"
        "mlflow.db (see AssessRequest.tracking_uri).",
    )
    output: Path = Field(default=Path("runs"), description="Default output folder of assessments.")
    prefer_cuda: bool = Field(default=True, description="Use CUDA when ONNX Runtime can really use it.")
    dask_address: str | None = Field(
        default=None, description="Address of a Dask scheduler to run tests on (prefect-dask)."
    )
    max_workers: int = Field(default=2, ge=1, description="Threads of the local task runner.")
    ort_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime intra-op threads per process (0: its default, all cores); set 1 on"
        " Dask workers started with one thread each, so that workers do not compete for cores.",
    )
    shard_samples: int = Field(
        default=2048,
        ge=0,
        description="Tests of shardable methods on more samples than this run as shards of about this"
        " many samples (one task each, merged exactly); 0: never shard.",
    )
    track: bool = Field(default=True, description="Log the assessment to MLflow.")
    resume: bool = Field(
        default=True, description="Reuse test results persisted in the run folder by an earlier attempt."
    )
    prefect_startup_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds to wait for the embedded Prefect server of `nnassay assess` to answer"
        " (it boots while the inputs are checked; a busy 2-core machine can need a minute).",
    )


class AssessRequest(BaseModel):
    """One request to run an assessment: which spec, where records go, how to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_path: Path = Field(description="The assessment spec file (YAML or JSON).")
    output: Path = Field(description="Run folder: evidence.json, dossier.pdf, plan.json, artifacts.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; None: the project store, a SQLite file mlflow.db in the folder"
        " that holds the run folder (runs/a and runs/b share runs/mlflow.db, so history links them).",
    )
    track: bool = Field(default=True, description="Log to MLflow.")
    prefer_cuda: bool = Field(default=True, description="Use CUDA when it really works.")
    command: str = Field(default="", description="The command line, for provenance.")
    shard_samples: int = Field(
        default_factory=lambda: Settings().shard_samples,
        ge=0,
        description="Shard size in samples for shardable tests; 0: never shard (default: settings).",
    )
    resume: bool = Field(
        default_factory=lambda: Settings().resume,
        description="Reuse test results persisted in the run folder by an earlier (crashed) attempt"
        " with the same model, data, test, seed and code; False recomputes everything.",
    )
    compare_history: bool = Field(
        default=False,
        description="Compare every goal with the previous assessment of the same spec id (regression"
        " check, lifecycle metrics); needs tracking.",
    )
    sign_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs manifest.json and the evidence embedded in the"
        " dossier; its public key fingerprint goes into the evidence. None: the run is not signed.",
    )
    sign_cert: Path | None = Field(
        default=None,
        description="X.509 certificate (PEM, the signer's first, then its issuers) of ``sign_key`` for"
        " the dossier's PAdES signature; None: a self-signed certificate made from the key.",
    )
    model_uri: str | None = Field(
        default=None,
        description="MLflow registry model (models:/NAME/VERSION or models:/NAME@ALIAS) to assess instead"
        " of the spec's model.path; the registry is the tracking URI's.",
    )
    progress: bool = Field(
        default=False, description="Print each test's progress and outcome to standard error."
    )
    dask_address: str | None = Field(
        default=None, description="Run the tests on the Dask scheduler at this address; None: local threads."
    )
    junit_xml: Path | None = Field(
        default=None,
        description="Also write a JUnit XML report here: one test case per goal (fail: failure;"
        " inconclusive: error).",
    )

    def tracking_uri(self) -> str:
        """The MLflow URI to use: the requested one, else the project store (``project_store``)."""
        return self.mlflow_tracking_uri or f"sqlite:///{project_store(self.output)}"


def project_store(run_folder: Path) -> Path:
    """The default MLflow store of a run folder: mlflow.db in the folder that holds it, shared by every
    assessment written beside it (``runs/a``, ``runs/b`` -> ``runs/mlflow.db``); the run folder itself
    when it is the working directory or a filesystem root (never a folder above where one works)."""
    folder = run_folder.resolve()
    holder = folder.parent
    if folder == Path.cwd().resolve() or holder == folder:
        holder = folder
    return holder / "mlflow.db"


class LifecycleRequest(BaseModel):
    """One scheduled lifecycle assessment: which spec, where its runs go, which tracking store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_path: Path = Field(description="The assessment spec file (YAML or JSON).")
    output_root: Path = Field(
        default=Path("runs/lifecycle"),
        description="Each run writes to <output_root>/<UTC time of the scheduled run>.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI shared by all runs (history); None: $MLFLOW_TRACKING_URI,"
        " else a SQLite store <output_root>/mlflow.db.",
    )
    prefer_cuda: bool = Field(default=True, description="Use CUDA when it really works.")
    sign_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) every run signs its records with (read on the machine"
        " that runs the flow); None: unsigned runs.",
    )
    sign_cert: Path | None = Field(
        default=None,
        description="X.509 certificate (PEM) of ``sign_key`` for the dossier's PAdES signature; None:"
        " a self-signed certificate made from the key.",
    )
    model_uri: str | None = Field(
        default=None,
        description="MLflow registry model (models:/NAME/VERSION or models:/NAME@ALIAS) to assess instead"
        " of the spec's model.path; an alias follows the model the alias points to at each run.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Run the tests on the Dask scheduler at this address; None: $NNASSAY_DASK_ADDRESS,"
        " else local threads.",
    )

    def tracking_uri(self, settings: Settings) -> str:
        """The MLflow URI every run of this series uses."""
        return (
            self.mlflow_tracking_uri
            or settings.mlflow_tracking_uri
            or f"sqlite:///{(self.output_root / 'mlflow.db').resolve()}"
        )
