"""Deployment conditions: the same model on other execution providers and in reduced precision.

Variants are written into the test's folder: float16 (``onnxruntime.transformers.float16``, inputs
and outputs kept float32) and dynamic int8 (``onnxruntime.quantization.quantize_dynamic``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, JsonValue

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, TestStatus
from nnassay.schemas.threats import Deployment
from nnassay.tasks.engine.isolation import IsolationError
from nnassay.tasks.engine.ort_check import isolated_variant
from nnassay.tasks.io.model_io import CPU, CUDA, ModelRunner, cuda_available
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.empirical.common import rate
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register


def _variant_runner(ctx: RunContext, variant: str) -> tuple[ModelRunner | None, str]:
    """A runner for one variant, or None with the reason it is not available."""
    spec = ctx.model.spec
    if variant == "providers":
        if not cuda_available():
            return None, (
                "only one execution provider is available on this machine (CPU); the CPU / CUDA "
                "comparison needs a machine with a working CUDA provider"
            )
        other = CPU if ctx.model.provider == CUDA else CUDA
        return ModelRunner(spec, providers=[other]), f"{other} against {ctx.model.provider}"
    suffix = {"float16": "float16", "int8_dynamic": "int8"}[variant]
    target = ctx.out_dir / f"model_{suffix}.onnx"
    # conversion and session creation run in a child process: a converter or ONNX Runtime that
    # crashes on this model (a float16 ViT segfaults at session creation) costs this test, not the run
    isolated_variant(variant, ctx.model.path, target, providers=[ctx.model.provider])
    same_output = {
        "output": ctx.model.output_kind,
        "output_name": ctx.model.output_name,
    }  # not detected again
    runner = ModelRunner(
        spec.model_copy(update={"path": target, **same_output}), providers=[ctx.model.provider]
    )
    return runner, f"{suffix} copy written to {target.name}"


def _ends(m: Measurement) -> list[JsonValue] | None:
    return [m.interval.low, m.interval.high] if m.interval else None


# A pass over the data through a variant on ONNX Runtime's CPU kernels, in fp32 passes (measured
# 2026-12-04 on the zoo, 200 rows: float16 0.7-1.6x, int8_dynamic 5.5-15x, ConvInteger being slow);
# a converted variant's conversion (about 0.015 s per MB of model) is small beside its two children.
PASS_FACTORS: dict[str, float] = {"float16": 1.3, "int8_dynamic": 8.0}
CONVERTED = ("float16", "int8_dynamic")  # variants written by a child process, checked by another


class DeploymentParams(MethodParams):
    """Parameters of the deployment-conditions test."""

    variants: list[str] = Field(
        default_factory=lambda: ["float16", "int8_dynamic", "providers"],
        description="float16, int8_dynamic, providers.",
    )


@register
class DeploymentConsistency(RobustnessMethod[DeploymentParams, Deployment]):
    """Do predictions survive other execution providers and reduced precision?

    Reference: ISO/IEC TR 24029-1 7.3 (a posteriori testing); ISO/IEC 42001 A.6.2.5 (deployment).
    Threat model: the float32 model on its default provider against its float16 copy, its dynamic
    int8 copy and (when a CUDA provider works) the other provider, on the test data. Parameters:
    ``variants``. Result: ``disagreement_rate`` (largest over variants: share of samples whose
    predicted class differs, Clopper-Pearson) and ``max_output_deviation`` (largest absolute logit
    difference); per variant with its accuracy in ``details``. A variant that cannot run here (one
    provider only) is reported as unavailable; the test is inconclusive when no variant ran.
    """

    name = "empirical.deployment_consistency"
    family = MethodFamily.EMPIRICAL
    clause = "7.3"
    threats = ("deployment",)
    metrics = ("disagreement_rate", "max_output_deviation")
    claim = ClaimKind.OBSERVATION
    priority = 20

    @classmethod
    def cost(cls, params: DeploymentParams, samples: int) -> Cost:
        """The data through the model and through each variant (a variant's pass priced in fp32 passes,
        ``PASS_FACTORS``); a converted variant is written by one child process and its session checked
        by another (``CONVERTED``)."""
        cost = passes(samples)
        for variant in params.variants:
            cost = cost + passes(samples).scaled(PASS_FACTORS.get(variant, 1.0))
        return cost + Cost(children=2.0 * sum(v in CONVERTED for v in params.variants))

    def derive_params(self, threat: Deployment, overrides: dict[str, Any]) -> DeploymentParams:
        return DeploymentParams(**{"variants": list(threat.variants), **overrides})

    def run(self, ctx: RunContext[Deployment], params: DeploymentParams) -> MethodOutcome:
        x, y = ctx.data.x, ctx.data.y
        base = ctx.model.logits(x)
        base_pred = base.argmax(1)
        found: dict[str, JsonValue] = {}
        unavailable: dict[str, str] = {}
        crashed: dict[str, str] = {}
        worst: tuple[int, float, str] = (-1, 0.0, "")
        worst_deviation = 0.0
        for i, variant in enumerate(params.variants):
            try:
                runner, note = _variant_runner(ctx, variant)
            except IsolationError as exc:  # a crash, a timeout or an out-of-memory of the child
                crashed[variant] = str(exc).splitlines()[0][:300]
                continue
            except Exception as exc:  # conversion tools raise many types
                runner, note = None, f"conversion failed: {str(exc).splitlines()[0][:200]}"
            if runner is None:
                unavailable[variant] = note
                continue
            out = runner.logits(x)
            differ = int((out.argmax(1) != base_pred).sum())
            deviation = float(np.nanmax(np.abs(out - base))) if np.isfinite(out).all() else float("inf")
            disagree = rate(differ, len(y), ctx, "")
            correct = rate(int((out.argmax(1) == y).sum()), len(y), ctx, "")
            found[variant] = {
                "note": note,
                "disagreements": differ,
                "max_abs_logit_deviation": deviation if np.isfinite(deviation) else None,
                "non_finite_outputs": not np.isfinite(deviation),
                "disagreement_rate": disagree.value,
                "accuracy": correct.value,
                "disagreement_rate_interval": _ends(disagree),
                "accuracy_interval": _ends(correct),
                "provider": runner.provider,
            }
            worst = max(worst, (differ, deviation, variant))
            worst_deviation = max(worst_deviation, deviation)
            ctx.progress(i + 1, len(params.variants))
        details: dict[str, JsonValue] = {
            "variants": found,
            "unavailable": dict(unavailable),
            "baseline_provider": ctx.model.provider,
            "baseline_accuracy": float((base_pred == y).mean()),
        }
        if crashed:
            details["crashed"] = dict(crashed)
            return MethodOutcome(
                status=TestStatus.ERROR,
                details=details,
                reason="; ".join(f"{variant}: {why}" for variant, why in crashed.items())
                + (f" (measured: {', '.join(found)})" if found else ""),
            )
        if not found:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                details=details,
                reason="no deployment variant could run: " + "; ".join(unavailable.values()),
            )
        deviation = worst_deviation
        return MethodOutcome(
            metrics={
                "disagreement_rate": rate(
                    worst[0],
                    len(y),
                    ctx,
                    f"Share of test samples whose predicted "
                    f"class differs from the float32 model ({worst[2]}, the worst "
                    "variant).",
                    ClaimKind.OBSERVATION,
                ),
                "max_output_deviation": Measurement(
                    value=min(deviation, 1e30),
                    n=len(y),
                    claim=ClaimKind.OBSERVATION,
                    description="Largest absolute difference of any "
                    "output value between a variant and the float32 model.",
                ),
            },
            details=details,
            reason=("not compared: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
            if unavailable
            else None,
        )
