"""Sound relaxations of smooth and piecewise elementwise activations (Erf, GELU, HardSwish, Exp, ...).

Convex or concave on the box: tangent at the mid-point on one side, chord on the other (CROWN,
Zhang et al. 2018). Otherwise: the chord slope ``s`` on both sides, with intercepts from the
extrema of ``g(x) = f(x) - s x`` sampled on a grid and widened by ``Lip(g) * h / 2`` (``h`` the grid
step, ``Lip(g) <= max(|f'_min - s|, |f'_max - s|)`` from the global derivative range), which bounds
``g`` between grid points. Interval bounds are exact: the end points and the interior local minima.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from nnassay.tasks.methods.formal.layers import RELAX_SLACK, Activation, SShaped, chord_slope

Tensor = torch.Tensor
GRID = 17  # sample points per neuron for non-convex, non-concave boxes
MIN_SLACK = 1e-9  # below the tabulated global minima (their abscissae are known to about 1e-6)
SQRT2 = math.sqrt(2.0)


class Smooth(Activation):
    """An elementwise activation given by its value, derivative range and shape facts.

    Subclasses set ``slope_range`` (global bounds on ``f'``), ``minima`` (interior local minima
    as ``(x, f(x))``, for exact interval bounds) and override ``convex_on``/``concave_on``.
    """

    has_alpha = False
    slope_range: tuple[float, float] = (0.0, 1.0)
    minima: tuple[tuple[float, float], ...] = ()
    decreasing = False

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        return torch.zeros_like(low, dtype=torch.bool)

    def concave_on(self, low: Tensor, high: Tensor) -> Tensor:
        return torch.zeros_like(low, dtype=torch.bool)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        f_lo, f_hi = self.forward(low), self.forward(high)
        if self.decreasing:
            return f_hi, f_lo
        lo, hi = torch.minimum(f_lo, f_hi), torch.maximum(f_lo, f_hi)
        for x0, y0 in self.minima:
            inside = (low <= x0 + 1e-4) & (high >= x0 - 1e-4)
            lo = torch.where(inside, torch.minimum(lo, torch.full_like(lo, y0 - MIN_SLACK)), lo)
        if not self.minima and not self.monotone:
            raise NotImplementedError(f"{type(self).__name__} needs minima or monotone")
        return lo, hi

    monotone = True

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f_lo, f_hi = self.forward(low), self.forward(high)
        chord = chord_slope(low, high, f_lo, f_hi, self.derivative(low))
        mid = (low + high) / 2
        tan, f_mid = self.derivative(mid), self.forward(mid)
        g_lo, g_hi = self._grid_extrema(low, high, chord)
        convex, concave = self.convex_on(low, high), self.concave_on(low, high)
        chord_b = f_lo - chord * low
        tan_b = f_mid - tan * mid
        al = torch.where(convex, tan, chord)
        bl = torch.where(convex, tan_b, torch.where(concave, chord_b, g_lo))
        au = torch.where(concave, tan, chord)
        bu = torch.where(concave, tan_b, torch.where(convex, chord_b, g_hi))
        slack = RELAX_SLACK * (1 + low.abs() + high.abs() + f_lo.abs() + f_hi.abs())
        return al, bl - slack, au, bu + slack

    def _grid_extrema(self, low: Tensor, high: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Sound ``min``/``max`` of ``f(x) - s x`` on ``[low, high]`` (grid values widened by Lip * h/2)."""
        t = torch.linspace(0.0, 1.0, GRID, dtype=low.dtype, device=low.device)
        xs = low.unsqueeze(-1) + (high - low).unsqueeze(-1) * t
        g = self.forward(xs) - s.unsqueeze(-1) * xs
        d_min, d_max = self.slope_range
        lip = torch.maximum((d_min - s).abs(), (d_max - s).abs())
        pad = lip * (high - low) / (2 * (GRID - 1))
        return g.amin(-1) - pad, g.amax(-1) + pad


class Erf(SShaped):
    """erf: S-shaped (convex below 0, concave above), derivative unimodal at 0."""

    kind = "erf"

    def forward(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 2.0 / math.sqrt(math.pi) * torch.exp(-x * x)


class Gelu(Smooth):
    """GELU ``x * Phi(x)`` (or its tanh approximation): convex on [-sqrt 2, sqrt 2], one minimum."""

    kind = "gelu"
    slope_range = (-0.13, 1.13)
    monotone = False

    def __init__(self, n: int, approximate: str = "none") -> None:
        super().__init__(n)
        self.approximate = approximate
        self.minima = (
            ((-0.75246, -0.17004075057081885),)
            if approximate == "tanh"
            else ((-0.75179, -0.1699712074794021),)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def derivative(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            xs = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.gelu(xs, approximate=self.approximate).sum(), xs)
        return grad

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        limit = 1.4 if self.approximate == "tanh" else SQRT2  # tanh form: f'' > 0 on about [-1.5, 1.5]
        return (low >= -limit) & (high <= limit)


class HardSwish(Smooth):
    """``x * relu6(x + 3) / 6``: 0 below -3, the convex parabola on [-3, 3], x above 3."""

    kind = "hardswish"
    slope_range = (-0.5, 1.5)
    minima = ((-1.5, -0.375),)
    monotone = False

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(
            x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), (2 * x + 3) / 6)
        )

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        return ((low >= -3) & (high <= 3)) | (high <= -3) | (low >= 3)

    def concave_on(self, low: Tensor, high: Tensor) -> Tensor:
        return (high <= -3) | (low >= 3)


class Convex(Smooth):
    """A convex activation (Exp, Softplus, ELU with alpha <= 1, Square, Reciprocal on x > 0)."""

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        return torch.ones_like(low, dtype=torch.bool)


class Exp(Convex):
    kind = "exp"
    slope_range = (0.0, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.exp(x)


class Softplus(Convex):
    kind = "softplus"
    slope_range = (0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


class Square(Convex):
    """``x ** 2`` (Pow with exponent 2, the variance in a decomposed LayerNorm)."""

    kind = "square"
    slope_range = (-math.inf, math.inf)
    minima = ((0.0, 0.0),)
    monotone = False

    def forward(self, x: Tensor) -> Tensor:
        return x * x

    def derivative(self, x: Tensor) -> Tensor:
        return 2 * x

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        hi = torch.maximum(low * low, high * high)
        lo = torch.where(
            (low <= 0) & (high >= 0), torch.zeros_like(low), torch.minimum(low * low, high * high)
        )
        return lo, hi


class Elu(Smooth):
    """ELU/SELU ``scale * (x if x > 0 else alpha (e^x - 1))``: convex pieces, a kink at 0 that is convex
    when ``alpha <= 1`` and concave otherwise (SELU)."""

    kind = "elu"

    def __init__(self, n: int, alpha: float, scale: float = 1.0) -> None:
        super().__init__(n)
        if alpha < 0 or scale <= 0:
            raise ValueError(
                f"Elu alpha={alpha}, scale={scale} is not supported; expected alpha >= 0 < scale"
            )
        self.alpha, self.scale = alpha, scale
        self.slope_range = (0.0, scale * max(1.0, alpha))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * torch.where(x > 0, x, self.alpha * torch.expm1(torch.clamp(x, max=0)))

    def derivative(self, x: Tensor) -> Tensor:
        return self.scale * torch.where(
            x > 0, torch.ones_like(x), self.alpha * torch.exp(torch.clamp(x, max=0))
        )

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        whole = torch.ones_like(low, dtype=torch.bool) if self.alpha <= 1 else (high <= 0) | (low >= 0)
        return whole

    def concave_on(self, low: Tensor, high: Tensor) -> Tensor:
        return low >= 0


class Concave(Smooth):
    """A concave increasing activation on its domain (Log, Sqrt); the box is clipped to the domain."""

    floor = 0.0  # inputs below are outside the domain; the model's own value there is NaN anyway

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        return torch.zeros_like(low, dtype=torch.bool)

    def concave_on(self, low: Tensor, high: Tensor) -> Tensor:
        return torch.ones_like(low, dtype=torch.bool)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lo = torch.clamp(low, min=self.floor)
        return super().relax(lo, torch.maximum(high, lo), alpha)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        lo = torch.clamp(low, min=self.floor)
        return self.forward(lo), self.forward(torch.maximum(high, lo))


class Sqrt(Concave):
    kind = "sqrt"
    slope_range = (0.0, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 0.5 / torch.sqrt(x)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        al, bl, au, bu = super().relax(low, high, alpha)
        # the tangent at a mid-point near 0 is steep but finite; at exactly 0 width it is inf: use the box
        bad = ~torch.isfinite(au) | ~torch.isfinite(bu)
        top = self.forward(torch.clamp(high, min=0))
        return al, bl, torch.where(bad, torch.zeros_like(au), au), torch.where(bad, top, bu)


class Log(Concave):
    kind = "log"
    slope_range = (0.0, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / x


class Reciprocal(Smooth):
    """``1 / x``, decreasing and convex on x > 0, concave on x < 0; unbounded across 0."""

    kind = "reciprocal"
    slope_range = (-math.inf, 0.0)
    decreasing = True

    def forward(self, x: Tensor) -> Tensor:
        return 1.0 / x

    def derivative(self, x: Tensor) -> Tensor:
        return -1.0 / (x * x)

    def convex_on(self, low: Tensor, high: Tensor) -> Tensor:
        return low > 0

    def concave_on(self, low: Tensor, high: Tensor) -> Tensor:
        return high < 0

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        across = (low <= 0) & (high >= 0)
        inf = torch.full_like(low, math.inf)
        return torch.where(across, -inf, 1.0 / high), torch.where(across, inf, 1.0 / low)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        al, bl, au, bu = super().relax(low, high, alpha)
        across = (low <= 0) & (high >= 0)
        zero, inf = torch.zeros_like(al), torch.full_like(al, math.inf)
        return (
            torch.where(across, zero, al),
            torch.where(across, -inf, bl),
            torch.where(across, zero, au),
            torch.where(across, inf, bu),
        )
