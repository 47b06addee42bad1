"""Explain one goal's failures: choose samples, attribute, score faithfulness, write arrays, conclude.

``explain_goal`` is the entry point the flow calls (through a task) for each failed or inconclusive
goal with per-sample failures (``GoalFailures``, see ``failures.py``).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnassay.schemas.explain import (
    AttributionMethodName,
    ExplainedSample,
    ExplanationSet,
    FaithfulnessSummary,
    FeatureFlip,
    SampleFaithfulness,
    SanityCheck,
)
from nnassay.tasks.explain import faithfulness as faith
from nnassay.tasks.explain.attributions import (
    GRADIENT_METHODS,
    Attributor,
    Units,
    black_box_method,
    feature_units,
    patch_units,
    torch_executor,
)
from nnassay.tasks.explain.failures import GoalFailures
from nnassay.tasks.explain.select import select_samples
from nnassay.tasks.explain.statement import statement
from nnassay.tasks.explain.tabular import feature_flips, feature_grids
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.files import write_atomic
from nnassay.tasks.io.model_io import ModelRunner


@dataclass(frozen=True)
class ExplainOptions:
    """How to explain: how many samples, which methods, how thoroughly to test faithfulness."""

    k: int = 8  # failed samples explained
    contrast: int = 2  # correctly handled samples shown beside them
    seed: int = 0
    spread: bool = False  # True: a seeded draw over all failures; False: the lowest indices
    methods: tuple[AttributionMethodName, ...] | None = None  # None: IG and saliency, or the black box
    black_box: bool = False  # force ONNX Runtime alone (occlusion / feature ablation)
    steps: int = 32  # Integrated Gradients steps
    random_orders: int = 5  # random rankings per sample for the faithfulness baseline
    sanity_threshold: float = 0.5
    confidence: float = 0.95
    patch: int | None = None  # image region side in pixels; None: at most 8 x 8 regions
    top: int = 5  # top features reported per sample


@dataclass(frozen=True)
class Chosen:
    """The explained batch: rows, roles, inputs, and the classes attributed (a against b)."""

    index: np.ndarray
    roles: list[str]
    kinds: list[str]
    x: np.ndarray
    true: np.ndarray
    a: np.ndarray
    b: np.ndarray
    origins: list[str | None]


def _inputs(
    data: Dataset, failures: GoalFailures, index: np.ndarray, n_failed: int
) -> tuple[np.ndarray, list[str], list[str | None]]:
    """The inputs explained: the failing input found for a failed row when there is one, else the row;
    with each input's kind and origin."""
    found: dict[int, int] = {}
    if failures.inputs is not None:
        found = {int(i): n for n, i in enumerate(failures.indices)}
    kinds = ["failing_input" if int(i) in found and n < n_failed else "clean" for n, i in enumerate(index)]
    inputs = failures.inputs
    rows = [
        inputs[found[int(i)]] if kind == "failing_input" and inputs is not None else data.x[i]
        for i, kind in zip(index, kinds, strict=True)
    ]
    origins = [
        failures.origins[found[int(i)]] if kind == "failing_input" and failures.origins else None
        for i, kind in zip(index, kinds, strict=True)
    ]
    return (np.stack(rows).astype(np.float32) if rows else data.x[:0]), kinds, origins


def attributed_classes(
    logits: np.ndarray, true: np.ndarray, against_true: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per sample: the chosen class, against the true one, or the runner-up when it is right
    (always the runner-up when ``against_true`` is False)."""
    ranked = np.argsort(-logits, axis=1, kind="stable")
    if not len(ranked):
        return ranked[:, 0], ranked[:, 0]
    a = ranked[:, 0]
    return a, np.where((a != true) & against_true, true, ranked[:, 1])


def choose(runner: ModelRunner, data: Dataset, failures: GoalFailures, options: ExplainOptions) -> Chosen:
    """The failures and contrast rows to explain, with the classes to attribute: the chosen class
    against the true one, or against the runner-up when the model is right."""
    correct = failures.correct
    if correct is None:
        correct = np.flatnonzero(runner.predict(data.x) == data.y)
    seed = options.seed if options.spread else None
    pick = select_samples(failures.indices, correct, k=options.k, contrast=options.contrast, seed=seed)
    index = np.array([*pick.failures, *pick.contrast], np.int64)
    x, kinds, origins = _inputs(data, failures, index, len(pick.failures))
    true = data.y[index].astype(np.int64)
    logits = runner.logits(x) if len(index) else np.zeros((0, runner.n_classes))
    a, b = attributed_classes(logits, true, failures.against == "true")
    roles = ["failure"] * len(pick.failures) + ["contrast"] * len(pick.contrast)
    return Chosen(index, roles, kinds, x, true, a, b, origins)


def reference(data: Dataset, runner: ModelRunner) -> tuple[np.ndarray, str]:
    """The input that stands for 'feature removed': the lowest value for images, the mean row for tables."""
    if data.kind == "image":
        low = runner.value_range[0]
        return np.full(data.x.shape[1:], low, np.float32), f"pixels set to {low:g} (lowest value)"
    return data.x.mean(axis=0).astype(np.float32), "features set to their mean over the test data"


def units_for(data: Dataset, options: ExplainOptions) -> Units:
    """Pixel regions for images, one unit per feature for tables."""
    shape = tuple(data.x.shape[1:])
    if data.kind == "image" and len(shape) >= 2:  # flattened images are explained pixel by pixel
        return patch_units(shape, data.layout, options.patch)
    return feature_units(int(np.prod(shape)), tuple(data.feature_names), shape)


def attributor(runner: ModelRunner, data: Dataset, options: ExplainOptions) -> tuple[Attributor, str, str]:
    """The attributor for this model, the engine used and why."""
    module, why = (None, "black box requested") if options.black_box else torch_executor(runner)
    baseline, _ = reference(data, runner)
    engine = "torch_executor" if module is not None else "onnx_runtime"
    tool = Attributor(runner, module, baseline, units_for(data, options), runner.n_classes, options.steps)
    return tool, engine, why


def methods_for(engine: str, kind: str, options: ExplainOptions) -> tuple[AttributionMethodName, ...]:
    """The requested methods (gradient ones only when the executor runs), or the defaults."""
    wanted = options.methods or ((*GRADIENT_METHODS,) if engine == "torch_executor" else ())
    usable = tuple(m for m in wanted if engine == "torch_executor" or m not in GRADIENT_METHODS)
    return usable or (black_box_method(kind),)


def save_array(folder: Path, array: np.ndarray) -> tuple[str, str]:
    """Write ``array`` as ``<sha256>.npy`` in folder; returns (digest, file name)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    write_atomic(folder / f"{digest}.npy", buffer.getvalue())
    return digest, f"{digest}.npy"


def deviation(tool: Attributor, runner: ModelRunner, x: np.ndarray) -> float | None:
    """Largest |logit| difference between the torch executor and ONNX Runtime on the batch."""
    if tool.module is None or not len(x):
        return None
    with torch.no_grad():
        torch_logits = tool.module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    return float(np.abs(torch_logits - runner.logits(x)).max())


def randomised_runner(runner: ModelRunner, folder: Path, seed: int) -> ModelRunner:
    """The same model with shuffled weights, same preprocessing and output (for the sanity check)."""
    path = faith.write_randomised(runner.path, folder, seed)
    return ModelRunner(runner.spec.model_copy(update={"path": path}), prefer_cuda=False)


def sanity_checks(
    runner: ModelRunner,
    data: Dataset,
    chosen: Chosen,
    originals: dict[AttributionMethodName, np.ndarray],
    options: ExplainOptions,
) -> list[SanityCheck]:
    """Attribute the same inputs and classes on the weight-shuffled copy; compare rankings.
    When nothing can be randomised (no float weight tensor, e.g. a tree ensemble, or a shuffled copy
    whose outputs on the chosen samples equal the model's), the check is recorded as not applicable."""
    import onnx

    threshold = options.sanity_threshold
    if not faith.weight_tensors(onnx.load(str(runner.path))):
        note = "the model has no learnable float weight tensor to shuffle (e.g. a tree ensemble)"
        return [faith.not_applicable(m, note, threshold) for m in originals]
    with tempfile.TemporaryDirectory(prefix="nnassay-explain-") as tmp:
        shuffled = randomised_runner(runner, Path(tmp), options.seed)
        if np.array_equal(shuffled.logits(chosen.x), runner.logits(chosen.x)):
            note = "the copy with shuffled weights gives exactly the model's outputs on these samples"
            return [faith.not_applicable(m, note, threshold) for m in originals]
        tool, _, _ = attributor(shuffled, data, options)
        return [
            faith.sanity_check(
                m,
                a,
                tool.run(m, chosen.x, chosen.a, chosen.b),
                x=chosen.x,
                baseline=tool.baseline,
                units=tool.units,
                threshold=threshold,
            )
            for m, a in originals.items()
        ]


def summary(
    method: AttributionMethodName,
    scores: list[SampleFaithfulness],
    roles: list[str],
    options: ExplainOptions,
) -> FaithfulnessSummary:
    """Faithfulness over the explained failures (over the contrast samples when there is none)."""
    failed = [s for s, r in zip(scores, roles, strict=True) if r == "failure"]
    rng = np.random.default_rng([options.seed, 1])
    return faith.summarise(method, failed or scores, confidence=options.confidence, rng=rng)


def explained(
    chosen: Chosen,
    n: int,
    method: AttributionMethodName,
    attribution: np.ndarray,
    tool: Attributor,
    folder: Path,
    *,
    scores: SampleFaithfulness,
    flips: list[FeatureFlip],
    top: int,
) -> ExplainedSample:
    """One sample's record: classes, top features, faithfulness, arrays written by digest."""
    unit_scores = tool.units.scores(attribution)
    ranked = np.argsort(-unit_scores, kind="stable")[:top]
    attr_sha, attr_file = save_array(folder, attribution)
    input_sha, input_file = save_array(folder, chosen.x[n])
    return ExplainedSample(
        sample_index=int(chosen.index[n]),
        role=chosen.roles[n],  # type: ignore[arg-type]
        method=method,
        predicted_class=int(chosen.a[n]),
        true_class=int(chosen.true[n]),
        contrast_class=int(chosen.b[n]),
        input_kind=chosen.kinds[n],  # type: ignore[arg-type]
        top_features=[tool.units.names[i] for i in ranked],
        top_scores=[float(unit_scores[i]) for i in ranked],
        faithfulness=scores,
        feature_flips=flips,
        attribution_sha256=attr_sha,
        input_sha256=input_sha,
        attribution_file=attr_file,
        input_file=input_file,
        origin=chosen.origins[n],
    )


def flips_for(runner: ModelRunner, data: Dataset, chosen: Chosen) -> list[list[FeatureFlip]]:
    """Tabular: the single-feature changes that flip each explained decision; images: none."""
    if data.kind == "image" or data.x.ndim != 2:
        return [[] for _ in chosen.index]
    grids = feature_grids(data.x, data.features)
    names = feature_units(data.x.shape[1], tuple(data.feature_names)).names
    return [feature_flips(runner, x, names, grids) for x in chosen.x]


def faithfulness_of(
    runner: ModelRunner, tool: Attributor, chosen: Chosen, attribution: np.ndarray, options: ExplainOptions
) -> list[SampleFaithfulness]:
    """Deletion/insertion scores of every explained sample (seeded random orders)."""
    rng = np.random.default_rng([options.seed, 0])
    return [
        faith.sample_faithfulness(
            runner,
            x,
            int(a),
            tool.units.scores(attr),
            tool.units,
            tool.baseline,
            rng=rng,
            random_orders=options.random_orders,
        )
        for x, a, attr in zip(chosen.x, chosen.a, attribution, strict=True)
    ]


def explain_goal(
    runner: ModelRunner,
    data: Dataset,
    failures: GoalFailures,
    folder: Path,
    options: ExplainOptions | None = None,
) -> ExplanationSet:
    """Explain up to ``options.k`` failures of one goal (and a few correct samples for contrast).

    Arrays (attributions, explained inputs) are written to ``folder`` as ``<sha256>.npy``.
    """
    options = options or ExplainOptions()
    start = time.perf_counter()
    tool, engine, why = attributor(runner, data, options)
    methods = methods_for(engine, data.kind, options)
    chosen = choose(runner, data, failures, options)
    attributions = (
        {m: tool.run(m, chosen.x, chosen.a, chosen.b) for m in methods} if len(chosen.index) else {}
    )
    scores = {m: faithfulness_of(runner, tool, chosen, a, options) for m, a in attributions.items()}
    flips = flips_for(runner, data, chosen)
    samples = [
        explained(chosen, n, m, a[n], tool, folder, scores=scores[m][n], flips=flips[n], top=options.top)
        for m, a in attributions.items()
        for n in range(len(chosen.index))
    ]
    summaries = [summary(m, scores[m], chosen.roles, options) for m in attributions]
    sanity = sanity_checks(runner, data, chosen, attributions, options) if attributions else []
    n_failed = chosen.roles.count("failure")
    available = failures.available if failures.available is not None else len(np.unique(failures.indices))
    return ExplanationSet(
        goal_id=failures.goal_id,
        methods=list(methods),
        engine=engine,  # type: ignore[arg-type]
        engine_reason=why,
        executor_max_deviation=deviation(tool, runner, chosen.x),
        failures_available=available,
        source=failures.source,
        samples=samples,
        faithfulness=summaries,
        sanity=sanity,
        baseline=reference(data, runner)[1],
        statement=statement(summaries, sanity, failures=n_failed, available=available, engine_reason=why),
        time_s=time.perf_counter() - start,
    )
