"""The overall progress line, 'test k of n done, ~T left', printed by the flow as tests finish: T adds
up the plan's estimates of the tests not finished; the line shows for local runs and for runs on a
Dask cluster (whose workers' own progress lines never reach the terminal)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, goal


def _tests(*estimates: float | None):  # type: ignore[no-untyped-def]
    from nnassay.schemas.plan import TestSpec

    fields = TestSpec.model_fields
    example = {name: f.default for name, f in fields.items() if not f.is_required()}
    return [
        TestSpec.model_construct(**{**example, "test_id": f"G{i}/m", "goal_id": f"G{i}", "estimate_s": e})
        for i, e in enumerate(estimates, 1)
    ]


def test_line_counts_tests_and_adds_up_the_estimates_left() -> None:
    from nnassay.tasks.pipeline.execute import OverallProgress

    lines: list[str] = []
    progress = OverallProgress(_tests(2.0, 90.0, 30.0), lines.append)
    progress.done("G2/m")
    progress.done("G1/m")
    progress.done("G3/m")
    assert lines == [
        "test 1 of 3 done, ~32 s left",
        "test 2 of 3 done, ~30 s left",
        "test 3 of 3 done",
    ]


def test_tests_without_estimate_leave_the_time_out() -> None:
    from nnassay.tasks.pipeline.execute import OverallProgress

    lines: list[str] = []
    progress = OverallProgress(_tests(None, None, 200.0), lines.append)
    assert progress.done("G3/m") == "test 1 of 3 done"
    assert progress.done("G1/m") == "test 2 of 3 done"
    assert lines == ["test 1 of 3 done", "test 2 of 3 done"]


GOALS = [
    goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
    goal("FLIPS", {"kind": "uniform_noise", "eps": 0.1}, "label_flip_rate", "<=", 0.5),
    goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.2}, "accuracy", ">=", 0.5),
]


def _assess(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "nnassay.flows", "assess", str(spec), "--output", str(out), "--cpu"]
    args += ["--mlflow-uri", f"sqlite:///{out.parent / 'mlflow.db'}", *extra]
    return subprocess.run(
        args, env=dict(os.environ), cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def _check_lines(stderr: str, n: int) -> None:
    found = re.findall(r"test (\d+) of (\d+) done", stderr)
    assert found == [(str(k), str(n)) for k in range(1, n + 1)], stderr
    assert re.search(rf"test 1 of {n} done, ~[0-9.]+ s left", stderr), stderr


def _results_in_plan_order(out: Path) -> None:
    evidence = json.loads((out / "evidence.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    assert [r["test_id"] for r in evidence["results"]] == [t["test_id"] for t in plan["tests"]]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_prints_the_overall_line_as_tests_finish(tmp_path: Path, image_case, spec_writer) -> None:
    out = tmp_path / "run"
    done = _assess(spec_writer(image_case, GOALS), out)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_lines(done.stderr, len(GOALS))
    assert "CLEAN/statistical.clean_accuracy: completed" in done.stderr  # the per-test lines too
    _results_in_plan_order(out)


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_dask_run_prints_the_overall_line_from_the_flow(tmp_path: Path, image_case, spec_writer) -> None:
    """On a Dask cluster the tests' own progress lines stay on the workers; the overall line comes
    from the flow, as each future completes."""
    from benchmarks.scale import loopback_cluster

    out = tmp_path / "run"
    with loopback_cluster(2, log_dir=tmp_path / "dask") as address:
        done = _assess(spec_writer(image_case, GOALS), out, "--dask", address)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_lines(done.stderr, len(GOALS))
    assert "CLEAN/statistical.clean_accuracy: completed" not in done.stderr  # printed on a worker
    _results_in_plan_order(out)


def test_progress_lines_of_concurrent_tests_never_run_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run in threads and print at once: every line comes out whole, none empty (print's
    separate newline let a trial see 'A: 50/50 done ...  B: completed in 0.0s' and an empty line).
    The stream lets other threads run between writes, as a terminal's does."""
    import threading
    import time

    from nnassay.flows.steps import print_progress

    class Terminal:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, text: str) -> int:
            self.parts.append(text)
            time.sleep(0)  # the GIL is released, as in a real write to a terminal
            return len(text)

        def flush(self) -> None:
            time.sleep(0)

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    def shout(name: str) -> None:
        for i in range(200):
            print_progress(f"{name}: {i}/200 done")

    threads = [threading.Thread(target=shout, args=(f"T{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(terminal.parts).split("\n")[:-1]
    assert len(lines) == 4 * 200
    assert all(re.fullmatch(r"  T\d: \d+/200 done", line) for line in lines)
