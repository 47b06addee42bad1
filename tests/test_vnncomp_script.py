"""The VNN-COMP benchmark script's CSV round trip and the choice of what to run again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from benchmarks.vnncomp import Instance, Run, decided, read_runs, side_by_side, write_csv


def test_rerun_undecided_keeps_only_sat_and_unsat(tmp_path: Path) -> None:
    verdicts = {"f/m/a": "sat", "f/m/b": "unsat", "f/m/c": "timeout", "f/m/d": "unknown", "f/m/e": "error"}
    insts = [
        Instance(
            folder="f",
            onnx=Path("m.onnx"),
            vnnlib=Path(f"{name[-1]}.vnnlib"),
            timeout_s=10.0,
            expected="unsat",
            fastest_core_s=None,
        )
        for name in verdicts
    ]
    runs = [Run(got, 1.5, "bab-input", {"reason": "r", "time_s": 0.5}) for got in verdicts.values()]
    path = tmp_path / "runs.csv"
    write_csv(path, insts, runs, None)
    earlier = read_runs(path, "nnassay")
    assert {name: run.got for name, run in earlier.items()} == verdicts
    assert sorted(decided(earlier)) == ["f/m/a", "f/m/b"]
    assert decided(earlier)["f/m/b"].time_s == 1.5


def test_side_by_side_compares_wall_and_in_process_times_of_instances_both_solve(tmp_path: Path) -> None:
    insts = [
        Instance(
            folder="f",
            onnx=Path("m.onnx"),
            vnnlib=Path(f"{k}.vnnlib"),
            timeout_s=10.0,
            expected="unsat",
            fastest_core_s=None,
        )
        for k in "abc"
    ]
    ours = [
        Run("unsat", 2.0, "bab-input", {"time_s": "0.2"}),
        Run("unsat", 4.0, "bab-input", {"time_s": "0.5"}),
        Run("unsat", 3.0, "bab-input", {"time_s": "1.0"}),
    ]
    theirs = [
        Run("unsat", 1.0, "marabou", {"time_s": "0.8"}),
        Run("unsat", 8.0, "marabou", {"time_s": "7.5"}),
        Run("timeout", 10.0, "marabou", {}),
    ]
    path = tmp_path / "both.csv"
    write_csv(path, insts, ours, theirs)
    again = read_runs(path, "marabou")
    assert [again[i.name].detail["time_s"] for i in insts] == ["0.8", "7.5", ""]
    lines = side_by_side(insts, ours, [again[i.name] for i in insts])
    assert lines[0] == "side by side: nnassay solved 3 correctly, Marabou 2; both 2"
    assert "median 1.25x" in lines[1]  # wall-clock ratios 2.0 and 0.5
    assert "start-up excluded" in lines[2] and "on 2: median 0.16x" in lines[2]  # 0.25 and 0.0667


def test_sanity_property_holds_at_the_box_centre_and_flags_an_unsat_answer(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.vnncomp as bench
    from nnassay.tasks.engine.onnx_torch import ort_session, run_ort
    from nnassay.tasks.methods.formal.command import check_counterexample
    from nnassay.tasks.methods.formal.vnnlib import parse_vnnlib

    rng = np.random.default_rng(3)
    model = kit.make_model(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)],
        ["N", 3],
        inits=[kit.const("W", rng.normal(size=(4, 3))), kit.const("b", rng.normal(size=4))],
    )
    onnx_path = kit.save(model, tmp_path)
    spec = tmp_path / "given.vnnlib"
    spec.write_text(
        "".join(f"(declare-const X_{i} Real)\n" for i in range(3))
        + "".join(f"(declare-const Y_{j} Real)\n" for j in range(4))
        + "(assert (>= X_0 0.1))\n(assert (<= X_0 0.3))\n(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n"
        "(assert (>= X_2 2.0))\n(assert (<= X_2 2.5))\n(assert (<= Y_0 -100.0))\n"
    )
    inst = Instance(
        folder="f", onnx=onnx_path, vnnlib=spec, timeout_s=10.0, expected="unsat", fastest_core_s=None
    )
    probe = bench.sanity_instance(inst, tmp_path)
    prop = parse_vnnlib(probe.vnnlib)
    given = parse_vnnlib(spec)
    assert probe.expected == "sat"
    assert np.array_equal(prop.regions[0].box.lower, given.regions[0].box.lower)
    assert np.array_equal(prop.regions[0].box.upper, given.regions[0].box.upper)
    centre = np.array([[0.2, 0.0, 2.25]], dtype=np.float32)
    y = run_ort(ort_session(str(onnx_path)), centre)[0]
    assert check_counterexample(prop, centre[0], y, box_tol=0.0) is None  # the property holds at the centre
    answers = {"nnassay": Run("sat", 1.0), "marabou": Run("unsat", 2.0)}
    monkeypatch.setattr(bench, "run_ours", lambda *a: answers["nnassay"])
    monkeypatch.setattr(bench, "run_marabou", lambda *a: answers["marabou"])
    lines = bench.sanity([inst], tmp_path, marabou=True)
    assert len(lines) == 2 and "nnassay sat" in lines[0] and "sound on this check" in lines[0]
    assert "marabou unsat" in lines[1] and "UNSOUND" in lines[1]
    assert not probe.vnnlib.exists()  # the probe file is removed after use
