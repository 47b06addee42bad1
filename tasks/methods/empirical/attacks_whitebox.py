"""Gradient attacks on the torch executor of the ONNX graph: FGSM, PGD, APGD-CE / APGD-DLR, bisection.

Pure torch functions of a module mapping data-space inputs to logits. ``eps`` is a per-sample tensor
(N,), so a minimal-eps search can use one batch. Every returned input lies inside its eps ball (L-inf
or L2) and inside the value range. Successes are only *candidates*: methods re-run them on ONNX
Runtime. Randomness comes from the ``generator`` argument only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class Box:
    """The value range of the data and the norm of the threat.

    Tabular data: ``low``/``high`` are per-feature tensors and ``scale`` each feature's unit, so the
    ball is measured on delta / scale; a feature of scale 0 (immutable, categorical) never moves.
    """

    low: float | torch.Tensor
    high: float | torch.Tensor
    norm: str  # 'linf' or 'l2'
    scale: torch.Tensor | None = None


def _unscaled(delta: torch.Tensor, box: Box) -> torch.Tensor:
    return delta if box.scale is None else delta / torch.where(box.scale > 0, box.scale, 1.0)


def _scaled(delta: torch.Tensor, box: Box) -> torch.Tensor:
    return delta if box.scale is None else delta * box.scale


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, box: Box) -> torch.Tensor:
    """Into the eps ball around x, then into the value range (which keeps it in the ball)."""
    delta = _unscaled(x_adv - x, box)
    if box.norm == "linf":
        delta = torch.maximum(torch.minimum(delta, _col(eps, x)), -_col(eps, x))
    else:
        scale = torch.where(_norm(delta) > eps, eps / _norm(delta) * (1 - 1e-6), torch.ones_like(eps))
        delta = delta * _col(scale, x)
    return _clip(x + _scaled(delta, box), box)


def _clip(v: torch.Tensor, box: Box) -> torch.Tensor:
    """Into the value range (one range, or per-feature bounds on tabular data)."""
    if isinstance(box.low, torch.Tensor) or isinstance(box.high, torch.Tensor):
        return torch.clamp(v, torch.as_tensor(box.low), torch.as_tensor(box.high))
    return v.clamp(box.low, box.high)


def _step(grad: torch.Tensor, box: Box) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the ball's own units (per-feature scaled)."""
    if box.scale is not None:
        grad = grad * box.scale  # the gradient with respect to delta / scale
    step = grad.sign() if box.norm == "linf" else grad / _col(_norm(grad), grad)
    return _scaled(step, box)


def _random_start(x: torch.Tensor, eps: torch.Tensor, box: Box, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    if box.norm == "l2":
        noise = (
            noise / _col(_norm(noise), x) * _col(torch.rand(len(x), generator=generator, dtype=x.dtype), x)
        )
    return project(x + _scaled(noise * _col(eps, x), box), x, eps, box)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per sample; higher means closer to an error.

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted: -(z_y - z_t) /
    (z_pi1 - (z_pi3 + z_pi4) / 2). Needs 3 (untargeted) or 4 (targeted) classes.
    """
    ordered, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        other = logits.clone().scatter_(1, y[:, None], -math.inf).max(dim=1).values
        return -(true - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    chosen = logits.gather(1, target[:, None])[:, 0]
    return -(true - chosen) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def _loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss, its gradient and the logits."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="none") if kind == "ce" else dlr_loss(logits, y, target)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.detach(), logits.detach()


def fgsm(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, box: Box
) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015); L2: normalised gradient step."""
    _, grad, _ = _loss(model, x, y, "ce", None)
    return project(x + _col(eps, x) * _step(grad, box), x, eps, box)


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    box: Box,
    *,
    steps: int,
    restarts: int,
    rel_step: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy (Madry et al., ICLR 2018) with random restarts.

    Returns per sample the first misclassifying iterate, else the highest-loss one over all restarts.
    A sample leaves the batch as soon as it is misclassified (its result can no longer change), and
    the attack ends when every sample is; each restart starts only the samples still standing.
    """
    best, best_loss = x.clone(), torch.full((len(x),), -math.inf, dtype=x.dtype)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        rows = torch.nonzero(~fooled)[:, 0]
        if not len(rows):
            break
        xs, ys, es = x[rows], y[rows], eps[rows]
        alpha = _col(es * rel_step, xs)
        x_adv = _random_start(x, eps, box, generator)[rows]  # whole batch: same draws, any subset
        for step in range(steps + 1):
            loss, grad, logits = _loss(model, x_adv, ys, "ce", None)
            wrong = logits.argmax(1) != ys
            _keep_rows(best, best_loss, fooled, rows, x_adv, loss, wrong)
            if step == steps or bool(wrong.all()):
                break
            left = ~wrong
            rows, xs, ys, es, alpha = rows[left], xs[left], ys[left], es[left], alpha[left]
            x_adv = project(x_adv[left] + alpha * _step(grad[left], box), xs, es, box)
    return best


def _keep_rows(
    best: torch.Tensor,
    best_loss: torch.Tensor,
    fooled: torch.Tensor,
    rows: torch.Tensor,
    x_adv: torch.Tensor,
    loss: torch.Tensor,
    wrong: torch.Tensor,
) -> None:
    """``_keep`` for the samples ``rows`` of the full tensors (x_adv, loss, wrong hold those rows)."""
    take = (~fooled[rows]) & (wrong | (loss > best_loss[rows]))
    best[rows[take]], best_loss[rows[take]] = x_adv[take], loss[take]
    fooled[rows[wrong]] = True


def apgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    box: Box,
    *,
    steps: int,
    loss: str,
    generator: torch.Generator,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Auto-PGD (Croce & Hein, ICML 2020): momentum 0.75, step size halved at checkpoints when the
    loss oscillates or stalls. ``loss`` is 'ce' or 'dlr' (with ``target``: targeted DLR)."""
    k = max(int(0.22 * steps), 1)
    k_min, k_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    x_adv = _random_start(x, eps, box, generator)
    step = _col(2 * eps, x).expand_as(x).clone()
    loss_val, grad, logits = _loss(model, x_adv, y, loss, target)
    best, best_loss, best_grad = x_adv.clone(), loss_val.clone(), grad.clone()
    fooled_x, fooled = x_adv.clone(), logits.argmax(1) != y
    history, last_best, reduced = [loss_val], best_loss.clone(), torch.zeros(len(x), dtype=torch.bool)
    previous, since_check = x_adv.clone(), 0
    for i in range(steps):
        momentum = 0.75 if i > 0 else 1.0
        z = project(x_adv + step * _step(grad, box), x, eps, box)
        new = project(x_adv + (z - x_adv) * momentum + (x_adv - previous) * (1 - momentum), x, eps, box)
        previous, x_adv = x_adv, new
        loss_val, grad, logits = _loss(model, x_adv, y, loss, target)
        wrong = (logits.argmax(1) != y) & ~fooled
        fooled_x[wrong], fooled = x_adv[wrong], fooled | wrong
        improved = loss_val > best_loss
        best[improved], best_loss[improved], best_grad[improved] = (
            x_adv[improved],
            loss_val[improved],
            grad[improved],
        )
        history.append(loss_val)
        since_check += 1
        if since_check == k:
            rises = torch.stack([history[-j] > history[-j - 1] for j in range(1, k + 1)]).sum(0)
            halve = (rises <= k * 0.75) | (~reduced & (last_best >= best_loss))
            reduced, last_best = halve.clone(), best_loss.clone()
            step[halve] /= 2.0
            x_adv[halve], grad[halve] = best[halve], best_grad[halve]
            k, since_check = max(k - k_decr, k_min), 0
    return torch.where(_col(fooled, x), fooled_x, best)


def top_targets(logits: torch.Tensor, y: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The ``count`` most likely wrong classes per sample, as one target tensor per rank."""
    masked = logits.clone().scatter_(1, y[:, None], -math.inf)
    order = masked.argsort(dim=1, descending=True)
    return [order[:, r] for r in range(min(count, logits.shape[1] - 1))]


def predicts_wrong(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bool per sample: the torch module misclassifies x."""
    with torch.no_grad():
        return model(x).argmax(1) != y
