"""Soundness cases for the bound ops added for held-out torch exports (issue 15): PRelu (slopes below 0,
in (0, 1) and above 1), InstanceNormalization (torch's InstanceNorm and GroupNorm), GlobalMaxPool,
ConvTranspose, Upsample (opset 9) and MaxPool with ``ceil_mode`` in 2-D and 1-D.

Merged into ``test_bounds.op_models`` through ``bound_cases_extra.extra_op_models``: each case's
sampled outputs must lie in the IBP, CROWN and alpha-CROWN bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper


def heldout_op_models(kit: Any) -> dict[str, tuple[object, int]]:
    """Small models around each new bound op: (model, number of inputs)."""
    c, mm, node = kit.const, kit.make_model, helper.make_node
    rng = np.random.default_rng(2)
    img = ["N", 2, 4, 4]
    conv = node("Conv", ["x", "W", "b"], ["h"], pads=[1, 1, 1, 1])
    conv_w = [c("W", rng.normal(0, 0.8, (2, 2, 3, 3))), c("b", rng.normal(0, 0.3, 2))]
    head = [c("Wh", rng.normal(0, 1, (3, 32))), c("bh", rng.normal(0, 0.3, 3))]

    def image(*nodes: Any, inits: tuple = (), flat_tail: bool = True) -> tuple[object, int]:
        """x (2x4x4) -> Conv -> nodes (last output "a") [-> Flatten -> Gemm(3)] -> y."""
        tail = [node("Flatten", ["a"], ["f"]), node("Gemm", ["f", "Wh", "bh"], ["y"], transB=1)]
        return mm([conv, *nodes, *(tail if flat_tail else [])], img, inits=[*conv_w, *head, *inits]), 32

    slopes = np.array([-0.4, 1.7], dtype=np.float32).reshape(2, 1, 1)  # non-monotone and concave
    seq_w = c("W1", rng.normal(0, 0.8, (2, 1, 3)))
    return {
        "PRelu-per-channel": image(node("PRelu", ["h", "slope"], ["a"]), inits=(c("slope", slopes),)),
        "PRelu-leaky": image(
            node("PRelu", ["h", "slope"], ["a"]), inits=(c("slope", np.array([0.25], np.float32)),)
        ),
        "InstanceNormalization": image(
            node("InstanceNormalization", ["h", "s", "t"], ["a"], epsilon=1e-3),
            inits=(c("s", rng.normal(0, 1, 2)), c("t", rng.normal(0, 1, 2))),
        ),
        "GlobalMaxPool": (
            mm(
                [conv, node("GlobalMaxPool", ["h"], ["g"]), node("Flatten", ["g"], ["y"])],
                img,
                inits=conv_w,
            ),
            32,
        ),
        "ConvTranspose": image(
            node("Relu", ["h"], ["r"]),
            node(
                "ConvTranspose",
                ["r", "Wt", "bt"],
                ["t"],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                output_padding=[1, 1],
            ),
            node("MaxPool", ["t"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
            inits=(c("Wt", rng.normal(0, 0.5, (2, 2, 3, 3))), c("bt", rng.normal(0, 0.3, 2))),
        ),
        "Upsample": (
            mm(
                [conv, node("Relu", ["h"], ["r"]), node("Upsample", ["r", "sc"], ["y"], mode="nearest")],
                img,
                inits=[*conv_w, c("sc", np.array([1, 1, 2, 1.5], np.float32))],
                opset=9,
            ),
            32,
        ),
        "MaxPool-ceil": (
            mm(
                [conv, node("MaxPool", ["h"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                img,
                inits=conv_w,
            ),
            32,
        ),
        "MaxPool-1d-ceil": (
            mm(
                [
                    node("Conv", ["x", "W1"], ["h"], pads=[1, 1]),
                    node("MaxPool", ["h"], ["y"], kernel_shape=[2], strides=[2], ceil_mode=1),
                ],
                ["N", 1, 7],
                inits=[seq_w],
            ),
            7,
        ),
    }
