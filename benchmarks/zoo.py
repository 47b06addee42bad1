"""The model zoo: one standard spec on models from other exporters and architectures.

Builds (never downloads) a CIFAR-size ResNet-18, a MobileNetV3-style net, a small ViT, an NHWC [0,255]
CNN, a raw-feature tabular MLP and scikit-learn classifiers converted by skl2onnx (with and without
ZipMap), then runs `nnassay assess` with the standard spec of `tests/zoo_models.py` on each and prints
a table model x goal: verdict, test status, time and the plan's estimate where the plan has one.

    python benchmarks/zoo.py [--tiny] [--models resnet18,vit] [--out /tmp/zoo] [--timeout 1800]

Needs the test extra (scikit-learn, skl2onnx). Output goes to BENCHMARKS.md by hand, with date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import zoo_models  # noqa: E402


def run_one(name: str, out: Path, *, tiny: bool, timeout_s: float, samples: int) -> list[dict[str, object]]:
    """Build one model, assess it, and return one row per goal."""
    t0 = time.monotonic()
    model = zoo_models.build(name, out / "models", tiny=tiny)
    build_s = time.monotonic() - t0
    spec = out / "specs" / f"{name}.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(zoo_models.standard_spec(model, samples=samples), sort_keys=False))
    run = out / "runs" / name
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
    t1 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
        code, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        code, err = None, f"timeout after {timeout_s:.0f} s"
    wall = time.monotonic() - t1
    evidence = run / "evidence.json"
    if not evidence.exists():
        last = [line for line in err.splitlines() if line.strip()][-1:] or ["no output"]
        return [
            {
                "model": name,
                "goal": "-",
                "verdict": f"NO EVIDENCE (exit {code})",
                "status": last[0][:90],
                "time_s": round(wall, 1),
                "estimate_s": None,
                "build_s": round(build_s, 1),
            }
        ]
    return _rows(name, json.loads(evidence.read_text()), code, wall, build_s, run)


def _rows(
    name: str, ev: dict, code: int | None, wall: float, build_s: float, run: Path
) -> list[dict[str, object]]:
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").exists() else {}
    estimates = {t["test_id"]: t.get("estimate_s") for t in plan.get("tests", [])}
    rows = []
    for v in ev["verdicts"]:
        results = [r for r in ev["results"] if r["goal_id"] == v["goal_id"]]
        rows.append(
            {
                "model": name,
                "goal": v["goal_id"],
                "verdict": v["verdict"],
                "status": ", ".join(f"{r['method']}:{r['status']}" for r in results),
                "time_s": round(sum(r["time_s"] for r in results), 1),
                "estimate_s": sum(estimates.get(r["test_id"]) or 0 for r in results) or None,
                "build_s": round(build_s, 1),
            }
        )
    rows.append(
        {
            "model": name,
            "goal": "(all)",
            "verdict": f"exit {code}",
            "status": "",
            "time_s": round(wall, 1),
            "estimate_s": None,
            "build_s": round(build_s, 1),
        }
    )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table of the rows."""
    head = "| model | goal | verdict | tests (method:status) | time s | estimate s |\n|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['model']} | {r['goal']} | {r['verdict']} | {r['status']} | {r['time_s']} | {r['estimate_s'] or '-'} |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny-width models (as in the tests)")
    parser.add_argument("--models", default=",".join(zoo_models.ALL_MODELS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/nnassay-zoo"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per assessment")
    parser.add_argument("--samples", type=int, default=200, help="samples of the clean and noise goals")
    args = parser.parse_args()
    print(
        f"# zoo {'tiny' if args.tiny else 'full'} on {platform.node()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        found = run_one(name, args.out, tiny=args.tiny, timeout_s=args.timeout, samples=args.samples)
        rows += found
        print(table(found), flush=True)
    print("\n## all models\n" + table(rows))


if __name__ == "__main__":
    main()
