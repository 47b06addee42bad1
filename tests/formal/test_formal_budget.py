"""The formal path answers within its budget: memory checked before any model pass, every loop of
the counterexample search stops at its deadline, the affine probe stays within the memory budget
and the model is converted once per test. Deadlines are checked on a fake clock, never timed."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from nnassay.tasks.engine.isolation import format_bytes
from nnassay.tasks.engine.onnx_torch import UnsupportedOpsError, load_onnx_module, run_ort
from nnassay.tasks.methods.formal import falsify, op_context, verifier
from nnassay.tasks.methods.formal.command import run_model
from nnassay.tasks.methods.formal.falsify import FalsifyStats, OrtChecker, Spec, falsify_region
from nnassay.tasks.methods.formal.ops import network_from_module
from nnassay.tasks.methods.formal.property import local_robustness
from nnassay.tasks.methods.formal.verifier import verify

TINY_BUDGET = 2_000  # bytes: no CROWN pass of the nets below fits


def _fake_clock(step: float) -> Iterator[float]:
    """Real time at the first reading, then ``step`` seconds later at every further reading."""
    import time

    start = time.monotonic()
    return (start + k * step for k in itertools.count())


@pytest.fixture
def mlp(kit: type, tmp_path: Path) -> Path:
    return kit.save(kit.mlp([8, 32, 32, 3], seed=4, scale=2.0), tmp_path)


def _robustness(path: Path, eps: float) -> tuple[np.ndarray, int, object]:
    x = np.linspace(-0.5, 0.5, 8)
    label = int(np.argmax(run_model(path, x[None].astype(np.float32)).reshape(-1)))
    return x, label, local_robustness(x, label, eps, 3, -1.0, 1.0)


def _crown_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    methods: list[str] = []
    real = verifier.crown

    def spy(*args: object, method: str = "crown", **kw: object) -> object:
        methods.append(method)
        return real(*args, method=method, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verifier, "crown", spy)
    return methods


def test_bounds_that_cannot_fit_answer_unknown_with_estimate_and_budget_after_a_search_to_the_deadline(
    mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory first: CROWN is never run, the falsifier searches until the per-sample deadline (a fake
    clock advancing 1 s per reading, 5 s budget) and the verdict names the estimate and the budget."""
    _, _, prop = _robustness(mlp, 0.05)
    calls = _crown_calls(monkeypatch)
    clock = _fake_clock(1.0)
    monkeypatch.setattr(falsify, "now", lambda: next(clock))
    out = verify(mlp, prop, timeout_s=5.0, memory_budget=TINY_BUDGET)  # type: ignore[arg-type]
    assert out.verdict == "unknown" and out.method == "ibp", out
    assert calls == ["ibp"]  # only IBP: no CROWN or alpha-CROWN pass was attempted
    assert "CROWN bounds would need about" in out.reason and format_bytes(TINY_BUDGET) in out.reason
    assert "memory budget" in out.reason and "time budget" in out.reason
    # the clock started just before verify(): readings 0 .. 5 s fall within the 5 s budget
    assert out.falsifier_stopped_at_deadline and 1 <= out.falsifier_passes <= 6


def test_a_counterexample_decides_even_when_the_bounds_cannot_fit(mlp: Path) -> None:
    x, label, prop = _robustness(mlp, 0.9)
    out = verify(mlp, prop, timeout_s=20, memory_budget=TINY_BUDGET)  # type: ignore[arg-type]
    assert out.verdict == "sat" and out.method == "falsifier" and out.counterexample is not None
    adv, _ = out.counterexample
    assert np.all(np.abs(adv - x) <= 0.9 + 1e-6)
    assert int(np.argmax(run_model(mlp, adv[None]).reshape(-1))) != label


def test_with_room_for_the_bounds_the_ladder_still_proves(mlp: Path) -> None:
    _, _, prop = _robustness(mlp, 1e-3)
    out = verify(mlp, prop, timeout_s=30)  # type: ignore[arg-type]
    assert out.verdict == "unsat" and out.margin is not None and out.margin > 0


def test_time_used_up_before_the_bounds_is_a_timeout_naming_the_time_budget(
    mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, prop = _robustness(mlp, 0.05)
    calls = _crown_calls(monkeypatch)
    out = verify(mlp, prop, timeout_s=0.0)  # type: ignore[arg-type]
    assert out.verdict == "timeout" and "time budget" in out.reason and calls == []


class _Counting(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.module(x)


@pytest.mark.parametrize("readings_before_deadline", [0, 1, 3, 8])
def test_falsify_region_stops_at_its_deadline(
    mlp: Path, monkeypatch: pytest.MonkeyPatch, readings_before_deadline: int
) -> None:
    """One model pass per clock reading at most: the search ends at the deadline, saying so."""
    _, _, prop = _robustness(mlp, 0.05)
    region = prop.regions[0]  # type: ignore[attr-defined]
    model = _Counting(load_onnx_module(mlp).double())
    clock = itertools.count()
    monkeypatch.setattr(falsify, "now", lambda: float(next(clock)))
    stats = FalsifyStats()
    low, high = (torch.tensor(b, dtype=torch.float64) for b in (region.box.lower, region.box.upper))
    found = falsify_region(
        model,
        Spec.of(region, 3),
        low,
        high,
        OrtChecker(str(mlp), prop),  # type: ignore[arg-type]
        rng=torch.Generator().manual_seed(0),
        deadline=readings_before_deadline - 0.5,
        stats=stats,
    )
    assert found is None and stats.stopped_at_deadline
    assert model.calls == stats.passes == readings_before_deadline


def test_falsify_region_without_a_deadline_runs_its_full_search(mlp: Path) -> None:
    _, _, prop = _robustness(mlp, 0.05)
    region = prop.regions[0]  # type: ignore[attr-defined]
    model = _Counting(load_onnx_module(mlp).double())
    stats = FalsifyStats()
    low, high = (torch.tensor(b, dtype=torch.float64) for b in (region.box.lower, region.box.upper))
    checker = OrtChecker(str(mlp), prop)  # type: ignore[arg-type]
    falsify_region(model, Spec.of(region, 3), low, high, checker, rng=torch.Generator(), steps=5, stats=stats)
    chunks = math.ceil(513 / falsify.SAMPLE_CHUNK)
    assert not stats.stopped_at_deadline and stats.passes == model.calls == chunks + 5 + 1


def test_the_model_is_converted_once_for_several_samples(mlp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"load": 0, "convert": 0}
    real_load, real_convert = verifier.load_onnx_module, verifier.network_from_module

    def load(*args: object, **kw: object) -> object:
        counts["load"] += 1
        return real_load(*args, **kw)  # type: ignore[arg-type]

    def convert(*args: object, **kw: object) -> object:
        counts["convert"] += 1
        return real_convert(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verifier, "load_onnx_module", load)
    monkeypatch.setattr(verifier, "network_from_module", convert)
    monkeypatch.setattr(verifier, "_MODELS", {})
    outs = [verify(mlp, _robustness(mlp, eps)[2], timeout_s=20) for eps in (1e-3, 2e-3)]  # type: ignore[arg-type]
    assert [o.verdict for o in outs] == ["unsat", "unsat"]
    assert counts == {"load": 1, "convert": 1}


def _spy_apply(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the batch of every probe pass (``OpContext.apply``)."""
    sizes: list[int] = []
    real_apply = op_context.OpContext.apply

    def apply(self: op_context.OpContext, x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return real_apply(self, x)

    monkeypatch.setattr(op_context.OpContext, "apply", apply)
    return sizes


def _pool_model(kit: type, tmp_path: Path, channels: int, side: int) -> Path:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Relu", ["x"], ["r"]),
            node("GlobalAveragePool", ["r"], ["p"]),
            node("Flatten", ["p"], ["f"]),
            node("Gemm", ["f", "W", "b"], ["y"], transB=1),
        ],
        ["N", channels, side, side],
        inits=[
            kit.const("W", np.random.default_rng(0).normal(size=(2, channels))),
            kit.const("b", np.zeros(2)),
        ],
    )
    return kit.save(model, tmp_path, "pool.onnx")


def test_the_affine_probe_goes_in_chunks_and_matches_the_op(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity is never built whole: with room for a few basis vectors per chunk the probe
    sends them through the op in several passes, and the network still reproduces ONNX Runtime."""
    path = _pool_model(kit, tmp_path, 4, 6)  # 144 inputs
    monkeypatch.setattr(op_context, "PROBE_CHUNK_BYTES", 8 * 10 * (144 + 2 * 4))  # 10 basis vectors
    sizes = _spy_apply(monkeypatch)
    net = network_from_module(load_onnx_module(path), str(path))
    assert max(sizes) == 10 and sizes.count(10) == 14 and sizes.count(4) == 1
    x = np.random.default_rng(1).normal(size=(5, 4, 6, 6)).astype(np.float32)
    from nnassay.tasks.engine.onnx_torch import ort_session

    want = run_ort(ort_session(str(path)), x)
    got = net.forward(torch.as_tensor(x.reshape(5, -1), dtype=torch.float64)).numpy()
    assert np.allclose(got, want, atol=1e-5)


def test_an_affine_probe_beyond_the_memory_budget_is_refused_with_a_true_reason(
    kit: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nnassay.tasks.engine import memory

    path = _pool_model(kit, tmp_path, 4, 6)
    monkeypatch.setattr(memory, "budget_bytes", lambda share=0.5: 1_000)
    built = _spy_apply(monkeypatch)
    with pytest.raises(UnsupportedOpsError, match="it was not probed") as caught:
        network_from_module(load_onnx_module(path), str(path))
    assert "memory budget of" in str(caught.value) and built == []
    need = op_context.probe_bytes(144, 4, 144)
    assert format_bytes(need) in str(caught.value)
