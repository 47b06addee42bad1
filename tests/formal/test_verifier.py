"""The verification ladder: known answers on hand-built and enumerated nets, real VNN-COMP instances,
the unsupported-op path and the certified radius."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from nnassay.tasks.methods.formal import verifier
from nnassay.tasks.methods.formal.command import check_counterexample, run_model
from nnassay.tasks.methods.formal.property import Box, Halfspace, Property, Region, local_robustness
from nnassay.tasks.methods.formal.verifier import certified_radius, verify

BENCH = Path("/work/shared/benchmarks/vnncomp")


def _prop(low: list[float], high: list[float], coeffs: list[float], rhs: float) -> Property:
    box = Box(np.array(low, float), np.array(high, float))
    region = Region(box, ((Halfspace(np.array(coeffs, float), rhs),),))
    return Property((region,), len(low), len(coeffs))


@pytest.fixture
def abs_net(kit: type, tmp_path: Path) -> Path:
    """y = relu(x) + relu(-x) = |x| (1 input, 1 output): min over [-1, 1] is 0, at x = 0 only."""
    c, node = kit.const, helper.make_node
    model = kit.make_model(
        [
            node("Gemm", ["x", "W", "b"], ["h"], transB=1),
            node("Relu", ["h"], ["r"]),
            node("Gemm", ["r", "V", "z"], ["y"], transB=1),
        ],
        ["N", 1],
        inits=[
            c("W", np.array([[1.0], [-1.0]])),
            c("b", np.zeros(2)),
            c("V", np.array([[1.0, 1.0]])),
            c("z", np.zeros(1)),
        ],
    )
    return kit.save(model, tmp_path)


def test_hand_built_known_answers(abs_net: Path) -> None:
    proved = verify(abs_net, _prop([-1], [1], [1.0], -0.01), timeout_s=20)  # |x| <= -0.01 never holds
    assert proved.verdict == "unsat" and proved.margin is not None and proved.margin > 0
    refuted = verify(abs_net, _prop([-1], [1], [1.0], 0.5), timeout_s=20)  # |x| <= 0.5 holds near 0
    assert refuted.verdict == "sat" and refuted.counterexample is not None
    x, y = refuted.counterexample
    assert x.dtype == np.float32 and abs(float(x[0])) <= 0.5 and float(y[0]) <= 0.5


def _grid_min(path: Path, coeffs: np.ndarray, n: int = 161) -> float:
    axis = np.linspace(-1, 1, n)
    xs = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype(np.float32)
    from nnassay.tasks.engine.onnx_torch import ort_session, run_ort

    return float((run_ort(ort_session(path), xs) @ coeffs).min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enumerated_small_nets(kit: type, tmp_path: Path, seed: int) -> None:
    """2 inputs, exhaustive grid: a threshold below the Lipschitz-corrected minimum is unsat, above the
    grid minimum sat; input splitting must decide both."""
    path = kit.save(kit.mlp([2, 12, 12, 2], seed=seed, scale=2.0), tmp_path)
    coeffs = np.array([1.0, -1.0])
    grid = _grid_min(path, coeffs)
    assert verify(path, _prop([-1, -1], [1, 1], list(coeffs), grid + 0.05), timeout_s=30).verdict == "sat"
    lip = _lipschitz_bound(path)
    safe = grid - lip * (2 / 160) - 0.05  # no point of the box can go below this
    out = verify(path, _prop([-1, -1], [1, 1], list(coeffs), safe), timeout_s=30)
    assert out.verdict == "unsat"


def _lipschitz_bound(path: Path) -> float:
    import onnx
    from onnx import numpy_helper

    mats = [
        numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.startswith("W")
    ]
    norm = 1.0
    for w in mats:
        norm *= np.abs(w).sum(1).max()  # l_inf -> l_inf operator norm; ReLU is 1-Lipschitz
    return 2 * norm * 2  # |c| = 2, steps in both coordinates


def test_relu_splitting_agrees_with_input_splitting(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kit.save(kit.mlp([4, 16, 16, 2], seed=5, scale=2.0), tmp_path)
    rng = np.random.default_rng(5)
    answers = {}
    for rhs in (-0.3, 0.0, 0.3):
        prop = _prop([-1] * 4, [1] * 4, [1.0, -1.0], rhs + float(rng.normal(0, 0.01)))
        by_input = verify(path, prop, timeout_s=30)
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 0)
        by_relu = verify(path, prop, timeout_s=30)
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 10)
        answers[rhs] = (by_input.verdict, by_relu.verdict)
        decided = {by_input.verdict, by_relu.verdict} & {"sat", "unsat"}
        assert len(decided) <= 1, f"contradiction at rhs={rhs}: {answers[rhs]}"
        for out in (by_input, by_relu):
            if out.verdict == "sat":
                assert check_counterexample(prop, *out.counterexample, box_tol=0.0) is None


def test_relu_splitting_with_many_clauses_agrees_with_input_splitting(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local robustness (one clause per other class) and a conjunction of two rows: ReLU splitting
    bounds only the rows of clauses not yet proved in each sub-domain and must agree with input
    splitting; the radii and thresholds straddle the answer, so both verdicts and branching occur."""
    path = kit.save(kit.mlp([4, 16, 16, 4], seed=8, scale=2.0), tmp_path)
    x = np.array([0.2, -0.1, 0.4, 0.0])
    label = int(np.argmax(run_model(path, x[None].astype(np.float32)).reshape(-1)))
    props = [local_robustness(x, label, eps, 4, -1.0, 1.0) for eps in (0.2, 0.23, 0.26)]
    for rhs in (-1.0, -0.9, -0.8):
        both = (Halfspace(np.array([1.0, -1.0, 0, 0]), rhs), Halfspace(np.array([0, 0, 1.0, -1.0]), rhs))
        props.append(Property((Region(Box(x - 0.1, x + 0.1), (both,)),), 4, 4))
    by_relu = []
    for prop in props:
        by_input = verify(path, prop, timeout_s=30)
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 0)
        by_relu.append(verify(path, prop, timeout_s=30))
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 10)
        assert {by_input.verdict, by_relu[-1].verdict} in ({"sat"}, {"unsat"}), (
            prop.source,
            by_input,
            by_relu[-1],
        )
        if by_input.verdict == "sat":
            for out in (by_input, by_relu[-1]):
                assert check_counterexample(prop, *out.counterexample, box_tol=0.0) is None
    assert [out.verdict for out in by_relu] == ["unsat", "unsat", "sat", "unsat", "unsat", "sat"]
    assert sum(out.method == "bab-relu" for out in by_relu) >= 3


def test_relu_splitting_within_a_tiny_memory_budget_stays_sound(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for 16 open sub-domains, ReLU splitting takes the ones closest to proved near the
    limit and answers "unknown" (naming the budget) when they would overflow, never a wrong verdict."""
    import functools

    from nnassay.tasks.methods.formal import bab

    path = kit.save(kit.mlp([4, 16, 16, 4], seed=8, scale=2.0), tmp_path)
    x = np.array([0.2, -0.1, 0.4, 0.0])
    label = int(np.argmax(run_model(path, x[None].astype(np.float32)).reshape(-1)))
    props = [local_robustness(x, label, eps, 4, -1.0, 1.0) for eps in (0.2, 0.23, 0.26, 0.4)]
    modes: list[bool] = []
    take = bab._Store.take
    monkeypatch.setattr(
        bab._Store, "take", lambda self, n, lowest=True: modes.append(lowest) or take(self, n, lowest)
    )
    monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 0)
    free = [verify(path, prop, timeout_s=30) for prop in props]
    assert all(modes) and [out.verdict for out in free] == ["unsat", "unsat", "sat", "sat"]
    monkeypatch.setattr(verifier, "bab_relu", functools.partial(bab.bab_relu, batch=4, memory=1.0))
    modes.clear()
    tight = [verify(path, prop, timeout_s=30) for prop in props]
    assert not all(modes)  # the budget was reached
    for a, b in zip(free, tight, strict=True):
        assert b.verdict in (a.verdict, "unknown"), (a, b)
        assert b.verdict != "unknown" or "memory budget" in b.reason
    assert tight[0].verdict == "unsat" and tight[1].verdict == "unknown"  # proved near the limit; overflows


def test_unsupported_nodes_give_unknown(kit: type, tmp_path: Path) -> None:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Softsign", ["x"], ["a"], name="softsign"),
            node("Relu", ["a"], ["b"], name="relu"),
            node("LSTM", ["b", "W", "R"], ["y"], name="lstm", hidden_size=2),
        ],
        ["N", 3],
        inits=[kit.const("W", np.zeros((1, 8, 3))), kit.const("R", np.zeros((1, 8, 2)))],
    )
    path = kit.save(model, tmp_path)
    out = verify(path, _prop([0] * 3, [1] * 3, [1.0], 0.0), timeout_s=10)
    assert out.verdict == "unknown"
    assert out.unsupported == [("softsign", "Softsign"), ("lstm", "LSTM")]
    assert "softsign" in out.reason and "lstm" in out.reason


def test_large_ort_deviation_gives_unknown(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verifier, "MAX_REL_DEVIATION", -1.0)
    out = verify(mlp_path, _prop([0] * 3, [1] * 3, [1.0, 0.0], -100.0), timeout_s=10)
    assert out.verdict == "unknown" and "ONNX Runtime" in out.reason


def test_softmax_with_absolute_threshold_is_unknown(kit: type, tmp_path: Path) -> None:
    model = kit.mlp([3, 4, 2], seed=1)
    model.graph.node[-1].output[0] = "logits"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1))
    path = kit.save(model, tmp_path)
    assert verify(path, _prop([0] * 3, [1] * 3, [1.0, 0.0], 0.5), timeout_s=10).verdict == "unknown"
    compare = verify(path, _prop([0] * 3, [0.01] * 3, [1.0, -1.0], 0.0), timeout_s=10)
    assert compare.verdict in ("sat", "unsat")


def test_certified_radius_brackets(mlp_path: Path) -> None:
    x = np.array([0.2, -0.1, 0.4])
    label = int(np.argmax(run_model(mlp_path, x.astype(np.float32))))
    lo, hi = certified_radius(mlp_path, x, label, lower=-5.0, upper=5.0, eps_max=3.0, timeout_s=20, tol=0.05)
    assert 0 < lo <= 3.0
    assert hi is None or hi >= lo
    assert (
        verify(mlp_path, local_robustness(x, label, lo, 2, -5.0, 5.0), timeout_s=10, incomplete=True).verdict
        == "unsat"
    )


def _instances(folder: str, names: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    path = BENCH / folder / "instances.csv"
    rows = list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else []
    wanted = {(Path(r["onnx"]).name, Path(r["vnnlib"]).name): r["expected"] for r in rows}
    return [
        (f"{folder}/onnx/{o}", f"{folder}/vnnlib/{v}", wanted[(o, v)]) for o, v in names if (o, v) in wanted
    ]


FAST = _instances(
    "acasxu",
    [
        ("ACASXU_run2a_1_9_batch_2000.onnx", "prop_1.vnnlib"),
        ("ACASXU_run2a_2_1_batch_2000.onnx", "prop_1.vnnlib"),
    ],
) + _instances(
    "mnistfc_2022",
    [("mnist-net_256x2.onnx", "prop_11_0.03.vnnlib"), ("mnist-net_256x2.onnx", "prop_12_0.05.vnnlib")],
)
SLOW = _instances("acasxu", [("ACASXU_run2a_1_2_batch_2000.onnx", "prop_1.vnnlib")]) + _instances(
    "mnistfc_2022", [("mnist-net_256x2.onnx", "prop_0_0.05.vnnlib")]
)


def _check_instance(onnx_rel: str, vnnlib_rel: str, expected: str) -> None:
    from nnassay.tasks.methods.formal.vnnlib import parse_vnnlib

    prop = parse_vnnlib(BENCH / vnnlib_rel)
    out = verify(BENCH / onnx_rel, prop, timeout_s=60)
    assert out.verdict in (expected, "unknown", "timeout"), (
        f"WRONG answer {out.verdict} (expected {expected})"
    )
    assert out.verdict == expected, f"not solved: {out.verdict} {out.reason}"
    if out.verdict == "sat":
        assert check_counterexample(prop, *out.counterexample, box_tol=0.0) is None


@pytest.mark.parametrize("onnx_rel,vnnlib_rel,expected", FAST, ids=lambda v: Path(v).name)
def test_vnncomp_fast_instances(onnx_rel: str, vnnlib_rel: str, expected: str) -> None:
    _check_instance(onnx_rel, vnnlib_rel, expected)


@pytest.mark.slow
@pytest.mark.parametrize("onnx_rel,vnnlib_rel,expected", SLOW, ids=lambda v: Path(v).name)
def test_vnncomp_slower_instances(onnx_rel: str, vnnlib_rel: str, expected: str) -> None:
    _check_instance(onnx_rel, vnnlib_rel, expected)


def _residual_model(kit: type, seed: int, n_in: int = 2) -> tuple[object, float]:
    """x -> h1 = W1 x + b1 -> relu -> h2 = W2 . + b2; y = W3 relu(h2 + h1) + b3, and an l_inf Lipschitz bound."""
    c, node = kit.const, helper.make_node
    rng = np.random.default_rng(seed)
    w1, w2, w3 = rng.normal(0, 1.5, (8, n_in)), rng.normal(0, 0.8, (8, 8)), rng.normal(0, 1, (2, 8))
    model = kit.make_model(
        [
            node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1),
            node("Relu", ["h1"], ["a1"]),
            node("Gemm", ["a1", "W2", "b2"], ["h2"], transB=1),
            node("Add", ["h2", "h1"], ["s"]),
            node("Relu", ["s"], ["a2"]),
            node("Gemm", ["a2", "W3", "b3"], ["y"], transB=1),
        ],
        ["N", n_in],
        inits=[
            c("W1", w1),
            c("b1", rng.normal(0, 0.5, 8)),
            c("W2", w2),
            c("b2", rng.normal(0, 0.5, 8)),
            c("W3", w3),
            c("b3", rng.normal(0, 0.5, 2)),
        ],
    )

    def norm(w: np.ndarray) -> float:
        return float(np.abs(w).sum(1).max())

    return model, norm(w3) * (norm(w2) + 1) * norm(w1)


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_graph_known_answers(kit: type, tmp_path: Path, seed: int) -> None:
    """A residual Add of two computed tensors: exhaustive grid on 2 inputs decides sat and unsat."""
    model, lip = _residual_model(kit, seed)
    path = kit.save(model, tmp_path)
    coeffs = np.array([1.0, -1.0])
    grid = _grid_min(path, coeffs)
    sat_prop = _prop([-1, -1], [1, 1], list(coeffs), grid + 0.05)
    sat = verify(path, sat_prop, timeout_s=30)
    assert sat.verdict == "sat" and check_counterexample(sat_prop, *sat.counterexample, box_tol=0.0) is None
    safe = grid - 2 * lip * (2 / 160) - 0.05  # |c| = 2; a grid point is within 1/160 of every point per axis
    out = verify(path, _prop([-1, -1], [1, 1], list(coeffs), safe), timeout_s=30)
    assert out.verdict == "unsat" and out.margin is not None and out.margin > 0


def test_residual_relu_splitting_agrees_with_input_splitting(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = _residual_model(kit, 7, n_in=4)
    path = kit.save(model, tmp_path)
    for rhs in (-1.0, 0.0, 1.0):
        prop = _prop([-1] * 4, [1] * 4, [1.0, -1.0], rhs)
        by_input = verify(path, prop, timeout_s=30)
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 0)
        by_relu = verify(path, prop, timeout_s=30)
        monkeypatch.setattr(verifier, "INPUT_SPLIT_MAX_DIMS", 10)
        decided = {by_input.verdict, by_relu.verdict} & {"sat", "unsat"}
        assert len(decided) <= 1, f"contradiction at rhs={rhs}: {by_input.verdict} vs {by_relu.verdict}"
        assert by_input.verdict in ("sat", "unsat")


def test_branch_power_gives_unknown_listing_the_node(kit: type, tmp_path: Path) -> None:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Relu", ["x"], ["a"], name="r"),
            node("Neg", ["x"], ["n"], name="neg"),
            node("Pow", ["a", "n"], ["y"], name="pow"),
        ],
        ["N", 3],
    )
    out = verify(kit.save(model, tmp_path), _prop([0] * 3, [1] * 3, [1.0, 0.0, 0.0], -1.0), timeout_s=10)
    assert out.verdict == "unknown" and [n for n, _ in out.unsupported] == ["pow"]
    assert "Pow (only Add, Sub, Concat, Where, Mul, MatMul, Div, Max and Min" in out.unsupported[0][1]


@pytest.mark.parametrize(
    ("method", "guard"),
    [
        ("crown", float("inf")),
        ("hybrid", float("inf")),
        ("crown", 1.0),
        ("inherit", float("inf")),
        ("inherit", 1.0),
    ],
)
def test_input_splitting_bound_methods_decide(kit: type, tmp_path: Path, method: str, guard: float) -> None:
    """Input splitting with backward CROWN, hybrid (forward + backward on unstable neurons) or inherited
    (a box's bounds handed to its halves) bounds, and with the width guard (1: always the relatively widest input) that the portfolio falls back to."""
    import time

    import torch

    from nnassay.tasks.methods.formal.bab import bab_input
    from nnassay.tasks.methods.formal.falsify import OrtChecker, Spec
    from nnassay.tasks.methods.formal.ops import build_network

    path = kit.save(kit.mlp([2, 12, 12, 2], seed=4, scale=2.0), tmp_path)
    net, coeffs = build_network(path), np.array([1.0, -1.0])
    grid = _grid_min(path, coeffs)
    low, high = torch.full((2,), -1.0, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for rhs, expected in ((grid + 0.05, "sat"), (grid - _lipschitz_bound(path) * (2 / 160) - 0.05, "unsat")):
        prop = _prop([-1, -1], [1, 1], list(coeffs), rhs)
        res = bab_input(
            net,
            Spec.of(prop.regions[0], prop.n_outputs),
            low,
            high,
            OrtChecker(str(path), prop),
            deadline=time.monotonic() + 30,
            method=method,
            guard=guard,
        )
        assert res.verdict == expected
        if expected == "sat":
            assert check_counterexample(prop, *res.counterexample, box_tol=0.0) is None
        else:
            assert res.margin > 0


def test_input_splitting_falls_back_to_crown_where_forward_bounds_cannot_go(
    kit: type, tmp_path: Path
) -> None:
    """8 inputs through Conv, Relu and MaxPool: the default "hybrid" bounds cannot pass MaxPool, so
    input splitting continues with backward CROWN and still decides both ways."""
    import time

    import torch

    from nnassay.tasks.engine.onnx_torch import ort_session, run_ort
    from nnassay.tasks.methods.formal.bab import bab_input
    from nnassay.tasks.methods.formal.falsify import OrtChecker, Spec
    from nnassay.tasks.methods.formal.ops import build_network

    c, node, rng = kit.const, helper.make_node, np.random.default_rng(2)
    model = kit.make_model(
        [
            node("Conv", ["x", "W", "b"], ["h"], pads=[1, 1, 1, 1]),
            node("Relu", ["h"], ["r"]),
            node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            node("Flatten", ["p"], ["f"]),
            node("Gemm", ["f", "V", "z"], ["y"], transB=1),
        ],
        ["N", 1, 2, 4],
        inits=[
            c("W", rng.normal(0, 1, (2, 1, 3, 3))),
            c("b", rng.normal(0, 0.3, 2)),
            c("V", rng.normal(0, 1, (2, 4))),
            c("z", np.zeros(2)),
        ],
    )
    path = kit.save(model, tmp_path)
    net = build_network(path)
    xs = rng.uniform(-1, 1, (20000, 8)).astype(np.float32)
    sampled_min = float((run_ort(ort_session(path), xs) @ np.array([1.0, -1.0])).min())
    low, high = torch.full((8,), -1.0, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    assert sampled_min > -5  # the unsat threshold below is far under it; the root bound (-11.8) is not enough
    for rhs, expected in ((sampled_min + 0.05, "sat"), (-10.0, "unsat")):
        prop = _prop([-1] * 8, [1] * 8, [1.0, -1.0], rhs)
        res = bab_input(
            net,
            Spec.of(prop.regions[0], prop.n_outputs),
            low,
            high,
            OrtChecker(str(path), prop),
            deadline=time.monotonic() + 30,
            method="hybrid",
        )
        assert res.verdict == expected
        if expected == "sat":
            assert check_counterexample(prop, *res.counterexample, box_tol=0.0) is None
        else:
            assert res.branches > 0 and res.margin > 0


def test_open_boxes_stack_keeps_bounds_with_their_boxes() -> None:
    import torch

    from nnassay.tasks.methods.formal.bab import _Boxes

    stack = _Boxes(torch.zeros(1, 2), torch.ones(1, 2), {})
    assert len(stack.pop(8)[0]) == 1 and len(stack) == 0
    bounds = {3: (torch.arange(4.0).reshape(4, 1), torch.arange(4.0).reshape(4, 1) + 10)}
    stack.push(torch.arange(8.0).reshape(4, 2), torch.arange(8.0).reshape(4, 2) + 1, bounds)
    low, high, pre = stack.pop(3)  # the newest three, each with its own bounds
    assert low[:, 0].tolist() == [2.0, 4.0, 6.0] and pre[3][0][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert pre[3][1][:, 0].tolist() == [11.0, 12.0, 13.0] and len(stack) == 1
    stack.push(torch.zeros(2, 2), torch.ones(2, 2), {})  # boxes without bounds
    assert len(stack) == 3
    low, high, pre = stack.pop(5)  # one box with bounds and two without: the batch goes without
    assert low[:, 0].tolist() == [0.0, 0.0, 0.0] and pre == {} and len(stack) == 0


def test_open_subdomain_store_takes_the_lowest_margins_and_keeps_each_domain_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from nnassay.tasks.methods.formal.bab import _Pool, _Store

    monkeypatch.setattr(_Store, "CHUNK", 2)  # domains spread over chunks

    def pool(margins: list[float]) -> _Pool:  # every tensor of a domain carries its margin (exact in float32)
        n, v = len(margins), torch.tensor(margins, dtype=torch.float64)
        pre = {2: (v.reshape(n, 1).expand(n, 3).clone(), v.reshape(n, 1).expand(n, 3) + 1)}
        per_row = v.float().reshape(n, 1, 1).expand(n, 2, 3).clone()
        return _Pool(
            pre,
            {2: torch.zeros(n, 3, dtype=torch.int8)},
            {2: per_row},
            {2: -per_row},
            v.clone(),
            torch.ones(n, 2, dtype=torch.bool),
        )

    def whole(p: _Pool) -> bool:
        m = p.margin
        return bool(
            (p.pre[2][0][:, 0] == m).all()
            and (p.pre[2][1][:, 2] == m + 1).all()
            and (p.alphas[2][:, 1, 0].double() == m).all()
            and (p.betas[2][:, 0, 2].double() == -m).all()
        )

    store = _Store(pool([-1.0]), limit=6)
    taken = store.take(4)
    assert len(taken) == 1 and len(store) == 0
    store.add(pool([-0.5, -3.0, -2.0, -0.125]))  # grows past the one slot it had
    store.add(pool([-4.0]))
    assert len(store) == 5 and store.worst() == -4.0
    taken = store.take(3)
    assert sorted(taken.margin.tolist()) == [-4.0, -3.0, -2.0] and whole(taken)
    store.add(pool([-0.25, -0.375]))
    assert len(store) == 4
    assert store.take(1, lowest=False).margin.tolist() == [-0.125]
    store.add(pool([-0.125, -5.0]))  # up to the limit, not past it
    assert len(store) == 5
    with pytest.raises(MemoryError):
        store.add(pool([-6.0, -7.0]))
    assert store.take(1).margin.tolist() == [-5.0]
    rest = store.take(10)
    assert sorted(rest.margin.tolist()) == [-0.5, -0.375, -0.25, -0.125] and whole(rest) and len(store) == 0
    joined = pool([1.0]).join(pool([2.0, 3.0]))
    assert joined.margin.tolist() == [1.0, 2.0, 3.0] and whole(joined)


def test_split_dims_take_the_widest_input_only_past_the_guard() -> None:
    import torch

    from nnassay.tasks.methods.formal.bab import _split_dims

    low, high = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    lo = torch.zeros(2, 3, dtype=torch.float64)
    hi = torch.tensor(
        [[0.01, 2.0, 0.0], [0.5, 2.0, 0.0]], dtype=torch.float64
    )  # relative widths .01/1 and .5/1
    score = torch.tensor([[5.0, 1.0, 9.0], [5.0, 1.0, 9.0]], dtype=torch.float64)
    assert _split_dims(score, lo, hi, low, high, float("inf")).tolist() == [2, 2]  # plain rule: best score
    score[:, 2] = 0.0  # a zero-width input has no score and is never the widest
    assert _split_dims(score, lo, hi, low, high, float("inf")).tolist() == [0, 0]
    assert _split_dims(score, lo, hi, low, high, 32.0).tolist() == [1, 0]  # 100x wider: guard; 2x: not


def test_input_splitting_portfolio_restarts_with_the_guard(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import torch

    from nnassay.tasks.methods.formal import bab
    from nnassay.tasks.methods.formal.falsify import OrtChecker, Spec
    from nnassay.tasks.methods.formal.ops import build_network

    path = kit.save(kit.mlp([2, 12, 12, 2], seed=4, scale=2.0), tmp_path)
    rhs = _grid_min(path, np.array([1.0, -1.0])) - _lipschitz_bound(path) * (2 / 160) - 0.05
    prop = _prop([-1, -1], [1, 1], [1.0, -1.0], rhs)
    calls: list[float] = []
    real = bab.bab_input

    def spy(*args: object, **kw: object) -> object:
        calls.append(float(kw.get("guard", float("inf"))))  # type: ignore[arg-type]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(bab, "bab_input", spy)
    monkeypatch.setattr(bab, "PLAIN_RULE_MAX_S", 0.0)  # the plain rule gets no time: the guarded run decides
    low, high = torch.full((2,), -1.0, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    res = bab.bab_input_portfolio(
        build_network(path),
        Spec.of(prop.regions[0], prop.n_outputs),
        low,
        high,
        OrtChecker(str(path), prop),
        deadline=time.monotonic() + 30,
    )
    assert res.verdict == "unsat" and res.margin > 0
    assert calls == [float("inf"), bab.SPLIT_WIDTH_GUARD]


def test_pick_device_follows_the_setting_else_what_torch_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("NNASSAY_VERIFIER_DEVICE", raising=False)
    assert verifier.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("NNASSAY_VERIFIER_DEVICE", "cuda:1")
    assert verifier.pick_device() == torch.device("cuda", 1)


def test_a_failing_device_reruns_the_ladder_on_the_cpu(
    abs_net: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 'meta' device holds no data, so every bound computation on it fails: the verdict must survive."""
    monkeypatch.setenv("NNASSAY_VERIFIER_DEVICE", "meta")
    out = verify(abs_net, _prop([-1], [1], [1.0], -0.01), timeout_s=20)
    assert out.verdict == "unsat" and out.device == "cpu" and "meta failed" in out.reason
    monkeypatch.setenv("NNASSAY_VERIFIER_DEVICE", "cpu")
    plain = verify(abs_net, _prop([-1], [1], [1.0], -0.01), timeout_s=20)
    assert plain.verdict == "unsat" and plain.device == "cpu" and "failed" not in plain.reason


def test_network_and_module_move_every_tensor(kit: type, tmp_path: Path) -> None:
    """Layers (wrapped ones too) and the torch graph, integer constants included, follow ``.to``."""
    import torch

    from nnassay.tasks.engine.onnx_torch import load_onnx_module
    from nnassay.tasks.methods.formal.layers import Layer
    from nnassay.tasks.methods.formal.ops import build_network

    node = helper.make_node
    model = kit.make_model(
        [
            node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            node("Relu", ["c"], ["r"]),
            node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
            node("Reshape", ["m", "shape"], ["f"]),
            node("Gemm", ["f", "V", "z"], ["y"], transB=1),
        ],
        ["N", 1, 4, 4],
        inits=[
            kit.const("W", np.ones((2, 1, 3, 3))),
            kit.const("shape", np.array([-1, 8])),
            kit.const("V", np.ones((3, 8))),
            kit.const("z", np.zeros(3)),
        ],
    )
    path = kit.save(model, tmp_path)
    meta = torch.device("meta")

    def tensors(obj: object) -> list[torch.Tensor]:
        found = []
        for value in vars(obj).values():
            found += (
                [value]
                if isinstance(value, torch.Tensor)
                else tensors(value)
                if isinstance(value, Layer)
                else []
            )
        return found

    net = build_network(path).to(meta)
    held = [t for layer in net.layers for t in tensors(layer)]
    assert held and all(t.device == meta for t in held)
    module = load_onnx_module(path)
    module.to(meta)
    assert module._int_consts and list(module.buffers())
    assert all(t.device == meta for t in [*module.buffers(), *module._int_consts.values()])


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ("(assert (or (and (<= Y_0 -5.0)) (and (<= Y_0 Y_0))))", "sat"),  # the second clause holds everywhere
        ("(assert (<= Y_0 Y_0))", "sat"),  # no condition on the outputs at all
        (
            "(assert (or (and (<= Y_0 -5.0)) (and (>= Y_0 (+ Y_0 1.0)))))",
            "unsat",
        ),  # |x| <= -5 never; 0 >= 1 never
    ],
)
def test_constant_output_comparisons(abs_net: Path, tmp_path: Path, outputs: str, expected: str) -> None:
    from nnassay.tasks.methods.formal.vnnlib import parse_vnnlib

    path = tmp_path / "p.vnnlib"
    path.write_text(
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
        f"(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n{outputs}\n"
    )
    prop = parse_vnnlib(path)
    out = verify(abs_net, prop, timeout_s=20)
    assert out.verdict == expected, out.reason
    if expected == "sat":
        x, y = out.counterexample
        assert check_counterexample(prop, x, y, box_tol=0.0) is None
