"""`nnassay verify`: first-line verdict, VNN-COMP result file, exit codes, watchdog, counterexample check.

Every command test runs a new process on a tiny hand-built model (Y = X, two values), so the answer
is obvious. The real verifier's verdicts are checked; the plumbing (watchdog, rejected counterexamples)
is checked with a stand-in verifier injected before the CLI starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnassay.tasks.methods.formal.command import (
    Answer,
    check_counterexample,
    format_result,
    model_sizes,
    process_age_s,
)
from nnassay.tasks.methods.formal.property import local_robustness
from nnassay.tasks.methods.formal.vnnlib import parse_vnnlib

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
)
# Y = X on [1, 2] x [0, b]: "Y_0 <= Y_1" is violated only when b >= 1
UNSAT = (
    HEADER
    + "(assert (>= X_0 1))\n(assert (<= X_0 2))\n(assert (>= X_1 0))\n(assert (<= X_1 0.5))\n(assert (<= Y_0 Y_1))\n"
)
SAT = UNSAT.replace("(<= X_1 0.5)", "(<= X_1 1.5)")

FAKE = """
import json, os, sys, time, types
import numpy as np
mode = os.environ["FAKE_MODE"]

class Outcome:
    def __init__(self, verdict, cex=None):
        self.verdict, self.counterexample, self.method, self.time_s = verdict, cex, "fake", 0.01
        self.margin, self.branches, self.reason, self.unsupported, self.max_ort_deviation = None, 0, "", [], 0.0

def verify(onnx_path, prop, *, timeout_s, deadline=None):
    if mode == "hang":
        time.sleep(120)
    if mode in ("unsat", "unknown"):
        return Outcome(mode)
    x = np.array(json.loads(os.environ["FAKE_X"]), np.float32)
    return Outcome("sat", (x, x.copy()))

fake = types.ModuleType("nnassay.tasks.methods.formal.verifier")
fake.verify = verify
sys.modules["nnassay.tasks.methods.formal.verifier"] = fake
from nnassay.flows.__main__ import main
sys.argv = ["nnassay", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Y = X for two values: a Gemm with the identity matrix, input (1, 2)."""
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)]
    inits = [
        numpy_helper.from_array(np.eye(2, dtype=np.float32), "W"),
        numpy_helper.from_array(np.zeros(2, np.float32), "B"),
    ]
    graph = helper.make_graph(
        nodes,
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("cmd") / "identity.onnx"
    onnx.save(model, path)
    return path


def prop_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prop.vnnlib"
    path.write_text(text)
    return path


def cli(
    *args: str | Path, fake: str | None = None, x: list[float] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_MODE": fake or "", "FAKE_X": json.dumps(x or [])}
    prefix = [sys.executable, "-c", FAKE] if fake else [sys.executable, "-m", "flows"]
    return subprocess.run(
        [*prefix, "verify", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def test_unparsable_property_exits_2_naming_file_and_line(identity: Path, tmp_path: Path) -> None:
    bad = prop_file(tmp_path, UNSAT + "(assert (<= Y_0 Y_1)))\n")
    proc = cli("--onnx", identity, "--vnnlib", bad)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{bad}:10: unexpected token ')'" in proc.stderr


def test_size_mismatch_exits_2_naming_both_sizes(identity: Path, tmp_path: Path) -> None:
    three = HEADER.replace("(declare-const Y_0", "(declare-const X_2 Real)\n(declare-const Y_0")
    proc = cli("--onnx", identity, "--vnnlib", prop_file(tmp_path, three))
    assert proc.returncode == 2 and "declares 3 inputs (X_0..X_2) but the model has 2 inputs" in proc.stderr


def test_missing_or_corrupt_model_exits_2_naming_it(tmp_path: Path) -> None:
    prop = prop_file(tmp_path, UNSAT)
    proc = cli("--onnx", tmp_path / "none.onnx", "--vnnlib", prop)
    assert proc.returncode == 2 and f"{tmp_path / 'none.onnx'}: the ONNX model does not exist" in proc.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    proc = cli("--onnx", junk, "--vnnlib", prop)
    assert proc.returncode == 2 and f"{junk}: cannot read the ONNX model" in proc.stderr


def test_sat_prints_verdict_first_and_writes_the_assignment(identity: Path, tmp_path: Path) -> None:
    result = tmp_path / "out" / "result.txt"
    proc = cli(
        "--onnx",
        identity,
        "--vnnlib",
        prop_file(tmp_path, SAT),
        "--result-file",
        result,
        fake="sat",
        x=[1.0, 1.25],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "sat" and "method: fake" in proc.stdout
    assert result.read_text() == "sat\n((X_0 1.0)\n (X_1 1.25)\n (Y_0 1.0)\n (Y_1 1.25))\n"


def test_a_wrong_counterexample_becomes_unknown(identity: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.txt"
    proc = cli(
        "--onnx",
        identity,
        "--vnnlib",
        prop_file(tmp_path, SAT),
        "--result-file",
        result,
        fake="sat",
        x=[1.0, 0.5],
    )  # Y_0 = 1 > Y_1 = 0.5: not a violation
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "unknown"
    assert "counterexample rejected on re-execution" in proc.stdout and result.read_text() == "unknown\n"


@pytest.mark.parametrize("verdict", ["unsat", "unknown"])
def test_other_verdicts_are_one_line_results(identity: Path, tmp_path: Path, verdict: str) -> None:
    result = tmp_path / "result.txt"
    proc = cli(
        "--onnx", identity, "--vnnlib", prop_file(tmp_path, UNSAT), "--result-file", result, fake=verdict
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == verdict
    assert result.read_text() == f"{verdict}\n"


def test_watchdog_answers_timeout_when_the_verifier_hangs(identity: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.txt"
    proc = cli(
        "--onnx",
        identity,
        "--vnnlib",
        prop_file(tmp_path, UNSAT),
        "--timeout",
        "2",
        "--result-file",
        result,
        fake="hang",
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "timeout"
    assert result.read_text() == "timeout\n"


@pytest.mark.parametrize(("text", "verdict"), [(UNSAT, "unsat"), (SAT, "sat")], ids=["unsat", "sat"])
def test_real_verifier_on_the_obvious_model(identity: Path, tmp_path: Path, text: str, verdict: str) -> None:
    result = tmp_path / "result.txt"
    proc = cli(
        "--onnx", identity, "--vnnlib", prop_file(tmp_path, text), "--timeout", "60", "--result-file", result
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == verdict and result.read_text().splitlines()[0] == verdict


def test_check_counterexample_and_sizes(identity: Path, tmp_path: Path) -> None:
    prop = parse_vnnlib(prop_file(tmp_path, SAT), *model_sizes(identity))
    assert model_sizes(identity) == (2, 2)
    assert check_counterexample(prop, np.array([1.0, 1.5]), np.array([1.0, 1.5])) is None
    assert "outside every input box" in str(
        check_counterexample(prop, np.array([0.5, 1.5]), np.array([0.5, 1.5]))
    )
    assert "no violation clause" in str(
        check_counterexample(prop, np.array([1.5, 1.0]), np.array([1.5, 1.0]))
    )
    robust = local_robustness(np.array([0.5, 0.5]), 0, 0.1, 2, 0.0, 1.0)
    assert check_counterexample(robust, np.array([0.45, 0.55]), np.array([0.2, 0.3])) is None
    assert "sizes" in str(check_counterexample(robust, np.zeros(3), np.zeros(2)))


def test_result_format_and_process_age() -> None:
    answer = Answer("sat", x=np.array([0.1, -2.0], np.float32), y=np.array([3.0]))
    text = format_result(answer)
    assert text.startswith("sat\n((X_0 0.10000000149011612)\n (X_1 -2.0)\n (Y_0 3.0))")
    assert format_result(Answer("timeout")) == "timeout\n" and process_age_s() >= 0.0


@pytest.mark.parametrize("entry", ["flows", "nnassay.flows.cli.app"])
def test_both_entry_points_parse_verify_alike(identity: Path, tmp_path: Path, entry: str) -> None:
    """`nnassay verify` (fast path) and `python -m nnassay.flows.cli.app verify` (typer) share one parser."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", entry, "verify"]
    usage = subprocess.run([*run, "--onnx", str(identity)], capture_output=True, text=True, cwd=REPO, env=env)
    assert usage.returncode == 2 and "required: --vnnlib" in usage.stderr
    bad = subprocess.run(
        [*run, "--onnx", str(identity), "--vnnlib", str(tmp_path / "p"), "--timeout", "nan"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert bad.returncode == 2 and "'nan' is not a number of seconds" in bad.stderr
    done = subprocess.run(
        [*run, "--onnx", str(identity), "--vnnlib", str(prop_file(tmp_path, UNSAT)), "--timeout", "60"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "unsat", done.stderr


def test_a_closed_stdout_still_writes_the_result_file_without_a_traceback(
    identity: Path, tmp_path: Path
) -> None:
    result = tmp_path / "result.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    read, write = os.pipe()
    os.close(read)  # nobody reads: the verdict line meets a broken pipe
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows",
                "verify",
                "--onnx",
                str(identity),
                "--vnnlib",
                str(prop_file(tmp_path, UNSAT)),
                "--result-file",
                str(result),
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert result.read_text() == "unsat\n"


def test_a_run_folder_points_to_evidence_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnassay.tasks.methods.formal.command import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2
    assert f"nnassay evidence verify {tmp_path}" in capsys.readouterr().err
