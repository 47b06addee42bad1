"""Soundness and tightness of IBP, CROWN and alpha-CROWN on every bound op and on random networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from tasks.formal.bounds import Relaxation, alpha_crown, crown, forward_bounds, ibp, sound_lower
from tasks.formal.ops import build_network, supported_bound_ops
from tasks.onnx_torch import UnsupportedOpsError, load_onnx_module

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_contains(model: object, low: torch.Tensor, high: torch.Tensor, n_samples: int = 400, seed: int = 0) -> None:
    """Sampled outputs lie inside IBP and CROWN bounds; CROWN is at least as tight as IBP."""
    net = build_network(model)
    module = load_onnx_module(model).double()
    gen = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n_samples, low.numel(), generator=gen, dtype=torch.float64)
    x = torch.cat([x, low.unsqueeze(0), high.unsqueeze(0)])
    with torch.no_grad():
        y = module(x).reshape(len(x), -1)
    n_out = y.shape[1]
    c = torch.cat([torch.eye(n_out), -torch.eye(n_out)]).double().unsqueeze(0)
    lo, hi = low.unsqueeze(0), high.unsqueeze(0)
    lb_ibp, _, _ = crown(net, c, lo, hi, method="ibp")
    lb_crown, rel, _ = crown(net, c, lo, hi)
    lb_alpha, _ = alpha_crown(net, c, lo, hi, rel, iters=5, start=lb_crown)
    cy = torch.cat([y, -y], 1)
    for lb in (lb_ibp, lb_crown, lb_alpha):
        assert (cy >= lb - 1e-9).all()
        assert (cy >= sound_lower(net, c, lb, lo, hi)).all()
    assert (lb_crown >= lb_ibp - 1e-12).all()
    assert (lb_alpha >= lb_crown - 1e-12).all()
    out_lo, out_hi = ibp(net, lo, hi)
    assert (y >= out_lo - 1e-9).all() and (y <= out_hi + 1e-9).all()


def op_models(kit: type) -> dict[str, tuple[object, int]]:
    """Small chains ending in each bound op: (model, number of inputs)."""
    c, mm, node = kit.const, kit.make_model, helper.make_node
    rng = np.random.default_rng(0)
    img = ["N", 2, 4, 4]
    head = [node("Conv", ["x", "W", "b"], ["h"], pads=[1, 1, 1, 1])]
    conv_w = [c("W", rng.normal(0, 0.5, (2, 2, 3, 3))), c("b", rng.normal(0, 0.3, 2))]

    def after_conv(*nodes: object, inits: tuple = ()) -> tuple[object, int]:
        return mm(head + list(nodes), img, inits=conv_w + list(inits)), 32

    return {
        "Relu": after_conv(node("Relu", ["h"], ["y"])),
        "LeakyRelu": after_conv(node("LeakyRelu", ["h"], ["y"], alpha=0.2)),
        "Sigmoid": after_conv(node("Sigmoid", ["h"], ["y"])),
        "Tanh": after_conv(node("Tanh", ["h"], ["y"])),
        "Clip": after_conv(node("Clip", ["h", "lo", "hi"], ["y"]), inits=(c("lo", np.array(-0.3)), c("hi", np.array(0.4)))),
        "MaxPool": after_conv(node("MaxPool", ["h"], ["y"], kernel_shape=[2, 2], strides=[2, 2])),
        "MaxPool-pad": after_conv(node("MaxPool", ["h"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
        "AveragePool": after_conv(node("Relu", ["h"], ["r"]), node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])),
        "GlobalAveragePool": after_conv(node("Relu", ["h"], ["r"]), node("GlobalAveragePool", ["r"], ["y"])),
        "BatchNormalization": after_conv(node("BatchNormalization", ["h", "s", "bb", "m", "v"], ["z"]), node("Relu", ["z"], ["y"]),
                                         inits=(c("s", rng.normal(0, 1, 2)), c("bb", rng.normal(0, 1, 2)),
                                                c("m", rng.normal(0, 1, 2)), c("v", 1 + rng.random(2)))),
        "Transpose+Flatten+Gemm": after_conv(node("Relu", ["h"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
                                             node("Flatten", ["t"], ["f"]), node("Gemm", ["f", "W2", "b2"], ["y"], transB=1),
                                             inits=(c("W2", rng.normal(0, 0.3, (3, 32))), c("b2", rng.normal(0, 1, 3)))),
        "Pad+Slice+Reshape": after_conv(node("Relu", ["h"], ["r"]), node("Pad", ["r", "p"], ["q"]),
                                        node("Reshape", ["q", "s"], ["f"]), node("Slice", ["f", "st", "en", "ax"], ["y"]),
                                        inits=(c("p", np.array([0, 0, 1, 0, 0, 0, 0, 1])), c("s", np.array([0, -1])),
                                               c("st", np.array([5])), c("en", np.array([30])), c("ax", np.array([1])))),
        "Sub+Mul+Div+Add+MatMul": (mm([node("Sub", ["x", "m"], ["a"]), node("Div", ["a", "d"], ["b"]), node("Mul", ["b", "k"], ["e"]),
                                       node("MatMul", ["e", "W"], ["f"]), node("Add", ["f", "bb"], ["g"]), node("Relu", ["g"], ["y"])],
                                      ["N", 4], inits=[c("m", rng.normal(0, 1, 4)), c("d", 1 + rng.random(4)), c("k", rng.normal(0, 1, 4)),
                                                       c("W", rng.normal(0, 1, (4, 5))), c("bb", rng.normal(0, 1, 5))]), 4),
    }  # fmt: skip


OP_CASES = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "MaxPool", "MaxPool-pad", "AveragePool", "GlobalAveragePool",
            "BatchNormalization", "Transpose+Flatten+Gemm", "Pad+Slice+Reshape", "Sub+Mul+Div+Add+MatMul"]  # fmt: skip


@pytest.mark.parametrize("name", OP_CASES, ids=str)
def test_bound_op_is_sound(name: str, kit: type) -> None:
    model, n = op_models(kit)[name]
    gen = torch.Generator().manual_seed(1)
    centre = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    _check_contains(model, centre - 0.4, centre + 0.4)


def test_bound_registry_lists_the_ops() -> None:
    ops = supported_bound_ops()
    for op in ("Gemm", "MatMul", "Conv", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "MaxPool", "BatchNormalization", "Softmax"):
        assert op in ops


@SETTINGS
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["Relu", "LeakyRelu", "Sigmoid", "Tanh"]),
       width=st.integers(2, 12), depth=st.integers(1, 3), eps=st.floats(0.01, 1.0))
def test_random_networks_are_sound(kit: type, seed: int, act: str, width: int, depth: int, eps: float) -> None:
    sizes = [3] + [width] * depth + [2]
    attrs = {"alpha": 0.1} if act == "LeakyRelu" else None
    model = kit.mlp(sizes, act=act, seed=seed, scale=2.0, act_attrs=attrs)
    centre = torch.tensor(np.random.default_rng(seed).normal(0, 1, 3))
    _check_contains(model, centre - eps, centre + eps, n_samples=300, seed=seed)


@SETTINGS
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 1.0))
def test_forward_mode_bounds_are_sound(kit: type, seed: int, eps: float) -> None:
    model = kit.mlp([3, 10, 10, 2], seed=seed, scale=2.0)
    net, module = build_network(model), load_onnx_module(model).double()
    centre = torch.tensor(np.random.default_rng(seed).normal(0, 1, (1, 3)))
    rel = Relaxation()
    out_lo, out_hi = forward_bounds(net, centre - eps, centre + eps, rel)
    x = centre - eps + 2 * eps * torch.rand(300, 3, dtype=torch.float64)
    y = module(x).detach()
    assert (y >= out_lo - 1e-9).all() and (y <= out_hi + 1e-9).all()


def test_unsupported_bound_ops_are_collected(kit: type) -> None:
    node = helper.make_node
    model = kit.make_model([node("Relu", ["x"], ["a"], name="r"), node("Mul", ["a", "a"], ["b"], name="square"),
                            node("Softmax", ["b"], ["c"], name="mid_softmax"), node("Relu", ["c"], ["y"], name="r2")], ["N", 3])
    with pytest.raises(UnsupportedOpsError) as info:
        build_network(model)
    names = [n for n, _ in info.value.nodes]
    assert names == ["square", "mid_softmax"]
