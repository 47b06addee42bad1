"""Crash isolation (tasks/engine/isolation.py): a step that dies by a signal, runs out of memory or
hangs costs that step one exception naming the signal and the step; the parent goes on.

The children run functions from tests/isolation_steps.py (a light module: a spawn child imports the
module of the function it runs). The float16 ViT case records what ONNX Runtime 1.31.1 does here.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import isolation_steps as steps
import numpy as np
import onnxruntime as ort
import pytest
import torch
import zoo_models

from nnassay.tasks.engine.isolation import (
    ChildCrashed,
    ChildMemoryError,
    ChildStepError,
    ChildTimeout,
    run_isolated,
)
from nnassay.tasks.engine.ort_check import convert_variant, isolated_session_check, isolated_variant

CPU = ["CPUExecutionProvider"]
pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane


def _parent_goes_on() -> None:
    assert run_isolated(steps.add, 2, 3, step="after the failure", timeout_s=60) == 5


def test_a_normal_step_returns_its_value() -> None:
    assert run_isolated(steps.add, 1, 2, step="add", timeout_s=60) == 3


@pytest.mark.parametrize(
    ("step", "signal_name"),
    [(steps.segfault, "SIGSEGV"), (steps.abort, "SIGABRT"), (steps.kill_self, "SIGKILL")],
)
def test_a_child_killed_by_a_signal_raises_child_crashed(step: object, signal_name: str) -> None:
    with pytest.raises(ChildCrashed) as caught:
        run_isolated(step, step=f"crash by {signal_name}", timeout_s=60)  # type: ignore[arg-type]
    err = caught.value
    assert err.signal_name == signal_name
    assert err.exitcode == -signal.Signals[signal_name]
    assert err.step == f"crash by {signal_name}"
    assert signal_name in str(err) and f"crash by {signal_name}" in str(err)
    if signal_name == "SIGKILL":
        assert "out-of-memory killer" in str(err)
    else:  # faulthandler's Python stack, written by the child before it died
        assert "isolation_steps.py" in err.stderr_tail
    _parent_goes_on()


def test_the_last_lines_of_native_stderr_are_kept() -> None:
    with pytest.raises(ChildCrashed) as caught:
        run_isolated(
            steps.write_stderr_then_abort, "onnxruntime: something went wrong", step="s", timeout_s=60
        )
    assert "onnxruntime: something went wrong" in caught.value.stderr_tail
    assert "onnxruntime: something went wrong" in str(caught.value)


def test_an_allocation_storm_under_the_limit_is_a_memory_error_in_the_child() -> None:
    with pytest.raises(ChildMemoryError) as caught:
        run_isolated(
            steps.hog_memory, 4_000_000_000, step="memory hog", timeout_s=120, memory_limit_bytes=300_000_000
        )
    err = caught.value
    assert isinstance(err, MemoryError)
    assert err.limit_bytes == 300_000_000 and err.step == "memory hog"
    assert "memory hog" in str(err) and "300 MB" in str(err)
    _parent_goes_on()


def test_under_the_limit_a_modest_step_still_runs() -> None:
    chunks = run_isolated(
        steps.hog_memory, 100_000_000, step="small", timeout_s=120, memory_limit_bytes=400_000_000
    )
    assert chunks == 2


def test_a_hang_past_the_timeout_kills_the_child_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    with pytest.raises(ChildTimeout) as caught:
        run_isolated(steps.hang_with_grandchild, str(pid_file), 600.0, step="hang", timeout_s=5)
    assert time.monotonic() - start < 60
    assert caught.value.step == "hang" and caught.value.timeout_s == 5
    assert "hang" in str(caught.value) and "5 s" in str(caught.value)
    grandchild = int(pid_file.read_text())
    for _ in range(100):  # the kill is asynchronous; a killed process may stay a zombie of init briefly
        if not _running(grandchild):
            break
        time.sleep(0.05)
    assert not _running(grandchild)
    _parent_goes_on()


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_exception_in_the_step_is_raised_here_with_the_child_traceback() -> None:
    with pytest.raises(ValueError, match="bad value") as caught:
        run_isolated(steps.raise_value_error, "bad value", step="raiser", timeout_s=60)
    assert any("raiser" in note and "raise_value_error" in note for note in caught.value.__notes__)


def test_an_exception_that_cannot_travel_is_described() -> None:
    with pytest.raises(ChildStepError) as caught:
        run_isolated(steps.raise_unpicklable, "no pickle", step="odd", timeout_s=60)
    assert caught.value.error_type == "NeedsKeywordError"
    assert "no pickle" in str(caught.value) and "odd" in str(caught.value)


# ---------------------------------------------------------------- the float16 ViT of issue 15


def _float16(model: Path, folder: Path) -> Path:
    """The deployment test's float16 variant, converted in this process."""
    return Path(convert_variant("float16", model, folder / f"{model.stem}_float16.onnx"))


def test_float16_session_of_the_tiny_zoo_vit_does_not_crash_here(tmp_path: Path) -> None:
    """Recorded on onnxruntime-gpu 1.31.1 (CPU provider): the tiny zoo ViT (one encoder layer) loads
    and runs in float16; the crash needs two or more encoder layers (next test)."""
    vit = zoo_models.build("vit", tmp_path, tiny=True)
    variant = _float16(vit.path, tmp_path)
    isolated_session_check(variant, CPU, timeout_s=300)  # returns: no crash, no error
    isolated_session_check(variant.read_bytes(), CPU, timeout_s=300)


def test_float16_session_of_a_two_layer_vit_segfaults_and_is_contained(tmp_path: Path) -> None:
    """Issue 15: ``convert_float_to_float16(keep_io_types=True)`` of a ViT with two encoder layers
    segfaults while ONNX Runtime 1.31.1 creates the CPU session (the crash is in the ORT_ENABLE_ALL
    graph optimisations: levels basic and extended load it). Isolated, it costs one exception.
    If this fails because no crash happened, ONNX Runtime was fixed: record the version."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    net = zoo_models.TinyViT(dim=16, depth=2, heads=2).eval()
    source = zoo_models._export(net, x, tmp_path / "vit_depth2.onnx")
    variant = _float16(source, tmp_path)
    with pytest.raises(ChildCrashed) as caught:
        isolated_session_check(variant, CPU, timeout_s=300)
    assert caught.value.signal_name == "SIGSEGV", ort.__version__
    assert "vit_depth2_float16.onnx" in str(caught.value) and "CPUExecutionProvider" in str(caught.value)
    assert "graph optimisation all" in str(caught.value)
    assert (
        "InferenceSession" in caught.value.stderr_tail
        or "_create_inference_session" in caught.value.stderr_tail
    )
    isolated_session_check(source, CPU, timeout_s=300)  # the float32 model is fine
    isolated_session_check(variant, CPU, timeout_s=300, optimization="extended")  # and so is this level
    _parent_goes_on()


def test_the_isolated_variant_is_the_deployment_tests_variant_and_its_crash_is_contained(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    source = zoo_models._export(
        zoo_models.TinyViT(dim=16, depth=2, heads=2).eval(), x, tmp_path / "vit2.onnx"
    )
    mine = isolated_variant("float16", source, tmp_path / "isolated.onnx")
    assert mine.read_bytes() == _float16(source, tmp_path).read_bytes()
    with pytest.raises(ChildCrashed, match="SIGSEGV"):
        isolated_variant("float16", source, tmp_path / "again.onnx", providers=CPU)
    int8 = isolated_variant("int8_dynamic", source, tmp_path / "int8.onnx", providers=CPU)
    assert int8.is_file()


def test_a_model_onnx_runtime_refuses_raises_its_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(Exception, match="(?i)protobuf|parse|load|invalid") as caught:
        isolated_session_check(broken, CPU, timeout_s=120)
    assert not isinstance(caught.value, ChildCrashed)


@pytest.mark.slow
def test_an_assessment_whose_float16_variant_segfaults_finishes_with_evidence(tmp_path: Path) -> None:
    """The deployment goal of a two-layer ViT (its float16 session segfaults in ONNX Runtime 1.31) ends
    in an error naming the signal and the step; the other goals, the evidence and the dossier are made."""
    import json
    import subprocess
    import sys

    import yaml

    x, y = zoo_models.digits_images(n=40)
    torch.manual_seed(0)
    source = zoo_models._export(
        zoo_models.TinyViT(dim=16, depth=2, heads=2).eval(), x, tmp_path / "vit2.onnx"
    )
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = zoo_models.ZooModel("vit2", source, tmp_path / "data.npz", "image", "NCHW", (0.0, 1.0), 10)
    spec = zoo_models.standard_spec(model, samples=20)
    spec["goals"] = [g for g in spec["goals"] if g["id"] in ("CLEAN", "DEPLOY")]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(tmp_path / "spec.yaml"), "--output", str(run)]
    done = subprocess.run([*cmd, "--no-track", "--cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    evidence = json.loads((run / "evidence.json").read_text())
    deploy = next(r for r in evidence["results"] if r["goal_id"] == "DEPLOY")
    assert deploy["status"] == "error"
    assert "SIGSEGV" in deploy["reason"] and "float16" in deploy["reason"]
    assert "int8_dynamic" in deploy["details"]["variants"]  # the other variant was still measured
    assert (run / "dossier.pdf").read_bytes().startswith(b"%PDF")
