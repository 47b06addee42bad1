"""Time `nnassay assess` end to end, as a user runs it, against the fixed-cost targets, and say where
the time goes.

Usage: python benchmarks/pipeline.py [--spec examples/digits/assessment.yaml] [--repeat 1]

Runs (each `nnassay assess SPEC --output DIR/run` in a new process, embedded defaults: the embedded
Prefect server, the MLflow SQLite store beside the run folder; Prefect's home reused, as on every run
but a machine's first):
- one goal: the spec's first goal alone, in a new project folder (new MLflow store); target < 10 s;
- one goal again: the same, beside the first run (its store exists);
- example: the whole spec in a new project folder; target < 30 s.

Phase breakdown of the one-goal run (wall seconds, from timestamps taken inside the process by
wrapping nnassay's functions as their modules load; nothing in nnassay is changed):
- start-up: interpreter and CLI imports, until the command starts;
- input checks: spec, model and data loaded and checked, unit costs timed, the plan made (their
  imports included: torch, scipy, ONNX Runtime);
- MLflow store: a new SQLite store created (the schema migrations);
- warm-up: the flow's imports (Prefect's engine, MLflow) while the embedded server may still boot;
- embedded server: its boot (a child process, in parallel) and how long the command waited for it;
- flow: the Prefect flow run, of which the PDF dossier (layout and writing);
- shutdown: from the command's end (summary printed) to the process exit.
Also: where import time goes (`python -X importtime`, self time by top-level package) and the two
ways of creating a new MLflow store (MLflow's own, nnassay's) measured alone.
"""

from __future__ import annotations

import argparse
import collections
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
TARGET_ONE_GOAL_S, TARGET_EXAMPLE_S = 10.0, 30.0
PREFECT_HOME = tempfile.mkdtemp(prefix="bench-prefect-")  # reused by every run (migrated once)
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))},
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_HOME": PREFECT_HOME,
}

# Runs the CLI with wall-clock stamps of nnassay functions (wrapped as their modules are imported)
PHASES_SNIPPET = r"""
import functools, importlib.abc, importlib.util, json, sys, time
STAMPS = []
TARGETS = {
    "nnassay.flows.cli.options": ["quiet_libraries"],
    "nnassay.flows.cli.app": ["_check_inputs", "_warm_up", "_run_flow", "_print_summary", "exit_now"],
    "nnassay.flows.cli.servers": ["EmbeddedPrefect.start", "EmbeddedPrefect.wait_ready", "prepare_sqlite_store"],
    "nnassay.tasks.governance.dossier": ["write_pdf"],
}
def wrap(module, qualname):
    owner = module
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name, None)
    if fn is None:
        return
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.time()
        if name == "exit_now":
            print("STAMPS " + json.dumps(STAMPS + [[qualname, start, start]]), file=sys.stderr, flush=True)
        try:
            return fn(*args, **kwargs)
        finally:
            STAMPS.append([qualname, start, time.time()])
    setattr(owner, name, timed)
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            for qualname in TARGETS[fullname]:
                wrap(module, qualname)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
sys.argv = ["nnassay", *sys.argv[1:]]
from nnassay.flows.cli.main import main
main()
"""

STORE_SNIPPET = """
import sys, tempfile, time
from pathlib import Path
from nnassay.flows.cli.servers import prepare_sqlite_store
from mlflow.tracking import MlflowClient
import mlflow.store.db.utils, mlflow.store.tracking.sqlalchemy_store  # imported before the clocks
folder = Path(tempfile.mkdtemp(dir={folder!r}))
t = time.perf_counter(); MlflowClient(tracking_uri=f"sqlite:///{{folder}}/a.db")._tracking_client.store
mlflow_s = time.perf_counter() - t
t = time.perf_counter(); prepare_sqlite_store(f"sqlite:///{{folder}}/b.db")
MlflowClient(tracking_uri=f"sqlite:///{{folder}}/b.db")._tracking_client.store
print(mlflow_s, time.perf_counter() - t)
"""

SERVER_SNIPPET = """
import time
t = time.perf_counter()
from nnassay.flows.cli.servers import EmbeddedPrefect
server = EmbeddedPrefect().start(); server.wait_ready(300); ready = time.perf_counter() - t
t = time.perf_counter(); server.stop(); print(ready, time.perf_counter() - t)
"""


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def one_goal_spec(spec: Path, folder: Path) -> Path:
    """The spec with its first goal only (its model and data paths made absolute)."""
    data = yaml.safe_load(spec.read_text())
    for key in ("model", "data"):
        data[key]["path"] = str((spec.parent / data[key]["path"]).resolve())
    data["goals"] = data["goals"][:1]
    path = folder / "one-goal.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assess(spec: Path, out: Path, *, python: list[str] | None = None) -> tuple[float, str]:
    """Wall seconds of one `nnassay assess` (exit 0 or 1) and its standard error."""
    command = python or [sys.executable, "-m", "nnassay.flows"]
    start = time.time()
    proc = subprocess.run(
        [*command, "assess", str(spec), "--output", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        check=False,
    )
    end = time.time()
    if proc.returncode not in (0, 1) or not (out / "evidence.json").is_file():  # 1: a goal did not pass
        raise SystemExit(f"assessment failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return end - start, proc.stderr + f"\nEND {end} START {start}\n"


def python_out(code: str) -> list[float]:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO, check=False
    )
    if proc.returncode:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return [float(x) for x in proc.stdout.split()]


def phases(spec: Path, folder: Path) -> dict[str, float]:
    """The one-goal run's phases (see the module docstring), from the stamps its process printed."""
    _, err = assess(spec, folder / "run", python=[sys.executable, "-c", PHASES_SNIPPET])
    stamps = next(json.loads(line[7:]) for line in err.splitlines() if line.startswith("STAMPS "))
    end, start = (float(x) for x in err.rsplit("END ", 1)[1].split(" START "))
    got = {name: (a, b) for name, a, b in stamps}

    def took(name: str) -> float:
        a, b = got.get(name, (0.0, 0.0))
        return b - a

    server_start = got.get("EmbeddedPrefect.start", (start, start))[0]
    server_ready = got.get("EmbeddedPrefect.wait_ready", (server_start, server_start))[1]
    return {
        "start-up (interpreter, CLI imports)": got["quiet_libraries"][0] - start,
        "input checks (spec, model, data, plan)": took("_check_inputs"),
        "MLflow store (new SQLite store)": took("prepare_sqlite_store"),
        "warm-up (the flow's imports)": took("_warm_up") - took("prepare_sqlite_store"),
        "embedded server boot (in parallel)": server_ready - server_start,
        "waited for the embedded server": took("EmbeddedPrefect.wait_ready"),
        "flow run (tests, records, dossier)": took("_run_flow"),
        "  of which the PDF dossier": took("write_pdf"),
        "shutdown (summary printed to exit)": end - got["exit_now"][0],
        "total": end - start,
    }


def import_times(spec: Path, folder: Path, top: int = 8) -> list[tuple[str, float]]:
    """Self import time by top-level package in a one-goal run (`python -X importtime`)."""
    _, err = assess(spec, folder / "run", python=[sys.executable, "-X", "importtime", "-m", "nnassay.flows"])
    by_package: collections.Counter[str] = collections.Counter()
    for line in err.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, _, name = line.split(":", 1)[1].split("|")
            by_package[name.strip().split(".")[0]] += int(own)
    total = sum(by_package.values())
    return [("all imports", total / 1e6)] + [(k, v / 1e6) for k, v in by_package.most_common(top)]


def measure(spec: Path) -> dict[str, float]:
    project = Path(tempfile.mkdtemp(prefix="bench-one-"))
    one = one_goal_spec(spec, project)
    row = {"load_before": os.getloadavg()[0]}
    row["one_goal_s"], _ = assess(one, project / "run")
    row["one_goal_again_s"], _ = assess(one, project / "run-again")
    row["example_s"], _ = assess(spec, Path(tempfile.mkdtemp(prefix="bench-example-")) / "run")
    row["load_after"] = os.getloadavg()[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "digits" / "assessment.yaml")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    spec = args.spec.resolve()
    print(
        f"pipeline benchmark: {spec.relative_to(REPO)}, {os.cpu_count()} cores, {platform.machine()}; {load()}"
    )
    assess(one_goal_spec(spec, Path(tempfile.mkdtemp())), Path(tempfile.mkdtemp()) / "run")  # Prefect home
    rows = [measure(spec) for _ in range(args.repeat)]
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    one, example = median["one_goal_s"], median["example_s"]
    print(
        f"  (median of {args.repeat}; load average at start {median['load_before']:.1f}, end {median['load_after']:.1f})"
    )
    print(
        f"  one goal, new store      {one:6.1f} s   target < {TARGET_ONE_GOAL_S:.0f} s: {'met' if one < TARGET_ONE_GOAL_S else 'NOT met'}"
    )
    print(f"  one goal, existing store {median['one_goal_again_s']:6.1f} s")
    print(
        f"  example, new store       {example:6.1f} s   target < {TARGET_EXAMPLE_S:.0f} s: {'met' if example < TARGET_EXAMPLE_S else 'NOT met'}"
    )

    folder = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    print(f"phases of the one-goal run, new store (wall s; {load()}):")
    for name, seconds in phases(one_goal_spec(spec, folder), folder).items():
        print(f"  {name:<42} {seconds:6.2f}")
    folder = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    print(f"imports of the one-goal run, self time by package (python -X importtime; {load()}):")
    for name, seconds in import_times(one_goal_spec(spec, folder), folder):
        print(f"  {name:<42} {seconds:6.2f}")
    mlflow_s, nnassay_s = python_out(STORE_SNIPPET.format(folder=str(folder)))
    ready_s, stop_s = python_out(SERVER_SNIPPET)
    print(f"alone ({load()}):")
    print(f"  new MLflow store, MLflow's way (a sync per migration) {mlflow_s:6.2f}")
    print(f"  new MLflow store, nnassay's way (one sync)            {nnassay_s:6.2f}")
    print(f"  embedded Prefect server: boot {ready_s:.2f}, stop {stop_s:.2f}")


if __name__ == "__main__":
    main()
