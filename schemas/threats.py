"""Threats a robustness goal can name: the perturbation set, attack, corruption or input shift.

A threat says *what* the model must withstand; the planner picks the methods that test it
(formal, empirical, statistical). Magnitudes are in data units: the units of the data file after
loading, inside ``model.value_range``, before the model's own preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, PositiveFloat

from nnassay.schemas.common import Probability, Record

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "uniform_noise",
    "gaussian_blur",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "glass_blur",
    "brightness",
    "contrast",
    "saturate",
    "jpeg_compression",
    "pixelate",
    "elastic_transform",
    "fog",
    "snow",
    "spatter",
    "occlusion",
)

Sweep = Annotated[
    list[PositiveFloat] | None,
    Field(
        default=None,
        description="Strengths to measure for the chart; the goal's own strength is always added."
        " Default: four evenly spaced strengths up to it.",
    ),
]


class NoThreat(Record):
    """Clean data: the reference performance that every other goal is contrasted with."""

    kind: Literal["none"] = Field(description="Threat kind: no perturbation.")


class GaussianNoise(Record):
    """Additive Gaussian noise of standard deviation sigma, clipped to the value range."""

    kind: Literal["gaussian_noise"] = Field(description="Threat kind.")
    sigma: PositiveFloat = Field(description="Noise standard deviation in data units.")
    sweep: Sweep


class UniformNoise(Record):
    """Uniform random noise inside the L-inf ball of radius eps, clipped to the value range."""

    kind: Literal["uniform_noise"] = Field(description="Threat kind.")
    eps: PositiveFloat = Field(description="L-inf radius in data units.")
    sweep: Sweep


class LinfBall(Record):
    """Worst case inside the L-inf ball of radius eps (attacks, verification, sampling)."""

    kind: Literal["linf_ball"] = Field(description="Threat kind.")
    eps: PositiveFloat = Field(
        description="L-inf radius in data units; on tabular data the attacks read it in units of each "
        "feature's scale (the box x +- eps x scale inside each feature's bounds; see data.features)."
    )
    sweep: Sweep


class L2Ball(Record):
    """Worst case inside the L2 ball of radius eps (attacks, randomized smoothing)."""

    kind: Literal["l2_ball"] = Field(description="Threat kind.")
    eps: PositiveFloat = Field(
        description="L2 radius in data units; on tabular data the attacks read it in units of each "
        "feature's scale (sum((delta / scale)^2) <= eps^2 inside each feature's bounds; see "
        "data.features)."
    )
    sweep: Sweep


class VnnlibProperty(Record):
    """A property in a VNN-LIB file, checked by the formal verifier."""

    kind: Literal["vnnlib"] = Field(description="Threat kind.")
    path: Path = Field(description="VNN-LIB file, relative to the spec file's folder.")


class Corruption(Record):
    """Natural corruptions of images (ISO/IEC TR 24029-1 Annex A; ImageNet-C definitions)."""

    kind: Literal["corruption"] = Field(description="Threat kind.")
    corruptions: list[str] = Field(
        default_factory=lambda: list(CORRUPTIONS),
        description=f"Corruption names, from {', '.join(CORRUPTIONS)}.",
    )
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], description="Severities 1 (mild) to 5 (strong)."
    )


class Geometric(Record):
    """Geometric transforms of images, with the worst case over a parameter grid per sample."""

    kind: Literal["geometric"] = Field(description="Threat kind.")
    transform: Literal["rotation", "translation", "scaling", "shear"] = Field(description="Which transform.")
    values: list[float] = Field(
        min_length=1,
        description="Grid of parameters: degrees (rotation, shear), fraction of the image size"
        " (translation), or scale factor (scaling).",
    )


class TabularPerturbation(Record):
    """Perturbations of tabular features declared in ``data.features``."""

    kind: Literal["tabular"] = Field(description="Threat kind.")
    perturbation: Literal["numeric_noise", "multiplicative", "missing", "categorical_swap", "range_edge"] = (
        Field(description="Which perturbation to apply.")
    )
    strength: float = Field(
        default=0.1,
        ge=0,
        description="Relative strength: fraction of the feature's spread (noise), relative"
        " change (multiplicative), or fraction of features touched (missing, swap).",
    )


InvalidCase = Literal["nan", "pos_inf", "neg_inf", "out_of_range", "extreme", "constant", "random_noise"]
INVALID_CASES: tuple[InvalidCase, ...] = get_args(InvalidCase)
GeneratedOod = Literal["gaussian_noise", "uniform_noise", "shuffled_pixels", "blank"]
DEFAULT_GENERATED_OOD: tuple[GeneratedOod, ...] = ("uniform_noise", "shuffled_pixels", "blank")
DeploymentVariant = Literal["float16", "int8_dynamic", "providers"]
DEPLOYMENT_VARIANTS: tuple[DeploymentVariant, ...] = get_args(DeploymentVariant)


class InvalidInput(Record):
    """Invalid data (NaN, infinities, out-of-range, garbage) and how the model reacts to it."""

    kind: Literal["invalid_input"] = Field(description="Threat kind.")
    cases: list[InvalidCase] = Field(
        default_factory=lambda: list(INVALID_CASES), description="Kinds of invalid input to present."
    )
    confidence_level: Probability = Field(
        default=0.9, description="A prediction above this top-class probability counts as confident."
    )


class OutOfDistribution(Record):
    """Inputs from elsewhere: a named OOD set or generated ones, scored for detectability."""

    kind: Literal["ood"] = Field(description="Threat kind.")
    path: Path | None = Field(default=None, description="OOD data file (npz with x), optional.")
    generated: list[GeneratedOod] = Field(
        default_factory=lambda: list(DEFAULT_GENERATED_OOD),
        description="Generated OOD sets to use when no file is named.",
    )
    score: Literal["msp", "energy"] = Field(
        default="msp", description="OOD score: maximum softmax probability or energy."
    )


class DomainShift(Record):
    """A shifted data set (same labels, other conditions) contrasted with the clean data."""

    kind: Literal["domain_shift"] = Field(description="Threat kind.")
    path: Path = Field(description="Shifted data file (npz or csv like ``data``).")


class Deployment(Record):
    """Deployment conditions: other execution providers and reduced-precision model versions."""

    kind: Literal["deployment"] = Field(description="Threat kind.")
    variants: list[DeploymentVariant] = Field(
        default_factory=lambda: list(DEPLOYMENT_VARIANTS),
        description="Which variants to compare with the float32 model on the default provider.",
    )


AnyThreat = (
    NoThreat
    | GaussianNoise
    | UniformNoise
    | LinfBall
    | L2Ball
    | VnnlibProperty
    | Corruption
    | Geometric
    | TabularPerturbation
    | InvalidInput
    | OutOfDistribution
    | DomainShift
    | Deployment
)  # every threat class (for types and isinstance checks)
Threat = Annotated[AnyThreat, Field(discriminator="kind")]
