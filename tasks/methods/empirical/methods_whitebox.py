"""Registered gradient attacks (white box through the torch executor of the ONNX graph).

Each candidate is re-run on ONNX Runtime and counts only if the deployed model misclassifies it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field, JsonValue, field_validator

from nnassay.schemas.results import MethodOutcome, TestStatus
from nnassay.tasks.methods.cost import Cost
from nnassay.tasks.methods.empirical import attacks_whitebox as wb
from nnassay.tasks.methods.empirical.attack_base import (
    AP,
    AttackMethod,
    AttackParams,
    AttackRun,
    Ball,
    Search,
    checked,
    norm_of,
    tabular_box,
)
from nnassay.tasks.methods.empirical.methods_blackbox import square_candidates, square_cost
from nnassay.tasks.methods.registry import RunContext, register, usable_methods

DEVIATION_WARN = 1e-3  # relative deviation of torch from ONNX Runtime logits worth a caveat


@dataclass
class WhiteBox:
    """The differentiable model and how far it is from ONNX Runtime."""

    module: torch.nn.Module
    deviation: float
    box: wb.Box
    generator: torch.Generator
    relative_deviation: float = 0.0  # deviation / max(1, largest |logit|)


@contextmanager
def torch_threads(x: np.ndarray, batch_size: int) -> Iterator[None]:
    """One torch thread for small batches: on tiny tensors the thread pool's hand-offs cost more
    than the arithmetic (about 10x slower on a busy 2-core machine); restored afterwards."""
    before = torch.get_num_threads()
    small = int(np.prod(x.shape[1:])) * min(batch_size, max(len(x), 1)) < 2_000_000
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def black_box_advice(ctx: RunContext[Ball]) -> str:
    """Which methods can measure this goal without the executor (only ones planning would accept)."""
    names = usable_methods(ctx.threat, ctx.data.kind, ctx.metric, executor_ok=False) or usable_methods(
        ctx.threat, ctx.data.kind, executor_ok=False
    )
    if not names:
        return f"No black-box method tests threat {ctx.threat.kind!r} on {ctx.data.kind} data."
    return "Use a black-box attack on ONNX Runtime instead: " + ", ".join(names) + "."


def torch_box(ctx: RunContext[Ball]) -> wb.Box:
    """The value range and norm (tabular: per-feature bounds and scales, fixed features at scale 0)."""
    box = tabular_box(ctx)
    if box is None:
        return wb.Box(*ctx.model.value_range, norm_of(ctx.threat))

    def tensor(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(v, np.float32))

    scale = np.where(box.frozen, 0.0, box.scale)
    return wb.Box(tensor(box.low), tensor(box.high), norm_of(ctx.threat), tensor(scale))


def gradient_cost(params: AttackParams, samples: int, radii: int, steps: float) -> Cost:
    """``steps`` forward+backward passes per sample and radius through the torch executor, in
    batches of ``batch_size`` samples."""
    return Cost(
        backwards=float(samples * radii) * steps,
        backward_calls=float(-(-samples // params.batch_size) * radii) * steps,
    )


class WhiteBoxAttack(AttackMethod[AP]):
    """Base of gradient attacks: builds and checks the torch executor (abstract)."""

    needs_executor = True

    def run(self, ctx: RunContext[Ball], params: AP) -> MethodOutcome:
        with torch_threads(ctx.data.x, params.batch_size):
            return super().run(ctx, params)

    def prepare(self, ctx: RunContext[Ball], params: AP) -> tuple[Any, MethodOutcome | None]:
        try:
            module = ctx.model.torch_module().eval()
        except Exception as exc:  # the executor lists unsupported ops in its message
            nodes: list[JsonValue] = [list(n) for n in getattr(exc, "nodes", [])]
            return None, MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                details={"unsupported_nodes": nodes},
                reason=f"gradient attacks need the torch executor, which cannot run "
                f"this model: {exc}. {black_box_advice(ctx)}",
            )
        for p in module.parameters():
            p.requires_grad_(False)
        sample = ctx.data.x[:64]
        with torch.no_grad():
            torch_logits = module(torch.from_numpy(sample)).numpy()
        ort_logits = ctx.model.logits(sample)
        deviation = float(np.abs(torch_logits - ort_logits).max()) if len(sample) else 0.0
        scale = float(np.abs(ort_logits).max()) if len(sample) else 1.0
        relative = deviation / max(scale, 1.0) if np.isfinite(deviation) else float("inf")
        generator = torch.Generator().manual_seed(ctx.seed)
        return WhiteBox(module, deviation, torch_box(ctx), generator, relative), None

    def extra_details(self, setup: Any) -> dict[str, JsonValue]:
        def finite(v: float) -> float | None:
            return v if np.isfinite(v) else None

        return {
            "torch_vs_ort_max_abs_deviation": finite(setup.deviation),
            "executor": "nnassay.tasks.engine.onnx_torch",
            "torch_vs_ort_relative_deviation": finite(setup.relative_deviation),
        }

    def caveat(self, setup: Any) -> str | None:
        if np.isfinite(setup.relative_deviation) and setup.relative_deviation <= DEVIATION_WARN:
            return None
        return (
            f"the torch executor's logits differ from ONNX Runtime's by up to {setup.deviation:.3g} "
            f"({setup.relative_deviation:.2g} of the logit scale), so its gradients describe the deployed "
            "model only roughly: the attack may be weaker than it should be (every success is still "
            "checked on ONNX Runtime); confirm with the black-box attacks"
        )

    def attack(
        self, setup: Any, ctx: RunContext[Ball], params: AP, x: np.ndarray, y: np.ndarray, eps: float
    ) -> AttackRun:
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        et = torch.full((len(x),), float(eps), dtype=xt.dtype)
        return AttackRun(self.gradient_attack(setup, params, xt, yt, et).numpy())

    def gradient_attack(
        self, setup: WhiteBox, params: AP, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """Candidates from the gradient attack at per-sample radii ``eps``."""
        raise NotImplementedError


class PgdParams(AttackParams):
    """Parameters of projected gradient descent."""

    steps: int = Field(default=50, ge=1, description="Gradient steps per restart.")
    restarts: int = Field(default=2, ge=1, description="Random restarts inside the ball.")
    rel_step: float | None = Field(default=None, gt=0, description="Step size / eps; default 2.5 / steps.")


@register
class Fgsm(WhiteBoxAttack[AttackParams]):
    """Fast Gradient Sign Method: one gradient step to the edge of the eps ball.

    Reference: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR
    2015; ISO/IEC TR 24029-1 clause 7. Threat model: white box, L-inf (sign step) or L2 (normalised
    gradient step) ball of radius ``eps`` (data units) inside the value range. Parameters: ``eps``
    and ``sweep`` from the threat. Result: ``robust_accuracy`` (correct and not broken, checked on
    ONNX Runtime: an upper bound, FGSM is weak) and ``attack_success_rate``.
    """

    name = "empirical.fgsm"
    priority = 90

    @classmethod
    def attack_cost(cls, params: AttackParams, samples: int, radii: int) -> Cost:
        return gradient_cost(params, samples, radii, 1)

    def gradient_attack(
        self, setup: WhiteBox, params: AttackParams, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        return wb.fgsm(setup.module, x, y, eps, setup.box)


def _pgd(
    setup: WhiteBox, params: PgdParams, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    return wb.pgd(
        setup.module,
        x,
        y,
        eps,
        setup.box,
        steps=params.steps,
        restarts=params.restarts,
        rel_step=params.rel_step or 2.5 / params.steps,
        generator=setup.generator,
    )


@register
class PgdLinf(WhiteBoxAttack[PgdParams]):
    """Projected gradient descent with random restarts in the L-inf ball.

    Reference: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR
    2018; ISO/IEC TR 24029-1 clause 7. Threat model: white box, L-inf ball of radius ``eps`` inside
    the value range. Parameters: ``steps`` (50), ``restarts`` (2), ``rel_step`` (2.5 / steps).
    Result: ``robust_accuracy`` (an upper bound of the true one) and ``attack_success_rate``,
    both checked on ONNX Runtime, over the eps sweep.
    """

    name = "empirical.pgd_linf"
    threats = ("linf_ball",)
    priority = 80

    @classmethod
    def attack_cost(cls, params: PgdParams, samples: int, radii: int) -> Cost:
        return gradient_cost(params, samples, radii, params.restarts * (params.steps + 1))

    def gradient_attack(
        self, setup: WhiteBox, params: PgdParams, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        return _pgd(setup, params, x, y, eps)


@register
class PgdL2(PgdLinf):
    """Projected gradient descent with random restarts in the L2 ball.

    Reference: Madry et al., ICLR 2018; ISO/IEC TR 24029-1 clause 7. Threat model: white box, L2
    ball of radius ``eps`` (data units) inside the value range, normalised-gradient steps.
    Parameters: ``steps`` (50), ``restarts`` (2), ``rel_step`` (2.5 / steps). Result:
    ``robust_accuracy`` (upper bound) and ``attack_success_rate``, checked on ONNX Runtime.
    """

    name = "empirical.pgd_l2"
    threats = ("l2_ball",)


class ApgdParams(AttackParams):
    """Parameters of Auto-PGD."""

    steps: int = Field(default=100, ge=2, description="Iterations per run.")
    losses: list[str] = Field(
        default_factory=lambda: ["ce", "dlr_targeted"], description="Runs: 'ce', 'dlr' or 'dlr_targeted'."
    )
    targets: int = Field(default=3, ge=1, description="Target classes of the targeted DLR runs.")

    @field_validator("losses")
    @classmethod
    def _known_losses(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in ("ce", "dlr", "dlr_targeted")]
        if unknown or not value:
            raise ValueError(f"losses must be a non-empty list of 'ce', 'dlr', 'dlr_targeted'; got {value}")
        return value


def effective_loss(loss: str, classes: int) -> str:
    """The APGD loss that can run with this many classes: targeted DLR needs 4, DLR 3, else CE."""
    if loss == "dlr_targeted" and classes < 4:
        loss = "dlr" if classes >= 3 else "ce"
    if loss == "dlr" and classes < 3:
        loss = "ce"
    return loss


def _apgd(
    setup: WhiteBox, params: ApgdParams, loss: str, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, str]:
    """Run APGD with one loss on the samples not yet broken; DLR falls back when classes are few."""
    classes = int(setup.module(x[:1]).shape[1]) if len(x) else 0
    loss = effective_loss(loss, classes)
    out = x.clone()
    if loss != "dlr_targeted":
        kind = "ce" if loss == "ce" else "dlr"
        return wb.apgd(
            setup.module, x, y, eps, setup.box, steps=params.steps, loss=kind, generator=setup.generator
        ), loss
    with torch.no_grad():
        logits = setup.module(x)
    for target in wb.top_targets(logits, y, params.targets):
        todo = ~wb.predicts_wrong(setup.module, out, y)
        if not todo.any():
            break
        found = wb.apgd(
            setup.module,
            x[todo],
            y[todo],
            eps[todo],
            setup.box,
            steps=params.steps,
            loss="dlr",
            target=target[todo],
            generator=setup.generator,
        )
        better = wb.predicts_wrong(setup.module, found, y[todo])
        rows = torch.nonzero(todo)[:, 0][better]
        out[rows] = found[better]
    return out, loss


@register
class Apgd(WhiteBoxAttack[ApgdParams]):
    """Auto-PGD with the cross-entropy loss and the targeted difference-of-logits-ratio loss.

    Reference: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020; ISO/IEC TR 24029-1 clause 7. Threat model: white box,
    L-inf or L2 ball of radius ``eps`` inside the value range. Parameters: ``steps`` (100),
    ``losses`` (APGD-CE then APGD-T with DLR; DLR needs 3 classes, targeted DLR 4, else CE is used),
    ``targets`` (3). Result: per-sample worst case over the runs, ``robust_accuracy`` (upper bound)
    and ``attack_success_rate``, checked on ONNX Runtime.
    """

    name = "empirical.apgd"
    priority = 70

    @classmethod
    def attack_cost(cls, params: ApgdParams, samples: int, radii: int) -> Cost:
        """``steps`` per run: one run per loss, one per target class for targeted DLR."""
        runs = sum(params.targets if loss == "dlr_targeted" else 1 for loss in dict.fromkeys(params.losses))
        return gradient_cost(params, samples, radii, runs * params.steps + 1)

    def attack(
        self, setup: Any, ctx: RunContext[Ball], params: ApgdParams, x: np.ndarray, y: np.ndarray, eps: float
    ) -> AttackRun:
        classes = ctx.model.n_classes
        return _worst_case(
            ctx,
            x,
            y,
            eps,
            [
                (
                    f"apgd_{effective_loss(loss, classes)}",
                    lambda xs, ys, e, loss=loss: _apgd(setup, params, loss, xs, ys, e)[0],
                )
                for loss in dict.fromkeys(params.losses)
            ],
            setup,
        )


AttackFn = Any  # (x: Tensor, y: Tensor, eps: Tensor) -> Tensor, or a numpy black-box attack


def _worst_case(
    ctx: RunContext,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    attacks: list[tuple[str, AttackFn]],
    setup: WhiteBox,
) -> AttackRun:
    """Run attacks in turn, each on the samples the previous ones did not break (checked on ORT)."""
    best, info = x.copy(), {}
    broken = np.zeros(len(x), dtype=bool)
    for label, fn in attacks:
        todo = np.flatnonzero(~broken)
        if not len(todo) or ctx.time_left() <= 0:
            break
        xt, yt = torch.from_numpy(np.ascontiguousarray(x[todo])), torch.from_numpy(y[todo])
        found = fn(xt, yt, torch.full((len(todo),), float(eps), dtype=xt.dtype))
        cand = found.numpy() if isinstance(found, torch.Tensor) else found
        cand, ok = checked(ctx, cand, x[todo], y[todo], eps)
        best[todo[ok]], broken[todo[ok]] = cand[ok], True
        info[f"broken_by_{label}"] = int(ok.sum())
    return AttackRun(best, info)


class EnsembleParams(PgdParams):
    """Parameters of the attack ensemble."""

    apgd_steps: int = Field(default=100, ge=2, description="Iterations of each APGD run.")
    targets: int = Field(default=3, ge=1, description="Target classes of APGD-T (DLR).")
    square_queries: int = Field(default=1000, ge=10, description="Query budget of Square Attack.")


@register
class AutoAttackLite(WhiteBoxAttack[EnsembleParams]):
    """Worst case per sample over FGSM, PGD, APGD-CE, APGD-T (DLR) and Square Attack (AutoAttack style).

    Reference: Croce & Hein, ICML 2020 (AutoAttack: APGD-CE, APGD-T, Square), plus FGSM (Goodfellow
    et al. 2015) and PGD (Madry et al. 2018); ISO/IEC TR 24029-1 clause 7. Threat model: white box
    plus black box, L-inf or L2 ball of radius ``eps`` inside the value range. Each attack runs only
    on samples the previous ones did not break (Square on image data only). Parameters: ``steps`` /
    ``restarts`` of PGD (50 / 2), ``apgd_steps`` (100), ``targets`` (3), ``square_queries`` (1000).
    Result: ``robust_accuracy`` (correct and unbroken by every attack, on ONNX Runtime: the tightest
    empirical upper bound nnassay offers) and ``attack_success_rate``, over the eps sweep.
    """

    name = "empirical.autoattack_lite"
    priority = 60  # after formal.local_robustness (50), before the single attacks

    @classmethod
    def attack_cost(cls, params: EnsembleParams, samples: int, radii: int) -> Cost:
        """FGSM, PGD, APGD-CE, APGD-T (one run per target) and Square, each on every sample (the upper
        end: each attack runs only on the samples the previous ones left unbroken)."""
        steps = 1 + params.restarts * (params.steps + 1) + params.apgd_steps * (1 + params.targets)
        square = square_cost(samples, radii, params.square_queries, params.batch_size)
        return gradient_cost(params, samples, radii, steps) + square

    def attack(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: EnsembleParams,
        x: np.ndarray,
        y: np.ndarray,
        eps: float,
    ) -> AttackRun:
        apgd = ApgdParams(steps=params.apgd_steps, targets=params.targets)
        attacks: list[tuple[str, AttackFn]] = [
            ("fgsm", lambda xs, ys, e: wb.fgsm(setup.module, xs, ys, e, setup.box)),
            ("pgd", lambda xs, ys, e: _pgd(setup, params, xs, ys, e)),
            ("apgd_ce", lambda xs, ys, e: _apgd(setup, apgd, "ce", xs, ys, e)[0]),
            (
                f"apgd_{effective_loss('dlr_targeted', ctx.model.n_classes)}",
                lambda xs, ys, e: _apgd(setup, apgd, "dlr_targeted", xs, ys, e)[0],
            ),
        ]
        if ctx.data.kind == "image" and x.ndim == 4:
            attacks.append(
                (
                    "square",
                    lambda xs, ys, e: square_candidates(
                        ctx, xs.numpy(), ys.numpy(), float(e[0]), params.square_queries, 0
                    ),
                )
            )
        return _worst_case(ctx, x, y, eps, attacks, setup)


class MinEpsParams(AttackParams):
    """Parameters of the minimal-eps search."""

    steps: int = Field(default=40, ge=1, description="PGD steps per probe.")
    restarts: int = Field(default=1, ge=1, description="PGD restarts per probe.")
    rel_step: float | None = Field(default=None, gt=0, description="Step / eps; default 2.5 / steps.")
    cap_factor: float = Field(default=4.0, ge=1.0, description="Largest eps searched, as a multiple of eps.")
    bisections: int = Field(default=10, ge=1, description="Bisection steps (resolution cap / 2^n).")


@register
class MinEps(WhiteBoxAttack[MinEpsParams]):
    """Smallest adversarial radius per sample, by bisection over PGD (checked on ONNX Runtime).

    Reference: minimal-perturbation evaluation as in Foolbox's MinimizationAttack (Rauber et al.
    2017) and DDN/FAB (Rony et al. 2019; Croce & Hein 2020), here by bisection on PGD (Madry et
    al. 2018); ISO/IEC TR 24029-1 clause 7. Threat model: white box, L-inf or L2, radii from 0 to
    ``cap_factor`` x eps. Parameters: ``steps`` (40), ``restarts`` (1), ``bisections`` (10).
    Result: ``median_min_eps`` and ``mean_min_eps`` (bootstrap intervals; samples never broken
    count at the cap, a lower bound), the histogram of minimal eps, and ``robust_accuracy`` /
    ``attack_success_rate`` at the goal's eps.
    """

    name = "empirical.min_eps"
    metrics = ("median_min_eps", "mean_min_eps", "robust_accuracy", "attack_success_rate")
    priority = 75

    @classmethod
    def attack_cost(cls, params: MinEpsParams, samples: int, radii: int) -> Cost:
        """A PGD probe of every sample at once per bisection step (the radii of the sweep are not run)."""
        probes = params.bisections + 1
        steps = float(probes * params.restarts * (params.steps + 1))
        return Cost(
            backwards=samples * steps,
            backward_calls=steps,
            forwards=float(samples * probes),
            forward_calls=probes,
        )

    def search(
        self,
        setup: Any,
        ctx: RunContext[Ball],
        params: MinEpsParams,
        x: np.ndarray,
        y: np.ndarray,
        grid: list[float],
    ) -> Search:
        cap = max((params.eps or max(grid)) * params.cap_factor, max(grid))
        pgd = PgdParams(steps=params.steps, restarts=params.restarts, rel_step=params.rel_step)
        best, x_adv = np.full(len(x), np.inf), x.copy()
        low, high = np.zeros(len(x)), np.full(len(x), cap)
        probe = np.full(len(x), cap)
        for step in range(params.bisections + 1):
            if ctx.time_left() <= 0:
                break
            found = self._probe(setup, ctx, pgd, x, y, probe)
            best[found.hit] = np.minimum(best[found.hit], probe[found.hit])
            x_adv[found.rows] = found.x_adv
            high = np.where(found.hit, probe, high)
            low = np.where(found.hit, low, probe)
            probe = np.where(np.isfinite(best), (low + high) / 2, cap)
            ctx.progress(step + 1, params.bisections + 1)
        return Search(broken_at=best, x_adv=x_adv, min_eps=best, cap=cap, info={"cap": cap})

    def _probe(
        self,
        setup: WhiteBox,
        ctx: RunContext,
        pgd: PgdParams,
        x: np.ndarray,
        y: np.ndarray,
        radii: np.ndarray,
    ) -> _Probe:
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        cand = _pgd(setup, pgd, xt, yt, torch.from_numpy(radii.astype(np.float32))).numpy()
        cand, hit = checked(ctx, cand, x, y, radii)
        return _Probe(hit, np.flatnonzero(hit), cand[hit])


@dataclass
class _Probe:
    hit: np.ndarray
    rows: np.ndarray
    x_adv: np.ndarray
