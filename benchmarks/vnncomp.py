"""Run `nnassay verify` over the shared VNN-COMP instances and score it against the known answers.

Usage: python benchmarks/vnncomp.py [acasxu mnistfc_2022 ...] [--sample N --seed S]
       [--timeout-scale F] [--marabou | --only-marabou] [--ours-from CSV [--rerun-undecided]]
       [--marabou-from CSV] [--sanity]

Each instance runs in a new process, as in VNN-COMP, so start-up counts against its timeout. The
files are read in place under /work/shared/benchmarks/vnncomp; the per-instance CSV goes to
benchmarks/results/ (git-ignored). With --marabou, Marabou (maraboupy, extra `bench`) runs the same
instances with the same timeouts, one process each with a hard kill, for a side-by-side summary.
The two can also run at the same time on separate cores (``--only-marabou`` in one process, nnassay
alone in another) and be joined afterwards: ``--ours-from A.csv --marabou-from B.csv`` re-scores the
earlier answers without running anything; with ``--rerun-undecided`` only the instances that A.csv
left undecided run again (e.g. the timeouts of a half-timeout run, at the full timeouts).
``--sanity`` also runs each tool on one property per network that is known to hold (at the centre of
an instance's box the largest output is >= the smallest): an ``unsat`` there shows that the tool
misreads that network, so its answers on it are no evidence.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("VNNCOMP_ROOT", "/work/shared/benchmarks/vnncomp"))
RESULTS = REPO / "benchmarks" / "results"
HARD_KILL_S = 15.0  # slack before a run that ignores its timeout is killed
LATE_S = 1.0  # an answer this long after the timeout still counts (process exit, interpreter teardown)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"}

MARABOU_SNIPPET = """
import sys, time, warnings; warnings.filterwarnings("ignore")
from maraboupy import Marabou
began = time.monotonic()  # after the import, as nnassay's own clock starts after its imports
net = Marabou.read_onnx(sys.argv[1])
opts = Marabou.createOptions(timeoutInSeconds=int(sys.argv[3]), verbosity=0)
code, vals, stats = net.solve(propertyFilename=sys.argv[2], options=opts, verbose=False)
print("RESULT", "timeout" if stats.hasTimedOut() else code.lower())
print("TIME", time.monotonic() - began)
"""


@dataclass
class Instance:
    """One row of instances.csv joined with its ground-truth evidence."""

    folder: str
    onnx: Path
    vnnlib: Path
    timeout_s: float
    expected: str
    fastest_core_s: float | None

    @property
    def name(self) -> str:
        return f"{self.folder}/{self.onnx.stem}/{self.vnnlib.stem}"


@dataclass
class Run:
    """What one tool answered on one instance."""

    got: str
    time_s: float
    method: str = ""
    detail: dict[str, str] = field(default_factory=dict)


def load_instances(folder: str) -> list[Instance]:
    """The instances of a benchmark folder, with the fastest core tool's time when known."""
    base = ROOT / folder
    with (base / "ground_truth_evidence.csv").open(newline="") as handle:
        fastest = {(r["onnx"], r["vnnlib"]): r["fastest_core_tool_s"] for r in csv.DictReader(handle)}
    with (base / "instances.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Instance(
            folder,
            base / r["onnx"],
            base / r["vnnlib"],
            float(r["timeout_s"]),
            r["expected"],
            float(fastest[(r["onnx"], r["vnnlib"])]) if fastest.get((r["onnx"], r["vnnlib"])) else None,
        )
        for r in rows
    ]


def verify_command(inst: Instance, timeout: float, result: Path) -> list[str]:
    """`nnassay verify ...` as the installed command runs it (`python -m flows verify`)."""
    return [
        sys.executable,
        "-m",
        "flows",
        "verify",
        "--onnx",
        str(inst.onnx),
        "--vnnlib",
        str(inst.vnnlib),
        "--timeout",
        f"{timeout:g}",
        "--result-file",
        str(result),
    ]


def run_ours(inst: Instance, timeout: float, scratch: Path) -> Run:
    """One `nnassay verify` process; the answer is the first stdout line."""
    result = scratch / "result.txt"
    result.unlink(missing_ok=True)
    began = time.monotonic()
    try:
        proc = subprocess.run(
            verify_command(inst, timeout, result),
            capture_output=True,
            text=True,
            timeout=timeout + HARD_KILL_S,
            cwd=REPO,
            env=ENV,
        )
    except subprocess.TimeoutExpired:
        return Run("timeout", time.monotonic() - began, detail={"reason": "killed after the hard limit"})
    elapsed = time.monotonic() - began
    lines = proc.stdout.splitlines()
    got = lines[0].strip() if lines else ""
    detail = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    if proc.returncode not in (0,) or got not in ("sat", "unsat", "unknown", "timeout"):
        detail["reason"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return Run("error", elapsed, detail=detail)
    file_verdict = result.read_text().splitlines()[0] if result.is_file() else ""
    if file_verdict != got:
        detail["reason"] = f"result file says {file_verdict!r}, stdout says {got!r}"
        return Run("error", elapsed, detail=detail)
    return late(Run(got, elapsed, detail.get("method", ""), detail), timeout)


def run_marabou(inst: Instance, timeout: float) -> Run:
    """Marabou on the same files, one process with a hard kill."""
    began = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                MARABOU_SNIPPET,
                str(inst.onnx),
                str(inst.vnnlib),
                str(max(1, math.ceil(timeout))),
            ],
            capture_output=True,
            text=True,
            timeout=timeout + HARD_KILL_S,
            env=ENV,
        )
    except subprocess.TimeoutExpired:
        return Run("timeout", time.monotonic() - began, "marabou")
    elapsed = time.monotonic() - began
    found = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not found:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
        return Run("error", elapsed, "marabou", {"reason": reason})
    got = found[-1] if found[-1] in ("sat", "unsat", "timeout") else "unknown"
    inside = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("TIME ")]
    return late(Run(got, elapsed, "marabou", {"time_s": inside[-1]} if inside else {}), timeout)


SANITY_TIMEOUT_S = 60.0


def sanity_instance(inst: Instance, folder: Path) -> Instance:
    """A property on ``inst``'s network and first input box that is known to hold: at the box centre
    (checked on ONNX Runtime) the largest output is >= the smallest. The expected answer is ``sat``; a
    tool that answers ``unsat`` misreads this network or its inputs, so its unsat answers on the
    network are no evidence (found with Marabou on the OVAL21 CIFAR nets)."""
    import numpy as np

    if str(REPO) not in sys.path:  # run as a script: the repository's packages are not on the path
        sys.path.insert(0, str(REPO))
    from nnassay.tasks.engine.onnx_torch import ort_session, run_ort
    from nnassay.tasks.methods.formal.falsify import inside_float32
    from nnassay.tasks.methods.formal.vnnlib import parse_vnnlib

    prop = parse_vnnlib(inst.vnnlib)
    box = prop.regions[0].box
    centre = inside_float32(((box.lower + box.upper) / 2)[None], box.lower, box.upper)
    y = run_ort(ort_session(str(inst.onnx)), centre)[0].reshape(-1).astype(np.float64)
    high = int(np.argmax(y))
    low = int(np.argmin(np.where(np.arange(y.size) == high, np.inf, y))) if y.size > 1 else high
    text = [
        f"; holds at the centre of the first box of {inst.vnnlib.name}: Y_{high} = {float(y[high])!r} >= Y_{low} = {float(y[low])!r}"
    ]
    text += [f"(declare-const X_{i} Real)" for i in range(prop.n_inputs)]
    text += [f"(declare-const Y_{j} Real)" for j in range(prop.n_outputs)]
    text += [
        f"(assert (>= X_{i} {lo!r}))\n(assert (<= X_{i} {hi!r}))"
        for i, (lo, hi) in enumerate(zip(box.lower.tolist(), box.upper.tolist(), strict=True))
    ]
    text.append(f"(assert (>= Y_{high} Y_{low}))")
    path = folder / f"sanity-{inst.folder}-{inst.onnx.stem}.vnnlib"
    path.write_text("\n".join(text) + "\n")
    return Instance(inst.folder, inst.onnx, path, SANITY_TIMEOUT_S, "sat", None)


def sanity(insts: list[Instance], scratch: Path, marabou: bool) -> list[str]:
    """Each tool on one known-sat property per network (``sanity_instance``); ``unsat`` is flagged."""
    lines = []
    for inst in {i.onnx: i for i in insts}.values():
        probe = sanity_instance(inst, scratch)
        runs = {"nnassay": run_ours(probe, probe.timeout_s, scratch)}
        if marabou:
            runs["marabou"] = run_marabou(probe, probe.timeout_s)
        for tool, run in runs.items():
            meaning = {
                "unsat": "UNSOUND here: its unsat answers on this network are no evidence",
                "sat": "sound on this check",
            }.get(run.got, "undecided")
            lines.append(
                f"sanity {inst.folder}/{inst.onnx.stem}: {tool} {run.got} in {run.time_s:.2f}s on a property"
                f" that holds at the box centre: {meaning}"
            )
        probe.vnnlib.unlink()
    return lines


def late(run: Run, timeout: float) -> Run:
    """An answer after the timeout (plus LATE_S for process exit) counts as a timeout, as in VNN-COMP."""
    if run.got in ("sat", "unsat") and run.time_s > timeout + LATE_S:
        return Run("timeout", run.time_s, run.method, {**run.detail, "reason": f"{run.got} came too late"})
    return run


def marabou_available() -> str | None:
    """None when maraboupy imports and runs here, else why not."""
    proc = subprocess.run(
        [sys.executable, "-c", "import maraboupy.MarabouCore"], capture_output=True, text=True, env=ENV
    )
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def scored(inst: Instance, run: Run) -> str:
    """correct / WRONG / unknown / timeout / error."""
    if run.got in ("sat", "unsat"):
        return "correct" if run.got == inst.expected else "WRONG"
    return run.got


def summarize(label: str, insts: list[Instance], runs: list[Run]) -> list[str]:
    """Summary lines: counts, times, and the time relative to the fastest core tool."""
    scores = [scored(i, r) for i, r in zip(insts, runs, strict=True)]
    times = [r.time_s for r in runs]
    count = {k: scores.count(k) for k in ("correct", "WRONG", "unknown", "timeout", "error")}
    solved = count["correct"] + count["WRONG"]
    lines = [
        f"{label}: {len(insts)} instances, solved {solved} (sat {sum(r.got == 'sat' for r in runs)},"
        f" unsat {sum(r.got == 'unsat' for r in runs)}), correct {count['correct']}, wrong {count['WRONG']},"
        f" unknown {count['unknown']}, timeouts {count['timeout']}, errors {count['error']}",
        f"{label}: time median {statistics.median(times):.2f}s, total {sum(times):.1f}s",
    ]
    inside = [float(r.detail["time_s"]) for r in runs if r.detail.get("time_s")]
    if inside:  # the verifier's own clock: the wall time above minus process start-up (imports, parsing)
        lines.append(
            f"{label}: in-process verification time (start-up excluded) median {statistics.median(inside):.2f}s"
            f" over {len(inside)} runs"
        )
    pairs = [
        (r.time_s, i.fastest_core_s)
        for i, r, s in zip(insts, runs, scores, strict=True)
        if s == "correct" and i.fastest_core_s
    ]
    if pairs:
        ratios = [a / b for a, b in pairs]
        lines.append(
            f"{label}: on the {len(pairs)} solved instances, time / fastest core tool (VNN-COMP,"
            f" AWS): median {statistics.median(ratios):.2f}x, total {sum(a for a, _ in pairs):.1f}s"
            f" vs {sum(b for _, b in pairs):.1f}s"
        )
    return lines


def side_by_side(insts: list[Instance], ours: list[Run], theirs: list[Run]) -> list[str]:
    """Solved counts of both tools and the time ratio on instances both solved correctly."""
    pairs = [
        (a, b)
        for i, a, b in zip(insts, ours, theirs, strict=True)
        if scored(i, a) == "correct" and scored(i, b) == "correct"
    ]
    ok_ours = sum(scored(i, r) == "correct" for i, r in zip(insts, ours, strict=True))
    ok_theirs = sum(scored(i, r) == "correct" for i, r in zip(insts, theirs, strict=True))
    lines = [f"side by side: nnassay solved {ok_ours} correctly, Marabou {ok_theirs}; both {len(pairs)}"]
    if pairs:
        lines.append(
            f"side by side: nnassay time / Marabou time on those {len(pairs)}: "
            + _ratios([(a.time_s, b.time_s) for a, b in pairs])
        )
    inside = [
        (float(a.detail["time_s"]), float(b.detail["time_s"]))
        for a, b in pairs
        if a.detail.get("time_s") and b.detail.get("time_s")
    ]
    if (
        inside
    ):  # both clocks start after the tool's imports, as VNN-COMP subtracts each tool's start-up overhead
        lines.append(
            f"side by side, start-up excluded on both sides: nnassay / Marabou on {len(inside)}: "
            + _ratios(inside)
        )
    return lines


def _ratios(times: list[tuple[float, float]]) -> str:
    """Median, min and max of ours / theirs over (ours, theirs) times, and both totals."""
    ratios = [a / max(b, 1e-3) for a, b in times]
    return (
        f"median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x),"
        f" totals {sum(a for a, _ in times):.1f}s vs {sum(b for _, b in times):.1f}s"
    )


def shout(inst: Instance, run: Run, tool: str) -> None:
    banner = "!" * 78
    text = (
        f"{banner}\n!!! WRONG ANSWER by {tool}: {inst.name} expected {inst.expected}, got {run.got}"
        f" ({run.detail})\n{banner}"
    )
    print(text, flush=True)
    print(text, file=sys.stderr, flush=True)


def pick(folders: list[str], sample: int | None, seed: int) -> list[Instance]:
    insts = [i for f in folders for i in load_instances(f)]
    if sample is not None and sample < len(insts):
        insts = sorted(random.Random(seed).sample(insts, sample), key=lambda i: (i.folder, i.name))
    return insts


def write_csv(path: Path, insts: list[Instance], ours: list[Run], theirs: list[Run] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        head = [
            "instance",
            "expected",
            "got",
            "time_s",
            "method",
            "timeout_s",
            "fastest_core_tool_s",
            "reason",
            "verify_s",
        ]
        out.writerow(head + (["marabou_got", "marabou_time_s", "marabou_verify_s"] if theirs else []))
        for k, (inst, run) in enumerate(zip(insts, ours, strict=True)):
            row = [
                inst.name,
                inst.expected,
                run.got,
                f"{run.time_s:.3f}",
                run.method,
                f"{inst.timeout_s:g}",
                inst.fastest_core_s or "",
                run.detail.get("reason", ""),
                run.detail.get("time_s", ""),
            ]
            out.writerow(
                row
                + (
                    [theirs[k].got, f"{theirs[k].time_s:.3f}", theirs[k].detail.get("time_s", "")]
                    if theirs
                    else []
                )
            )


def read_runs(path: Path, tool: str) -> dict[str, Run]:
    """Answers by instance name from an earlier CSV of this script: ``tool`` "nnassay" or "marabou"."""
    got, secs, inside = (
        ("got", "time_s", "verify_s")
        if tool == "nnassay"
        else ("marabou_got", "marabou_time_s", "marabou_verify_s")
    )
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(got) and r[got] != "skipped"]
    return {
        r["instance"]: Run(
            r[got],
            float(r[secs]),
            r["method"] if tool == "nnassay" else tool,
            {"reason": r.get("reason", ""), "time_s": r.get(inside, "")},
        )
        for r in rows
    }


def decided(runs: dict[str, Run]) -> dict[str, Run]:
    """The answers that are sat or unsat (an instance decided within a timeout is decided within any
    larger one, so only the others need running again)."""
    return {name: run for name, run in runs.items() if run.got in ("sat", "unsat")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="*", default=["acasxu", "mnistfc_2022", "oval21_2022"])
    parser.add_argument("--sample", type=int, help="Run N instances drawn at random (with --seed).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="Multiply every timeout by F.")
    parser.add_argument("--marabou", action="store_true", help="Also run Marabou on the same instances.")
    parser.add_argument(
        "--marabou-from", type=Path, help="Take Marabou's answers from an earlier CSV of this script."
    )
    parser.add_argument(
        "--ours-from", type=Path, help="Take nnassay's answers from an earlier CSV of this script."
    )
    parser.add_argument(
        "--rerun-undecided",
        action="store_true",
        help="With --ours-from: keep only its sat/unsat answers and run the rest again (e.g. the timeouts "
        "of a run at a smaller --timeout-scale, at the full timeouts).",
    )
    parser.add_argument(
        "--only-marabou", action="store_true", help="Run Marabou alone (nnassay rows: 'skipped')."
    )
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="Also run each tool on one property per network that holds at the box centre (expected sat).",
    )
    parser.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/vnncomp-<time>.csv).")
    args = parser.parse_args(argv)
    insts = pick(args.folders, args.sample, args.seed)
    args.marabou = args.marabou or args.only_marabou
    earlier = read_runs(args.marabou_from, "marabou") if args.marabou_from else {}
    ours_earlier = read_runs(args.ours_from, "nnassay") if args.ours_from else {}
    if args.rerun_undecided:
        ours_earlier = decided(ours_earlier)
    if args.marabou and not earlier and (why := marabou_available()):
        print(f"Marabou cannot run here: {why} (pip install maraboupy, extra 'bench')", file=sys.stderr)
        return 2
    scratch = RESULTS / f".scratch-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    ours: list[Run] = []
    theirs: list[Run] = []
    for k, inst in enumerate(insts, 1):
        timeout = inst.timeout_s * args.timeout_scale
        ours.append(
            Run("skipped", 0.0)
            if args.only_marabou
            else ours_earlier.get(inst.name) or run_ours(inst, timeout, scratch)
        )
        line = (
            f"[{k}/{len(insts)}] {inst.name} expected {inst.expected}: {ours[-1].got} {ours[-1].time_s:.2f}s"
        )
        if scored(inst, ours[-1]) == "WRONG":
            shout(inst, ours[-1], "nnassay")
        if args.marabou or earlier:
            theirs.append(earlier.get(inst.name) or run_marabou(inst, timeout))
            line += f" | marabou {theirs[-1].got} {theirs[-1].time_s:.2f}s"
            if scored(inst, theirs[-1]) == "WRONG":
                shout(inst, theirs[-1], "Marabou")
        print(line, flush=True)
    out = args.out or RESULTS / f"vnncomp-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    write_csv(out, insts, ours, theirs or None)
    checks = sanity(insts, scratch, args.marabou and not marabou_available()) if args.sanity else []
    (scratch / "result.txt").unlink(missing_ok=True)
    scratch.rmdir()
    lines = [] if args.only_marabou else summarize("nnassay", insts, ours)
    if theirs:
        lines += summarize("marabou", insts, theirs)
        lines += [] if args.only_marabou else side_by_side(insts, ours, theirs)
    print("\n".join(["", f"timeouts x{args.timeout_scale:g}; per-instance CSV: {out}", *lines, *checks]))
    wrong = sum(scored(i, r) == "WRONG" for i, r in zip(insts, ours, strict=True))
    if wrong:
        print(f"!!! {wrong} WRONG ANSWER(S) by nnassay: see the lines marked WRONG above !!!")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
