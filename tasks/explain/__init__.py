"""Explanations of failures: attributions (Captum on the torch executor, or occlusion / feature
ablation on ONNX Runtime), their faithfulness, and pictures. Pure functions; no Prefect."""

from nnassay.tasks.explain.cost import UnitCosts, estimate_seconds, measure_unit_costs
from nnassay.tasks.explain.explain import ExplainOptions, explain_goal
from nnassay.tasks.explain.failures import GoalFailures, failures_from_flags, failures_from_npz
from nnassay.tasks.explain.pictures import panel_png

__all__ = [
    "ExplainOptions",
    "GoalFailures",
    "UnitCosts",
    "estimate_seconds",
    "explain_goal",
    "failures_from_flags",
    "failures_from_npz",
    "measure_unit_costs",
    "panel_png",
]
