"""Calibration and power of field monitoring (``nnassay.tasks.monitoring``), printed as tables.

Usage: python benchmarks/monitoring.py [--repeats 100] [--power-repeats 50] [--compare-repeats 30] [--field 200]

1. False-alarm rate: the share of random same-distribution splits of the reference data on which
   the verdict says "drift" (digits example: test.npz split 340 / field; a tabular MLP on uniform
   data), with its Clopper-Pearson 95% interval; it should not lie above alpha = 0.05.
2. Power on known shifts: the share of shifted, unlabelled field batches (the usual field case)
   on which the verdict says "drift", and which tests named it (digits: brightness +b, Gaussian noise sigma; tabular: one feature
   shifted by k standard deviations).
3. Output test choice: MMD permutation test on the softmax vectors and on log softmax (the one
   ``outputs.py`` uses) vs a classifier two-sample test (C2ST: logistic regression on log softmax,
   trained on half the pooled sample, accuracy on the other half against the majority share by an
   exact binomial test; Lopez-Paz & Oquab, ICLR 2017), power and time per test, on the model's
   outputs alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import binomtest

from nnassay.schemas.goals import DataSpec, Layout, ModelSpec
from nnassay.schemas.monitoring import DriftVerdict, MonitoringReport
from nnassay.tasks.io.data_io import Dataset, load_dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring.field_io import UNLABELLED
from nnassay.tasks.monitoring.monitor import MonitorOptions, monitor
from nnassay.tasks.monitoring.outputs import LOG_FLOOR, mmd_permutation_test
from nnassay.tasks.stats.intervals import proportion_interval

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits"
ALPHA = 0.05
OPTIONS = MonitorOptions(alpha=ALPHA, permutations=200, estimate_accuracy=False)
Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def tabular_model(folder: Path) -> ModelRunner:
    """A 5-8-3 ReLU MLP with random weights (like the tests' ``tabular_case``)."""
    rng = np.random.default_rng(4)
    w0, b0, w1, b1 = (
        rng.normal(0, 0.45, (8, 5)),
        rng.normal(0, 0.1, 8),
        rng.normal(0, 0.35, (3, 8)),
        rng.normal(0, 0.1, 3),
    )
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for a, n in ((w0, "W0"), (b0, "B0"), (w1, "W1"), (b1, "B1"))
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "B0"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W1", "B1"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tabular",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "tabular.onnx")
    return ModelRunner(ModelSpec(path=folder / "tabular.onnx", layout=Layout.FLAT), prefer_cuda=False)


def tabular_pool(model: ModelRunner, n: int) -> Dataset:
    x = np.random.default_rng(0).uniform(0, 1, (n, 5)).astype(np.float32)
    return Dataset(
        x=x,
        y=model.predict(x),
        layout=model.layout,
        kind="tabular",
        path=Path("pool.npz"),
        sha256="0" * 64,
        feature_names=tuple(str(i) for i in range(5)),
    )


def split(data: Dataset, first: int, seed: int) -> tuple[Dataset, Dataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    a, b = order[:first], order[first:]
    return replace(data, x=data.x[a], y=data.y[a]), replace(data, x=data.x[b], y=data.y[b])


def run(
    pool: Dataset, model: ModelRunner, first: int, field: int, shift: Shift | None, repeats: int
) -> tuple[list[MonitoringReport], float]:
    reports, started = [], time.perf_counter()
    for repeat in range(repeats):
        reference, rest = split(pool, first, seed=1000 + repeat)
        batch = rest.subset(field)
        if shift is not None:  # the usual field case: no labels
            moved = shift(batch.x, np.random.default_rng(repeat)).astype(np.float32)
            batch = replace(batch, x=moved, y=np.full(len(batch), UNLABELLED))
        reports.append(monitor(reference, batch, model, alpha=ALPHA, seed=repeat, options=OPTIONS))
    return reports, (time.perf_counter() - started) / repeats


def row(name: str, reports: list[MonitoringReport], seconds: float) -> str:
    alarms = sum(r.verdict == DriftVerdict.DRIFT for r in reports)
    interval = proportion_interval(alarms, len(reports), 0.95)
    seen = Counter(what for r in reports for what in r.drifted)
    top = ", ".join(f"{what} {count}" for what, count in seen.most_common(3))
    return f"  {name:<28} {alarms:>3}/{len(reports):<3} {alarms / len(reports):6.2f}  [{interval.low:.3f}, {interval.high:.3f}]  {seconds:5.2f}s  {top}"


def c2st(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """p-value of a classifier two-sample test (logistic regression, one random half for training)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    order = rng.permutation(len(x))
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    features = np.log(np.clip(x, 1e-12, None))
    clf = LogisticRegression(max_iter=500).fit(features[train], y[train])
    majority = max(np.mean(y[test]), 1 - np.mean(y[test]))
    correct = int(np.sum(clf.predict(features[test]) == y[test]))
    return float(binomtest(correct, len(test), majority, alternative="greater").pvalue)


TESTS = ("mmd softmax", "mmd log", "c2st log")


def timed_test(test: str, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(p-value, seconds) of one output test on two sets of softmax vectors."""
    started = time.perf_counter()
    if test == "c2st log":
        p_value = c2st(a, b, rng)
    else:
        if test == "mmd log":
            a, b = np.log(np.clip(a, LOG_FLOOR, None)), np.log(np.clip(b, LOG_FLOOR, None))
        p_value = mmd_permutation_test(a, b, permutations=200, rng=rng)[1]
    return p_value, time.perf_counter() - started


def compare_output_tests(
    pool: Dataset, model: ModelRunner, shifts: dict[str, Shift | None], repeats: int, field: int
) -> None:
    print(
        f"\n3. output tests on the digits model's outputs alone (field {field}, {repeats} repeats, level {ALPHA})"
    )
    print(f"  {'shift':<20}" + "".join(f"{t + ' power':>18}{'s':>7}" for t in TESTS))
    for name, shift in shifts.items():
        hits, times = dict.fromkeys(TESTS, 0), dict.fromkeys(TESTS, 0.0)
        for repeat in range(repeats):
            reference, rest = split(pool, 340, seed=2000 + repeat)
            rng = np.random.default_rng(repeat)
            moved = shift(rest.subset(field).x, rng).astype(np.float32) if shift else rest.subset(field).x
            a, b = model.probabilities(reference.x), model.probabilities(moved)
            for test in TESTS:
                p_value, seconds = timed_test(test, a, b, rng)
                hits[test] += p_value <= ALPHA
                times[test] += seconds
        print(f"  {name:<20}" + "".join(f"{hits[t] / repeats:18.2f}{times[t] / repeats:7.3f}" for t in TESTS))


def image_shifts() -> dict[str, Shift]:
    def bright(b: float) -> Shift:
        return lambda x, rng: np.clip(x + b, 0, 1)

    def noise(s: float) -> Shift:
        return lambda x, rng: np.clip(x + rng.normal(0, s, x.shape), 0, 1)

    return {
        "brightness +0.05": bright(0.05),
        "brightness +0.1": bright(0.1),
        "brightness +0.2": bright(0.2),
        "noise sigma 0.05": noise(0.05),
        "noise sigma 0.1": noise(0.1),
        "noise sigma 0.2": noise(0.2),
    }


def tabular_shifts() -> dict[str, Shift]:
    def feature(k: float) -> Shift:
        def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            out = x.copy()
            out[:, 2] += k * np.sqrt(1 / 12)  # k standard deviations of U(0, 1)
            return out

        return apply

    return {f"feature 2 +{k:g} sd": feature(k) for k in (0.1, 0.2, 0.3, 0.5, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="same-distribution splits per data set")
    parser.add_argument("--power-repeats", type=int, default=50, help="shifted batches per shift")
    parser.add_argument("--compare-repeats", type=int, default=30, help="batches per shift for MMD vs C2ST")
    parser.add_argument("--field", type=int, default=200, help="field batch size")
    args = parser.parse_args()
    digits = ModelRunner(ModelSpec(path=DIGITS / "model.onnx", layout=Layout.NCHW), prefer_cuda=False)
    digits_pool = load_dataset(DataSpec(path=DIGITS / "test.npz"), digits)
    with tempfile.TemporaryDirectory() as tmp:
        tab = tabular_model(Path(tmp))
        tab_pool = tabular_pool(tab, 1000 + args.field)
        header = f"  {'case':<28} alarms   rate   CP 95% interval    time  most often named"
        print(f"1. false alarms, alpha {ALPHA}, Holm over all tests, {args.repeats} same-distribution splits")
        print(header)
        print(
            row(f"digits 340 vs {args.field}", *run(digits_pool, digits, 340, args.field, None, args.repeats))
        )
        print(row(f"tabular 1000 vs {args.field}", *run(tab_pool, tab, 1000, args.field, None, args.repeats)))
        print(
            f"\n2. power (share of shifted unlabelled batches flagged), {args.power_repeats} batches per shift"
        )
        print(header)
        for name, shift in image_shifts().items():
            print(
                row(f"digits {name}", *run(digits_pool, digits, 340, args.field, shift, args.power_repeats))
            )
        for name, shift in tabular_shifts().items():
            print(row(f"tabular {name}", *run(tab_pool, tab, 1000, args.field, shift, args.power_repeats)))
    shifts: dict[str, Shift | None] = {"none": None, **image_shifts()}
    compare_output_tests(digits_pool, digits, shifts, args.compare_repeats, args.field)


if __name__ == "__main__":
    main()
