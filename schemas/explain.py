"""Explanations of failures: which features or pixel regions drove a wrong decision, and whether the
attributions are faithful to the model (deletion/insertion against random order, weight
randomisation). Produced by ``nnassay.tasks.explain``; read by the evidence and the dossier.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnassay.schemas.common import Interval, Record
from nnassay.schemas.results import ArtifactRef

SCHEMA_VERSION: Literal["1"] = "1"

AttributionMethodName = Literal["integrated_gradients", "saliency", "occlusion", "feature_ablation"]
SampleRole = Literal["failure", "contrast"]


class FeatureFlip(Record):
    """One single-feature change that flips a tabular decision."""

    feature: str = Field(description="Which feature was changed (column name or index as text)?")
    value: float = Field(description="To which value was it set (data units)?")
    change: float = Field(description="How far is that value from the sample's own value (data units)?")
    new_class: int = Field(ge=0, description="Which class did the model choose after the change?")


class SampleFaithfulness(Record):
    """Deletion and insertion scores of one explanation, against random orders of the same features."""

    deletion_aopc: float = Field(
        description="Mean drop of the chosen class's probability as the top-ranked features are "
        "replaced by the baseline (AOPC; higher means the ranking found what the model uses)."
    )
    deletion_aopc_random: float = Field(
        description="The same score for random feature orders (mean over the random orders)."
    )
    insertion_auc: float = Field(
        description="Mean probability of the chosen class as the top-ranked features are put back "
        "into the baseline (higher is better)."
    )
    insertion_auc_random: float = Field(description="The same score for random feature orders.")


class ExplainedSample(Record):
    """One explained sample: a failure, or a correctly handled sample shown for contrast."""

    sample_index: int = Field(ge=0, description="Which row of the test data is it?")
    role: SampleRole = Field(description="Is it a failure, or a correctly handled sample for contrast?")
    method: AttributionMethodName = Field(description="Which attribution method made the explanation?")
    predicted_class: int = Field(ge=0, description="Which class did the model choose on the input explained?")
    true_class: int = Field(ge=0, description="Which class is correct?")
    contrast_class: int = Field(
        ge=0,
        description="Against which class was the chosen one attributed (the true class for a failure, "
        "the runner-up for a correct answer)?",
    )
    input_kind: Literal["clean", "failing_input"] = Field(
        description="Was the test row explained as it is, or the failing input a method found or made "
        "for it (adversarial example, counterexample, invalid input)?"
    )
    top_features: list[str] = Field(
        description="Features or pixel regions (e.g. 'rows 0-1, cols 2-3') that pushed the decision "
        "towards the chosen class most, strongest first."
    )
    top_scores: list[float] = Field(description="Attribution of each top feature, same order.")
    faithfulness: SampleFaithfulness = Field(description="How faithful is this explanation?")
    feature_flips: list[FeatureFlip] = Field(
        default_factory=list,
        description="Tabular only: single-feature changes that flip the decision, smallest change first.",
    )
    attribution_sha256: str = Field(description="SHA-256 of the attribution array file (.npy).")
    input_sha256: str = Field(description="SHA-256 of the explained input file (.npy).")
    attribution_file: str = Field(description="Attribution array file name, in the explanation folder.")
    input_file: str = Field(description="Explained input file name, in the explanation folder.")
    origin: str | None = Field(
        default=None,
        description="What made the failing input explained (e.g. 'invalid input: random_noise', "
        "'gaussian noise, sigma 0.3'); None: the test row itself, or not recorded.",
    )
    # Not written since schema version 1: the pipeline draws one panel per goal (ExplanationSet.picture).
    # Bundles already written record "picture": null on every sample and extra fields are refused, so
    # removing the field would make them fail to load.
    picture: ArtifactRef | None = Field(
        default=None,
        description="Not written (each goal's panel, ExplanationSet.picture, shows its samples); "
        "kept so older bundles, which record null here, still load. The dossier does not read it.",
    )


class FaithfulnessSummary(Record):
    """Do the attributions of one method beat a random ranking, over the explained samples?"""

    method: AttributionMethodName = Field(description="Which attribution method is summarised?")
    samples: int = Field(ge=0, description="How many explained samples does the summary cover?")
    deletion_aopc: float = Field(description="Mean deletion AOPC of the attributions.")
    deletion_aopc_interval: Interval = Field(description="Bootstrap interval of that mean.")
    deletion_aopc_random: float = Field(description="Mean deletion AOPC of random orders.")
    gain_interval: Interval = Field(
        description="Bootstrap interval of the mean gain over random order (AOPC minus random AOPC)."
    )
    insertion_auc: float = Field(description="Mean insertion AUC of the attributions.")
    insertion_auc_random: float = Field(description="Mean insertion AUC of random orders.")
    beats_random: bool = Field(
        description="Does the lower end of the gain interval lie above zero (attributions beat random)?"
    )


class SanityCheck(Record):
    """Model-randomisation test (Adebayo et al. 2018): attributions must change with the weights."""

    method: AttributionMethodName = Field(description="Which attribution method was checked?")
    rank_correlation: float = Field(
        description="Median Spearman correlation of |attribution| between the model and a copy with "
        "shuffled weights (1: identical ranking, 0: unrelated)."
    )
    threshold: float = Field(description="Highest correlation still counted as 'different'.")
    passed: bool = Field(description="Do the attributions depend on the learned weights?")
    applicable: bool = Field(
        default=True,
        description="Could the check be run? False when the model has no learnable float weight "
        "tensor to shuffle (e.g. a tree ensemble) or the shuffled copy predicts exactly as the model.",
    )
    note: str = Field(default="", description="Why the check does not apply (empty when it does).")


class ExplanationSet(Record):
    """The explanations of one goal's failures, with their faithfulness and a statement for an auditor."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    goal_id: str = Field(description="Which goal's failures are explained?")
    methods: list[AttributionMethodName] = Field(description="Which attribution methods ran?")
    engine: Literal["torch_executor", "onnx_runtime"] = Field(
        description="Were gradients taken through the torch executor, or only ONNX Runtime queried?"
    )
    engine_reason: str = Field(description="Why that engine (e.g. the ops the executor lacks).")
    executor_max_deviation: float | None = Field(
        default=None, description="Largest |logit| difference between the torch executor and ONNX Runtime."
    )
    failures_available: int = Field(ge=0, description="How many failed samples could have been explained?")
    source: str | None = Field(
        default=None,
        description="Where the failures came from (the test and its file or details), e.g. "
        "'G6/empirical.pgd_linf: tests/G6__empirical.pgd_linf/pgd_linf_adversarial.npz'.",
    )
    samples: list[ExplainedSample] = Field(description="Every explained sample, per method.")
    faithfulness: list[FaithfulnessSummary] = Field(description="Faithfulness per method, over failures.")
    sanity: list[SanityCheck] = Field(description="Model-randomisation check per method.")
    baseline: str = Field(description="What replaced removed features (the reference input).")
    statement: str = Field(description="What the explanations show, in plain words for an auditor.")
    time_s: float = Field(ge=0, description="Wall time of the explanation step, in seconds.")
    picture: ArtifactRef | None = Field(
        default=None,
        description="One panel of the goal's explained samples (a row per sample: the input and each "
        "method's heat-map overlay, or each method's top-feature bars for a table), relative to the run "
        "folder; None: not drawn (a goal with no explained sample).",
    )
