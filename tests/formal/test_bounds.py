"""Soundness and tightness of IBP, CROWN and alpha-CROWN on every bound op and on random networks."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_kit
import pytest
import torch
from bound_cases_extra import extra_op_models, softmax_tail_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from nnassay.tasks.engine.onnx_torch import UnsupportedOpsError, load_onnx_module
from nnassay.tasks.methods.formal.bounds import (
    Relaxation,
    alpha_crown,
    concretize,
    conjunction_lower,
    crown,
    forward_bounds,
    ibp,
    sound_lower,
)
from nnassay.tasks.methods.formal.layers import splittable
from nnassay.tasks.methods.formal.ops import BOUND_OPS, build_network, supported_bound_ops

SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check_contains(
    model: object,
    low: torch.Tensor,
    high: torch.Tensor,
    n_samples: int = 400,
    seed: int = 0,
    sampled: object | None = None,
) -> None:
    """Sampled outputs lie inside IBP and CROWN bounds; CROWN is at least as tight as IBP.

    ``sampled`` is the model whose outputs the bounds must contain when it differs from ``model``
    (a final Softmax is dropped by the verifier: its bounds are about the logits).
    """
    net = build_network(model)
    module = load_onnx_module(sampled if sampled is not None else model).double()
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
        "Clip": after_conv(
            node("Clip", ["h", "lo", "hi"], ["y"]), inits=(c("lo", np.array(-0.3)), c("hi", np.array(0.4)))
        ),
        "MaxPool": after_conv(node("MaxPool", ["h"], ["y"], kernel_shape=[2, 2], strides=[2, 2])),
        "MaxPool-pad": after_conv(
            node("MaxPool", ["h"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        ),
        "AveragePool": after_conv(
            node("Relu", ["h"], ["r"]), node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
        ),
        "GlobalAveragePool": after_conv(node("Relu", ["h"], ["r"]), node("GlobalAveragePool", ["r"], ["y"])),
        "BatchNormalization": after_conv(
            node("BatchNormalization", ["h", "s", "bb", "m", "v"], ["z"]),
            node("Relu", ["z"], ["y"]),
            inits=(
                c("s", rng.normal(0, 1, 2)),
                c("bb", rng.normal(0, 1, 2)),
                c("m", rng.normal(0, 1, 2)),
                c("v", 1 + rng.random(2)),
            ),
        ),
        "Transpose+Flatten+Gemm": after_conv(
            node("Relu", ["h"], ["r"]),
            node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
            node("Flatten", ["t"], ["f"]),
            node("Gemm", ["f", "W2", "b2"], ["y"], transB=1),
            inits=(c("W2", rng.normal(0, 0.3, (3, 32))), c("b2", rng.normal(0, 1, 3))),
        ),
        "Pad+Slice+Reshape": after_conv(
            node("Relu", ["h"], ["r"]),
            node("Pad", ["r", "p"], ["q"]),
            node("Reshape", ["q", "s"], ["f"]),
            node("Slice", ["f", "st", "en", "ax"], ["y"]),
            inits=(
                c("p", np.array([0, 0, 1, 0, 0, 0, 0, 1])),
                c("s", np.array([0, -1])),
                c("st", np.array([5])),
                c("en", np.array([30])),
                c("ax", np.array([1])),
            ),
        ),
        "Identity+Dropout+Neg": after_conv(
            node("Identity", ["h"], ["i"]), node("Dropout", ["i"], ["d"]), node("Neg", ["d"], ["y"])
        ),
        "Unsqueeze+Squeeze+Gather+Concat": (
            mm(
                [
                    node("Gemm", ["x", "W", "bb"], ["h"], transB=1),
                    node("Unsqueeze", ["h", "ax"], ["u"]),
                    node("Squeeze", ["u", "ax"], ["s"]),
                    node("Gather", ["s", "idx"], ["g"], axis=1),
                    node("Concat", ["g", "s"], ["k"], axis=1),
                    node("Relu", ["k"], ["y"]),
                ],
                ["N", 4],
                inits=[
                    c("W", rng.normal(0, 1, (5, 4))),
                    c("bb", rng.normal(0, 1, 5)),
                    c("ax", np.array([2])),
                    c("idx", np.array([4, 0, 2])),
                ],
            ),
            4,
        ),
        "Softmax": (
            mm(
                [
                    node("Gemm", ["x", "W", "bb"], ["h"], transB=1),
                    node("Relu", ["h"], ["r"]),
                    node("Gemm", ["r", "W2", "b2"], ["z"], transB=1),
                    node("Softmax", ["z"], ["y"], axis=1),
                ],
                ["N", 4],
                inits=[
                    c("W", rng.normal(0, 1, (6, 4))),
                    c("bb", rng.normal(0, 1, 6)),
                    c("W2", rng.normal(0, 1, (3, 6))),
                    c("b2", rng.normal(0, 1, 3)),
                ],
            ),
            4,
        ),
        "Sub+Mul+Div+Add+MatMul": (
            mm(
                [
                    node("Sub", ["x", "m"], ["a"]),
                    node("Div", ["a", "d"], ["b"]),
                    node("Mul", ["b", "k"], ["e"]),
                    node("MatMul", ["e", "W"], ["f"]),
                    node("Add", ["f", "bb"], ["g"]),
                    node("Relu", ["g"], ["y"]),
                ],
                ["N", 4],
                inits=[
                    c("m", rng.normal(0, 1, 4)),
                    c("d", 1 + rng.random(4)),
                    c("k", rng.normal(0, 1, 4)),
                    c("W", rng.normal(0, 1, (4, 5))),
                    c("bb", rng.normal(0, 1, 5)),
                ],
            ),
            4,
        ),
    }


_base_op_models = op_models


def op_models(kit: type) -> dict[str, tuple[object, int]]:  # noqa: F811 (the cases above plus the new ops)
    return {**_base_op_models(kit), **extra_op_models(kit)}


OP_CASES = sorted(op_models(onnx_kit.Kit))
CASE_OPS = {
    name: {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in model.graph.node}
    for name, (model, _) in op_models(onnx_kit.Kit).items()
}


def _without_final_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its last node, a Softmax, removed (its input becomes the output)."""
    logits = onnx.ModelProto()
    logits.CopyFrom(model)
    last = logits.graph.node.pop()
    assert last.op_type == "Softmax"
    for n in logits.graph.node:
        n.output[:] = ["y" if o == last.input[0] else o for o in n.output]
    return logits


@pytest.mark.parametrize("op", sorted(BOUND_OPS), ids=str)
def test_every_bound_op_has_a_soundness_case(op: str) -> None:
    """The cases are checked against the verifier's op map: a new bound op without a case fails."""
    cases = [name for name, ops in CASE_OPS.items() if op in ops]
    assert cases, f"bound op {op!r} has no soundness case; add a small model using it to op_models()"


@pytest.mark.parametrize("name", OP_CASES, ids=str)
def test_bound_op_is_sound(name: str, kit: type) -> None:
    model, n = op_models(kit)[name]
    assert CASE_OPS[name] <= set(BOUND_OPS), f"case {name} uses ops without a bound operator"
    gen = torch.Generator().manual_seed(1)
    centre = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    sampled = None
    if model.graph.node[-1].op_type == "Softmax":
        assert build_network(model).output_softmax, "a final Softmax must be recorded when dropped"
        sampled = _without_final_softmax(model)
    _check_contains(model, centre - 0.4, centre + 0.4, sampled=sampled)


def test_bound_registry_lists_the_ops() -> None:
    ops = supported_bound_ops()
    for op in (
        "Gemm",
        "MatMul",
        "Conv",
        "Relu",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "MaxPool",
        "BatchNormalization",
        "Softmax",
    ):
        assert op in ops


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    act=st.sampled_from(["Relu", "LeakyRelu", "Sigmoid", "Tanh"]),
    width=st.integers(2, 12),
    depth=st.integers(1, 3),
    eps=st.floats(0.01, 1.0),
)
def test_random_networks_are_sound(
    kit: type, seed: int, act: str, width: int, depth: int, eps: float
) -> None:
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


@SETTINGS
@given(seed=st.integers(0, 10_000), method=st.sampled_from(["crown", "hybrid"]))
def test_flat_rows_give_the_padded_rows_bounds(
    kit: type, seed: int, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounding the needed rows one (box, neuron) pair per batch entry is only a different layout."""
    import nnassay.tasks.methods.formal.bounds as bounds

    net = build_network(kit.mlp([3, 10, 10, 10, 2], seed=seed, scale=2.0))
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    high = low + 0.5 * torch.rand(16, 3, generator=gen, dtype=torch.float64)
    c = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]], dtype=torch.float64).expand(16, -1, -1)
    results = []
    for flat_below in (0.0, 1.01):  # never / always flat
        monkeypatch.setattr(bounds, "FLAT_ROWS_BELOW", flat_below)
        monkeypatch.setattr(bounds, "ALL_ROWS_UP_TO", 0)  # unstable rows only, so the rows differ per box
        lb, _, rel, _ = bounds.crown_linear(net, c, low, high, method=method)
        results.append((lb, rel.pre))
    (lb_padded, pre_padded), (lb_flat, pre_flat) = results
    later = [k for k in net.relu_layers() if k > net.relu_layers()[0]]
    assert any(bool(splittable(net.layers[k], *pre_padded[k]).any()) for k in later)  # rows were bounded
    assert torch.allclose(lb_padded, lb_flat, rtol=0, atol=1e-12)
    for k, (lo, hi) in pre_padded.items():
        assert torch.allclose(lo, pre_flat[k][0], rtol=0, atol=1e-12) and torch.allclose(
            hi, pre_flat[k][1], rtol=0, atol=1e-12
        )


@SETTINGS
@given(
    seed=st.integers(0, 10_000), eps=st.floats(0.05, 1.0), act=st.sampled_from(["Relu", "LeakyRelu", "Tanh"])
)
def test_bounds_inherited_from_a_containing_box_are_sound(kit: type, seed: int, eps: float, act: str) -> None:
    """A box's pre-activation bounds handed to a sub-box ("inherit") still contain every output of
    the sub-box, and are never looser than the outer box's."""
    from nnassay.tasks.methods.formal.bounds import crown_linear

    attrs = {"alpha": 0.1} if act == "LeakyRelu" else None
    model = kit.mlp([3, 10, 10, 2], act=act, seed=seed, scale=2.0, act_attrs=attrs)
    net, module = build_network(model), load_onnx_module(model).double()
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    outer_lo, outer_hi = centre - eps, centre + eps
    lo = outer_lo + eps * torch.rand(1, 3, generator=gen, dtype=torch.float64)
    hi = lo + eps * torch.rand(1, 3, generator=gen, dtype=torch.float64)
    c = torch.tensor([[[1.0, -1.0], [-1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    outer, _, outer_rel, _ = crown_linear(net, c, outer_lo, outer_hi)
    inner, _, inner_rel, _ = crown_linear(
        net, c, lo, hi, Relaxation(pre=dict(outer_rel.pre)), method="inherit"
    )
    x = lo + (hi - lo) * torch.rand(400, 3, generator=gen, dtype=torch.float64)
    y = module(x).detach()
    assert (y @ c[0].T >= inner - 1e-9).all()
    assert (inner >= outer - 1e-9).all()
    for k, (low_k, high_k) in inner_rel.pre.items():  # up to the outward rounding slack of each pass
        slack = 1e-8 * (1 + low_k.abs() + high_k.abs())
        assert (low_k >= outer_rel.pre[k][0] - slack).all() and (high_k <= outer_rel.pre[k][1] + slack).all()


def test_unsupported_bound_ops_are_collected(kit: type) -> None:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Relu", ["x"], ["a"], name="r"),
            node("Abs", ["a"], ["b"], name="abs"),
            node("Softsign", ["b"], ["c"], name="softsign"),
            node("Relu", ["c"], ["y"], name="r2"),
        ],
        ["N", 3],
    )
    with pytest.raises(UnsupportedOpsError) as info:
        build_network(model)
    names = [n for n, _ in info.value.nodes]
    assert names == ["abs", "softsign"]


def dag_models(kit: type) -> dict[str, tuple[object, int]]:
    """Branching graphs: residual Add/Sub and Concat of two computed tensors, fan-out, MaxPool in a branch."""
    c, mm, node = kit.const, kit.make_model, helper.make_node
    rng = np.random.default_rng(3)
    dense = [
        node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1),
        node("Relu", ["h1"], ["a1"]),
        node("Gemm", ["a1", "W2", "b2"], ["h2"], transB=1),
    ]
    dense_w = [
        c("W1", rng.normal(0, 1, (6, 4))),
        c("b1", rng.normal(0, 0.5, 6)),
        c("W2", rng.normal(0, 0.7, (6, 6))),
        c("b2", rng.normal(0, 0.5, 6)),
        c("W3", rng.normal(0, 0.5, (3, 12))),
        c("b3", rng.normal(0, 0.5, 3)),
        c("W4", rng.normal(0, 0.5, (3, 6))),
        c("b4", rng.normal(0, 0.5, 3)),
    ]
    conv = [
        node("Conv", ["x", "K1", "k1"], ["c1"], pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "K2", "k2"], ["c2"], pads=[1, 1, 1, 1]),
        node("Add", ["c2", "c1"], ["s"]),
        node("Relu", ["s"], ["r2"]),
    ]
    conv_w = [
        c("K1", rng.normal(0, 0.5, (2, 2, 3, 3))),
        c("k1", rng.normal(0, 0.3, 2)),
        c("K2", rng.normal(0, 0.5, (2, 2, 3, 3))),
        c("k2", rng.normal(0, 0.3, 2)),
        c("W5", rng.normal(0, 0.3, (3, 32))),
        c("W6", rng.normal(0, 0.3, (3, 40))),
        c("b5", rng.normal(0, 0.3, 3)),
    ]
    return {
        "residual-Add+Concat": (
            mm(
                dense
                + [
                    node("Add", ["h2", "h1"], ["r"]),
                    node("Relu", ["r"], ["a2"]),
                    node("Concat", ["a2", "h1"], ["cat"], axis=1),
                    node("Gemm", ["cat", "W3", "b3"], ["y"], transB=1),
                ],
                ["N", 4],
                inits=dense_w,
            ),
            4,
        ),
        "residual-Sub-input": (
            mm(
                dense
                + [
                    node("Sub", ["h2", "a1"], ["r"]),
                    node("Tanh", ["r"], ["t"]),
                    node("Gemm", ["t", "W4", "b4"], ["y"], transB=1),
                ],
                ["N", 4],
                inits=dense_w,
            ),
            4,
        ),
        "conv-residual": (
            mm(
                conv + [node("Flatten", ["r2"], ["f"]), node("Gemm", ["f", "W5", "b5"], ["y"], transB=1)],
                ["N", 2, 4, 4],
                inits=conv_w,
            ),
            32,
        ),
        "conv-residual-maxpool-branch": (
            mm(
                conv
                + [
                    node("MaxPool", ["c1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    node("Flatten", ["p"], ["fp"]),
                    node("Flatten", ["r2"], ["fr"]),
                    node("Concat", ["fp", "fr"], ["f"], axis=1),
                    node("Gemm", ["f", "W6", "b5"], ["y"], transB=1),
                ],
                ["N", 2, 4, 4],
                inits=conv_w,
            ),
            32,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["residual-Add+Concat", "residual-Sub-input", "conv-residual", "conv-residual-maxpool-branch"],
    ids=str,
)
def test_branching_graph_is_sound(name: str, kit: type) -> None:
    model, n = dag_models(kit)[name]
    net, module = build_network(model), load_onnx_module(model).double()
    x = torch.rand(5, n, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(
            net.forward(x), module(x).reshape(5, -1), atol=1e-9
        )  # the IR computes the graph
    gen = torch.Generator().manual_seed(2)
    centre = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    for eps in (0.05, 0.4):
        _check_contains(model, centre - eps, centre + eps)


@SETTINGS
@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 1.0))
def test_random_residual_networks_are_sound(kit: type, seed: int, eps: float) -> None:
    c, node = kit.const, helper.make_node
    rng = np.random.default_rng(seed)
    w = [
        c("W1", rng.normal(0, 1.5, (5, 3))),
        c("b1", rng.normal(0, 0.5, 5)),
        c("W2", rng.normal(0, 1.5, (5, 5))),
        c("b2", rng.normal(0, 0.5, 5)),
        c("W3", rng.normal(0, 1, (2, 10))),
        c("b3", rng.normal(0, 0.5, 2)),
    ]
    model = kit.make_model(
        [
            node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1),
            node("Relu", ["h1"], ["a1"]),
            node("Gemm", ["a1", "W2", "b2"], ["h2"], transB=1),
            node("Add", ["h2", "a1"], ["s"]),
            node("Relu", ["s"], ["a2"]),
            node("Concat", ["a2", "a1"], ["cat"], axis=1),
            node("Gemm", ["cat", "W3", "b3"], ["y"], transB=1),
        ],
        ["N", 3],
        inits=w,
    )
    centre = torch.tensor(rng.normal(0, 1, 3))
    _check_contains(model, centre - eps, centre + eps, n_samples=300, seed=seed)
    rel = Relaxation()
    out_lo, out_hi = forward_bounds(
        build_network(model), (centre - eps).unsqueeze(0), (centre + eps).unsqueeze(0), rel, refine=True
    )
    x = centre - eps + 2 * eps * torch.rand(300, 3, dtype=torch.float64)
    y = load_onnx_module(model).double()(x).detach()
    assert (y >= out_lo - 1e-9).all() and (y <= out_hi + 1e-9).all()


def test_product_of_three_branches_is_unsupported(kit: type) -> None:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Relu", ["x"], ["a"], name="r"),
            node("Neg", ["x"], ["n"], name="neg"),
            node("Pow", ["a", "n"], ["y"], name="pow"),
        ],
        ["N", 3],
    )
    with pytest.raises(UnsupportedOpsError) as info:
        build_network(model)
    assert [n for n, _ in info.value.nodes] == ["pow"]


@pytest.mark.parametrize("name", sorted(softmax_tail_models(onnx_kit.Kit)), ids=str)
def test_order_keeping_tail_is_dropped_and_logits_are_bounded(name: str, kit: type) -> None:
    """skl2onnx's LinearClassifier(SOFTMAX) + Normalizer(L1): bounds are about the logits."""
    model, logits = softmax_tail_models(kit)[name]
    assert build_network(model).output_softmax
    centre = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _check_contains(model, centre - 0.3, centre + 0.3, sampled=logits)


def test_vnncomp_style_prefixes_are_fused_and_exact(kit: type) -> None:
    """Sub/Div normalisation, Flatten, MatMul+Add and Conv+BatchNormalization on a fixed-batch image input
    collapse into fewer layers that still compute the graph exactly."""
    c, node = kit.const, helper.make_node
    rng = np.random.default_rng(11)
    model = kit.make_model(
        [
            node("Sub", ["x", "mu"], ["a"]),
            node("Div", ["a", "sd"], ["b"]),
            node("Conv", ["b", "K", "k"], ["cv"], pads=[1, 1, 1, 1]),
            node("BatchNormalization", ["cv", "s", "bb", "m", "v"], ["bn"]),
            node("Relu", ["bn"], ["r"]),
            node("Flatten", ["r"], ["f"]),
            node("MatMul", ["f", "W"], ["g"]),
            node("Add", ["g", "bw"], ["h"]),
            node("Relu", ["h"], ["q"]),
            node("MatMul", ["q", "V"], ["o"]),
            node("Add", ["o", "bv"], ["z"]),
            node("Softmax", ["z"], ["y"], axis=1),
        ],
        [1, 3, 4, 4],
        inits=[
            c("mu", np.array([0.4, 0.5, 0.6]).reshape(1, 3, 1, 1)),
            c("sd", np.array([0.2, 0.25, 0.3]).reshape(1, 3, 1, 1)),
            c("K", rng.normal(0, 0.4, (2, 3, 3, 3))),
            c("k", rng.normal(0, 0.3, 2)),
            c("s", rng.normal(0, 1, 2)),
            c("bb", rng.normal(0, 1, 2)),
            c("m", rng.normal(0, 1, 2)),
            c("v", 1 + rng.random(2)),
            c("W", rng.normal(0, 0.3, (32, 6))),
            c("bw", rng.normal(0, 0.3, 6)),
            c("V", rng.normal(0, 0.5, (6, 3))),
            c("bv", rng.normal(0, 0.3, 3)),
        ],
    )
    net = build_network(model)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Diag",
        "Conv",
        "Relu",
        "Dense",
        "Relu",
        "Dense",
    ]
    assert net.output_softmax and net.n_inputs == 48
    module = load_onnx_module(model).double()
    x = torch.rand(4, 48, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(net.forward(x), 1), module(x).reshape(4, -1), atol=1e-9)
    _check_contains_logits(net, x[0] - 0.02, x[0] + 0.02)


def _check_contains_logits(net: object, low: torch.Tensor, high: torch.Tensor) -> None:
    x = low + (high - low) * torch.rand(300, low.numel(), dtype=torch.float64)
    y = net.forward(x)  # type: ignore[attr-defined]
    n = y.shape[1]
    c = torch.cat([torch.eye(n), -torch.eye(n)]).double().unsqueeze(0)
    lb, _, _ = crown(net, c, low.unsqueeze(0), high.unsqueeze(0))  # type: ignore[arg-type]
    assert (torch.cat([y, -y], 1) >= lb - 1e-9).all()


@SETTINGS
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 5), n=st.integers(1, 6))
def test_conjunction_bound_is_sound_and_at_least_the_rowwise_bound(seed: int, rows: int, n: int) -> None:
    """``conjunction_lower`` never exceeds ``max_i (a_i x + b_i)`` at any sampled point of the box and is
    never below the best single row's bound."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(3, rows, n, generator=gen, dtype=torch.float64)
    b = torch.randn(3, rows, generator=gen, dtype=torch.float64)
    low = -torch.rand(3, n, generator=gen, dtype=torch.float64)
    high = low + 2 * torch.rand(3, n, generator=gen, dtype=torch.float64)
    lb = concretize(a, b, low, high)
    got = conjunction_lower(a, lb, (tuple(range(rows)),), low, high)[:, 0]
    assert (got >= lb.amax(1) - 1e-12).all()
    x = low.unsqueeze(1) + (high - low).unsqueeze(1) * torch.rand(
        3, 4000, n, generator=gen, dtype=torch.float64
    )
    values = (torch.einsum("bkn,bpn->bpk", a, x) + b.unsqueeze(1)).amax(2)  # max over rows, per point
    assert (values.amin(1) >= got).all()


def test_conjunction_bound_proves_what_no_single_row_does() -> None:
    """max(x, -x) + 0.1 >= 0.1 on [-1, 1], but each row alone goes down to -0.9."""
    a = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    low, high = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    lb = concretize(a, torch.full((1, 2), 0.1, dtype=torch.float64), low, high)
    assert float(lb.amax()) == pytest.approx(-0.9)
    got = conjunction_lower(a, lb, ((0, 1),), low, high)
    assert 0.0999 < float(got[0, 0]) <= 0.1
    assert float(conjunction_lower(a, lb, ((0,), (1,)), low, high).amin()) == pytest.approx(-0.9)
