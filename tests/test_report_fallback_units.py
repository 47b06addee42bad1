"""The dossier says when a test was planned as a fallback (which method, instead of which, why), and on
tabular data in which units eps is, with each feature's scale and bounds as the test recorded them."""

from __future__ import annotations

import io
import re
from html import unescape
from pathlib import Path

import pytest
from pypdf import PdfReader

from nnassay.reports.plan_notes import fallback_line, units_view
from nnassay.reports.render import render_html, render_pdf
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.goals import Layout

GOLDEN = Path(__file__).parent / "golden" / "digits_evidence.json"
REASON = "the torch executor lacks HardSwish <img src=x onerror=alert(1)>"


def _bundle() -> EvidenceBundle:
    return EvidenceBundle.model_validate_json(GOLDEN.read_text())


def _with_fallback(ev: EvidenceBundle) -> EvidenceBundle:
    """G6 planned as a Square attack because PGD could not run (the test id keeps the method asked
    for, as in the golden run; only the plan fields matter here)."""
    tests = [
        t.model_copy(
            update={
                "method": "empirical.square_linf",
                "fallback_from": "empirical.pgd_linf",
                "fallback_reason": REASON,
            }
        )
        if t.goal_id == "G6"
        else t
        for t in ev.plan.tests
    ]
    return ev.model_copy(update={"plan": ev.plan.model_copy(update={"tests": tests})})


def _tabular(ev: EvidenceBundle, details: dict[str, object] | None) -> EvidenceBundle:
    """The bundle as if its model took feature vectors; G6's attack records ``details`` on top."""
    spec = ev.spec.model_copy(update={"model": ev.spec.model.model_copy(update={"layout": Layout.FLAT})})
    results = [
        r.model_copy(update={"details": {**r.details, **details}}) if details and r.goal_id == "G6" else r
        for r in ev.results
    ]
    return ev.model_copy(update={"spec": spec, "results": results})


BOX = {
    "eps": 0.5,
    "norm": "linf",
    "eps_units": "units of each feature's scale",
    "feature_scale": [0.001, 3000.0, 1.5],
    "feature_bounds": [[0.0, 0.01], [0.0, 25000.0], [0.0, 10.0]],
    "fixed_features": [2],
    "integer_features": [1],
}


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_a_fallback_is_stated_in_the_plan_and_beside_the_result() -> None:
    html = render_html(_with_fallback(_bundle()))
    line = (
        "Planned as empirical.square_linf instead of empirical.pgd_linf because the torch executor "
        "lacks HardSwish &lt;img src=x onerror=alert(1)&gt;"
    )
    assert html.count(line) == 2  # the plan row and the test's result
    assert "<img src=x" not in html
    plan = html[html.index('id="plan"') : html.index('id="results"')]
    assert line in plan
    results = html[html.index("<h4>G6/empirical.pgd_linf") : html.index("<h4>G7/")]
    assert line in results
    assert "Planned as" not in render_html(_bundle())


def test_fallback_line_without_a_reason_says_so() -> None:
    test = _bundle().plan.tests[0].model_copy(update={"fallback_from": "empirical.pgd_linf"})
    assert fallback_line(test).endswith("because no reason was recorded")
    assert fallback_line(_bundle().plan.tests[0]) == ""


def test_tabular_eps_units_with_the_recorded_scales() -> None:
    html = render_html(_tabular(_bundle(), BOX))
    g6 = _text(html[html.index("<h4>G6/empirical.pgd_linf") : html.index("<h4>G7/")])
    assert "eps 0.5 is in units of each feature's scale: the box x +- eps x scale of each feature" in g6
    assert "feature scale min max constraint" in g6
    assert "0 0.001 0 0.01" in g6 and "1 3000 0 2.5e+04 integer" in g6 and "2 1.5 0 10 fixed" in g6
    proof = _text(render_html(_tabular(_bundle(), {**BOX, "box_relaxation": "integer features relaxed"})))
    assert "For the proof: integer features relaxed." in proof


def test_recorded_feature_names_are_shown_and_long_lists_cut() -> None:
    many = {**BOX, "feature_scale": [1.0] * 30, "feature_bounds": [[0.0, 1.0]] * 30}
    names = {"feature_names": [f"f<{i}>" for i in range(30)]}
    ev = _tabular(_bundle(), {**many, **names})
    g6 = next(r for r in ev.results if r.goal_id == "G6")
    test = next(t for t in ev.plan.tests if t.goal_id == "G6")
    view = units_view(g6, test, True)
    assert view is not None and view.total == 30 and len(view.rows) == 25
    assert view.rows[3][0] == "f<3> (3)"
    html = render_html(ev)
    assert "f&lt;3&gt; (3)" in html and "First 25 of 30 features shown" in html


def test_without_recorded_scales_the_declared_unit_is_stated() -> None:
    html = _text(render_html(_tabular(_bundle(), None)))
    statement = "On tabular data eps is declared in units of each feature's scale"
    assert html.count(statement) == 3  # G5 (formal), G6 (attack), G10 (smoothing): eps threats
    assert "this test did not record the per-feature scales it used" in html
    assert statement not in _text(render_html(_bundle()))  # images: eps in data units, no note


def test_tabular_perturbation_scales_come_from_its_features() -> None:
    ev = _tabular(_bundle(), None)
    result = next(r for r in ev.results if r.goal_id == "G2")
    result = result.model_copy(
        update={
            "details": {
                "features": [
                    {"index": 0, "kind": "numeric", "range": [0.0, 1.0], "spread": 0.2, "immutable": False},
                    {
                        "index": 1,
                        "kind": "integer",
                        "range": [1.0, 9.0],
                        "spread": 2.0,
                        "immutable": True,
                        "name": "age",
                    },
                ]
            }
        }
    )
    test = next(t for t in ev.plan.tests if t.goal_id == "G2")
    view = units_view(result, test, True)
    assert view is not None
    assert view.rows == [["0", "0.2", "0", "1", ""], ["age (1)", "2", "1", "9", "immutable"]]
    assert units_view(result, test, False) is None


def test_eps_comes_from_the_plan_when_the_details_lack_it() -> None:
    ev = _tabular(_bundle(), None)
    result = next(r for r in ev.results if r.goal_id == "G6")
    test = next(t for t in ev.plan.tests if t.goal_id == "G6")
    no_eps = {k: v for k, v in BOX.items() if k != "eps"}
    result = result.model_copy(update={"details": {**no_eps, "feature_noise": "uniform in the box"}})
    planned = test.model_copy(update={"params": {**test.params, "eps": 0.05}})
    view = units_view(result, planned, True)
    assert view is not None and "not recorded" not in view.note
    assert view.note.startswith("eps 0.05 is in units of each feature's scale")
    assert "Noise: uniform in the box." in view.note
    bare = test.model_copy(update={"params": {k: v for k, v in test.params.items() if k != "eps"}})
    threat_eps = getattr(bare.threat, "eps", None)
    view = units_view(result, bare, True)
    assert view is not None and "not recorded" not in view.note
    assert view.note.startswith(f"eps {threat_eps:.4g} is in" if threat_eps else "eps is in units")


@pytest.mark.slow
def test_the_pdf_shows_the_fallback_and_the_units() -> None:
    html = render_html(_tabular(_with_fallback(_bundle()), BOX))
    reader = PdfReader(io.BytesIO(render_pdf(html)[0]))
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))
    assert "Planned as empirical.square_linf instead of empirical.pgd_linf because" in text
    assert "eps 0.5 is in units of each feature's scale" in text


def test_the_plan_states_the_explanation_estimate_or_that_it_is_off() -> None:
    ev = _bundle()
    assert "Explanations of failures" not in render_html(ev)  # planned before explanations existed
    planned = ev.model_copy(update={"plan": ev.plan.model_copy(update={"explain_estimate_s": 42.4})})
    plan = _text(render_html(planned))
    assert "up to 8 failed samples of each failed or inconclusive goal" in plan
    assert "estimated at most 42 s" in plan
    off = ev.spec.model_copy(update={"explain": ev.spec.explain.model_copy(update={"enabled": False})})
    assert "Explanations of failures: off" in render_html(ev.model_copy(update={"spec": off}))
