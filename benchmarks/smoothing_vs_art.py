"""Randomized smoothing: nnassay's CERTIFY against ART's, and our sampling throughput against raw ORT.

Usage: python benchmarks/smoothing_vs_art.py [--images 100] [--n0 100] [--n 10000] [--alpha 0.001]
       [--batch 10000] [--rounds 3] [--json benchmarks/results/smoothing_vs_art.json]

Both certify the same test images of the bundled digits model with the same sigma, n0, n and alpha.
ART (``NumpyRandomizedSmoothing`` over a ``BlackBoxClassifierNeuralNetwork`` calling the same ONNX
Runtime session) draws its own noise, so the two certified accuracies are compared as estimates:
Clopper-Pearson intervals per side and McNemar's exact test on the per-image outcomes. Throughput is
noisy draws per second; the raw rate is ONNX Runtime on ready-made batches of the same size.
Timings alternate (raw, ours) over ``--rounds`` rounds and report medians, since a shared machine's
load changes during the run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from nnassay.schemas.goals import ModelSpec
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.statistical.smoothing import certify
from nnassay.tasks.stats.contrast import compare_paired
from nnassay.tasks.stats.intervals import proportion_interval

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits"
RADII = (0.0, 0.25, 0.5)


def machine() -> dict[str, str]:
    """nproc and the CPU model name, as lscpu reports them."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc, "cpu": cpu, "python": platform.python_version()}


def raw_rate(model: ModelRunner, rows: int, total: int) -> float:
    """ONNX Runtime rows per second on ready-made batches of ``rows`` inputs (no noise, no counting)."""
    batch = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32)
    feed = {model.input_name: batch}
    model.session.run(None, feed)
    started = time.perf_counter()
    for _ in range(max(total // rows, 1)):
        model.session.run(None, feed)
    return max(total // rows, 1) * rows / (time.perf_counter() - started)


def ours(model: ModelRunner, x: np.ndarray, sigma: float, args: argparse.Namespace) -> tuple[dict, float]:
    started = time.perf_counter()
    certs, _ = certify(model, x, sigma, args.n0, args.n, args.alpha, seed=1, batch=args.batch)
    elapsed = time.perf_counter() - started
    return {"prediction": certs.prediction, "radius": certs.radius}, elapsed


def art(model: ModelRunner, x: np.ndarray, sigma: float, args: argparse.Namespace) -> tuple[dict, float]:
    from art.estimators.certification.randomized_smoothing import NumpyRandomizedSmoothing
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    base = BlackBoxClassifierNeuralNetwork(
        lambda batch: model.logits(batch.astype(np.float32), batch_size=len(batch)),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    smoothed = NumpyRandomizedSmoothing(base, sample_size=args.n0, scale=sigma, alpha=args.alpha)
    np.random.seed(1)  # ART draws its noise from NumPy's global generator
    started = time.perf_counter()
    prediction, radius = smoothed.certify(x, n=args.n, batch_size=args.batch)
    return {"prediction": prediction, "radius": radius}, time.perf_counter() - started


def certified(result: dict, y: np.ndarray, r: float) -> np.ndarray:
    return (result["prediction"] == y) & (result["radius"] >= r)


def compare(sigma: float, mine: dict, theirs: dict, y: np.ndarray) -> list[dict]:
    rows = []
    for r in RADII:
        a, b = certified(mine, y, r), certified(theirs, y, r)
        ci_a, ci_b = proportion_interval(int(a.sum()), len(y)), proportion_interval(int(b.sum()), len(y))
        test = compare_paired(a, b)
        rows.append(
            {
                "sigma": sigma,
                "radius": r,
                "nnassay": float(a.mean()),
                "art": float(b.mean()),
                "nnassay_ci": [ci_a.low, ci_a.high],
                "art_ci": [ci_b.low, ci_b.high],
                "intervals_overlap": ci_a.low <= ci_b.high and ci_b.low <= ci_a.high,
                "mcnemar_p": test.p_value,
                "discordant": list(test.discordant or ()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "smoothing_vs_art.json"
    )
    args = parser.parse_args()
    model = ModelRunner(ModelSpec(path=DIGITS / "model.onnx"), prefer_cuda=False)
    with np.load(DIGITS / "test.npz") as data:
        x, y = data["x"][: args.images].astype(np.float32), data["y"][: args.images]
    draws = len(x) * (args.n0 + args.n)
    report: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "images": len(x),
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "batch": args.batch,
        "provider": model.provider,
        "accuracy": [],
        "timing": [],
    }
    for sigma in (0.25, 0.5):
        raw: list[float] = []
        mine_t: list[float] = []
        art_t: list[float] = []
        mine: dict = {}
        for _ in range(args.rounds):
            raw.append(raw_rate(model, args.batch, draws))
            mine, elapsed = ours(model, x, sigma, args)
            mine_t.append(elapsed)
        theirs, elapsed = art(model, x, sigma, args)
        art_t.append(elapsed)
        report["accuracy"] += compare(sigma, mine, theirs, y)
        ours_rate = draws / statistics.median(mine_t)
        report["timing"].append(
            {
                "sigma": sigma,
                "draws": draws,
                "nnassay_s": statistics.median(mine_t),
                "art_s": art_t[0],
                "nnassay_draws_per_s": ours_rate,
                "art_draws_per_s": draws / art_t[0],
                "raw_ort_rows_per_s": statistics.median(raw),
                "ratio_to_raw": ours_rate / statistics.median(raw),
                "rounds": {"raw": raw, "nnassay_s": mine_t},
            }
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['date']} on {m['nproc']} x {m['cpu']} ({report['provider']}); {report['images']} "
        f"digits test images, n0={report['n0']}, n={report['n']}, alpha={report['alpha']}, "
        f"batch={report['batch']}.",
        "",
        "| sigma | radius | nnassay certified acc. [95% CI] | ART certified acc. [95% CI] | "
        "CIs overlap | McNemar p (discordant) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["accuracy"]:
        lines.append(
            f"| {row['sigma']} | {row['radius']} | {row['nnassay']:.2f} [{row['nnassay_ci'][0]:.2f}, "
            f"{row['nnassay_ci'][1]:.2f}] | {row['art']:.2f} [{row['art_ci'][0]:.2f}, "
            f"{row['art_ci'][1]:.2f}] | {'yes' if row['intervals_overlap'] else 'NO'} | "
            f"{row['mcnemar_p']:.3g} ({row['discordant'][0]}/{row['discordant'][1]}) |"
        )
    lines += [
        "",
        "| sigma | noisy draws | nnassay time s | ART time s | nnassay draws/s | ART draws/s | "
        "raw ORT rows/s | nnassay / raw |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in report["timing"]:
        lines.append(
            f"| {t['sigma']} | {t['draws']:,} | {t['nnassay_s']:.1f} | {t['art_s']:.1f} | "
            f"{t['nnassay_draws_per_s']:,.0f} | {t['art_draws_per_s']:,.0f} | "
            f"{t['raw_ort_rows_per_s']:,.0f} | {t['ratio_to_raw']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
