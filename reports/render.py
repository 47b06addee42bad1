"""Render the dossier from an evidence bundle alone: HTML via Jinja, PDF via WeasyPrint.

Templates only display: rounding, sorting and wording happen here, in ``ReportView``. The PDF
renderer may load only the project's own assets (templates folder) and inline data URIs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports.charts import chart_svg, group_series
from schemas.common import ClaimKind, Measurement
from schemas.evidence import EvidenceBundle
from schemas.results import MethodResult
from tasks.files import sha256_bytes, write_atomic

TEMPLATES = Path(__file__).resolve().parent / "templates"
CLAIM_WORDING = {
    ClaimKind.ESTIMATE: "estimate",
    ClaimKind.BOUND: "measured rate with a confidence interval",
    ClaimKind.CERTIFICATE: "probabilistic certificate",
    ClaimKind.PROOF: "formal proof (sound verifier)",
    ClaimKind.OBSERVATION: "observed on the test data",
}


def fmt_measure(m: Measurement | None) -> str:
    """'0.9778 [0.9616, 0.9885] (95%)' or the value alone."""
    if m is None:
        return "not measured"
    text = f"{m.value:.4g}"
    if m.interval:
        i = m.interval
        text += f" [{i.low:.4g}, {i.high:.4g}] ({i.confidence:.0%} {i.method})"
    return text


def fmt_threat(threat: Any) -> str:
    """'gaussian_noise: sigma=0.2' from a threat model."""
    fields = threat.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
    return threat.kind + (": " + ", ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")


@dataclass
class ResultView:
    """One test's display data."""

    result: MethodResult
    metrics: list[tuple[str, str, str, str]]  # name, value, claim, meaning
    charts: list[str]
    pictures: list[tuple[str, str]]  # data URI, caption
    params: dict[str, Any]


@dataclass
class ReportView:
    """Everything the template shows, pre-formatted."""

    ev: EvidenceBundle
    results: list[ResultView] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.ev.spec.title

    def goal(self, goal_id: str) -> Any:
        return next(g for g in self.ev.spec.goals if g.id == goal_id)


def build_view(ev: EvidenceBundle, run_dir: Path | None) -> ReportView:
    """Pre-format the bundle; pictures are read from the run folder and checked against digests."""
    view = ReportView(ev=ev)
    plan_params = {t.test_id: t.params for t in ev.plan.tests}
    for result in ev.results:
        metrics = [(name, fmt_measure(m), CLAIM_WORDING[m.claim], m.description)
                   for name, m in sorted(result.metrics.items())]  # fmt: skip
        charts = [chart_svg(group, f"{result.test_id}") for group in group_series(result.series)
                  if group[0].kind != "heatmap"]  # fmt: skip
        pictures = _pictures(result, run_dir)
        view.results.append(ResultView(result, metrics, charts, pictures, plan_params.get(result.test_id, {})))
    return view


def _pictures(result: MethodResult, run_dir: Path | None) -> list[tuple[str, str]]:
    found = []
    for artifact in result.artifacts:
        if artifact.media_type != "image/png" or run_dir is None:
            continue
        path = (run_dir / artifact.path).resolve()
        if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
            continue
        payload = path.read_bytes()
        if sha256_bytes(payload) != artifact.sha256:
            found.append(("", f"{artifact.caption} (NOT SHOWN: file changed since the assessment)"))
            continue
        found.append(("data:image/png;base64," + base64.b64encode(payload).decode(), artifact.caption))
    return found


def environment() -> Environment:
    """Jinja environment: autoescaped, strict about undefined names, project templates only."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters["measure"] = fmt_measure
    env.filters["threat"] = fmt_threat
    return env


def render_html(ev: EvidenceBundle, run_dir: Path | None = None) -> str:
    """The dossier as one self-contained HTML document."""
    view = build_view(ev, run_dir)
    css = (TEMPLATES / "report.css").read_text()
    return environment().get_template("report.html.j2").render(v=view, ev=ev, css=css)


def _fetcher_class() -> type:
    from weasyprint.urls import URLFetcher

    class AssetFetcher(URLFetcher):
        """Fetch only data URIs and files inside the templates folder; refuse everything else."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.refused: list[str] = []

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url.startswith("data:") or _inside_templates(url):
                return super().fetch(url, headers)
            self.refused.append(url)
            raise ValueError(f"nnassay reports load only their own assets, refused {url[:200]}")

    return AssetFetcher


def _inside_templates(url: str) -> bool:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme != "file":
        return False
    return Path(unquote(parsed.path)).resolve().is_relative_to(TEMPLATES)


def write_pdf(html: str, path: Path, *, attachments: list[Path] | None = None,
              pdf_variant: str | None = None) -> tuple[Path, list[str]]:  # fmt: skip
    """Render HTML to a PDF atomically; return the path and the URLs the fetcher refused."""
    import logging

    from weasyprint import HTML, Attachment

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    fetcher = _fetcher_class()()
    document = HTML(string=html, base_url=TEMPLATES.as_uri() + "/", url_fetcher=fetcher)
    extra = [Attachment(filename=str(p), url_fetcher=fetcher) for p in attachments or []]
    options: dict[str, Any] = {"attachments": extra} if extra else {}
    if pdf_variant:
        options["pdf_variant"] = pdf_variant
    payload = document.write_pdf(**options)
    write_atomic(path, payload)
    return path, list(fetcher.refused)
