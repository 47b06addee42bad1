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
        description="MLflow tracking URI; default: a SQLite store in the output folder.",
    )
    output: Path = Field(default=Path("runs"), description="Default output folder of assessments.")
    prefer_cuda: bool = Field(default=True, description="Use CUDA when ONNX Runtime can really use it.")
    dask_address: str | None = Field(
        default=None, description="Address of a Dask scheduler to run tests on (prefect-dask)."
    )
    max_workers: int = Field(default=2, ge=1, description="Threads of the local task runner.")
    track: bool = Field(default=True, description="Log the assessment to MLflow.")


class AssessRequest(BaseModel):
    """One request to run an assessment: which spec, where records go, how to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_path: Path = Field(description="The assessment spec file (YAML or JSON).")
    output: Path = Field(description="Run folder: evidence.json, dossier.pdf, plan.json, artifacts.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; None: sqlite store in the run folder."
    )
    track: bool = Field(default=True, description="Log to MLflow.")
    prefer_cuda: bool = Field(default=True, description="Use CUDA when it really works.")
    command: str = Field(default="", description="The command line, for provenance.")

    def tracking_uri(self) -> str:
        """The MLflow URI to use."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.output / 'mlflow.db').resolve()}"
