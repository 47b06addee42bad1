"""What the dossier shows of a goal's explanations: the goal's panel picture (checked against its
digest), a row per explained sample with its classes, each method's top features and deletion score,
and in words whether the attributions beat a random ranking and passed the model-randomisation
sanity check. Display only: every number is read from the evidence (``ExplanationSet``), none is
recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nnassay.reports.pictures import PictureSource, load_picture
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.explain import ExplanationSet, FaithfulnessSummary, SanityCheck

METHOD_NAMES = {
    "integrated_gradients": "integrated gradients",
    "saliency": "saliency (input gradient)",
    "occlusion": "occlusion",
    "feature_ablation": "feature ablation",
}
ENGINES = {
    "torch_executor": "torch executor (gradients)",
    "onnx_runtime": "ONNX Runtime alone (black box)",
}
ClassLabel = Callable[[int], str]  # class index -> its declared label


@dataclass
class SampleRow:
    """One explained sample in the table under a goal's panel: every method on one row."""

    sample: str
    classes: str
    contrast: bool
    methods: list[str]  # per method: its top features and deletion score against random order
    flips: list[str] = field(default_factory=list)


@dataclass
class ExplanationView:
    """One goal's explanations: intro, panel, a row per sample, verdicts in words."""

    goal_id: str
    intro: str
    panel: str  # data URI of the goal's panel picture; '' when not shown or none drawn
    panel_note: str  # why the panel is not shown; '' when shown or when none was drawn
    panel_caption: str
    rows: list[SampleRow]  # one per explained sample (methods merged), shown under the panel
    faithfulness: list[str]
    sanity: list[str]
    statement: str
    baseline: str
    headline: str  # one line: methods and whether each beats random (summary.md)


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def explanation_views(
    ev: EvidenceBundle, run_dir: Path | None, label: ClassLabel, source: PictureSource | None = None
) -> dict[str, ExplanationView]:
    """Each explained goal's view, by goal id (sets without samples are left out)."""
    return {es.goal_id: explanation_view(es, run_dir, label, source) for es in ev.explanations if es.samples}


def explanation_view(
    es: ExplanationSet, run_dir: Path | None, label: ClassLabel, source: PictureSource | None = None
) -> ExplanationView:
    panel, note = "", ""
    if es.picture is not None:
        loaded = load_picture(es.picture, run_dir, source)
        panel, note = loaded if loaded is not None else ("", "")
    return ExplanationView(
        goal_id=es.goal_id,
        intro=intro(es),
        panel=panel,
        panel_note=f"panel picture {note}" if note else "",
        panel_caption=es.picture.caption if es.picture is not None else "",
        rows=sample_rows(es, label),
        faithfulness=[faithfulness_words(f) for f in es.faithfulness]
        or ["No faithfulness score was recorded: these attributions are not shown to be faithful."],
        sanity=[sanity_words(c) for c in es.sanity]
        or ["No model-randomisation sanity check was recorded for these attributions."],
        statement=es.statement,
        baseline=es.baseline,
        headline=headline(es),
    )


def intro(es: ExplanationSet) -> str:
    failures = len({s.sample_index for s in es.samples if s.role == "failure"})
    contrast = len({s.sample_index for s in es.samples if s.role == "contrast"})
    methods = ", ".join(method_name(m) for m in es.methods) or "no method"
    engine = ENGINES.get(es.engine, es.engine)
    deviation = (
        f"; largest logit difference from ONNX Runtime {es.executor_max_deviation:.2g}"
        if es.executor_max_deviation is not None
        else ""
    )
    text = (
        f"{failures} of {es.failures_available} failed samples explained with {methods} (engine: "
        f"{engine}, {es.engine_reason}{deviation}); {es.time_s:.1f} s."
    )
    if contrast:
        text += (
            f" {contrast} correctly handled sample{'s are' if contrast > 1 else ' is'} shown for contrast, "
            "marked CONTRAST."
        )
    return text


def sample_rows(es: ExplanationSet, label: ClassLabel) -> list[SampleRow]:
    """A row per explained sample, failures first: its classes and, per method, the top three
    features and the deletion score against random order (every number from the evidence)."""
    rows: dict[int, SampleRow] = {}
    for s in sorted(es.samples, key=lambda s: s.role == "contrast"):
        what = "failing input" if s.input_kind == "failing_input" else "test row"
        row = rows.setdefault(
            s.sample_index,
            SampleRow(
                sample=f"{s.sample_index} ({'CONTRAST' if s.role == 'contrast' else 'failure'}; {what})",
                classes=f"predicted {label(s.predicted_class)}, true {label(s.true_class)}; against "
                f"{label(s.contrast_class)}",
                contrast=s.role == "contrast",
                methods=[],
            ),
        )
        top = ", ".join(s.top_features[:3]) or "none recorded"
        row.methods.append(
            f"{method_name(s.method)}: {top} (deletion {s.faithfulness.deletion_aopc:.2g} vs random "
            f"{s.faithfulness.deletion_aopc_random:.2g})"
        )
        if not row.flips:
            row.flips = [
                f"{f.feature} to {f.value:.4g} gives {label(f.new_class)}" for f in s.feature_flips[:3]
            ]
    return list(rows.values())


def faithfulness_words(f: FaithfulnessSummary) -> str:
    """Whether one method's attributions beat a random ranking, in words an auditor understands."""
    name = method_name(f.method).capitalize()
    if f.samples == 0:
        return f"{name}: no failed sample was scored, so faithfulness is not established."
    g = f.gain_interval
    gain = f"{g.low:.3g} to {g.high:.3g} ({g.confidence:.0%} {g.method} interval, {f.samples} failed samples)"
    scores = (
        f"deletion AOPC {f.deletion_aopc:.3g} against {f.deletion_aopc_random:.3g} for random order; "
        f"insertion AUC {f.insertion_auc:.3g} against {f.insertion_auc_random:.3g}"
    )
    if f.beats_random:
        return (
            f"{name}: beats random. Removing the features it ranks first lowers the model's confidence "
            f"in its chosen class more than removing features in random order; the gain over random "
            f"order is {gain}, above zero ({scores})."
        )
    return (
        f"{name}: does NOT beat random. The gain over random order is {gain}, not clearly above zero: "
        f"its pictures are not shown to point at what the model uses; do not rely on them ({scores})."
    )


def sanity_words(c: SanityCheck) -> str:
    """The model-randomisation check of one method, in words."""
    name = method_name(c.method)
    if not c.applicable:
        return (
            f"The sanity check of {name} does not apply: {c.note or 'nothing could be randomised'}. "
            "Whether its attributions depend on what the model learned is not tested."
        )
    if c.passed:
        return (
            f"Sanity check of {name} passed: on a copy of the model with shuffled weights the "
            f"attributions change (rank correlation {c.rank_correlation:.2f}; at most "
            f"{c.threshold:.2f} counts as changed), so they depend on what the model learned."
        )
    return (
        f"Sanity check of {name} FAILED: a copy of the model with shuffled weights gets nearly the "
        f"same attributions (rank correlation {c.rank_correlation:.2f}, above {c.threshold:.2f}); "
        "they may show the input rather than the model's reasoning: do not rely on them."
    )


def headline(es: ExplanationSet) -> str:
    """'integrated gradients (beats random: yes), saliency (beats random: no); sanity check passed'."""
    beats = {f.method: f.beats_random and f.samples > 0 for f in es.faithfulness}
    methods = "; ".join(
        f"{method_name(m)} (beats random: {'yes' if beats.get(m) else 'no'})" for m in es.methods
    )
    checks = [c.passed for c in es.sanity if c.applicable]
    skipped = [c for c in es.sanity if not c.applicable]
    sanity = (
        "sanity check not recorded"
        if not es.sanity
        else f"the sanity check does not apply: {skipped[0].note or 'nothing could be randomised'}"
        if not checks
        else "sanity check passed"
        if all(checks)
        else "sanity check FAILED" + (" for some methods" if any(checks) else "")
    )
    return f"{methods or 'no method'}; {sanity}"
