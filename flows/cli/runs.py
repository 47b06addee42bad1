"""Where the CLI tells the user to look: the flow run in the Prefect UI when a Prefect server is used.

The embedded (temporary) server goes away with the command, so no URL is shown for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nnassay.schemas.evidence import EvidenceBundle


def flow_run_url(flow_run_id: str | None) -> str | None:
    """The Prefect UI page of a flow run (from PREFECT_UI_URL, else derived from PREFECT_API_URL);
    None without a configured server (the embedded one is gone after the run)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not flow_run_id or not PREFECT_API_URL.value():
        return None
    ui = PREFECT_UI_URL.value() or str(PREFECT_API_URL.value()).rstrip("/").removesuffix("/api")
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}"


def flow_run_line(bundle: EvidenceBundle) -> str | None:
    """The summary line naming the flow run's page, e.g. 'prefect:  http://127.0.0.1:4200/runs/...'."""
    url = flow_run_url(bundle.provenance.prefect_flow_run_id)
    return f"prefect:  {url}" if url else None


def echo_flow_run(bundle: EvidenceBundle) -> None:
    """Print the flow run's page when a Prefect server is used (one line; nothing otherwise)."""
    import typer

    line = flow_run_line(bundle)
    if line:
        typer.echo(line)
