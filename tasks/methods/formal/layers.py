"""The verifier's network IR: a chain of layers on flat per-sample vectors, in float64 torch.

Affine layers map forward and transpose a linear bound backward (``A -> A W``); nonlinear layers
give sound linear relaxations ``al*x + bl <= f(x) <= au*x + bu`` on a pre-activation box.
Every tensor has a leading batch axis of sub-domains (B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch.nn.grad import conv2d_input

Tensor = torch.Tensor
RELAX_SLACK = 1e-12  # outward slack on relaxation intercepts: float64 rounding of chords and tangents


class Layer:
    """Base of every IR layer; ``n_in``/``n_out`` count values per sample."""

    nonlinear = False
    n_in: int
    n_out: int

    def forward(self, x: Tensor) -> Tensor:
        """Exact value for a batch of flat inputs."""
        raise NotImplementedError

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """Interval image of the box ``[low, high]``."""
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Move every tensor this layer holds (and those of wrapped layers) to ``device``, in place."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, Layer):
                value.to(device)


class Affine(Layer):
    """``y = W x + b`` in some structured form."""

    def backward(self, a: Tensor) -> Tensor:
        """``A W`` for ``A`` of shape (B, m, n_out)."""
        raise NotImplementedError

    def bias_of(self, a: Tensor) -> Tensor:
        """``A b`` of shape (B, m)."""
        raise NotImplementedError

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        mid, rad = (low + high) / 2, (high - low) / 2
        centre = self.forward(mid)
        spread = self.abs_forward(rad)
        return centre - spread, centre + spread

    def abs_forward(self, x: Tensor) -> Tensor:
        """``|W| x`` (no bias)."""
        raise NotImplementedError

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        """``max(W, 0) x`` or ``min(W, 0) x`` (no bias), for forward linear bounds."""
        raise NotImplementedError


class Dense(Affine):
    """A dense matrix ``W`` (n_out, n_in) and bias ``b`` (n_out,)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        self.weight, self.bias = weight.double(), bias.double()
        self.n_out, self.n_in = self.weight.shape
        self._abs = self.weight.abs()

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + self.bias

    def abs_forward(self, x: Tensor) -> Tensor:
        return x @ self._abs.T

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        return x @ (self.weight.clamp(min=0) if positive else self.weight.clamp(max=0)).T

    def backward(self, a: Tensor) -> Tensor:
        return a @ self.weight

    def bias_of(self, a: Tensor) -> Tensor:
        return a @ self.bias


class Diag(Affine):
    """Elementwise ``y = s * x + t`` (folded BatchNormalization, Mul/Add/Sub/Div by constants)."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        self.scale, self.shift = scale.double().reshape(-1), shift.double().reshape(-1)
        self.n_in = self.n_out = self.scale.numel()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift

    def abs_forward(self, x: Tensor) -> Tensor:
        return x * self.scale.abs()

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        return x * (self.scale.clamp(min=0) if positive else self.scale.clamp(max=0))

    def backward(self, a: Tensor) -> Tensor:
        return a * self.scale

    def bias_of(self, a: Tensor) -> Tensor:
        return a @ self.shift


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes and hyper-parameters of a 2-D convolution (symmetric padding)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


class Conv(Affine):
    """A 2-D convolution on flat (C*H*W) vectors; backward uses the transposed convolution."""

    def __init__(self, weight: Tensor, bias: Tensor | None, geo: ConvGeometry) -> None:
        self.weight, self.geo = weight.double(), geo
        c_out = geo.out_shape[0]
        b = torch.zeros(c_out, dtype=torch.float64) if bias is None else bias.double()
        self.bias_map = b.reshape(-1, 1, 1).expand(*geo.out_shape).reshape(-1).contiguous()
        self._abs = self.weight.abs()
        self.n_in, self.n_out = math.prod(geo.in_shape), math.prod(geo.out_shape)

    def _conv(self, x: Tensor, weight: Tensor) -> Tensor:
        g = self.geo
        out = F.conv2d(x.reshape(-1, *g.in_shape), weight, None, g.stride, g.padding, g.dilation, g.groups)
        return out.reshape(*x.shape[:-1], self.n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.weight) + self.bias_map

    def abs_forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self._abs)

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        return self._conv(x, self.weight.clamp(min=0) if positive else self.weight.clamp(max=0))

    def backward(self, a: Tensor) -> Tensor:
        g = self.geo
        flat = a.reshape(-1, *g.out_shape)
        size = [flat.shape[0], *g.in_shape]
        out = conv2d_input(size, self.weight, flat, g.stride, g.padding, g.dilation, g.groups)
        return out.reshape(*a.shape[:-1], self.n_in)

    def bias_of(self, a: Tensor) -> Tensor:
        return a @ self.bias_map


class Select(Affine):
    """``y_i = sum_t w[i, t] * x[idx[i, t]] + bias_i`` with ``idx`` -1 for unused terms.

    Moves, copies, adds and concatenates the slots of a branching graph's state (see ``ops``).
    """

    def __init__(self, idx: Tensor, weight: Tensor, bias: Tensor, n_in: int) -> None:
        self.idx, self.n_in, self.n_out = idx.long(), n_in, idx.shape[0]
        valid = self.idx >= 0
        self.safe = self.idx.clamp(min=0)
        self.weight = torch.where(valid, weight.double(), torch.zeros_like(weight, dtype=torch.float64))
        self.bias = bias.double()

    def _apply(self, x: Tensor, weight: Tensor) -> Tensor:
        return (x[..., self.safe] * weight).sum(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self._apply(x, self.weight) + self.bias

    def abs_forward(self, x: Tensor) -> Tensor:
        return self._apply(x, self.weight.abs())

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        return self._apply(x, self.weight.clamp(min=0) if positive else self.weight.clamp(max=0))

    def backward(self, a: Tensor) -> Tensor:
        out = torch.zeros(*a.shape[:-1], self.n_in, dtype=a.dtype)
        contrib = (a.unsqueeze(-1) * self.weight).reshape(*a.shape[:-1], -1)
        out.index_add_(a.dim() - 1, self.safe.reshape(-1), contrib)
        return out

    def bias_of(self, a: Tensor) -> Tensor:
        return a @ self.bias


class Embedded(Affine):
    """An affine layer on the last ``inner.n_in`` values; the first ``keep`` values pass unchanged."""

    def __init__(self, inner: Affine, keep: int) -> None:
        self.inner, self.keep = inner, keep
        self.n_in, self.n_out = keep + inner.n_in, keep + inner.n_out

    def _cat(self, head: Tensor, x: Tensor, fn: object) -> Tensor:
        return torch.cat([head, fn(x[..., self.keep :])], -1)  # type: ignore[operator]

    def forward(self, x: Tensor) -> Tensor:
        return self._cat(x[..., : self.keep], x, self.inner.forward)

    def abs_forward(self, x: Tensor) -> Tensor:
        return self._cat(x[..., : self.keep], x, self.inner.abs_forward)

    def signed_forward(self, x: Tensor, positive: bool) -> Tensor:
        head = x[..., : self.keep] if positive else torch.zeros_like(x[..., : self.keep])
        return torch.cat([head, self.inner.signed_forward(x[..., self.keep :], positive)], -1)

    def backward(self, a: Tensor) -> Tensor:
        return self._cat(a[..., : self.keep], a, self.inner.backward)

    def bias_of(self, a: Tensor) -> Tensor:
        return self.inner.bias_of(a[..., self.keep :])


class Activation(Layer):
    """An elementwise activation with a sound linear relaxation on a pre-activation box.

    ``keep`` leading values pass through unchanged (identity): they are never split nor refined.
    """

    nonlinear = True
    kind = ""
    keep = 0

    def __init__(self, n: int) -> None:
        self.n_in = self.n_out = n

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(al, bl, au, bu)`` with ``al*x+bl <= f(x) <= au*x+bu`` on ``[low, high]``.

        ``alpha`` (same shape as the slopes, broadcastable) picks the lower slope where the
        relaxation has a free parameter; it must lie in [0, 1].
        """
        raise NotImplementedError

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(low), self.forward(high)  # monotone activations only


class Relu(Activation):
    """ReLU: triangle relaxation with a free lower slope in [0, 1] (alpha-CROWN)."""

    kind = "relu"
    has_alpha = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def default_alpha(self, low: Tensor, high: Tensor) -> Tensor:
        """CROWN's adaptive lower slope: 1 where ``u > -l`` else 0."""
        return (high > -low).to(low.dtype)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        active, unstable = low >= 0, (low < 0) & (high > 0)
        width = torch.where(unstable, high - low, torch.ones_like(low))
        up_slope = torch.where(unstable, high / width, active.to(low.dtype))
        up_bias = torch.where(
            unstable, -low * high / width + RELAX_SLACK * (high - low), torch.zeros_like(low)
        )
        lo = self.default_alpha(low, high) if alpha is None else alpha
        lo_slope = torch.where(unstable, lo, active.to(low.dtype))
        return lo_slope, torch.zeros_like(lo_slope), up_slope, up_bias


class LeakyRelu(Activation):
    """LeakyReLU with slope ``a`` in [0, 1): chord above, free lower slope in [a, 1]."""

    kind = "leaky_relu"
    has_alpha = True

    def __init__(self, n: int, slope: float) -> None:
        super().__init__(n)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"LeakyRelu alpha={slope} is not supported; expected 0 <= alpha < 1")
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.slope)

    def default_alpha(self, low: Tensor, high: Tensor) -> Tensor:
        return (high > -low).to(low.dtype)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a = self.slope
        active, unstable = low >= 0, (low < 0) & (high > 0)
        stable_slope = torch.where(active, torch.ones_like(low), torch.full_like(low, a))
        width = torch.where(unstable, high - low, torch.ones_like(low))
        chord = (high - a * low) / width
        up_slope = torch.where(unstable, chord, stable_slope)
        up_bias = torch.where(
            unstable, high - chord * high + RELAX_SLACK * (high - low), torch.zeros_like(low)
        )
        lo = self.default_alpha(low, high) if alpha is None else alpha
        lo_slope = torch.where(unstable, a + (1 - a) * lo, stable_slope)
        return lo_slope, torch.zeros_like(lo_slope), up_slope, up_bias


class PRelu(Activation):
    """``x`` for ``x >= 0``, ``a_i x`` below, with any slope ``a_i`` per neuron (PRelu's learned slopes).

    Where ``a_i <= 1`` the function is convex: the chord is above and any line through 0 with slope in
    ``[a_i, 1]`` is below (the free lower slope, as for LeakyReLU). Where ``a_i > 1`` it is concave:
    the chord is below and the line through 0 with slope ``a_i`` is above. Negative slopes make it
    non-monotone, so the interval image takes 0 into account.
    """

    kind = "prelu"
    has_alpha = True

    def __init__(self, slope: Tensor) -> None:
        super().__init__(slope.numel())
        self.slope = slope.double().reshape(-1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.slope.to(x.dtype) * x)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        f_lo, f_hi = self.forward(low), self.forward(high)
        zero = torch.where((low < 0) & (high > 0), torch.zeros_like(low), f_lo)
        return torch.minimum(torch.minimum(f_lo, f_hi), zero), torch.maximum(torch.maximum(f_lo, f_hi), zero)

    def default_alpha(self, low: Tensor, high: Tensor) -> Tensor:
        return (high > -low).to(low.dtype)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a = self.slope.to(low.dtype).expand_as(low)
        active, unstable = low >= 0, (low < 0) & (high > 0)
        stable_slope = torch.where(active, torch.ones_like(low), a)
        width = torch.where(unstable, high - low, torch.ones_like(low))
        chord = (high - a * low) / width
        chord_bias = high - chord * high
        slack = RELAX_SLACK * (high - low)
        lo = self.default_alpha(low, high) if alpha is None else alpha
        free = a + (1 - a) * lo  # a line through 0 between the two pieces
        convex = a <= 1
        lo_slope = torch.where(unstable, torch.where(convex, free, chord), stable_slope)
        lo_bias = torch.where(unstable & ~convex, chord_bias - slack, torch.zeros_like(low))
        up_slope = torch.where(unstable, torch.where(convex, chord, a), stable_slope)
        up_bias = torch.where(unstable & convex, chord_bias + slack, torch.zeros_like(low))
        return lo_slope, lo_bias, up_slope, up_bias


class EmbeddedActivation(Activation):
    """``inner`` on the last values, identity on the first ``keep`` (a branch of a graph's state)."""

    def __init__(self, inner: Activation, keep: int) -> None:
        super().__init__(keep + inner.n_in)
        self.inner, self.keep, self.kind = inner, keep, inner.kind
        self.has_alpha = getattr(inner, "has_alpha", False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[..., : self.keep], self.inner.forward(x[..., self.keep :])], -1)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = self.inner.ibp(low[..., self.keep :], high[..., self.keep :])
        return torch.cat([low[..., : self.keep], lo], -1), torch.cat([high[..., : self.keep], hi], -1)

    def default_alpha(self, low: Tensor, high: Tensor) -> Tensor:
        inner = self.inner.default_alpha(low[..., self.keep :], high[..., self.keep :])  # type: ignore[attr-defined]
        return torch.cat([torch.ones_like(low[..., : self.keep]), inner], -1)

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        k = self.keep
        parts = self.inner.relax(low[..., k:], high[..., k:], None if alpha is None else alpha[..., k:])
        one = torch.ones_like(low[..., :k])
        heads = (one, torch.zeros_like(one), one, torch.zeros_like(one))
        out = []
        for head, part in zip(heads, parts, strict=True):
            shape = torch.broadcast_shapes(head.shape[:-1], part.shape[:-1])
            out.append(torch.cat([head.expand(*shape, -1), part.expand(*shape, -1)], -1))
        return out[0], out[1], out[2], out[3]


def splittable(layer: Layer, low: Tensor, high: Tensor) -> Tensor:
    """Unstable neurons (``low < 0 < high``) of a layer, passthrough values excluded."""
    mask = (low < 0) & (high > 0)
    keep = getattr(layer, "keep", 0)
    if keep:
        mask[..., :keep] = False
    return mask


def chord_slope(low: Tensor, high: Tensor, f_lo: Tensor, f_hi: Tensor, d_low: Tensor) -> Tensor:
    """Slope of the chord from ``(low, f_lo)`` to ``(high, f_hi)``; the derivative ``d_low`` where the
    interval is a point (width at most 1e-12), so no division by a vanishing width."""
    width = high - low
    flat = width <= 1e-12
    return torch.where(flat, d_low, (f_hi - f_lo) / torch.where(flat, torch.ones_like(width), width))


class SShaped(Activation):
    """Sigmoid/Tanh: chord and mid-point tangent on one-signed boxes, a min-slope band otherwise."""

    has_alpha = False

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def relax(
        self, low: Tensor, high: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f_lo, f_hi = self.forward(low), self.forward(high)
        chord = chord_slope(low, high, f_lo, f_hi, self.derivative(low))
        mid = (low + high) / 2
        tan = self.derivative(mid)
        # mixed sign: f' is unimodal with its maximum at 0, so its minimum on [l, u] is at an endpoint
        k = torch.minimum(self.derivative(low), self.derivative(high))
        convex, concave = high <= 0, low >= 0
        al = torch.where(convex, tan, torch.where(concave, chord, k))
        bl = torch.where(
            convex, self.forward(mid) - tan * mid, torch.where(concave, f_lo - chord * low, f_lo - k * low)
        )
        au = torch.where(convex, chord, torch.where(concave, tan, k))
        bu = torch.where(
            convex, f_lo - chord * low, torch.where(concave, self.forward(mid) - tan * mid, f_hi - k * high)
        )
        slack = RELAX_SLACK * (1 + low.abs() + high.abs())
        return al, bl - slack, au, bu + slack


class Sigmoid(SShaped):
    kind = "sigmoid"

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)


class Tanh(SShaped):
    kind = "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2


class MaxPool(Layer):
    """Max over windows of the flat input; ``windows`` (n_out, k) holds input indices, -1 for padding.

    Relaxation: ``x_j* <= y <= max_j u_j`` with ``j*`` the window entry of largest lower bound,
    exact (``y = x_j*``) when that entry dominates the window.
    """

    nonlinear = True
    kind = "maxpool"
    has_alpha = False

    def __init__(self, windows: Tensor, n_in: int) -> None:
        self.windows = windows.long()
        self.valid = self.windows >= 0
        self.safe = self.windows.clamp(min=0)
        self.n_in, self.n_out = n_in, self.windows.shape[0]

    def _gather(self, x: Tensor, fill: float) -> Tensor:
        vals = x[..., self.safe]
        return torch.where(self.valid, vals, torch.full_like(vals, fill))

    def forward(self, x: Tensor) -> Tensor:
        return self._gather(x, -math.inf).amax(-1)

    def ibp(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(low), self.forward(high)

    def backward_bound(self, a: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """Lower-bound relaxation: new ``A`` (B, m, n_in) and the bias (B, m)."""
        lw, uw = self._gather(low, -math.inf), self._gather(high, -math.inf)
        best_low, arg = lw.max(-1)
        idx = torch.gather(self.safe.expand(*lw.shape), -1, arg.unsqueeze(-1)).squeeze(-1)  # (B, n_out)
        others = uw.scatter(-1, arg.unsqueeze(-1), -math.inf).amax(-1)
        exact = (best_low >= others).to(a.dtype).unsqueeze(1)
        top = uw.amax(-1).unsqueeze(1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        coeff = pos + neg * exact
        new_a = torch.zeros(*a.shape[:-1], self.n_in, dtype=a.dtype)
        new_a.scatter_add_(-1, idx.unsqueeze(1).expand_as(coeff), coeff)
        bias = (neg * (1 - exact) * top).sum(-1)
        return new_a, bias


class Network:
    """A chain of IR layers; ``output_softmax`` records a final Softmax that was dropped."""

    def __init__(self, layers: list[Layer], n_inputs: int, output_softmax: bool = False) -> None:
        self.layers, self.n_inputs, self.output_softmax = layers, n_inputs, output_softmax
        self.n_outputs = layers[-1].n_out if layers else n_inputs

    def to(self, device: torch.device) -> Network:
        """Move every layer's tensors to ``device`` (in place); returns the network."""
        for layer in self.layers:
            layer.to(device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Exact float64 output (Softmax dropped) for a batch of flat inputs."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def relu_layers(self) -> list[int]:
        """Indices of the layers whose neurons can be split (ReLU-like activations)."""
        return [
            k for k, layer in enumerate(self.layers) if getattr(layer, "kind", "") in ("relu", "leaky_relu")
        ]
