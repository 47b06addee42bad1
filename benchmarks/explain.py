"""The time explanations add to the bundled example: `nnassay assess` with `explain` on and off, and
the explain step alone.

Usage: python benchmarks/explain.py [--spec examples/digits/assessment.yaml] [--repeat 1]

Each assessment runs in a new process with a new Prefect home and MLflow store (the same cold
start both ways). The explain step alone is then timed in this process on the stored results of
the 'on' run (gathering, attributions, faithfulness, sanity check, pictures; Captum imported first,
so its import is not counted), and compared with the plan's estimate.
"""

from __future__ import annotations

import argparse
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
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}


def spec_copy(spec: Path, folder: Path, *, enabled: bool) -> Path:
    """The spec with absolute paths and ``explain.enabled`` set."""
    data = yaml.safe_load(spec.read_text())
    base = spec.resolve().parent
    data["model"]["path"] = str(base / data["model"]["path"])
    data["data"]["path"] = str(base / data["data"]["path"])
    for g in data["goals"]:
        if g["threat"].get("path"):
            g["threat"]["path"] = str(base / g["threat"]["path"])
    data["explain"] = {**data.get("explain", {}), "enabled": enabled}
    path = folder / f"spec-{'on' if enabled else 'off'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assess(spec: Path, out: Path) -> float:
    """Wall time of one `nnassay assess` in a new process (fresh Prefect home and MLflow store)."""
    home = Path(tempfile.mkdtemp(prefix="bench-explain-prefect-"))
    env = {
        **ENV,
        "PREFECT_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{out.parent / (out.name + '.db')}",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nnassay.flows", "assess", str(spec), "--output", str(out), "--cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"assess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took


def explain_alone(run: Path) -> tuple[float, float | None, int]:
    """(seconds of the explain step on the stored results, the plan's estimate, goals explained)."""
    import captum.attr  # noqa: F401  (imported once per process; not part of the step's time)

    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.tasks.pipeline.explain_step import explain_failures

    bundle = EvidenceBundle.model_validate_json((run / "evidence.json").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    (scratch / "tests").symlink_to(run / "tests")  # the archives the step reads
    start = time.perf_counter()
    outcome = explain_failures(
        bundle.spec, bundle.plan, bundle.results, bundle.verdicts, scratch, prefer_cuda=False
    )
    return time.perf_counter() - start, bundle.plan.explain_estimate_s, len(outcome.sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "digits" / "assessment.yaml")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-explain-runs-"))
    on, off = spec_copy(args.spec, folder, enabled=True), spec_copy(args.spec, folder, enabled=False)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(args.repeat):
        times["off"].append(assess(off, folder / f"off-{i}"))
        times["on"].append(assess(on, folder / f"on-{i}"))
    step_s, estimate_s, goals = explain_alone(folder / "on-0")
    total_on, total_off = statistics.median(times["on"]), statistics.median(times["off"])
    print(
        f"explain benchmark: {args.spec.name}, median of {args.repeat} run(s), {os.cpu_count()} cores, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  total_explain_on_s     {total_on:8.2f}")
    print(f"  total_explain_off_s    {total_off:8.2f}")
    print(f"  difference_s           {total_on - total_off:8.2f}")
    print(f"  explain_step_s         {step_s:8.2f}   ({goals} goals explained)")
    if estimate_s is not None:
        print(f"  plan_estimate_s        {estimate_s:8.2f}   (if every goal that can leave failures fails)")


if __name__ == "__main__":
    main()
