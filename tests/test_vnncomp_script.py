"""The VNN-COMP benchmark script's CSV round trip and the choice of what to run again."""

from __future__ import annotations

from pathlib import Path

from benchmarks.vnncomp import Instance, Run, decided, read_runs, side_by_side, write_csv


def test_rerun_undecided_keeps_only_sat_and_unsat(tmp_path: Path) -> None:
    verdicts = {"f/m/a": "sat", "f/m/b": "unsat", "f/m/c": "timeout", "f/m/d": "unknown", "f/m/e": "error"}
    insts = [Instance(folder="f", onnx=Path("m.onnx"), vnnlib=Path(f"{name[-1]}.vnnlib"), timeout_s=10.0,
                      expected="unsat", fastest_core_s=None) for name in verdicts]  # fmt: skip
    runs = [Run(got, 1.5, "bab-input", {"reason": "r", "time_s": 0.5}) for got in verdicts.values()]
    path = tmp_path / "runs.csv"
    write_csv(path, insts, runs, None)
    earlier = read_runs(path, "nnassay")
    assert {name: run.got for name, run in earlier.items()} == verdicts
    assert sorted(decided(earlier)) == ["f/m/a", "f/m/b"]
    assert decided(earlier)["f/m/b"].time_s == 1.5


def test_side_by_side_compares_wall_and_in_process_times_of_instances_both_solve(tmp_path: Path) -> None:
    insts = [Instance(folder="f", onnx=Path("m.onnx"), vnnlib=Path(f"{k}.vnnlib"), timeout_s=10.0,
                      expected="unsat", fastest_core_s=None) for k in "abc"]  # fmt: skip
    ours = [Run("unsat", 2.0, "bab-input", {"time_s": "0.2"}), Run("unsat", 4.0, "bab-input", {"time_s": "0.5"}),
            Run("unsat", 3.0, "bab-input", {"time_s": "1.0"})]  # fmt: skip
    theirs = [Run("unsat", 1.0, "marabou", {"time_s": "0.8"}), Run("unsat", 8.0, "marabou", {"time_s": "7.5"}),
              Run("timeout", 10.0, "marabou", {})]  # fmt: skip
    path = tmp_path / "both.csv"
    write_csv(path, insts, ours, theirs)
    again = read_runs(path, "marabou")
    assert [again[i.name].detail["time_s"] for i in insts] == ["0.8", "7.5", ""]
    lines = side_by_side(insts, ours, [again[i.name] for i in insts])
    assert lines[0] == "side by side: nnassay solved 3 correctly, Marabou 2; both 2"
    assert "median 1.25x" in lines[1]  # wall-clock ratios 2.0 and 0.5
    assert "start-up excluded" in lines[2] and "on 2: median 0.16x" in lines[2]  # 0.25 and 0.0667
