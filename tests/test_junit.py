"""JUnit XML: one test case per goal, structurally valid against the JUnit schema (no network)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from records_runs import Runs, assessed

from nnassay.reports.junit import junit_xml
from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import EvidenceBundle

# The common JUnit schema (Jenkins junit-10.xsd / Ant), reduced to the structure we emit.
SCHEMA: dict[str, tuple[set[str], set[str], set[str]]] = {  # element: (required, optional attrs, children)
    "testsuites": (
        set(),
        {"name", "tests", "failures", "errors", "skipped", "disabled", "time"},
        {"testsuite"},
    ),
    "testsuite": (
        {"name", "tests"},
        {"failures", "errors", "skipped", "disabled", "time", "timestamp", "hostname", "id", "package"},
        {"properties", "testcase", "system-out", "system-err"},
    ),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, set(), set()),
    "testcase": (
        {"name"},
        {"classname", "time", "assertions", "status"},
        {"skipped", "error", "failure", "system-out", "system-err"},
    ),
    "failure": (set(), {"message", "type"}, set()),
    "error": (set(), {"message", "type"}, set()),
    "skipped": (set(), {"message"}, set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}
NUMERIC = {"tests", "failures", "errors", "skipped", "disabled", "time", "id"}


def validate(element: ET.Element) -> list[str]:
    """Problems of an element tree against SCHEMA (empty when valid)."""
    if element.tag not in SCHEMA:
        return [f"unknown element <{element.tag}>"]
    required, optional, children = SCHEMA[element.tag]
    problems = [f"<{element.tag}> lacks {a}" for a in required - set(element.attrib)]
    problems += [
        f"<{element.tag}> has unknown attribute {a}" for a in set(element.attrib) - required - optional
    ]
    for a in NUMERIC & set(element.attrib):
        try:
            float(element.attrib[a])
        except ValueError:
            problems.append(f"<{element.tag} {a}={element.attrib[a]!r}> is not a number")
    if (
        element.tag == "testcase"
        and len([c for c in element if c.tag in ("skipped", "error", "failure")]) > 1
    ):
        problems.append("<testcase> has more than one outcome")
    for child in element:
        if child.tag not in children:
            problems.append(f"<{child.tag}> not allowed in <{element.tag}>")
        problems += validate(child)
    return problems


@pytest.fixture(scope="module")
def runs(image_case) -> Runs:  # type: ignore[no-untyped-def]
    return assessed(image_case)


def test_cli_junit_has_one_valid_case_per_goal(runs: Runs) -> None:
    ev = EvidenceBundle.model_validate_json((runs.a / "evidence.json").read_text())
    root = ET.parse(runs.junit).getroot()
    assert validate(root) == []
    cases = root.findall("./testsuite/testcase")
    assert [c.attrib["name"].split(":")[0] for c in cases] == [v.goal_id for v in ev.verdicts]
    outcome = {c.attrib["name"].split(":")[0]: [e.tag for e in c if e.tag != "system-out"] for c in cases}
    for v in ev.verdicts:
        assert (
            outcome[v.goal_id]
            == {"pass": [], "fail": ["failure"], "inconclusive": ["error"]}[v.verdict.value]
        )
    assert root.find("testsuite").attrib["failures"] == str(
        sum(v.verdict == Verdict.FAIL for v in ev.verdicts)
    )


def test_inconclusive_goal_is_an_error_with_the_reason(runs: Runs) -> None:
    ev = EvidenceBundle.model_validate_json((runs.a / "evidence.json").read_text())
    undecided = ev.verdicts[0].model_copy(
        update={"verdict": Verdict.INCONCLUSIVE, "reason": "interval straddles"}
    )
    ev = ev.model_copy(update={"verdicts": [undecided, *ev.verdicts[1:]]})
    root = ET.fromstring(junit_xml(ev))
    assert validate(root) == []
    error = root.find("./testsuite/testcase/error")
    assert error is not None and error.attrib["type"] == "inconclusive"
    assert "interval straddles" in error.attrib["message"]
    assert root.attrib["errors"] == "1"


def test_validator_rejects_broken_documents() -> None:
    bad = ET.fromstring('<testsuites><testsuite tests="x"><testcase/><bogus/></testsuite></testsuites>')
    problems = validate(bad)
    assert any("lacks name" in p for p in problems) and any("bogus" in p for p in problems)
    assert any("not a number" in p for p in problems)
