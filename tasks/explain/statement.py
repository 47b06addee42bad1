"""The explanation set's conclusion in plain words, for an auditor (no numbers computed here)."""

from __future__ import annotations

from collections.abc import Sequence

from nnassay.schemas.explain import FaithfulnessSummary, SanityCheck
from nnassay.tasks.explain.faithfulness import MIN_SAMPLES_TO_CLAIM

TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "occlusion": "Occlusion",
    "feature_ablation": "Feature ablation",
}


def faithfulness_words(f: FaithfulnessSummary) -> str:
    """Whether one method's attributions beat random deletion, with the numbers behind it."""
    ci = f.deletion_aopc_interval
    numbers = (
        f"AOPC {f.deletion_aopc:.2f} [{ci.low:.2f}, {ci.high:.2f}] vs {f.deletion_aopc_random:.2f} "
        f"for random order, over {f.samples} sample{'s' if f.samples != 1 else ''}"
    )
    if f.samples < MIN_SAMPLES_TO_CLAIM:
        return f"too few samples to say whether the attributions beat random deletion ({numbers})"
    if f.beats_random:
        return f"the attributions beat random deletion: {numbers}"
    return (
        f"the attributions do not beat random deletion ({numbers}), so the pictures are not evidence "
        "of what the model relies on"
    )


def sanity_words(s: SanityCheck) -> str:
    """Whether one method's attributions change when the model's weights are shuffled."""
    if not s.applicable:
        return f"the weight-shuffling sanity check does not apply: {s.note or 'nothing to shuffle'}"
    if s.passed:
        return (
            f"they change when the weights are shuffled (rank correlation {s.rank_correlation:.2f} "
            f"< {s.threshold:.2f}), so they reflect what the model learned"
        )
    return (
        f"they barely change when the weights are shuffled (rank correlation {s.rank_correlation:.2f} "
        f">= {s.threshold:.2f}), so they reflect the input more than the model: treat them with caution"
    )


def statement(
    faithfulness: Sequence[FaithfulnessSummary],
    sanity: Sequence[SanityCheck],
    *,
    failures: int,
    available: int,
    engine_reason: str,
) -> str:
    """One sentence per method, after how many failures were explained and how."""
    if not faithfulness:
        return "No sample could be explained."
    head = f"{failures} of {available} failed samples explained ({engine_reason})."
    checks = {s.method: s for s in sanity}
    lines = [head]
    for f in faithfulness:
        text = f"{TITLES[f.method]}: {faithfulness_words(f)}"
        lines.append(text + (f"; {sanity_words(checks[f.method])}." if f.method in checks else "."))
    return " ".join(lines)
