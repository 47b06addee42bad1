"""Time the bundled example assessment end to end and split it into its fixed and compute parts.

Usage: python benchmarks/pipeline.py [--spec examples/digits/assessment.yaml] [--repeat 2]

Parts, each measured in a fresh process where start-up matters:
- Prefect start-up: a trivial flow in local mode (temporary server) from a new interpreter, with a
  new Prefect home (first run on a machine: database created) and with a reused one;
- MLflow set-up: a fresh SQLite store (schema migrations), experiment and run creation;
- method compute: the sum of the tests' own busy times, read from evidence.json (two threads);
- fixed overhead: the whole run of the spec's first goal alone, minus that goal's compute;
- PDF rendering: HTML + WeasyPrint from the stored evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # a new Prefect home migrates its database first: give the embedded server time to come up
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}

PREFECT_SNIPPET = """
import time; t = time.perf_counter()
from prefect import flow
@flow
def noop(): return 1
noop(); print(time.perf_counter() - t)
"""
MLFLOW_SNIPPET = """
import sys, time; t = time.perf_counter()
sys.path.insert(0, {repo!r})
from nnassay.tasks.governance.tracking import MlflowTracker
tr = MlflowTracker("sqlite:///" + {db!r})
run = tr.start("bench", "r", {{}}, {{"a": 1}}); tr.finish(run); print(time.perf_counter() - t)
"""
RENDER_SNIPPET = """
import sys, time; sys.path.insert(0, {repo!r}); from pathlib import Path
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.reports.render import render_html
from nnassay.tasks.governance.dossier import write_pdf
ev = EvidenceBundle.model_validate_json(Path({evidence!r}).read_text())
t = time.perf_counter(); write_pdf(render_html(ev, Path({run!r})), Path({out!r})); print(time.perf_counter() - t)
"""


WARM_HOME = tempfile.mkdtemp(prefix="bench-prefect-warm-")


def home(cold: bool) -> dict[str, str]:
    """A fresh Prefect home (first run on a machine) or a reused one (every later run)."""
    return {**ENV, "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-") if cold else WARM_HOME}


def python_seconds(code: str, *, cold: bool = False) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=home(cold), cwd=REPO, check=False
    )
    if out.returncode:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def full_run(spec: Path, *, cold: bool) -> tuple[float, Path]:
    out = Path(tempfile.mkdtemp(prefix="bench-run-"))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nnassay.flows.cli.app", "assess", str(spec), "--output", str(out)],
        capture_output=True,
        text=True,
        env=home(cold),
        cwd=REPO,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"assessment failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, out


def first_goal_only(spec: Path) -> Path:
    """The spec with its first goal only: its run time is almost all fixed overhead."""
    data = yaml.safe_load(spec.read_text())
    for key in ("model", "data"):
        data[key]["path"] = str((spec.parent / data[key]["path"]).resolve())
    data["goals"] = data["goals"][:1]
    path = Path(tempfile.mkdtemp(prefix="bench-spec-")) / "one-goal.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compute_of(run: Path) -> float:
    """Sum of the tests' own busy times (tests run on two threads, so this can exceed their wall time)."""
    return sum(r["time_s"] for r in json.loads((run / "evidence.json").read_text())["results"])


def measure(spec: Path) -> dict[str, float]:
    cold_total, _ = full_run(spec, cold=True)
    total, run = full_run(spec, cold=False)
    evidence = json.loads((run / "evidence.json").read_text())
    compute = compute_of(run)
    one_total, one_run = full_run(first_goal_only(spec), cold=False)
    db = str(Path(tempfile.mkdtemp()) / "m.db")
    return {
        "total_cold_s": cold_total,
        "total_s": total,
        "one_goal_total_s": one_total,
        "prefect_startup_cold_s": python_seconds(PREFECT_SNIPPET, cold=True),
        "prefect_startup_s": python_seconds(PREFECT_SNIPPET),
        "mlflow_setup_s": python_seconds(MLFLOW_SNIPPET.format(repo=str(REPO), db=db)),
        "method_compute_s": compute,
        "pdf_render_s": python_seconds(
            RENDER_SNIPPET.format(
                repo=str(REPO), evidence=str(run / "evidence.json"), run=str(run), out=str(run / "again.pdf")
            )
        ),
        # the one-goal run: everything but its (tiny) compute is the pipeline's fixed overhead
        "fixed_overhead_s": one_total - compute_of(one_run),
        "tests": len(evidence["results"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "digits" / "assessment.yaml")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rows = [measure(args.spec) for _ in range(args.repeat)]
    print(
        f"pipeline benchmark: {args.spec.relative_to(REPO)}, {rows[0]['tests']:.0f} tests, "
        f"median of {args.repeat} runs, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    print("  (cold: first run with a new Prefect home; the others: a reused Prefect home)")
    print("  (fixed overhead: the run time of the spec's first goal alone, minus that goal's compute)")
    for key in (
        "total_cold_s",
        "total_s",
        "one_goal_total_s",
        "prefect_startup_cold_s",
        "prefect_startup_s",
        "mlflow_setup_s",
        "method_compute_s",
        "pdf_render_s",
        "fixed_overhead_s",
    ):
        print(f"  {key:<20} {statistics.median(r[key] for r in rows):7.2f}")
    fixed, total = (
        statistics.median(r["fixed_overhead_s"] for r in rows),
        statistics.median(r["total_s"] for r in rows),
    )
    print(
        f"  goal fixed overhead < 15 s: {'met' if fixed < 15 else 'NOT met'}; "
        f"goal whole example < 60 s: {'met' if total < 60 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
