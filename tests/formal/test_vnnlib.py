"""VNN-LIB reader: the shared VNN-COMP files, the normal form, and errors that name line and token."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnassay.tasks.methods.formal.property import local_robustness
from nnassay.tasks.methods.formal.vnnlib import MAX_CLAUSES, VnnlibError, parse_vnnlib

VNNCOMP = Path("/work/shared/benchmarks/vnncomp")
SIZES = {"acasxu": (5, 5), "mnistfc_2022": (784, 10), "oval21_2022": (3072, 10)}
SHARED = sorted(VNNCOMP.glob("*/vnnlib/*.vnnlib"))
needs_shared = pytest.mark.skipif(not SHARED, reason="shared VNN-COMP files not present")

HEADER = (
    "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
)
BOUNDS = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 -1.0))\n(assert (<= X_1 2.0))\n"


def write(tmp_path: Path, text: str, name: str = "prop.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def halfspaces(prop, region: int = 0) -> list[list[tuple[list[float], float]]]:
    return [[(h.coeffs.tolist(), h.rhs) for h in clause] for clause in prop.regions[region].disjuncts]


@needs_shared
@pytest.mark.parametrize("path", SHARED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shared_files_parse_with_their_sizes(path: Path) -> None:
    n_in, n_out = SIZES[path.parent.parent.name]
    prop = parse_vnnlib(path, n_in, n_out)
    assert (prop.n_inputs, prop.n_outputs) == (n_in, n_out)
    for region in prop.regions:
        assert region.box.lower.shape == (n_in,) and np.all(region.box.lower <= region.box.upper)
        assert region.disjuncts and all(h.coeffs.shape == (n_out,) for c in region.disjuncts for h in c)


@needs_shared
def test_every_instance_names_an_existing_pair() -> None:
    for folder in SIZES:
        with (VNNCOMP / folder / "instances.csv").open() as handle:
            for row in csv.DictReader(handle):
                assert (VNNCOMP / folder / row["onnx"]).is_file() and (
                    VNNCOMP / folder / row["vnnlib"]
                ).is_file()


@needs_shared
def test_acasxu_prop6_is_two_boxes_with_four_output_cases() -> None:
    prop = parse_vnnlib(VNNCOMP / "acasxu/vnnlib/prop_6.vnnlib", 5, 5)
    assert len(prop.regions) == 2
    first, second = prop.regions
    assert first.box.lower[1] == pytest.approx(0.11140846) and second.box.upper[1] == pytest.approx(
        -0.11140846
    )
    for k in range(2):  # unsafe if COC (Y_0) is not minimal: Y_j <= Y_0 for some j
        assert [c[0] for c in halfspaces(prop, k)] == [
            ([-1.0, 1, 0, 0, 0], 0.0),
            ([-1.0, 0, 1, 0, 0], 0.0),
            ([-1.0, 0, 0, 1, 0], 0.0),
            ([-1.0, 0, 0, 0, 1], 0.0),
        ]


@needs_shared
def test_acasxu_prop1_constant_and_prop2_conjunction() -> None:
    p1 = parse_vnnlib(VNNCOMP / "acasxu/vnnlib/prop_1.vnnlib")
    assert halfspaces(p1) == [[([-1.0, 0, 0, 0, 0], -3.991125645861615)]]  # Y_0 >= 3.99...
    p2 = parse_vnnlib(VNNCOMP / "acasxu/vnnlib/prop_2.vnnlib")
    assert len(p2.regions) == 1 and len(p2.regions[0].disjuncts) == 1 and len(p2.regions[0].disjuncts[0]) == 4
    assert p2.regions[0].box.lower.tolist() == [0.6, -0.5, -0.5, 0.45, -0.5]


@needs_shared
def test_mnist_robustness_property_equals_local_robustness() -> None:
    prop = parse_vnnlib(VNNCOMP / "mnistfc_2022/vnnlib/prop_0_0.05.vnnlib", 784, 10)  # label 4
    expected = local_robustness(np.zeros(784), 4, 0.05, 10, 0.0, 1.0)
    got = {tuple(c[0][0]) for c in halfspaces(prop)}
    assert got == {tuple(c[0].coeffs.tolist()) for c in expected.regions[0].disjuncts}


def test_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + BOUNDS + "(assert (<= Y_0 Y_1))\n")
    with pytest.raises(
        VnnlibError, match=r"prop.vnnlib:1: .*declares 2 inputs .* but the model has 784 inputs"
    ):
        parse_vnnlib(path, 784, 2)
    with pytest.raises(VnnlibError, match=r"declares 2 outputs .* but the model has 10 outputs"):
        parse_vnnlib(path, 2, 10)


@pytest.mark.parametrize(
    ("text", "line", "pattern"),
    [
        (HEADER + BOUNDS + "(assert (<= Y_0 Y_1)))\n", 9, r"unexpected token '\)'"),
        (HEADER + BOUNDS + "(assert (or (<= Y_0 Y_1)\n", 9, r"unbalanced parentheses"),
        (HEADER + BOUNDS + "\n(assert (<= Y_0 Y_7))\n", 10, r"unknown variable 'Y_7'"),
        (
            HEADER
            + "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (<= X_1 2.0))\n(assert (<= Y_0 Y_1))\n",
            5,
            r"X_1 has no lower bound",
        ),
        (HEADER + BOUNDS + "(assert (=> (<= Y_0 Y_1) (<= Y_1 Y_0)))\n", 9, r"unknown operator '=>'"),
        (HEADER + BOUNDS + "(assert (<= Y_0 abc))\n", 9, r"unexpected token 'abc'"),
        (HEADER + BOUNDS + "(assert (<= (* Y_0 Y_1) 0))\n", 9, r"not linear"),
        (HEADER + BOUNDS + "(assert (<= X_0 Y_1))\n", 9, r"mixes inputs X and outputs Y"),
        (HEADER + BOUNDS + "(assert (<= (+ X_0 X_1) 1))\n", 9, r"several inputs \(X_0, X_1\)"),
        ("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n", 2, r"X_1 is not"),
        (HEADER + "(declare-const X_0 Real)\n", 5, r"declared twice \(first at line 1\)"),
        (HEADER + "(declare-const Z_0 Real)\n", 5, r"unexpected token 'Z_0'"),
        (HEADER + "(declare-const X_2 Int)\n", 5, r"unexpected token 'Int'"),
        (HEADER + "(push 1)\n", 5, r"unknown command 'push'"),
    ],
    ids=[
        "extra-paren",
        "unclosed",
        "unknown-var",
        "missing-bound",
        "unknown-op",
        "bad-number",
        "nonlinear",
        "mixed",
        "multi-input",
        "gap",
        "twice",
        "bad-name",
        "bad-sort",
        "bad-command",
    ],
)
def test_malformed_files_name_file_line_and_token(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VnnlibError, match=pattern) as info:
        parse_vnnlib(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert info.value.line == line and isinstance(info.value, ValueError)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VnnlibError, match="cannot read the file"):
        parse_vnnlib(tmp_path / "missing.vnnlib")


def test_terms_strict_comparisons_and_equality(tmp_path: Path) -> None:
    text = (
        HEADER + "(assert (and (> X_0 0) (< X_0 1)))\n(assert (= X_1 0.5))\n"
        "(assert (or (<= (+ Y_0 (* 2 Y_1)) 3) (>= (- Y_0 Y_1) (- 1)) (< 0.5 (* Y_1 -1))))\n"
    )
    prop = parse_vnnlib(write(tmp_path, text))
    box = prop.regions[0].box
    assert box.lower.tolist() == [0.0, 0.5] and box.upper.tolist() == [1.0, 0.5]  # strict read as non-strict
    assert halfspaces(prop) == [[([1.0, 2.0], 3.0)], [([-1.0, 1.0], 1.0)], [([0.0, 1.0], -0.5)]]


def test_input_bound_with_coefficient(tmp_path: Path) -> None:
    text = (
        HEADER + "(assert (<= (* 2 X_0) 1))\n(assert (<= (- X_0) 0))\n(assert (<= -1 X_1))\n"
        "(assert (>= 3 (+ X_1 1)))\n(assert (<= Y_0 0))\n"
    )
    box = parse_vnnlib(write(tmp_path, text)).regions[0].box
    assert box.lower.tolist() == [0.0, -1.0] and box.upper.tolist() == [0.5, 2.0]


def test_mixed_input_and_output_disjunction_gives_regions(tmp_path: Path) -> None:
    text = (
        HEADER + "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_1))\n"
        "            (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1) (<= Y_1 Y_0))\n"
        "            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 -5))))\n"
    )
    prop = parse_vnnlib(write(tmp_path, text))
    assert [r.box.lower.tolist() for r in prop.regions] == [[0.0, 0.0], [2.0, 0.0]]
    assert halfspaces(prop, 0) == [[([1.0, -1.0], 0.0)], [([1.0, 0.0], -5.0)]]  # same box: merged
    assert halfspaces(prop, 1) == [[([-1.0, 1.0], 0.0)]]


def test_top_level_bounds_distribute_over_disjunctions(tmp_path: Path) -> None:
    text = (
        HEADER
        + BOUNDS
        + "(assert (or (<= X_0 0.5) (>= X_0 0.7)))\n(assert (or (<= Y_0 0) (and (<= Y_1 0) (<= Y_0 1))))\n"
    )
    prop = parse_vnnlib(write(tmp_path, text))
    assert [(r.box.lower[0], r.box.upper[0]) for r in prop.regions] == [(0.0, 0.5), (0.7, 1.0)]
    assert all(len(r.disjuncts) == 2 and len(r.disjuncts[1]) == 2 for r in prop.regions)


def test_empty_cases_are_dropped_and_an_empty_set_is_an_error(tmp_path: Path) -> None:
    text = HEADER + BOUNDS + "(assert (or (<= X_0 -1) (>= X_0 0.5)))\n(assert (<= Y_0 0))\n"
    prop = parse_vnnlib(write(tmp_path, text))
    assert len(prop.regions) == 1 and prop.regions[0].box.lower[0] == 0.5
    with pytest.raises(VnnlibError, match="input set is empty"):
        parse_vnnlib(write(tmp_path, HEADER + BOUNDS + "(assert (<= X_0 -1))\n(assert (<= Y_0 0))\n"))


def test_dnf_blow_up_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    ors = "".join("(assert (or (<= Y_0 0) (<= Y_1 0)))\n" for _ in range(16))  # 2**16 cases
    assert MAX_CLAUSES < 2**15
    with pytest.raises(
        VnnlibError, match=r"prop.vnnlib:23: the formula expands to 32768 cases .* at this disjunction"
    ):
        parse_vnnlib(write(tmp_path, HEADER + BOUNDS + ors))


def test_comments_and_declare_fun(tmp_path: Path) -> None:
    text = (
        "; header ; with ( parens )\n(declare-fun X_0 () Real) ; inline (\n(declare-fun Y_0 () Real)\n"
        "(assert (<= X_0 1)) (assert (>= X_0 0))\n(assert (<= Y_0 0))\n"
    )
    prop = parse_vnnlib(write(tmp_path, text))
    assert (prop.n_inputs, prop.n_outputs) == (1, 1) and prop.regions[0].box.upper.tolist() == [1.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 10), st.floats(0, 5)), min_size=1, max_size=6), st.integers(0, 3))
def test_bounds_round_trip(tmp_path_factory, boxes: list[tuple[float, float]], label: int) -> None:
    """A file written from random bounds reads back to the same box and robustness clauses."""
    n_out = 4
    lines = [f"(declare-const X_{i} Real)" for i in range(len(boxes))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (low, width) in enumerate(boxes):
        lines += [f"(assert (>= X_{i} {low!r}))", f"(assert (<= X_{i} {low + width!r}))"]
    lines.append(
        "(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label) + "))"
    )
    path = tmp_path_factory.mktemp("rt") / "p.vnnlib"
    path.write_text("\n".join(lines))
    prop = parse_vnnlib(path, len(boxes), n_out)
    assert prop.regions[0].box.lower.tolist() == [b[0] for b in boxes]
    assert prop.regions[0].box.upper.tolist() == [b[0] + b[1] for b in boxes]
    expected = local_robustness(np.zeros(len(boxes)), label, 0.1, n_out, -1, 1).regions[0].disjuncts
    assert halfspaces(prop) == [[(c[0].coeffs.tolist(), 0.0)] for c in expected]
