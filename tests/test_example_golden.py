"""The bundled example gives the metrics recorded before the house move (issue: no behaviour change).

`tests/golden/example_metrics.json` holds every test's status and metrics and every goal's verdict of
`nnassay assess examples/digits/assessment.yaml`, recorded on the code before the restructuring; a
change of layout, typing or orchestration must reproduce them. Counts and verdicts must match exactly;
real-valued metrics to 1e-9 relative (the recording machine reproduced them bit for bit).

One exception, stated rather than hidden: the formal test searches for counterexamples against a
wall-clock deadline per sample (`time_per_sample_s`), so on a loaded machine its falsifier can miss a
counterexample it finds on an idle one (falsified 0 of 20 instead of 1 was seen with eight other jobs
running). For such tests the status, the verdict and `verified_fraction` (the proof's claim) must match;
the falsified and unknown counts are not compared, nor the upper end of `verified_fraction`'s interval:
since undecided samples count either way (a proof goal fails only on counterexamples), that end is
set by the samples not refuted, so by the falsified count (0.9877 was recorded with 1 of 20 refuted
and 1 undecided, before that change; 0.9987 now).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "example_metrics.json"


DEADLINE_BOUND = {"formal.local_robustness"}  # counterexample searches against a wall-clock deadline


def _only(result: dict, metric: str) -> dict:
    """The status and one metric, its interval's upper end left out (set by the refuted samples)."""
    measured = dict(result["metrics"][metric])
    measured["interval"] = {k: v for k, v in measured["interval"].items() if k != "high"}
    return {"status": result["status"], "metrics": {metric: measured}}


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):  # numbers, not wording: descriptions may be corrected
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k != "description")
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_example_metrics_are_those_recorded_before_the_restructuring(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(REPO / "examples/digits/assessment.yaml")]
    done = subprocess.run(
        [*cmd, "--output", str(out), "--no-track"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 1, done.stderr[-3000:]  # three goals fail on purpose
    evidence = json.loads((out / "evidence.json").read_text())
    results = {r["test_id"]: {"status": r["status"], "metrics": r["metrics"]} for r in evidence["results"]}
    assert results.keys() == golden["results"].keys()
    for test_id, expected in golden["results"].items():
        got = results[test_id]
        if test_id.split("/", 1)[1] in DEADLINE_BOUND:
            assert got["status"] == expected["status"], test_id
            expected, got = _only(expected, "verified_fraction"), _only(got, "verified_fraction")
        assert _same(got, expected), (test_id, got, expected)
    assert {v["goal_id"]: v["verdict"] for v in evidence["verdicts"]} == golden["verdicts"]
