"""Where a goal's per-sample failures are: read from its tests' results and run-folder files, or
made again from the test's seed and checked against what the test recorded.

One function per source, tried in order on each of the goal's results (primary test first):
- attack and counterexample archives (``<attack>_adversarial.npz``, ``counterexamples.npz``) and
  the perturbed table (``tabular_perturbed.npz``): the failing inputs themselves;
- Gaussian / uniform noise: the noisy inputs drawn again from the test's seed, used only when
  their predictions reproduce the stored per-sample flags (else the clean rows are explained);
- other per-sample flags (``details['per_sample']``), ``details['non_robust_indices']`` (and an
  attack's or proof's listed rows when its archive is missing): rows;
- invalid input: the finite garbage inputs drawn again, kept only when the count of confident
  answers per case matches the test's;
- corruptions: the images at the highest severity made again (counts checked per corruption);
- domain shift: the misread rows of the shifted data set (explained against that data set).
A source that has nothing says why; that reason is kept when no source has failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nnassay.schemas.evidence import GoalVerdict
from nnassay.schemas.goals import DataSpec
from nnassay.schemas.plan import TestSpec
from nnassay.schemas.results import MethodResult, TestStatus
from nnassay.schemas.threats import CORRUPTIONS, GaussianNoise, UniformNoise
from nnassay.tasks.explain.failures import GoalFailures, failures_from_npz
from nnassay.tasks.io.data_io import Dataset, load_dataset
from nnassay.tasks.io.model_io import ModelRunner, to_probabilities

ARCHIVES = ("_adversarial.npz", "counterexamples.npz")
# per-sample flags whose True means 'handled right' (a failure is False) or 'failed' (True)
GOOD_FLAGS = (
    "accuracy",
    "certified_accuracy",
    "robust_sample_fraction",
    "rare_event_robust_fraction",
    "fraction_clever_above_eps",
)
BAD_FLAGS = ("label_flip_rate", "error_rate")
FINITE_GARBAGE = ("constant", "random_noise", "out_of_range")  # 'extreme' (1e20) overflows gradients
# methods whose results hold no per-sample failure (score distributions, model variants, properties)
NO_SAMPLES = frozenset(
    {
        "empirical.ood_detection",
        "empirical.deployment_consistency",
        "formal.vnnlib_property",
        "formal.max_stable_space",
    }
)


def can_have_failures(method: str) -> bool:
    """Whether a test of this method can leave per-sample failures to explain (for the plan's estimate)."""
    return method not in NO_SAMPLES


@dataclass(frozen=True)
class Found:
    """One goal's failures and the data their indices refer to, or why there are none."""

    failures: GoalFailures | None
    data: Dataset
    reason: str = ""


@dataclass(frozen=True)
class Source:
    """What a source reads: the goal's test and result, the model, the test's data and the run folder."""

    test: TestSpec
    result: MethodResult
    runner: ModelRunner
    data: Dataset  # the test's rows (the first ``test.samples`` of the test data)
    run_dir: Path
    k: int | None = None  # failures that will be explained (sources that pick in turns keep this many)

    @property
    def goal_id(self) -> str:
        return self.test.goal_id


def gather(
    verdict: GoalVerdict,
    tests: Sequence[TestSpec],
    results: Sequence[MethodResult],
    runner: ModelRunner,
    data: Dataset,
    run_dir: Path,
    *,
    k: int | None = None,
) -> Found:
    """The goal's per-sample failures from the first of its results (primary first) that has some
    (``k``: how many will be explained, so that sources taking cases in turns show each case)."""
    by_id = {r.test_id: r for r in results}
    ordered = sorted((t for t in tests if t.goal_id == verdict.goal_id), key=lambda t: not t.primary)
    reasons = []
    for test in ordered:
        result = by_id.get(test.test_id)
        if result is None or result.status == TestStatus.ERROR:
            reasons.append(
                f"{test.test_id}: no result to read" if result is None else f"{test.test_id}: error"
            )
            continue
        found = from_result(Source(test, result, runner, data.subset(test.samples), run_dir, k))
        if found.failures is not None and len(found.failures.indices):
            return found
        reasons.append(f"{test.test_id}: {found.reason}")
    return Found(None, data, "; ".join(reasons) or "no test of this goal ran")


def from_result(src: Source) -> Found:
    """The failures one result gives, trying each source in turn."""
    readers: list[Callable[[Source], Found | None]] = [
        from_archive,
        from_noise,
        from_flags,
        from_indices,
        from_invalid_input,
        from_corruption,
        from_domain_shift,
    ]
    for read in readers:
        found = read(src)
        if found is not None:
            return found
    return Found(None, src.data, f"{src.test.method} stores no per-sample failures")


def _none(src: Source, why: str) -> Found:
    return Found(None, src.data, why)


def _with_source(failures: GoalFailures, src: Source, where: str) -> GoalFailures:
    return replace(failures, source=f"{src.test.test_id}: {where}")


def from_archive(src: Source) -> Found | None:
    """Adversarial examples and counterexamples (x_adv, index); perturbed tables (x_pert, index)."""
    for artifact in src.result.artifacts:
        path = src.run_dir / artifact.path
        if artifact.path.endswith(ARCHIVES) and path.is_file():
            failures = _with_source(failures_from_npz(src.goal_id, path), src, artifact.path)
            origin = f"{src.test.method} failing input"
            failures = replace(failures, origins=(origin,) * len(failures.indices))
            why = "" if len(failures.indices) else f"{artifact.path} holds no failing input"
            return Found(failures, src.data, why)
        if artifact.path.endswith("tabular_perturbed.npz") and path.is_file():
            return _perturbed_table(src, path, artifact.path)
    return None


def _perturbed_table(src: Source, path: Path, where: str) -> Found:
    """Rows whose decision the perturbation changed (label flips) or made wrong (accuracy)."""
    with np.load(path, allow_pickle=False) as npz:
        x, index = np.asarray(npz["x_pert"], np.float32), np.asarray(npz["index"], np.int64)
    pred = src.runner.predict(x)
    clean = src.runner.predict(src.data.x[index])
    failed = pred != clean if src.test.metric == "label_flip_rate" else pred != src.data.y[index]
    origin = f"{src.test.threat.kind} perturbation"
    failures = GoalFailures(
        src.goal_id, index[failed], x[failed], origins=(origin,) * int(failed.sum()), source=""
    )
    return Found(_with_source(failures, src, where), src.data, "" if failed.any() else "no decision changed")


def stored_flags(result: MethodResult, metric: str) -> tuple[str, np.ndarray] | None:
    """(name, failure flags) of the stored per-sample outcomes: the goal's metric first."""
    from nnassay.tasks.methods.statistical.core import unpack_outcomes

    stored = result.details.get("per_sample")
    if not isinstance(stored, dict):
        return None
    names = [metric, *GOOD_FLAGS, *BAD_FLAGS]
    name = next((n for n in names if n in stored and n in (*GOOD_FLAGS, *BAD_FLAGS)), None)
    if name is None:
        return None
    flags = unpack_outcomes(stored[name])  # type: ignore[arg-type]
    return name, (~flags if name in GOOD_FLAGS else flags)


def _per_row(flags: np.ndarray, rows: int) -> np.ndarray:
    """Flags of several draws per row (row-major) reduced to one per row: failed in any draw."""
    if rows and flags.size % rows == 0:
        return np.asarray(flags.reshape(rows, -1).any(axis=1))
    return flags[:rows]


def from_flags(src: Source) -> Found | None:
    """Rows flagged as failures in ``details['per_sample']``."""
    found = stored_flags(src.result, src.test.metric)
    if found is None:
        return None
    name, flags = found
    failed = np.flatnonzero(_per_row(flags, len(src.data)))
    failures = GoalFailures(
        src.goal_id, failed, source=f"{src.test.test_id}: details['per_sample']['{name}']"
    )
    return Found(failures, src.data, "" if len(failed) else f"no sample flagged in '{name}'")


LISTED = ("non_robust_indices", "successful_indices", "falsified_indices")  # rows, when no archive


def from_indices(src: Source) -> Found | None:
    """Rows listed in the details: geometric worst case, or an attack or proof whose archive is gone
    (the clean rows are then explained)."""
    key = next((k for k in LISTED if isinstance(src.result.details.get(k), list)), None)
    if key is None:
        return None
    listed: Any = src.result.details[key]
    rows = np.asarray([int(i) for i in listed if isinstance(i, int)], np.int64)
    failures = GoalFailures(src.goal_id, rows, source=f"{src.test.test_id}: details['{key}']")
    return Found(failures, src.data, "" if len(rows) else f"no sample listed in '{key}'")


def noisy_inputs(src: Source, draw: int) -> np.ndarray:
    """The noisy inputs of one draw at the goal's strength, drawn as the noise test drew them."""
    from nnassay.tasks.methods.empirical.features import data_box
    from nnassay.tasks.methods.statistical.core import BLOCK, NoiseParams, perturb
    from nnassay.tasks.methods.statistical.feature_noise import FeatureNoise

    threat = src.test.threat
    assert isinstance(threat, GaussianNoise | UniformNoise)
    params = NoiseParams.model_validate(src.test.params)
    assert params.strength is not None
    step = sorted({*params.sweep, params.strength}).index(params.strength)
    x = src.data.x
    box = data_box(src.data, src.runner.value_range)  # tabular: noise in each feature's scale, as drawn
    features = None if box is None else FeatureNoise.of(box)
    blocks = [
        perturb(
            x[b * BLOCK : (b + 1) * BLOCK],
            threat,
            params.strength,
            np.random.default_rng([src.test.seed, step, draw, b]),
            src.runner.value_range,
            features,
        )
        for b in range(-(-len(x) // BLOCK))
    ]
    return np.concatenate(blocks) if blocks else x[:0]


def from_noise(src: Source) -> Found | None:
    """Noise flips: the noisy inputs themselves when drawing them again reproduces the stored flags."""
    if src.test.method != "statistical.noise_accuracy":
        return None
    found = from_flags(src)
    if found is None or found.failures is None or not len(found.failures.indices):
        return found
    name, flags = stored_flags(src.result, src.test.metric) or ("", np.zeros(0, bool))
    n = len(src.data)
    draws = flags.size // n if n else 0
    per_draw = flags.reshape(n, draws) if draws else flags.reshape(n, 0)
    clean = src.runner.predict(src.data.x)
    inputs = np.zeros_like(src.data.x)
    for draw in range(draws):
        noisy = noisy_inputs(src, draw)
        pred = src.runner.predict(noisy)
        again = pred != clean if name == "label_flip_rate" else pred != src.data.y
        if not np.array_equal(again, per_draw[:, draw]):
            why = "the noise drawn again does not reproduce the stored flags; clean rows explained"
            return Found(replace(found.failures, source=f"{found.failures.source} ({why})"), src.data)
        first = per_draw[:, draw] & ~per_draw[:, :draw].any(axis=1)
        inputs[first] = noisy[first]
    rows = found.failures.indices
    threat = src.test.threat
    strength = threat.sigma if isinstance(threat, GaussianNoise) else getattr(threat, "eps", None)
    origin = f"{threat.kind.replace('_', ' ')} at strength {strength:g}, drawn again from the test's seed"
    failures = replace(found.failures, inputs=inputs[rows], origins=(origin,) * len(rows))
    return Found(failures, src.data)


def invalid_cases(src: Source) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(case, inputs, confident flags) of every finite garbage case, drawn again as the test drew
    them, each kept only when its count of confident answers matches the stored count."""
    from nnassay.tasks.methods.empirical.invalid import InvalidParams, invalid_inputs

    params = InvalidParams.model_validate(src.test.params)
    x = src.data.x[: params.per_case]
    stored: Any = src.result.details.get("per_case", {})
    kept = []
    for i, case in enumerate(params.cases):
        if case not in FINITE_GARBAGE:
            continue
        inputs = invalid_inputs(x, case, garbage_bounds(src), np.random.default_rng([src.test.seed, i]))
        top = to_probabilities(src.runner.logits(inputs), "logits").max(axis=1)
        confident = np.isfinite(top) & (top > params.confidence_level)
        recorded = stored.get(case, {}).get("confident", {})
        if recorded.get("successes", round(recorded.get("value", -1) * len(x))) == int(confident.sum()):
            kept.append((case, inputs, confident))
    return kept


def garbage_bounds(src: Source) -> Any:
    """The value range invalid input used: the model's for images, each feature's for tables."""
    from nnassay.tasks.methods.empirical.features import data_columns

    data = src.data
    if data.kind != "tabular" or data.x.ndim != 2:
        return src.runner.value_range
    cols = data_columns(data)
    low, high = np.array([c.low for c in cols]), np.array([c.high for c in cols])
    return low, np.where(high > low, high, low + np.array([c.spread for c in cols]))


def from_invalid_input(src: Source) -> Found | None:
    """Confident answers to finite garbage, one input per test row, cases taken in turn."""
    if src.test.method != "empirical.invalid_input":
        return None
    cases = invalid_cases(src)
    picked: dict[int, tuple[str, np.ndarray]] = {}
    queues = [[(case, int(r), inputs[r]) for r in np.flatnonzero(conf)] for case, inputs, conf in cases]
    for turn in range(max((len(q) for q in queues), default=0)):  # cases in turns: each one shows
        for queue in queues:
            if turn < len(queue) and queue[turn][1] not in picked and len(picked) < (src.k or 1 << 30):
                picked[queue[turn][1]] = (queue[turn][0], queue[turn][2])
    if not picked:
        return _none(src, "no finite garbage input drawn again was answered with confidence")
    rows = np.array(sorted(picked), np.int64)
    failures = GoalFailures(
        src.goal_id,
        rows,
        np.stack([picked[int(r)][1] for r in rows]),
        against="runner_up",
        origins=tuple(f"invalid input: {picked[int(r)][0]}" for r in rows),
        available=int(sum(int(conf.sum()) for _, _, conf in cases)),
        source=f"{src.test.test_id}: cases {[c for c, _, _ in cases]} drawn again from the test's seed "
        "(counts of confident answers checked)",
    )
    return Found(failures, src.data)


def from_corruption(src: Source) -> Found | None:
    """Rows read right when clean and wrong under a corruption at the highest severity."""
    if src.test.method != "empirical.corruption_accuracy":
        return None
    from nnassay.tasks.methods.empirical.corruptions import corrupt

    cells: Any = src.result.details.get("accuracy", {})
    severities: Any = src.test.params.get("severities") or [5]
    severity = max(int(s) for s in severities)
    x, y = src.data.x, src.data.y
    clean = src.runner.predict(x) == y
    picked: dict[int, tuple[str, np.ndarray]] = {}
    for name in cells:
        rng = np.random.default_rng([src.test.seed, CORRUPTIONS.index(name)])
        xc = corrupt(x, name, severity, rng=rng, layout=src.runner.layout, value_range=src.runner.value_range)
        right = src.runner.predict(xc) == y
        cell = cells[name].get(str(severity), {})
        if round(cell.get("accuracy", -1) * cell.get("n", 0)) != int(right.sum()):
            continue  # not reproduced: not explained
        for row in np.flatnonzero(clean & ~right):
            picked.setdefault(int(row), (name, xc[row]))
    if not picked:
        return _none(src, f"no corruption at severity {severity} drawn again misread a clean-correct row")
    rows = np.array(sorted(picked), np.int64)
    failures = GoalFailures(
        src.goal_id,
        rows,
        np.stack([picked[int(r)][1] for r in rows]),
        origins=tuple(f"{picked[int(r)][0]} at severity {severity}" for r in rows),
        source=f"{src.test.test_id}: corruptions at severity {severity} drawn again (accuracy checked)",
    )
    return Found(failures, src.data)


def from_domain_shift(src: Source) -> Found | None:
    """Misread rows of the shifted data set (the explained data is then the shifted set)."""
    if src.test.method != "empirical.domain_shift" or not src.test.params.get("path"):
        return None
    path = Path(str(src.test.params["path"]))
    shifted = load_dataset(DataSpec(path=path), src.runner)
    wrong = np.flatnonzero(src.runner.predict(shifted.x) != shifted.y)
    failures = GoalFailures(
        src.goal_id, wrong, origins=None, source=f"{src.test.test_id}: misread rows of {path.name}"
    )
    return Found(failures, shifted, "" if len(wrong) else "every shifted row is read right")
