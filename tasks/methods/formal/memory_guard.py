"""Memory plan of the verifier's linear bounds: estimate CROWN/alpha-CROWN before allocating.

Uses ``nnassay.tasks.engine.memory`` (``crown_estimate``, ``budget_bytes``): the rows each
nonlinear layer needs are known once IBP has run (unstable ReLUs; every value of other nonlinear
layers), products (``Bilinear``) add their per-term temporaries, and alpha-CROWN keeps slopes and
their Adam moments. A rung that does not fit the budget is skipped, and the verdict stays ``unknown``
naming the estimate and the budget: torch is never asked for more.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnassay.tasks.engine.memory import MemoryEstimate, budget_bytes, crown_estimate, too_large_reason
from nnassay.tasks.methods.formal.bounds import Relaxation
from nnassay.tasks.methods.formal.layers import Network, splittable
from nnassay.tasks.methods.formal.relax_attention import Bilinear

ALPHA_COPIES = 6  # slopes, their gradient, two Adam moments, the clamped copy and the step


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak bytes of each rung on one box and the budget they are compared with."""

    crown: MemoryEstimate
    alpha: MemoryEstimate
    alpha_intermediate: MemoryEstimate
    budget: int

    def fits(self, estimate: MemoryEstimate, batch: int = 1) -> bool:
        return estimate.total(batch) <= self.budget

    def reason(self, what: str, estimate: MemoryEstimate) -> str:
        return too_large_reason(what, estimate, self.budget)


def rows_needed(net: Network, rel: Relaxation) -> dict[int, int]:
    """Per nonlinear layer, the rows CROWN bounds: unstable ReLUs (from ``rel.pre``), else every value."""
    rows: dict[int, int] = {}
    for k, layer in enumerate(net.layers):
        if not layer.nonlinear:
            continue
        width = layer.n_in - int(getattr(layer, "keep", 0))
        if getattr(layer, "kind", "") in ("relu", "leaky_relu") and k in rel.pre:
            rows[k] = int(splittable(layer, *rel.pre[k]).sum(-1).max())
        else:
            rows[k] = width
    return rows


def plan_memory(net: Network, rel: Relaxation, outputs: int, budget: int | None = None) -> MemoryPlan:
    """The memory plan of one box, given the IBP bounds in ``rel.pre``."""
    rows = rows_needed(net, rel)
    base = crown_estimate(net.layers, outputs=outputs, unstable=rows)  # type: ignore[arg-type]
    widest_rows = max([2 * r for r in rows.values()] + [outputs])
    terms = max((layer.p.numel() for layer in net.layers if isinstance(layer, Bilinear)), default=0)
    crown = MemoryEstimate(0, base.per_sample_bytes + 8 * 3 * widest_rows * terms, base.source)
    slopes = sum(layer.n_in for layer in net.layers if getattr(layer, "has_alpha", False))
    alpha = MemoryEstimate(
        0,
        crown.per_sample_bytes + 8 * ALPHA_COPIES * outputs * slopes,
        f"{base.source}, plus alpha-CROWN slopes for {outputs} rows x {slopes} neurons",
    )
    inter_rows = sum(2 * r for r in rows.values())
    alpha_inter = MemoryEstimate(
        0,
        alpha.per_sample_bytes + 8 * ALPHA_COPIES * inter_rows * slopes,
        f"{alpha.source}, plus intermediate slopes for {inter_rows} rows",
    )
    return MemoryPlan(crown, alpha, alpha_inter, budget_bytes() if budget is None else budget)
