"""The entry point's plumbing: sample choice, failing inputs from artifacts, arrays by digest,
feature flips, pictures, the time estimate and the schema."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from nnassay.schemas.explain import ExplanationSet
from nnassay.schemas.goals import FeatureSpec, Layout
from nnassay.tasks.explain import (
    ExplainOptions,
    GoalFailures,
    UnitCosts,
    estimate_seconds,
    explain_goal,
    failures_from_flags,
    failures_from_npz,
    measure_unit_costs,
    panel_png,
)
from nnassay.tasks.explain.attributions import torch_executor
from nnassay.tasks.explain.select import select_samples
from nnassay.tasks.explain.tabular import feature_flips, feature_grids
from tests.explain.models import KEY_FEATURE, NAMES, image_case, tabular_case

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return tabular_case(tmp_path_factory.mktemp("goal"))


def test_selection_is_deterministic_and_keeps_contrast_apart() -> None:
    plain = select_samples([9, 3, 7, 3, 1], [0, 1, 2, 4], k=2, contrast=2)
    assert plain.failures == (1, 3) and plain.contrast == (0, 2)
    drawn = [select_samples(range(100), range(100, 200), k=8, seed=5) for _ in range(2)]
    assert drawn[0] == drawn[1] and list(drawn[0].failures) == sorted(drawn[0].failures)
    assert drawn[0].failures != tuple(range(8)) and len(drawn[0].contrast) == 2
    assert select_samples([], [4], k=8).failures == ()


def test_adversarial_inputs_are_explained_in_place_of_the_rows(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    rows = np.array([11, 12])  # correctly classified rows; their 'adversarial' copies flip feature 2
    x_adv = data.x[rows].copy()
    x_adv[:, KEY_FEATURE] = 1.0 - x_adv[:, KEY_FEATURE]
    buffer = io.BytesIO()
    np.savez(buffer, x_adv=x_adv, index=rows, label=data.y[rows])
    failures = failures_from_npz("G6", buffer.getvalue())
    found = explain_goal(model, data, failures, tmp_path, ExplainOptions(methods=("saliency",), contrast=0))
    assert [s.input_kind for s in found.samples] == ["failing_input", "failing_input"]
    assert all(s.predicted_class != s.true_class == s.contrast_class for s in found.samples)
    assert found.failures_available == 2 and "too few samples" in found.statement


def test_garbage_is_attributed_against_the_runner_up(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    garbage = np.full((3, 5), 0.95, np.float32)
    failures = GoalFailures("G7", np.arange(3), inputs=garbage, against="runner_up")
    found = explain_goal(model, data, failures, tmp_path, ExplainOptions(methods=("saliency",), contrast=0))
    second = np.argsort(-model.logits(garbage), axis=1)[:, 1]
    assert [s.contrast_class for s in found.samples] == second.tolist()


def test_arrays_are_written_by_digest(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    failures = failures_from_flags("G1", model.predict(data.x) != data.y)
    found = explain_goal(
        model, data, failures, tmp_path, ExplainOptions(k=2, contrast=1, methods=("saliency",))
    )
    for sample in found.samples:
        raw = (tmp_path / sample.attribution_file).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == sample.attribution_sha256
        assert np.load(tmp_path / sample.input_file).shape == (5,)
    assert found.samples[0].feature_flips[0].feature == NAMES[KEY_FEATURE]


def test_only_the_key_feature_flips_a_tabular_decision(case) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    flips = feature_flips(model, data.x[0], NAMES, feature_grids(data.x))
    assert [f.feature for f in flips] == [NAMES[KEY_FEATURE]]
    assert (data.x[0, KEY_FEATURE] - 0.5) * (flips[0].value - 0.5) < 0  # crossed the threshold 0.5


def test_grids_follow_declared_ranges_and_categories() -> None:
    x = np.array([[0.0, 5.0, 1.0], [1.0, 7.0, 2.0]])
    specs = [
        FeatureSpec(name="a"),
        FeatureSpec(name="b", range=(0.0, 10.0)),
        FeatureSpec(name="c", kind="categorical", values=[1, 2, 3]),
    ]
    grids = feature_grids(x, specs, points=3)
    assert grids[0].tolist() == [0.0, 0.5, 1.0] and grids[1].tolist() == [0.0, 5.0, 10.0]
    assert grids[2].tolist() == [1.0, 2.0, 3.0]


def test_empty_failures_give_an_empty_set(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    found = explain_goal(
        model,
        data,
        failures_from_flags("G9", np.zeros(len(data), bool)),
        tmp_path,
        ExplainOptions(contrast=0),
    )
    assert found.samples == [] and found.statement == "No sample could be explained."


def test_each_goal_gets_one_panel_of_its_samples(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One PNG per goal from the arrays ``explain_goal`` wrote (as the explain step draws it): a
    table's bars and an image's overlays, a cell per sample and method, the same bytes each time."""
    from PIL import Image

    model, data = case
    failures = failures_from_flags("G1", model.predict(data.x) != data.y)
    table = explain_goal(
        model, data, failures, tmp_path / "G1", ExplainOptions(k=2, contrast=1, methods=("saliency",))
    )
    bars = [
        panel_png(
            table.samples,
            tmp_path / "G1",
            kind="tabular",
            layout=Layout.FLAT,
            value_range=(0.0, 1.0),
            feature_names=NAMES,
        )
        for _ in range(2)
    ]
    assert bars[0].startswith(PNG) and bars[0] == bars[1]
    img_model, img_data = image_case(tmp_path)
    img_failures = failures_from_flags("G2", img_model.predict(img_data.x) != img_data.y)
    image = explain_goal(
        img_model,
        img_data,
        img_failures,
        tmp_path / "G2",
        ExplainOptions(k=2, contrast=0, methods=("saliency", "occlusion")),
    )
    assert len({s.method for s in image.samples}) == 2
    widths = []
    for samples in (image.samples, [s for s in image.samples if s.method == image.samples[0].method]):
        heat = panel_png(samples, tmp_path / "G2", kind="image", layout=Layout.NCHW, value_range=(0.0, 1.0))
        assert heat.startswith(PNG)
        widths.append(Image.open(io.BytesIO(heat)).size[0])
    assert widths[0] > widths[1]  # a column of cells per method, beside the input


def test_time_estimate_grows_with_samples_and_steps(case) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    costs = measure_unit_costs(model, data.x[:32], torch_executor(model)[0])
    assert costs.forward_s > 0 and costs.gradient_s > 0
    unit = UnitCosts(forward_s=1e-4, gradient_s=1e-3)
    small = estimate_seconds(unit, samples=4, n_units=5, n_features=5)
    assert estimate_seconds(unit, samples=8, n_units=5, n_features=5) > small
    assert estimate_seconds(unit, samples=4, n_units=5, n_features=5, steps=64) > small


def test_the_set_round_trips_and_refuses_unknown_fields(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    failures = failures_from_flags("G1", model.predict(data.x) != data.y)
    found = explain_goal(model, data, failures, tmp_path, ExplainOptions(k=3, methods=("feature_ablation",)))
    assert ExplanationSet.model_validate_json(found.model_dump_json()) == found
    with pytest.raises(ValidationError):
        ExplanationSet.model_validate({**found.model_dump(), "extra": 1})


def test_bundles_recording_a_per_sample_picture_still_load(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``ExplainedSample.picture`` is never set (a panel per goal replaced it), but every bundle
    written records ``"picture": null`` per sample; extra fields are refused, so it must stay."""
    import json

    model, data = case
    failures = failures_from_flags("G1", model.predict(data.x) != data.y)
    found = explain_goal(model, data, failures, tmp_path, ExplainOptions(k=2, methods=("saliency",)))
    stored = json.loads(found.model_dump_json())
    assert stored["samples"] and all(s["picture"] is None for s in stored["samples"])
    assert ExplanationSet.model_validate(stored) == found


def test_the_log_line_does_not_judge_attributions_on_too_few_samples() -> None:
    """One explained sample gives a zero-width gain interval: the line says too few, not 'does not beat'."""
    from nnassay.schemas.common import Interval
    from nnassay.schemas.explain import FaithfulnessSummary
    from nnassay.tasks.explain.faithfulness import MIN_SAMPLES_TO_CLAIM
    from nnassay.tasks.pipeline.explain_step import _against_random

    point = Interval(low=0.43, high=0.43, confidence=0.95, method="bootstrap")

    def summary(samples: int, beats: bool) -> FaithfulnessSummary:
        return FaithfulnessSummary(
            method="integrated_gradients",
            samples=samples,
            deletion_aopc=0.8,
            deletion_aopc_interval=point,
            deletion_aopc_random=0.37,
            gain_interval=point,
            insertion_auc=0.5,
            insertion_auc_random=0.4,
            beats_random=beats,
        )

    assert _against_random(summary(1, False)) == "on too few samples (1) to compare with random"
    assert _against_random(summary(MIN_SAMPLES_TO_CLAIM, True)) == "beats random"
    assert _against_random(summary(MIN_SAMPLES_TO_CLAIM, False)) == "does not beat random"
