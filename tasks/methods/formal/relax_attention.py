"""Nonlinear maps over several values: products (McCormick), Softmax and L2/LayerNorm scaling.

Each map acts on the last values of a branching graph's state (see ``ops``), the first ``keep``
values passing through. CROWN goes backward through ``backward_bound``: products use McCormick
planes (Shi et al. 2020, "Robustness verification for transformers"); Softmax and normalisation
use their interval bounds as a constant relaxation (sound, loose; the layers before and after
still get CROWN bounds).
"""

from __future__ import annotations

import copy
import math

import torch

from nnassay.tasks.methods.formal.layers import Layer

Tensor = torch.Tensor


class NonlinearMap(Layer):
    """A nonlinear map ``tail -> out`` on the last ``n_in - keep`` values; the first ``keep`` pass through."""

    nonlinear = True
    has_alpha = False
    kind = "map"

    def __init__(self, keep: int, n_tail_in: int, n_tail_out: int) -> None:
        self.keep, self.n_in, self.n_out = keep, keep + n_tail_in, keep + n_tail_out

    def embedded(self, keep: int) -> NonlinearMap:
        """A copy acting after ``keep`` more passthrough values."""
        out = copy.copy(self)
        out.keep, out.n_in, out.n_out = self.keep + keep, self.n_in + keep, self.n_out + keep
        return out

    def inner_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def inner_ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[..., : self.keep], self.inner_forward(x[..., self.keep :])], -1)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        k = self.keep
        lo, hi = self.inner_ibp(low[..., k:], high[..., k:])
        return torch.cat([low[..., :k], lo], -1), torch.cat([high[..., :k], hi], -1)

    def inner_backward(self, a: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """Constant relaxation ``lo <= out <= hi``: no coefficients on the input, bias from the box."""
        lo, hi = self.inner_ibp(low, high)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        bias = _safe_dot(pos, lo) + _safe_dot(neg, hi)
        return torch.zeros(*a.shape[:-1], low.shape[-1], dtype=a.dtype, device=a.device), bias

    def backward_bound(self, a: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """Lower-bound relaxation of ``a @ out``: new ``A`` (B, m, n_in) and the bias (B, m)."""
        k = self.keep
        inner_a, bias = self.inner_backward(a[..., k:], low[..., k:], high[..., k:])
        return torch.cat([a[..., :k], inner_a], -1), bias


def _safe_dot(a: Tensor, v: Tensor) -> Tensor:
    """``sum_n a[b, m, n] * v[b, n]`` counting ``0 * inf`` as 0 (a zero coefficient ignores the bound)."""
    prod = a * v.unsqueeze(1)
    return torch.where(a == 0, torch.zeros_like(prod), prod).sum(-1)


class Bilinear(NonlinearMap):
    """``out_o = sum_t A[p[o, t]] * B[q[o, t]]`` with the tail laid out as ``[A, B]`` (Mul, MatMul)."""

    kind = "bilinear"

    def __init__(self, keep: int, n_a: int, n_b: int, p: Tensor, q: Tensor) -> None:
        super().__init__(keep, n_a + n_b, p.shape[0])
        self.n_a, self.p, self.q = n_a, p.long(), q.long() + n_a

    def inner_forward(self, x: Tensor) -> Tensor:
        return (x[..., self.p] * x[..., self.q]).sum(-1)

    def inner_ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        la, ua, lb, ub = low[..., self.p], high[..., self.p], low[..., self.q], high[..., self.q]
        corners = torch.stack([la * lb, la * ub, ua * lb, ua * ub])
        return corners.amin(0).sum(-1), corners.amax(0).sum(-1)

    def inner_backward(self, a: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """McCormick: ``xy >= lB x + lA y - lA lB`` and ``xy <= uB x + lA y - lA uB``."""
        la, lb, ub = low[:, None, self.p], low[:, None, self.q], high[:, None, self.q]  # (B, 1, o, t)
        pos, neg = a.clamp(min=0).unsqueeze(-1), a.clamp(max=0).unsqueeze(-1)  # (B, m, o, 1)
        coef_x = pos * lb + neg * ub
        coef_y = a.unsqueeze(-1) * la
        bias = -(pos * la * lb + neg * la * ub).sum((-1, -2))
        out = torch.zeros(*a.shape[:-1], low.shape[-1], dtype=a.dtype, device=a.device)
        flat = a.shape[:-1] + (-1,)
        out.index_add_(out.dim() - 1, self.p.reshape(-1), coef_x.reshape(flat))
        out.index_add_(out.dim() - 1, self.q.reshape(-1), coef_y.reshape(flat))
        return out, bias


class SoftmaxMap(NonlinearMap):
    """Softmax over groups of the tail (``groups`` (G, K): positions of each group, covering the tail).

    Interval bounds: ``y_i = sigmoid(-LSE_{j != i}(x_j - x_i))``, increasing in ``x_i``, decreasing
    in every other ``x_j``.
    """

    kind = "softmax"

    def __init__(self, keep: int, groups: Tensor) -> None:
        n = groups.numel()
        super().__init__(keep, n, n)
        self.groups = groups.long()
        self.diag = torch.eye(groups.shape[1], dtype=torch.bool)

    def _scatter(self, values: Tensor) -> Tensor:
        out = torch.empty(*values.shape[:-2], self.groups.numel(), dtype=values.dtype, device=values.device)
        out[..., self.groups.reshape(-1)] = values.reshape(*values.shape[:-2], -1)
        return out

    def inner_forward(self, x: Tensor) -> Tensor:
        return self._scatter(torch.softmax(x[..., self.groups], -1))

    def inner_ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = low[..., self.groups], high[..., self.groups]  # (B, G, K)
        diag = self.diag.to(lo.device)
        worst = (hi.unsqueeze(-2) - lo.unsqueeze(-1)).masked_fill(diag, -math.inf)  # [i, j] = hi_j - lo_i
        best = (lo.unsqueeze(-2) - hi.unsqueeze(-1)).masked_fill(diag, -math.inf)
        y_lo = torch.sigmoid(-torch.logsumexp(worst, -1))
        y_hi = torch.sigmoid(-torch.logsumexp(best, -1))
        return self._scatter(y_lo), self._scatter(y_hi)


class ScaleNorm(NonlinearMap):
    """``y_i = c_i / sqrt(w * sum_{j in group} c_j^2 + eps)`` over groups of the tail.

    LayerNormalization after centring (``w = 1/D``) and the L2 Normalizer (``w = 1``, ``eps = 0``).
    ``y_i`` increases with ``c_i`` and its size decreases with the other squares ``r_i``, so the
    interval bounds take ``c_i``'s end point and the matching end of ``r_i``; ``|y_i| <= 1/sqrt(w)``.
    """

    kind = "scale_norm"

    def __init__(self, keep: int, groups: Tensor, weight: float, eps: float) -> None:
        n = groups.numel()
        super().__init__(keep, n, n)
        self.groups, self.weight, self.eps = groups.long(), weight, eps

    def _scatter(self, values: Tensor) -> Tensor:
        out = torch.empty(*values.shape[:-2], self.groups.numel(), dtype=values.dtype, device=values.device)
        out[..., self.groups.reshape(-1)] = values.reshape(*values.shape[:-2], -1)
        return out

    def inner_forward(self, x: Tensor) -> Tensor:
        c = x[..., self.groups]
        return self._scatter(c / torch.sqrt(self.weight * (c * c).sum(-1, keepdim=True) + self.eps))

    def _value(self, c: Tensor, rest: Tensor) -> Tensor:
        cap = 1.0 / math.sqrt(self.weight)
        y = c / torch.sqrt(self.weight * (c * c + rest) + self.eps)
        return torch.nan_to_num(y, nan=0.0).clamp(-cap, cap)

    def inner_ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = low[..., self.groups], high[..., self.groups]
        sq_hi = torch.maximum(lo * lo, hi * hi)
        sq_lo = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo * lo, hi * hi))
        r_lo = (sq_lo.sum(-1, keepdim=True) - sq_lo).clamp(min=0)
        r_hi = sq_hi.sum(-1, keepdim=True) - sq_hi
        y_lo = self._value(lo, torch.where(lo >= 0, r_hi, r_lo))
        y_hi = self._value(hi, torch.where(hi > 0, r_lo, r_hi))
        if self.eps == 0:  # c = 0 with all others 0 is 0/0: the model gives NaN; keep the cap there
            y_lo = torch.where((lo <= 0) & (r_lo <= 0), torch.minimum(y_lo, torch.zeros_like(y_lo)), y_lo)
        slack = 1e-12 * (1 + y_lo.abs())
        return self._scatter(y_lo - slack), self._scatter(y_hi + slack)
