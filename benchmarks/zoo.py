"""The model zoo: one standard spec on models from other exporters and architectures.

Builds (never downloads) a CIFAR-size ResNet-18, a MobileNetV3-style net, a small ViT, an NHWC [0,255]
CNN, a raw-feature tabular MLP and scikit-learn classifiers converted by skl2onnx (with and without
ZipMap), then runs `nnassay assess` with the standard spec of `tests/zoo_models.py` on each and prints
a table model x goal: verdict, test status, "time / estimate" (the tests' time and the plan's
`estimate_s`, seconds) and their ratio (flagged "!" outside 0.5 to 2 when they differ by more than a
second: below that, start-up noise on a busy machine is most of a test's time).

    python benchmarks/zoo.py [--tiny] [--models resnet18,vit] [--out /tmp/zoo] [--timeout 1800]
                             [--reuse] [--collect]

`--reuse` assesses the models already built in OUT/models (building a full ResNet-18 or ViT takes
minutes); `--collect` only prints the table of the runs already in OUT/runs.

Needs the test extra (scikit-learn, skl2onnx). Output goes to BENCHMARKS.md by hand, with date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import zoo_models  # noqa: E402

SUBSECOND = 1.0  # seconds: a ratio is not flagged when time and estimate differ by less


def run_one(
    name: str, out: Path, *, tiny: bool, timeout_s: float, samples: int, reuse: bool = False
) -> list[dict[str, object]]:
    """Build one model (or reuse the one built before in ``out/models``), assess it, and return one
    row per goal and a last row for the whole assessment."""
    t0 = time.monotonic()
    model = zoo_models.built(name, out / "models") if reuse else None
    if model is None:
        model = zoo_models.build(name, out / "models", tiny=tiny)
    build_s = time.monotonic() - t0
    spec = out / "specs" / f"{name}.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(zoo_models.standard_spec(model, samples=samples), sort_keys=False))
    run = out / "runs" / name
    shutil.rmtree(run, ignore_errors=True)  # a run folder resumes its finished tests: time them afresh
    cmd = [
        sys.executable,
        "-m",
        "nnassay.flows",
        "assess",
        str(spec),
        "--output",
        str(run),
        "--no-track",
        "--cpu",
    ]
    load_before = os.getloadavg()[0]
    t1 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
        code, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        code, err = None, f"timeout after {timeout_s:.0f} s"
    wall = time.monotonic() - t1
    run.mkdir(parents=True, exist_ok=True)
    (run / "zoo_stderr.txt").write_text(err)
    facts = {
        "code": code,
        "wall_s": round(wall, 1),
        "build_s": round(build_s, 1),
        "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "traceback": "Traceback (most recent call last)" in err,
    }
    (run / "zoo_run.json").write_text(json.dumps(facts))
    return collect(name, run)


def collect(name: str, run: Path) -> list[dict[str, object]]:
    """The rows of one model's finished run folder (evidence, plan and the facts ``run_one`` kept)."""
    facts = json.loads((run / "zoo_run.json").read_text()) if (run / "zoo_run.json").exists() else {}
    evidence = run / "evidence.json"
    if not evidence.exists():
        err = (run / "zoo_stderr.txt").read_text() if (run / "zoo_stderr.txt").exists() else ""
        last = [line for line in err.splitlines() if line.strip()][-1:] or ["no output"]
        return [_row(name, "-", f"NO EVIDENCE (exit {facts.get('code')})", last[0][:90], facts.get("wall_s"))]
    ev = json.loads(evidence.read_text())
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").exists() else {}
    estimates = {t["test_id"]: t.get("estimate_s") for t in plan.get("tests", [])}
    rows = []
    for v in ev["verdicts"]:
        results = [r for r in ev["results"] if r["goal_id"] == v["goal_id"]]
        known = [estimates[r["test_id"]] for r in results if estimates.get(r["test_id"]) is not None]
        rows.append(
            _row(
                name,
                v["goal_id"],
                v["verdict"],
                ", ".join(f"{r['method']}:{r['status']}" for r in results),
                round(sum(r["time_s"] for r in results), 1),
                round(sum(known), 1) if known else None,
            )
        )
    total = round(sum(r["estimate_s"] for r in rows if isinstance(r["estimate_s"], float | int)), 1)
    tests = round(sum(r["time_s"] for r in ev["results"]), 1)
    status = f"wall {facts.get('wall_s')} s; build {facts.get('build_s')} s; load {facts.get('load')}"
    if facts.get("traceback"):
        status += "; TRACEBACK in stderr"
    # the tests' times added up against their estimates added up (the wall time adds the start-up,
    # planning, dossier, and subtracts the overlap of the two tests `assess` runs at a time)
    rows.append(_row(name, "(all tests)", f"exit {facts.get('code')}", status, tests, total or None))
    return rows


def _row(
    model: str, goal: str, verdict: str, status: str, time_s: object, estimate_s: float | None = None
) -> dict[str, object]:
    return {
        "model": model,
        "goal": goal,
        "verdict": verdict,
        "status": status,
        "time_s": time_s,
        "estimate_s": estimate_s,
    }


def ratio(row: dict[str, object]) -> float | None:
    """Test time over the plan's estimate (None without an estimate)."""
    t, e = row["time_s"], row["estimate_s"]
    if not isinstance(t, float | int) or not isinstance(e, float | int) or e <= 0:
        return None
    return round(max(float(t), 0.05) / float(e), 2)


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table of the rows: verdict, tests' status, "time / estimate" (s) and their ratio."""
    head = (
        "| model | goal | verdict | tests (method:status) | time / estimate s | ratio |\n"
        "|---|---|---|---|---|---|\n"
    )
    body = ""
    for r in rows:
        q = ratio(r)
        off = q is not None and not 0.5 <= q <= 2.0
        flag = " !" if off and abs(float(r["time_s"]) - float(r["estimate_s"])) > SUBSECOND else ""  # type: ignore[arg-type]
        est = "-" if r["estimate_s"] is None else r["estimate_s"]
        body += (
            f"| {r['model']} | {r['goal']} | {r['verdict']} | {r['status']} | {r['time_s']} / {est} "
            f"| {'-' if q is None else q}{flag} |\n"
        )
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny-width models (as in the tests)")
    parser.add_argument("--models", default=",".join(zoo_models.ALL_MODELS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnassay-zoo"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per assessment")
    parser.add_argument("--samples", type=int, default=200, help="samples of the clean and noise goals")
    parser.add_argument("--reuse", action="store_true", help="reuse models already built in OUT/models")
    parser.add_argument("--collect", action="store_true", help="only tabulate the runs already in OUT/runs")
    args = parser.parse_args()
    print(
        f"# zoo {'tiny' if args.tiny else 'full'} on {platform.node()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        if args.collect:
            found = collect(name, args.out / "runs" / name)
        else:
            found = run_one(
                name, args.out, tiny=args.tiny, timeout_s=args.timeout, samples=args.samples, reuse=args.reuse
            )
            print(table(found), flush=True)
        rows += found
    print("\n## all models\n" + table(rows))


if __name__ == "__main__":
    main()
