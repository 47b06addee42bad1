"""Complete verification of a VNN-LIB-style ``Property`` on an ONNX model, cheapest rung first.

Ladder: IBP and the memory plan of the bounds -> falsifier -> CROWN -> alpha-CROWN -> branch and
bound (input splitting for at most ``INPUT_SPLIT_MAX_DIMS`` inputs, ReLU splitting otherwise).
``unsat`` only from sound bounds, ``sat`` only with a counterexample re-executed on ONNX Runtime;
anything else is unknown/timeout. When CROWN cannot fit the memory budget, only the falsifier runs
(until the deadline) and the verdict is ``unknown`` naming the estimate and the budget. Every loop
stops at the deadline; the model is converted once per file (``load_model``), not per property.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch

from nnassay.tasks.engine.onnx_torch import (
    UnsupportedOpsError,
    handler_for,
    load_onnx_module,
    max_deviation_from_ort,
    op_key,
)
from nnassay.tasks.methods.formal.bab import BabResult, bab_input_portfolio, bab_relu
from nnassay.tasks.methods.formal.bounds import alpha_crown, crown, sound_lower
from nnassay.tasks.methods.formal.falsify import FalsifyStats, OrtChecker, Spec, falsify_region, now
from nnassay.tasks.methods.formal.layers import Network
from nnassay.tasks.methods.formal.memory_guard import MemoryPlan, plan_memory
from nnassay.tasks.methods.formal.ops import bound_op_for, network_from_module
from nnassay.tasks.methods.formal.property import Property, Region, local_robustness

Verdict = Literal["sat", "unsat", "unknown", "timeout"]
RUNGS = ("falsifier", "ibp", "crown", "alpha-crown", "bab-input", "bab-relu")
INPUT_SPLIT_MAX_DIMS = 10
# Ops with no bound operator that are fine on constants and shapes (folded by the trace); on a
# computed tensor the graph walk still reports them.
FOLDED_ONLY = (  # fmt: skip
    "Constant",
    "Shape",
    "ConstantOfShape",
    "Equal",
    "Mod",
    "Range",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "Floor",
    "Ceil",
    "Sign",
    "ArgMax",
    "ArgMin",
    "Abs",
)
# The root alpha-CROWN also optimises the slopes behind the intermediate bounds on nets of up to this
# many nonlinear neurons (the ALPHA_SHARE time limit applies). Measured at 60 s: the bound left when
# ReLU splitting timed out went from -2756 to -1600 (MNIST-FC 256x6 prop_11), -16.7 to -5.3 (256x4
# prop_12), -0.022 to -0.012 (OVAL21 base img876), and all later sub-domains inherit the bounds.
ALPHA_INTERMEDIATE_MAX_NEURONS = 10_000
ALPHA_ITERS_SMALL_NET = 600  # nets up to this many nonlinear neurons get 30 iterations, larger ones 20
ALPHA_SHARE = 0.25  # at most this share of the time left goes to the alpha-CROWN rung
MAX_REL_DEVIATION = 1e-3  # torch vs ORT, relative to the output size, before anything is trusted
# A second thread pays only on an idle machine with large layers; on a shared, loaded one it is many
# times slower (threads wait for each other), so the verifier takes one unless the cores are free.
THREADS = 2 if os.getloadavg()[0] < 0.5 * (os.cpu_count() or 1) else 1


@dataclass(frozen=True)
class VerificationOutcome:
    """The verdict on one property and how it was reached."""

    verdict: Verdict
    method: str
    time_s: float
    margin: float | None = None  # best sound lower bound of the violation margin (> 0 proves)
    counterexample: tuple[np.ndarray, np.ndarray] | None = None  # (flat float32 input, ORT output)
    branches: int = 0
    reason: str = ""
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    max_ort_deviation: float | None = None
    device: str = "cpu"  # the torch device the bounds were computed on
    falsifier_passes: int = 0  # model passes of the counterexample search
    falsifier_stopped_at_deadline: bool = False  # the search ended at its deadline, not done


@dataclass
class _Run:
    """Shared state of one verification: model, IR, ORT checker and the clock."""

    path: str
    prop: Property
    module: torch.nn.Module
    net: Network
    checker: OrtChecker
    start: float
    deadline: float
    device: torch.device
    deviation: float = 0.0  # max |torch - ORT| on sample points
    branches: int = 0
    memory_budget: int | None = None  # bytes the bounds may use (None: half the available memory)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def outcome(self, verdict: Verdict, method: str, **kw: Any) -> VerificationOutcome:
        return VerificationOutcome(
            verdict,
            method,
            time.monotonic() - self.start,
            branches=self.branches,
            device=str(self.device),
            **kw,
        )

    def on(self, device: torch.device) -> _Run:
        """A copy whose model and bound network live on ``device`` (this one keeps its own)."""
        return replace(
            self,
            module=copy.deepcopy(self.module).to(device),
            net=copy.deepcopy(self.net).to(device),
            device=device,
        )


def verify(
    onnx_path: Path | str,
    prop: Property,
    *,
    timeout_s: float,
    deadline: float | None = None,
    incomplete: bool = False,
    memory_budget: int | None = None,
) -> VerificationOutcome:
    """Decide ``prop`` on the model: sat (counterexample), unsat (proof), unknown or timeout.

    Args:
        onnx_path: the ONNX model (one input; the first axis is the batch).
        prop: regions (input boxes in the flattened ONNX input) with their violation conditions.
        timeout_s: time budget from now, in seconds.
        deadline: an absolute ``time.monotonic()`` limit; the earlier of the two applies.
        incomplete: stop after alpha-CROWN (no branch and bound), e.g. for certified radii.
        memory_budget: bytes the linear bounds may take (default: half the available memory); a rung
            whose estimate exceeds it is skipped and the verdict names both numbers.
    """
    start = time.monotonic()
    stop = min(start + timeout_s, deadline if deadline is not None else math.inf)
    torch.set_num_threads(THREADS)
    run = _prepare(str(onnx_path), prop, start, stop)
    if isinstance(run, VerificationOutcome):
        return run
    run.memory_budget = memory_budget
    device = pick_device()
    if device.type == "cpu":
        return _ladder(run, incomplete)
    try:  # the whole ladder on the accelerator; any failure there reruns it on the CPU, said in the reason
        on_device = run.on(device)
        with torch.device(device):
            return _ladder(on_device, incomplete)
    except Exception as exc:  # noqa: BLE001 (a device problem must never lose the verdict)
        problem = (
            f"{device} failed ({type(exc).__name__}: {str(exc)[:200]}), so the ladder ran again on the CPU"
        )
    out = _ladder(run, incomplete)
    return replace(out, reason=f"{out.reason}; {problem}" if out.reason else problem)


def pick_device() -> torch.device:
    """The torch device for the bounds: ``NNASSAY_VERIFIER_DEVICE`` when set (e.g. ``cpu``, ``cuda:1``),
    else the GPU when torch sees one, else the CPU. ONNX Runtime re-checks run on the CPU either way."""
    wanted = os.environ.get("NNASSAY_VERIFIER_DEVICE", "").strip()
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def unsupported_nodes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Every node that either the torch executor or the bound propagation cannot handle."""
    found = []
    for k, node in enumerate(model.graph.node):
        key = op_key(node.op_type, node.domain)
        if handler_for(node.op_type, node.domain) is None or (
            bound_op_for(key) is None and key not in FOLDED_ONLY
        ):
            found.append((node.name or f"{node.op_type}_{k}", key))
    return found


@dataclass
class _Model:
    """A model converted once: the float64 torch module and the bound network, or why it cannot be."""

    module: torch.nn.Module | None = None
    net: Network | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)
    error: UnsupportedOpsError | None = None


_MODELS: dict[tuple[str, int, int], _Model] = {}  # the last model converted (a test verifies one model)
_MODELS_LOCK = threading.Lock()  # samples verified in threads convert the model once


def load_model(path: str) -> _Model:
    """The converted model of ``path``, reused while the file is unchanged: the samples of a test are
    verified on one model, which is loaded and converted once (the newest file replaces the cache)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = _convert_model(path)
        return _MODELS[key]


def _convert_model(path: str) -> _Model:
    """The torch module and bound network of ``path``; without a network (ops the verifier cannot
    bound) the module alone when the executor runs the graph (counterexamples need no bounds)."""
    missing = unsupported_nodes(onnx.load(path, load_external_data=False))
    try:
        module = load_onnx_module(path).double()
    except UnsupportedOpsError as exc:
        return _Model(missing=missing, error=None if missing else exc)
    except Exception:  # the executor refuses this graph in another way: no module, no bounds
        return _Model(missing=missing) if missing else _Model(error=UnsupportedOpsError([], path))
    if missing:
        return _Model(module=module, missing=missing)
    try:
        return _Model(module, network_from_module(module, path))
    except UnsupportedOpsError as exc:
        return _Model(module=module, error=exc)


SEARCH_S, SEARCH_SHARE = 2.0, 0.05  # the counterexample search before bounds: at most this long or share


def search_deadline(stop: float) -> float:
    """When the counterexample search that precedes the bounds stops: after ``SEARCH_S`` seconds or
    ``SEARCH_SHARE`` of the time left before ``stop``, whichever comes first."""
    return now() + min(SEARCH_S, SEARCH_SHARE * max(stop - now(), 0.0))


def _falsify_only(
    module: torch.nn.Module | None,
    path: str,
    prop: Property,
    stop: float,
    outcome: VerificationOutcome,
    start: float,
) -> VerificationOutcome:
    """Without bounds nothing can be proved, but a counterexample needs none: the falsifier (sampling
    and PGD through the executor, re-checked on ONNX Runtime) searches until ``stop``; the verdict is
    ``sat`` with the counterexample, else ``outcome`` (unknown, naming the nodes) with the search."""
    if module is None:
        return outcome
    stats, rng = FalsifyStats(), torch.Generator().manual_seed(0)
    try:
        checker = OrtChecker(path, prop)
        found = None
        for region in prop.regions:
            low, high = _box(region)
            spec = Spec.of(region, prop.n_outputs)
            found = falsify_region(module, spec, low, high, checker, rng=rng, deadline=stop, stats=stats)
            if found is not None:
                break
    except Exception as exc:  # the graph fails to run in the search: the verdict stays unknown
        why = f"{outcome.reason}; the counterexample search could not run ({type(exc).__name__})"
        return replace(outcome, reason=why, time_s=time.monotonic() - start)
    if found is not None:
        took = time.monotonic() - start
        return replace(
            outcome, verdict="sat", method="falsifier", counterexample=found, reason="", time_s=took
        )
    note = f"{outcome.reason}; {_search_note(stats)}"
    return replace(outcome, reason=note, falsifier_passes=stats.passes, time_s=time.monotonic() - start)


def _prepare(path: str, prop: Property, start: float, stop: float) -> _Run | VerificationOutcome:
    def early(verdict: Verdict, reason: str, **kw: object) -> VerificationOutcome:
        return VerificationOutcome(verdict, "none", time.monotonic() - start, reason=reason, **kw)  # type: ignore[arg-type]

    model = load_model(path)
    search_until = search_deadline(stop)
    if model.missing:
        listed = ", ".join(f"{n} ({o})" for n, o in model.missing)
        unbounded = early(
            "unknown", f"{len(model.missing)} unsupported node(s): {listed}", unsupported=list(model.missing)
        )
        return _falsify_only(model.module, path, prop, search_until, unbounded, start)
    if model.error is not None:
        unbounded = early("unknown", str(model.error), unsupported=list(model.error.nodes))
        return _falsify_only(model.module, path, prop, search_until, unbounded, start)
    module, net = model.module, model.net
    assert module is not None and net is not None
    if net.n_inputs != prop.n_inputs or net.n_outputs != prop.n_outputs:
        return early(
            "unknown",
            f"the property has {prop.n_inputs} inputs/{prop.n_outputs} outputs but the model has "
            f"{net.n_inputs}/{net.n_outputs}; use a property written for this model",
        )
    deviation, problem = _ort_agreement(module, path, prop)
    if problem:
        return early("unknown", problem, max_ort_deviation=deviation)
    if net.output_softmax and not _pairwise_only(prop):
        return early(
            "unknown",
            "the model ends in Softmax and the property is not a pure comparison of outputs "
            "(Y_i <= Y_j); bounds on Softmax outputs are not supported",
            max_ort_deviation=deviation,
        )
    return _Run(path, prop, module, net, OrtChecker(path, prop), start, stop, torch.device("cpu"), deviation)


def _ort_agreement(module: torch.nn.Module, path: str, prop: Property, n: int = 4) -> tuple[float, str]:
    """Max |torch - ORT| on a few random points of the boxes, and a reason when it is too large."""
    rng = np.random.default_rng(0)
    pts = [
        r.box.lower + (r.box.upper - r.box.lower) * rng.random((n, prop.n_inputs)) for r in prop.regions[:4]
    ]
    xs = np.concatenate(pts).astype(np.float32)
    deviation = max_deviation_from_ort(module, path, xs)
    with torch.no_grad():
        scale = float(module(torch.as_tensor(xs, dtype=torch.float64)).abs().max())
    if not math.isfinite(deviation) or deviation > MAX_REL_DEVIATION * (1 + scale):
        return deviation, (
            f"the torch graph deviates from ONNX Runtime by {deviation:.3g} (outputs up to {scale:.3g}); "
            "expected agreement within 1e-3 relative, so no bound would be trustworthy"
        )
    return deviation, ""


def _pairwise_only(prop: Property) -> bool:
    for region in prop.regions:
        for clause in region.disjuncts:
            for h in clause:
                nz = np.flatnonzero(h.coeffs)
                if h.rhs != 0 or len(nz) != 2 or h.coeffs[nz[0]] != -h.coeffs[nz[1]]:
                    return False
    return True


@dataclass(frozen=True)
class _Ibp:
    """IBP on one region and the memory plan of the rungs after it."""

    lb: torch.Tensor | None
    rel: Any
    margin: float
    plan: MemoryPlan | None  # None: the region is decided by IBP (or empty)


def _ibp_region(run: _Run, spec: Spec, low: torch.Tensor, high: torch.Tensor) -> _Ibp:
    net, c = run.net, spec.c.unsqueeze(0)
    lo, hi = low.unsqueeze(0), high.unsqueeze(0)
    if bool((lo > hi).any()):
        return _Ibp(None, None, math.inf, None)
    lb, rel, _ = crown(net, c, lo, hi, method="ibp")
    margin = float(spec.objective(sound_lower(net, c, lb, lo, hi))[0])
    plan = None if margin > 0 else plan_memory(net, rel, c.shape[1], run.memory_budget)
    return _Ibp(lb, rel, margin, plan)


def _search_note(stats: FalsifyStats) -> str:
    if stats.stopped_at_deadline:
        return f"the counterexample search stopped at the time budget after {stats.passes} model pass(es)"
    return f"the counterexample search found none in {stats.passes} model pass(es)"


def _ladder(run: _Run, incomplete: bool) -> VerificationOutcome:
    """IBP and the memory plan first (cheap, nothing large allocated), then the falsifier, then the
    bound rungs. When a region's CROWN bounds cannot fit the memory budget, the falsifier alone may
    decide (a counterexample needs no bounds) until the deadline, and the verdict is ``unknown``
    naming the estimate and the budget."""
    dev = run.deviation
    stats = FalsifyStats()

    def out(verdict: Verdict, method: str, **kw: Any) -> VerificationOutcome:
        return run.outcome(
            verdict,
            method,
            max_ort_deviation=dev,
            falsifier_passes=stats.passes,
            falsifier_stopped_at_deadline=stats.stopped_at_deadline,
            **kw,
        )

    if run.left() <= 0:
        return out("timeout", "none", reason="time budget used up before any bound was computed")
    rng = torch.Generator(device=run.device).manual_seed(0)
    specs = [Spec.of(r, run.prop.n_outputs) for r in run.prop.regions]
    boxes = [_box(r) for r in run.prop.regions]
    ibps = [_ibp_region(run, spec, low, high) for spec, (low, high) in zip(specs, boxes, strict=True)]
    too_large = next(
        (
            i.plan.reason("CROWN bounds", i.plan.crown)
            for i in ibps
            if i.plan and not i.plan.fits(i.plan.crown)
        ),
        None,
    )
    stop = run.deadline if too_large else search_deadline(run.deadline)
    for spec, (low, high), ibp in zip(specs, boxes, ibps, strict=True):
        if ibp.plan is None:
            continue  # proved by IBP (or empty): no counterexample to look for
        found = falsify_region(_flat(run), spec, low, high, run.checker, rng=rng, deadline=stop, stats=stats)
        if found is not None:
            return out("sat", "falsifier", counterexample=found, margin=None)
    if too_large:
        margin = min(i.margin for i in ibps)
        return out("unknown", "ibp", margin=margin, reason=f"{too_large}; {_search_note(stats)}")
    method, margins = "ibp", []
    for spec, (low, high), ibp in zip(specs, boxes, ibps, strict=True):
        if run.left() <= 0 and ibp.plan is not None:
            return out(
                "timeout", method, margin=ibp.margin, reason=f"time budget reached; {_search_note(stats)}"
            )
        verdict, rung, margin, extra = _prove_region(run, spec, low, high, incomplete, ibp)
        margins.append(margin)
        method = max(method, rung, key=RUNGS.index)
        if verdict != "unsat":
            return out(verdict, rung, margin=margin, **extra)
    return out("unsat", method, margin=min(margins), reason="proved by sound bounds")


def _flat(run: _Run) -> torch.nn.Module:
    return run.module


def _box(region: Region) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(region.box.lower, dtype=torch.float64), torch.tensor(
        region.box.upper, dtype=torch.float64
    )


def _prove_region(
    run: _Run, spec: Spec, low: torch.Tensor, high: torch.Tensor, incomplete: bool, ibp: _Ibp
) -> tuple[Verdict, str, float, dict[str, object]]:
    """Run the bound rungs after IBP (``ibp``) on one region: (verdict, rung, margin, extra fields)."""
    net, c = run.net, spec.c.unsqueeze(0)
    lo, hi = low.unsqueeze(0), high.unsqueeze(0)
    if ibp.lb is None:
        return "unsat", "ibp", math.inf, {"reason": "empty input box"}
    lb, rel, margin, plan = ibp.lb, ibp.rel, ibp.margin, ibp.plan
    if plan is None:
        return "unsat", "ibp", margin, {}
    if not plan.fits(plan.crown):  # never ask torch for more than the budget: IBP is the last word
        return "unknown", "ibp", margin, {"reason": plan.reason("CROWN bounds", plan.crown)}
    lb, rel, _ = crown(net, c, lo, hi, method="crown")
    margin = max(margin, float(spec.objective(sound_lower(net, c, lb, lo, hi))[0]))
    if margin > 0:
        return "unsat", "crown", margin, {}
    if run.left() <= 0:
        return "timeout", "crown", margin, {"reason": "time budget reached after CROWN"}
    if not plan.fits(plan.alpha):
        return "unknown", "crown", margin, {"reason": plan.reason("alpha-CROWN bounds", plan.alpha)}
    neurons = sum(layer.n_out for layer in net.layers if layer.nonlinear)
    budget = time.monotonic() + ALPHA_SHARE * run.left()
    lb, rel = alpha_crown(
        net,
        c,
        lo,
        hi,
        rel,
        iters=30 if neurons <= ALPHA_ITERS_SMALL_NET else 20,
        lr=0.1,
        optimise_intermediate=neurons <= ALPHA_INTERMEDIATE_MAX_NEURONS
        and net.n_inputs > INPUT_SPLIT_MAX_DIMS
        and plan.fits(plan.alpha_intermediate),
        deadline=budget,
        start=lb,
    )
    margin = max(margin, float(spec.objective(sound_lower(net, c, lb, lo, hi))[0]))
    if margin > 0:
        return "unsat", "alpha-crown", margin, {}
    if incomplete or run.left() <= 0:
        verdict: Verdict = "unknown" if incomplete else "timeout"
        return verdict, "alpha-crown", margin, {"reason": "not proved by the incomplete rungs"}
    if net.n_inputs <= INPUT_SPLIT_MAX_DIMS:
        res, rung = bab_input_portfolio(net, spec, low, high, run.checker, deadline=run.deadline), "bab-input"
    else:
        res, rung = bab_relu(net, spec, low, high, rel, run.checker, deadline=run.deadline), "bab-relu"
    run.branches += res.branches
    return _from_bab(res, rung, margin)


def _from_bab(res: BabResult, rung: str, margin: float) -> tuple[Verdict, str, float, dict[str, object]]:
    extra: dict[str, object] = {"reason": res.reason}
    if res.verdict == "sat":
        extra["counterexample"] = res.counterexample
        return "sat", rung, res.margin, extra
    verdict: Verdict = res.verdict if res.verdict in ("unsat", "timeout") else "unknown"  # type: ignore[assignment]
    return verdict, rung, res.margin if verdict == "unsat" else max(margin, res.margin), extra


def certified_radius(
    onnx_path: Path | str,
    x: np.ndarray,
    label: int,
    *,
    lower: float | np.ndarray,
    upper: float | np.ndarray,
    eps_max: float,
    timeout_s: float,
    tol: float = 0.05,
) -> tuple[float, float | None]:
    """Largest L-inf radius proved (TR 24029-1 6.2.3 maximum stable space) and smallest refuted one.

    Bisection on eps with the incomplete rungs (falsifier, IBP, CROWN, alpha-CROWN); stops when the
    bracket is within ``tol`` (relative) or the time is up. Returns ``(radius_lower, radius_upper)``,
    ``radius_upper`` None when no counterexample was found up to ``eps_max``.
    """
    stop = time.monotonic() + timeout_s
    n_classes = _n_outputs(onnx_path)
    proved, refuted, undecided = 0.0, None, None
    eps = eps_max
    while time.monotonic() < stop:
        prop = local_robustness(x, label, eps, n_classes, lower, upper)
        out = verify(onnx_path, prop, timeout_s=max((stop - time.monotonic()) / 2, 0.01), incomplete=True)
        if out.verdict == "unsat":
            proved = eps
        elif out.verdict == "sat":
            refuted = eps
        else:
            undecided = eps
        top = min(v for v in (refuted, undecided, eps_max) if v is not None)
        if proved >= top or top - proved <= tol * top:
            break
        eps = (proved + top) / 2
    return proved, refuted


def _n_outputs(onnx_path: Path | str) -> int:
    module = load_onnx_module(onnx_path)
    with torch.no_grad():
        y = module(torch.zeros(1, *module.sample_shape))
    return int(y.reshape(1, -1).shape[1])


__all__ = ["VerificationOutcome", "certified_radius", "pick_device", "replace", "unsupported_nodes", "verify"]
