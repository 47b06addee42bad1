"""The VNN-COMP benchmark script's CSV round trip and the choice of what to run again."""

from __future__ import annotations

from pathlib import Path

from benchmarks.vnncomp import Instance, Run, decided, read_runs, write_csv


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
