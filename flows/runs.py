"""Prefect run records an operator reads in the UI: run logs, run names, tags and the final state.

- ``run_log`` sends nnassay's progress and verdicts to the flow run's logs in the Prefect API at INFO,
  whatever ``PREFECT_LOGGING_LEVEL`` hides on the console (the CLI keeps Prefect's console at WARNING);
  ``PREFECT_LOGGING_TO_API_ENABLED=false`` still switches it off.
- ``run_name`` names a flow run ``<spec id>-<UTC time>``; ``creation_tags`` and ``add_tags`` tag it
  ``spec:<id>``, ``model:<sha256 prefix>`` and ``verdict:<pass|fail|inconclusive>``.
- ``final_state`` ends a run Failed, naming the goals, when a goal failed or was inconclusive (as exit
  code 1 does); ``bundle_of`` gets the evidence back from the state either way.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import runtime
from prefect.logging.loggers import PrefectLogAdapter
from prefect.states import Failed, State

from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import EvidenceBundle

RUN_LOGGER = "nnassay.run"  # sent to the Prefect API only (the terminal has its own progress lines)


def _api_logger() -> logging.Logger:
    logger = logging.getLogger(RUN_LOGGER)
    if not logger.handlers:
        from prefect.logging.handlers import APILogHandler

        logger.addHandler(APILogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def run_log() -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose INFO records reach the current flow or task run's logs in the Prefect API
    (a plain 'nnassay' logger outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return logging.LoggerAdapter(logging.getLogger("nnassay"), {})
    extra: Any = getattr(get_run_logger(), "extra", {})
    return PrefectLogAdapter(_api_logger(), extra=dict(extra))


def spec_id_of(spec_path: Path) -> str:
    """The spec's id, read without validating the spec (its file stem when unreadable)."""
    from nnassay.tasks.io.spec_io import _read_mapping

    try:
        found = _read_mapping(Path(spec_path)).get("id")
    except Exception:  # noqa: BLE001 (the flow reports a bad spec itself)
        found = None
    return str(found) if isinstance(found, str) and found else Path(spec_path).stem


def _spec_path(parameters: dict[str, Any]) -> Path | None:
    request = parameters.get("request")
    raw = getattr(request, "spec_path", None) or (
        request.get("spec_path") if isinstance(request, dict) else None
    )
    return Path(raw) if raw else None


def run_name() -> str:
    """Flow run name: '<spec id>-<UTC time>' (Prefect calls it when the run starts)."""
    spec_path = _spec_path(dict(runtime.flow_run.parameters or {}))
    spec_id = spec_id_of(spec_path) if spec_path else "assessment"
    return f"{spec_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def creation_tags(spec_path: Path) -> tuple[str, ...]:
    """Tags known before the run is created (for ``prefect.tags``)."""
    return (f"spec:{spec_id_of(spec_path)}",)


def add_tags(*tags: str) -> None:
    """Add tags to the current flow run (read, union, update); a failure is logged, never raised."""
    from prefect.client.orchestration import get_client

    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run_id).tags
            client.update_flow_run(flow_run_id, tags=sorted({*current, *tags}))
    except Exception as exc:  # noqa: BLE001 (tags are a convenience; the records are elsewhere)
        run_log().warning("could not tag the flow run with %s: %s", tags, exc)


def not_passed(bundle: EvidenceBundle) -> str | None:
    """Why the assessment did not pass, naming the goals (None: every goal passed)."""
    groups = {
        kind: [v.goal_id for v in bundle.verdicts if v.verdict == kind]
        for kind in (Verdict.FAIL, Verdict.INCONCLUSIVE)
    }
    parts = [f"goal(s) {', '.join(ids)} {kind.value}" for kind, ids in groups.items() if ids]
    return f"{'; '.join(parts)} (spec {bundle.spec.id!r})" if parts else None


def final_state(bundle: EvidenceBundle, evidence_path: Path) -> EvidenceBundle | State[Any]:
    """The bundle when every goal passed; else a Failed state carrying it, naming the goals."""
    reason = not_passed(bundle)
    if reason is None:
        return bundle
    return Failed(message=f"{reason}; see {evidence_path}", data=bundle)


def bundle_of(state: State[Any]) -> EvidenceBundle:
    """The evidence of a finished assess flow run, Completed or Failed; its exception otherwise."""
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, EvidenceBundle):
        return outcome
    if isinstance(outcome, BaseException):
        raise outcome
    raise RuntimeError(f"the assessment flow run ended {state.type.value}: {state.message}")
