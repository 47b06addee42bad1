"""Notes the dossier shows beside a test: a planned fallback (which method replaced which, and why),
and on tabular data the units of the threat magnitude with each feature's scale and bounds, as the
test recorded them in its details. Display only: nothing is derived from the data here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnassay.schemas.goals import AssessmentSpec, Layout
from nnassay.schemas.plan import TestSpec
from nnassay.schemas.results import MethodResult

UNIT_ROWS = 25  # features listed per test; all are in the evidence bundle
EPS_THREATS = ("linf_ball", "l2_ball")


def fallback_line(test: TestSpec | None) -> str:
    """'Planned as X instead of Y because ...' for a test that replaces the method asked for."""
    if test is None or not test.fallback_from:
        return ""
    why = test.fallback_reason or "no reason was recorded"
    return f"Planned as {test.method} instead of {test.fallback_from} because {why}"


@dataclass
class UnitsView:
    """The unit of a tabular threat's magnitude, and each feature's scale and bounds."""

    note: str
    columns: list[str]
    rows: list[list[str]]
    total: int


def tabular_data(spec: AssessmentSpec) -> bool:
    """Whether the spec's data are feature vectors (both the model's and the data's layout NC)."""
    data = spec.data
    return (
        spec.model.layout == Layout.FLAT
        and data.layout in (None, Layout.FLAT)
        and data.format != "image_folder"
    )


def units_view(result: MethodResult, test: TestSpec | None, tabular: bool) -> UnitsView | None:
    """What the test recorded about per-feature units (attacks: ``feature_scale``/``feature_bounds``;
    tabular perturbations: ``features``); for another eps threat on tabular data, the declared unit."""
    if not tabular or test is None:
        return None
    details = result.details
    names = details.get("feature_names")
    if isinstance(details.get("feature_scale"), list):
        return _from_box(details, names if isinstance(names, list) else None, planned_eps(test))
    features = details.get("features")
    if isinstance(features, list):
        return _from_features(features, names if isinstance(names, list) else None, test)
    if test.threat.kind in EPS_THREATS:
        return UnitsView(
            "On tabular data eps is declared in units of each feature's scale (data.features: its "
            "declared scale, else its standard deviation in the test data); this test did not record "
            "the per-feature scales it used.",
            [],
            [],
            0,
        )
    return None


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) and not isinstance(v, bool) else "not recorded"


def _pair(v: Any) -> tuple[Any, Any]:
    """(min, max) from a recorded [min, max]; (None, None) when not recorded as such."""
    return (v[0], v[1]) if isinstance(v, list) and len(v) == 2 else (None, None)


def _name(i: int, names: list[Any] | None) -> str:
    return f"{names[i]} ({i})" if names and i < len(names) and str(names[i]) != str(i) else str(i)


def planned_eps(test: TestSpec) -> Any:
    """The eps the plan gave the test (its params, else its threat); None when it has none."""
    eps = test.params.get("eps")
    return eps if eps is not None else getattr(test.threat, "eps", None)


def _from_box(details: dict[str, Any], names: list[Any] | None, planned: Any = None) -> UnitsView:
    scales = details["feature_scale"]
    bounds = details.get("feature_bounds")
    bounds = bounds if isinstance(bounds, list) and len(bounds) == len(scales) else None
    fixed = set(details.get("fixed_features") or [])
    whole = set(details.get("integer_features") or [])
    norm = details.get("norm")
    eps = details.get("eps")
    eps = eps if isinstance(eps, int | float) and not isinstance(eps, bool) else planned
    units = details.get("eps_units") or "units of each feature's scale"
    shape = (
        "the ellipsoid sum((change / scale)^2) <= eps^2"
        if norm == "l2"
        else "the box x +- eps x scale of each feature"
    )
    lead = f"eps {_num(eps)} is in {units}" if _num(eps) != "not recorded" else f"eps is in {units}"
    note = (
        f"{lead}: {shape}, inside each feature's bounds. Fixed features "
        "(immutable or categorical) are never moved; integer features move in whole steps."
    )
    noise = details.get("feature_noise")
    if isinstance(noise, str) and noise:
        note += f" Noise: {noise}."
    relaxation = details.get("box_relaxation")
    if isinstance(relaxation, str) and relaxation:
        note += f" For the proof: {relaxation}."
    rows = []
    for i, scale in enumerate(scales[:UNIT_ROWS]):
        low, high = _pair(bounds[i] if bounds else None)
        kept = "fixed" if i in fixed else "integer" if i in whole else ""
        rows.append([_name(i, names), _num(scale), _num(low), _num(high), kept])
    return UnitsView(note, ["feature", "scale", "min", "max", "constraint"], rows, len(scales))


def _from_features(features: list[Any], names: list[Any] | None, test: TestSpec) -> UnitsView:
    strength = getattr(test.threat, "strength", None)
    perturbation = getattr(test.threat, "perturbation", "")
    note = (
        f"Strength {_num(strength)} of {perturbation} is a fraction of each feature's scale: "
        "noise has spread strength x scale on each feature."
        if perturbation == "numeric_noise"
        else f"Each feature's scale and range as the test used them ({perturbation or 'tabular'} threat)."
    )
    rows = []
    shown = [f for f in features if isinstance(f, dict)][:UNIT_ROWS]
    for pos, f in enumerate(shown):
        index = f.get("index", pos)
        low, high = _pair(f.get("range"))
        kept = "immutable" if f.get("immutable") else str(f.get("kind", "")).replace("numeric", "")
        name = _name(index, names) if isinstance(index, int) else str(index)
        if isinstance(f.get("name"), str) and f["name"] != str(index):
            name = f"{f['name']} ({index})"
        rows.append([name, _num(f.get("spread")), _num(low), _num(high), kept])
    return UnitsView(note, ["feature", "scale", "min", "max", "constraint"], rows, len(features))


def explain_plan_line(spec: AssessmentSpec, estimate_s: float | None) -> str:
    """What the plan says about explaining failures: off, or how many samples and the time estimate
    (nothing for plans made before explanations existed)."""
    settings = spec.explain
    if not settings.enabled:
        return "Explanations of failures: off (explain.enabled is false in the spec)."
    if estimate_s is None:
        return ""
    return (
        f"Explanations of failures: after interpretation, up to {settings.samples} failed samples of each "
        f"failed or inconclusive goal, and {settings.contrast} correctly handled ones for contrast, are "
        f"explained; estimated at most {estimate_s:.0f} s (if every goal that can have per-sample "
        "failures fails)."
    )
