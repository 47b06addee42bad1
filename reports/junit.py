"""JUnit XML from an evidence bundle: one test case per goal, for CI systems.

A failed goal is a ``<failure>``. An inconclusive goal is an ``<error type="inconclusive">``, not a
``<skipped>``: the assessment exits 1 for it, and a CI gate must not read "could not decide" as
"nothing to check". Passed goals have no child element.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from nnassay.reports.view import fmt_criterion, fmt_measure
from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import EvidenceBundle


def junit_xml(ev: EvidenceBundle) -> str:
    """The JUnit XML document (testsuites > testsuite > testcase per goal)."""
    failures = sum(v.verdict == Verdict.FAIL for v in ev.verdicts)
    errors = sum(v.verdict == Verdict.INCONCLUSIVE for v in ev.verdicts)
    times = {g.id: sum(r.time_s for r in ev.results if r.goal_id == g.id) for g in ev.spec.goals}
    counts = {
        "tests": str(len(ev.verdicts)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": "0",
        "time": f"{sum(times.values()):.3f}",
    }
    root = ET.Element("testsuites", {"name": f"nnassay {ev.spec.id}", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": ev.spec.id,
            **counts,
            "id": "0",
            "hostname": ev.provenance.hostname,
            "timestamp": ev.provenance.started_at.replace(tzinfo=None).isoformat(timespec="seconds"),
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("assessment_id", ev.provenance.assessment_id),
        ("overall", ev.overall.value),
        ("model_sha256", ev.provenance.model_sha256),
        ("mlflow_run_id", ev.provenance.mlflow_run_id or ""),
    ):
        ET.SubElement(props, "property", {"name": f"nnassay.{name}", "value": value})
    goals = {g.id: g for g in ev.spec.goals}
    for v in ev.verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "name": f"{v.goal_id}: {goals[v.goal_id].statement}",
                "classname": f"nnassay.{ev.spec.id}",
                "time": f"{times[v.goal_id]:.3f}",
            },
        )
        text = f"{v.metric} = {fmt_measure(v.measured)}; required {fmt_criterion(v)}. {v.reason}"
        if v.verdict == Verdict.FAIL:
            ET.SubElement(case, "failure", {"message": text, "type": "fail"}).text = v.recommendation
        elif v.verdict == Verdict.INCONCLUSIVE:
            ET.SubElement(case, "error", {"message": text, "type": "inconclusive"}).text = v.recommendation
        ET.SubElement(case, "system-out").text = f"tests: {', '.join(v.tests)}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
