"""Sound bounds on ``C y`` over input boxes: IBP, CROWN/DeepPoly and alpha-CROWN (batched, float64).

Soundness: all arithmetic is float64; intermediate bounds are widened by ``INTER_SLACK`` and the
final lower bounds by ``final_margin`` (absolute ``FINAL_ABS`` plus ``FINAL_REL`` times the size of
the bound and of ``|C| |y|`` at the box centre). The margin covers float64 rounding and the gap
between real arithmetic and the float32 evaluation of the model on ONNX Runtime (about 1e-7
relative per op, accumulated over a few thousand terms), so a positive bound is never an artefact of
rounding. Beta terms (``betas``) enforce ReLU split constraints (beta-CROWN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nnassay.tasks.methods.formal.layers import Activation, Affine, Diag, Layer, MaxPool, Network, splittable
from nnassay.tasks.methods.formal.relax_attention import NonlinearMap

Tensor = torch.Tensor
INTER_SLACK = 1e-10  # relative widening of every intermediate bound (float64 rounding)
FINAL_ABS = 1e-6  # absolute margin subtracted from every final lower bound
FINAL_REL = 1e-5  # relative margin (float32 model evaluation vs real arithmetic)

# Rows bounded by CROWN are padded to the sub-domain that needs most; below this share of real
# (not padding) rows they are bounded one (sub-domain, neuron) pair per batch entry instead.
FLAT_ROWS_BELOW = 0.5
ALL_ROWS_UP_TO = 256  # layers this narrow get CROWN bounds on every neuron (tighter IBP/CROWN intersections)

Bounds = tuple[Tensor, Tensor]


@dataclass
class Relaxation:
    """Per-layer state of one bound computation: pre-activation bounds, slopes, split multipliers.

    ``pre[k]`` bounds the input of nonlinear layer ``k`` (B, n_k). ``alphas[k]`` are lower slopes
    (B, m, n_k) for the final objective; ``splits[k]`` holds +1 (active), -1 (inactive), 0 per
    neuron (B, n_k) and ``betas[k]`` (B, m, n_k) their multipliers.
    """

    pre: dict[int, Bounds] = field(default_factory=dict)
    alphas: dict[int, Tensor] = field(default_factory=dict)
    splits: dict[int, Tensor] = field(default_factory=dict)
    betas: dict[int, Tensor] = field(default_factory=dict)


def widen(low: Tensor, high: Tensor, rel: float = INTER_SLACK) -> Bounds:
    """Outward rounding slack for a float64 interval."""
    return low - rel * (1 + low.abs()), high + rel * (1 + high.abs())


def ibp(net: Network, low: Tensor, high: Tensor) -> Bounds:
    """Interval bound propagation of a batch of boxes (B, n) through the whole network."""
    for layer in net.layers:
        low, high = widen(*layer.ibp(low, high))
    return low, high


def concretize(a: Tensor, bias: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Minimum of ``A x + bias`` over the boxes: (B, m)."""
    mid, rad = (low + high) / 2, (high - low) / 2
    return torch.einsum("bmn,bn->bm", a, mid) - torch.einsum("bmn,bn->bm", a.abs(), rad) + bias


def backward(
    net: Network,
    upto: int,
    a: Tensor,
    rel: Relaxation,
    low: Tensor,
    high: Tensor,
    record: dict[int, Tensor] | None = None,
    alphas: dict[int, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Lower bound of ``A z`` (B, m) where ``z`` is the output of ``layers[upto - 1]``.

    Returns the bound and the linear coefficients on the input (B, m, n_0). ``record[k]`` receives
    the coefficients on the output of each nonlinear layer ``k`` (for branching scores).
    """
    alphas = rel.alphas if alphas is None else alphas
    bias = torch.zeros(a.shape[:2], dtype=a.dtype)
    for k in reversed(range(upto)):
        layer = net.layers[k]
        if isinstance(layer, Affine):
            bias = bias + layer.bias_of(a)
            a = layer.backward(a)
            continue
        if record is not None:
            record[k] = a
        l_k, u_k = rel.pre[k]
        if isinstance(layer, MaxPool | NonlinearMap):
            a, extra = layer.backward_bound(a, l_k, u_k)
            bias = bias + extra
            continue
        assert isinstance(layer, Activation)
        al, bl, au, bu = layer.relax(l_k.unsqueeze(1), u_k.unsqueeze(1), alphas.get(k))
        neg = a.clamp(max=0)
        bias = bias + _rowdot(neg, bu - bl) + _rowdot(a, bl)
        a = torch.addcmul(a * al, neg, au - al)
        if k in rel.betas:
            a = a - rel.betas[k] * rel.splits[k].unsqueeze(1)  # beta * g with g = -s*z <= 0 on the domain
    return concretize(a, bias, low, high), a


def _rowdot(a: Tensor, v: Tensor) -> Tensor:
    """``sum_n a[b, m, n] * v[b, m or 1, n]`` without materialising a broadcast copy of ``v``."""
    if v.shape[1] == 1:
        return torch.bmm(a, v.expand(a.shape[0], 1, -1).transpose(1, 2)).squeeze(-1)
    return (a * v).sum(-1)


def _needs_rows(layer: Layer, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """Per sub-domain, the neurons whose bounds matter for the relaxation of ``layer``.

    Returns indices (B, R), unstable ones first, and a mask (B, R) of the real (not padding) entries.
    """
    if getattr(layer, "kind", "") in ("relu", "leaky_relu") and low.shape[1] > ALL_ROWS_UP_TO:
        return _rows_of(splittable(layer, low, high))
    return _rows_of(_all_rows(layer, low))


def _unstable_rows(layer: Layer, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """Like ``_needs_rows`` but only the unstable neurons of ReLU-like layers, whatever the width."""
    if getattr(layer, "kind", "") in ("relu", "leaky_relu"):
        return _rows_of(splittable(layer, low, high))
    return _rows_of(_all_rows(layer, low))


def _all_rows(layer: Layer, low: Tensor) -> Tensor:
    """Every row of the layer but the first ``layer.keep`` ones."""
    mask = torch.ones_like(low, dtype=torch.bool)
    mask[:, : getattr(layer, "keep", 0)] = False
    return mask


def _rows_of(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (B, R) of the masked rows first, padded to the widest batch entry, and the real-entry mask."""
    counts = mask.sum(1)
    width = int(counts.max()) if mask.numel() else 0
    idx = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
    return idx, torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)


def _only_affine_before(net: Network, k: int) -> bool:
    """True when IBP is exact for the input of layer ``k``: at most one non-diagonal affine layer before it."""
    return sum(
        isinstance(layer, Affine) and not isinstance(layer, Diag) for layer in net.layers[:k]
    ) <= 1 and not any(layer.nonlinear for layer in net.layers[:k])


def intermediate_bounds(
    net: Network,
    low: Tensor,
    high: Tensor,
    rel: Relaxation,
    *,
    method: str = "crown",
    inter_alphas: dict[int, dict[int, Tensor]] | None = None,
    rows_cache: dict[int, tuple[Tensor, Tensor]] | None = None,
) -> Bounds:
    """Fill ``rel.pre`` for every nonlinear layer (keeping tighter bounds already there).

    ``method`` is "ibp", "crown" or "inherit" (for boxes inside one already bounded: ``rel.pre``
    holds the outer box's bounds, valid here too; neurons they leave unstable get CROWN bounds, the
    others keep them, instead of CROWN on every neuron of narrow layers). With ``inter_alphas`` (target layer -> relu layer -> slopes
    (B, rows, n)), CROWN uses those slopes and creates missing ones (alpha-CROWN on intermediate
    bounds). Returns the IBP-style bounds of the network output.
    """
    cur_low, cur_high = low, high
    for k, layer in enumerate(net.layers):
        if layer.nonlinear:
            cur_low, cur_high = _refine(
                net, k, layer, cur_low, cur_high, low, high, rel, method, inter_alphas, rows_cache
            )
        cur_low, cur_high = widen(*layer.ibp(cur_low, cur_high))
    return cur_low, cur_high


def _refine(
    net: Network,
    k: int,
    layer: Layer,
    cur_low: Tensor,
    cur_high: Tensor,
    low: Tensor,
    high: Tensor,
    rel: Relaxation,
    method: str,
    inter_alphas: dict[int, dict[int, Tensor]] | None,
    rows_cache: dict[int, tuple[Tensor, Tensor]] | None,
) -> Bounds:
    if method == "inherit" and k in rel.pre and not _only_affine_before(net, k):
        # bounds inherited from a containing box: stable neurons keep them, unstable ones get CROWN
        cur_low, cur_high = torch.maximum(cur_low, rel.pre[k][0]), torch.minimum(cur_high, rel.pre[k][1])
        rows = _unstable_rows(layer, cur_low, torch.maximum(cur_high, cur_low))
        if rows[0].shape[1]:
            cur_low, cur_high = _crown_rows(net, k, rows, cur_low, cur_high, low, high, rel, inter_alphas)
    elif method in ("crown", "inherit") and not _only_affine_before(net, k):
        cached = rows_cache.get(k) if rows_cache is not None else None
        rows = cached if cached is not None else _needs_rows(layer, cur_low, cur_high)
        if cached is None and rows_cache is not None:
            rows_cache[k] = rows
        if rows[0].shape[1]:
            cur_low, cur_high = _crown_rows(net, k, rows, cur_low, cur_high, low, high, rel, inter_alphas)
    if k in rel.pre:  # bounds known before (a parent domain, an earlier pass) are valid here too
        cur_low, cur_high = torch.maximum(cur_low, rel.pre[k][0]), torch.minimum(cur_high, rel.pre[k][1])
    cur_low, cur_high = widen(cur_low, torch.maximum(cur_high, cur_low))
    rel.pre[k] = (cur_low, cur_high)
    return cur_low, cur_high


def _crown_rows(
    net: Network,
    k: int,
    rows: tuple[Tensor, Tensor],
    cur_low: Tensor,
    cur_high: Tensor,
    low: Tensor,
    high: Tensor,
    rel: Relaxation,
    inter_alphas: dict[int, dict[int, Tensor]] | None,
) -> Bounds:
    idx, valid = rows
    if inter_alphas is None and valid.numel() and float(valid.double().mean()) < FLAT_ROWS_BELOW:
        return _crown_rows_flat(net, k, rows, cur_low, cur_high, low, high, rel)
    batch, r, n = low.shape[0], idx.shape[1], net.layers[k].n_in
    c = torch.zeros(batch, 2 * r, n, dtype=low.dtype)
    c.scatter_(
        2,
        torch.cat([idx, idx], 1).unsqueeze(-1),
        torch.cat([torch.ones(batch, r, 1, dtype=low.dtype), -torch.ones(batch, r, 1, dtype=low.dtype)], 1),
    )
    alphas = None
    if inter_alphas is not None:
        alphas = inter_alphas.setdefault(k, {})
        for j in range(k):
            if j in rel.pre and getattr(net.layers[j], "has_alpha", False) and j not in alphas:
                init = net.layers[j].default_alpha(*rel.pre[j])  # type: ignore[attr-defined]
                alphas[j] = init.unsqueeze(1).expand(batch, 2 * r, -1).clone().requires_grad_(True)
    saved = {j: rel.betas.pop(j) for j in list(rel.betas)}  # split betas belong to the final objective
    try:
        lb, _ = backward(net, k, c, rel, low, high, alphas=alphas if alphas is not None else {})
    finally:
        rel.betas.update(saved)
    old_low, old_high = cur_low.gather(1, idx), cur_high.gather(1, idx)
    new_lo = torch.where(valid, torch.maximum(old_low, lb[:, :r]), old_low)
    new_hi = torch.where(valid, torch.minimum(old_high, -lb[:, r:]), old_high)
    return cur_low.scatter(1, idx, new_lo), cur_high.scatter(1, idx, new_hi)


def _crown_rows_flat(
    net: Network,
    k: int,
    rows: tuple[Tensor, Tensor],
    cur_low: Tensor,
    cur_high: Tensor,
    low: Tensor,
    high: Tensor,
    rel: Relaxation,
) -> Bounds:
    """``_crown_rows`` with one batch entry per (sub-domain, neuron) pair instead of padded rows: the
    work follows the number of rows each sub-domain needs, not the batch's largest count."""
    idx, valid = rows
    box, slot = valid.nonzero(as_tuple=True)
    neuron = idx[box, slot]
    count = len(box)
    c = torch.zeros(count, 2, net.layers[k].n_in, dtype=low.dtype)
    c[torch.arange(count), 0, neuron] = 1.0
    c[torch.arange(count), 1, neuron] = -1.0
    sub = Relaxation(pre={j: (v[0][box], v[1][box]) for j, v in rel.pre.items() if j < k})
    lb, _ = backward(net, k, c, sub, low[box], high[box], alphas={})
    new_low, new_high = cur_low.clone(), cur_high.clone()
    new_low[box, neuron] = torch.maximum(cur_low[box, neuron], lb[:, 0])
    new_high[box, neuron] = torch.minimum(cur_high[box, neuron], -lb[:, 1])
    return new_low, new_high


def refine_unstable(net: Network, low: Tensor, high: Tensor, rel: Relaxation) -> None:
    """Tighten ``rel.pre`` in place: backward CROWN bounds on the still-unstable neurons, layer by layer.

    Used in ReLU branch and bound after a split: the split neuron's fixed sign (its bound set to 0
    in ``rel.pre``) makes its relaxation exact, which tightens every later layer. Bounds already in
    ``rel.pre`` (inherited from the parent domain) stay where tighter.
    """
    with torch.no_grad():
        for k, layer in enumerate(net.layers):
            if not layer.nonlinear or k not in rel.pre or _only_affine_before(net, k):
                continue
            cur = rel.pre[k]
            rows = (
                _unstable_rows(layer, *cur) if getattr(layer, "kind", "") in ("relu", "leaky_relu") else None
            )
            if rows is None or not rows[0].shape[1]:
                continue
            new = _crown_rows(net, k, rows, cur[0], cur[1], low, high, rel, None)
            rel.pre[k] = widen(new[0], torch.maximum(new[1], new[0]))


def forward_bounds(net: Network, low: Tensor, high: Tensor, rel: Relaxation, refine: bool = False) -> Bounds:
    """Fill ``rel.pre`` by forward linear bounds (symbolic intervals in the inputs), cheap for few inputs.

    Each value carries a lower and an upper linear form in the inputs, (B, n_0 + 1, n) with the
    constant term in the last row; ReLU-like layers use the CROWN relaxation on the concretized box.
    Bounds already in ``rel.pre`` are kept where tighter. With ``refine`` the neurons still unstable
    after the forward pass get backward CROWN bounds too (hybrid: CROWN-tight, far cheaper than
    backward bounds on every neuron). Returns the output box.
    """
    batch, n0 = low.shape
    eye = torch.eye(n0, dtype=low.dtype).unsqueeze(0).expand(batch, -1, -1)
    form_l = torch.cat([eye, torch.zeros(batch, 1, n0, dtype=low.dtype)], 1)
    form_u = form_l
    mid, rad = (low + high) / 2, (high - low) / 2

    def box(lo_form: Tensor, up_form: Tensor) -> Bounds:
        lo = torch.einsum("bdn,bd->bn", lo_form[:, :-1], mid) - torch.einsum(
            "bdn,bd->bn", lo_form[:, :-1].abs(), rad
        )
        up = torch.einsum("bdn,bd->bn", up_form[:, :-1], mid) + torch.einsum(
            "bdn,bd->bn", up_form[:, :-1].abs(), rad
        )
        return widen(lo + lo_form[:, -1], up + up_form[:, -1])

    cur = (low, high)
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Affine):
            bias = layer.forward(torch.zeros(1, layer.n_in, dtype=low.dtype))
            new_l = layer.signed_forward(form_l, True) + layer.signed_forward(form_u, False)
            new_u = layer.signed_forward(form_u, True) + layer.signed_forward(form_l, False)
            new_l[:, -1] += bias[0]
            new_u[:, -1] += bias[0]
            form_l, form_u = new_l, new_u
            lo, up = box(form_l, form_u)
            ib_lo, ib_up = widen(*layer.ibp(*cur))
            cur = (torch.maximum(lo, ib_lo), torch.minimum(up, ib_up))
            continue
        if k in rel.pre:
            cur = (torch.maximum(cur[0], rel.pre[k][0]), torch.minimum(cur[1], rel.pre[k][1]))
        if refine and not _only_affine_before(net, k):
            rows = _unstable_rows(layer, *cur)
            if rows[0].shape[1]:
                cur = _crown_rows(net, k, rows, cur[0], cur[1], low, high, rel, None)
            cur = widen(cur[0], torch.maximum(cur[1], cur[0]))
        rel.pre[k] = cur
        if not isinstance(layer, Activation):
            raise TypeError(
                f"forward bounds support elementwise activations only, not {type(layer).__name__}"
            )
        al, bl, au, bu = layer.relax(cur[0], cur[1])
        if bool((al < 0).any() or (au < 0).any()):
            raise TypeError("forward bounds need non-negative relaxation slopes")
        form_l, form_u = form_l * al.unsqueeze(1), form_u * au.unsqueeze(1)
        form_l[:, -1] += bl
        form_u[:, -1] += bu
        cur = widen(*layer.ibp(*cur))
    return cur


def final_margin(lb: Tensor, c: Tensor, y_mid: Tensor) -> Tensor:
    """The outward margin subtracted from final lower bounds (see the module docstring)."""
    scale = torch.einsum("bmn,bn->bm", c.abs(), y_mid.abs())
    return FINAL_ABS + FINAL_REL * (lb.abs() + scale)


def sound_lower(net: Network, c: Tensor, lb: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``lb`` minus the float margin: the bound that may be used to claim a proof."""
    with torch.no_grad():
        y_mid = net.forward((low + high) / 2)
    return lb.detach() - final_margin(lb.detach(), c, y_mid)


def crown(
    net: Network, c: Tensor, low: Tensor, high: Tensor, rel: Relaxation | None = None, method: str = "crown"
) -> tuple[Tensor, Relaxation, Tensor]:
    """Lower bounds of ``C y`` (B, m) by CROWN (``method="crown"``), IBP (``"ibp"``) or CROWN with
    forward-mode intermediate bounds (``"forward"``, cheap for few inputs; ``"hybrid"``: forward
    bounds refined by backward CROWN on the neurons they leave unstable).

    Returns the raw float64 bounds (apply ``sound_lower`` before claiming a proof), the relaxation
    (pre-activation bounds) and the input coefficients (B, m, n_0) (None for IBP).
    """
    if method == "ibp":
        rel = rel or Relaxation()
        with torch.no_grad():
            out_low, out_high = intermediate_bounds(net, low, high, rel, method=method)
        return concretize(c, torch.zeros(c.shape[:2], dtype=c.dtype), out_low, out_high), rel, torch.zeros(0)
    lb, lb_box, rel, a = crown_linear(net, c, low, high, rel, method)
    return lb if lb_box is None else torch.maximum(lb, lb_box), rel, a


def crown_linear(
    net: Network, c: Tensor, low: Tensor, high: Tensor, rel: Relaxation | None = None, method: str = "crown"
) -> tuple[Tensor, Tensor | None, Relaxation, Tensor]:
    """Like ``crown`` (not IBP) but keeps apart the bound of the linear function ``a x + b <= C y``
    (first, the minimum of ``a x + b`` over the boxes) and the interval bound of the output box
    (second; None for the forward methods): only the first has a linear form behind it.
    """
    rel = rel or Relaxation()
    with torch.no_grad():
        if method in ("forward", "hybrid"):
            forward_bounds(net, low, high, rel, refine=method == "hybrid")
            lb, a = backward(net, len(net.layers), c, rel, low, high)
            return lb, None, rel, a
        out_low, out_high = intermediate_bounds(net, low, high, rel, method=method)
        lb_box = concretize(c, torch.zeros(c.shape[:2], dtype=c.dtype), out_low, out_high)
        lb, a = backward(net, len(net.layers), c, rel, low, high)
    return lb, lb_box, rel, a


def conjunction_lower(
    a: Tensor, lb: Tensor, clauses: tuple[tuple[int, ...], ...], low: Tensor, high: Tensor, iters: int = 30
) -> Tensor:
    """Per clause (B, k), a lower bound of ``min_x max_{i in clause} (a_i x + b_i)`` over each box.

    ``a`` (B, m, n) and the sound lower bounds ``lb`` (B, m) of rows ``a_i x + b_i`` (so ``b_i`` is
    ``lb_i - min_x a_i x``) describe linear lower bounds of each row's violation gap. A clause (an AND
    of rows) is refuted on a box when every point has some row with a positive gap; the row-wise test
    ``max_i min_x`` misses boxes where different rows win in different corners. For any weights
    ``lam`` on the simplex, ``min_x sum_i lam_i (a_i x + b_i)`` bounds ``min_x max_i`` from below (and
    equals it at the best ``lam``, by LP duality), so every iterate of the exponentiated-gradient
    ascent on ``lam`` is a valid bound; the best is kept. Single-row clauses return their row's bound.
    """
    b = lb - concretize(a, torch.zeros_like(lb), low, high)
    out = []
    for rows in clauses:
        rows_t = list(rows)
        best = lb[:, rows_t].amax(1)
        if len(rows) > 1:
            ra, rb = a[:, rows_t], b[:, rows_t]
            lam = torch.full(rb.shape, 1.0 / len(rows), dtype=lb.dtype)
            for _ in range(iters):
                comb = torch.einsum("bk,bkn->bn", lam, ra)
                x = torch.where(comb > 0, low, high)
                value = (
                    torch.einsum("bkn,bn->bk", ra, x) + rb
                )  # each row's gap at the combination's minimiser
                bound = (lam * value).sum(1)
                size = torch.einsum("bkn,bn->bk", ra.abs(), x.abs()) + rb.abs()
                best = torch.maximum(best, bound - 1e-12 * (1 + (lam * size).sum(1)))  # float64 rounding
                step = 2.0 / (value.abs().amax(1, keepdim=True) + 1e-30)
                lam = lam * torch.exp((step * value).clamp(max=50))
                lam = lam / lam.sum(1, keepdim=True)
        out.append(best)
    return torch.stack(out, 1)


def alpha_crown(
    net: Network,
    c: Tensor,
    low: Tensor,
    high: Tensor,
    rel: Relaxation,
    *,
    iters: int = 20,
    lr: float = 0.1,
    optimise_intermediate: bool = False,
    deadline: float | None = None,
    start: Tensor | None = None,
) -> tuple[Tensor, Relaxation]:
    """Optimise the ReLU lower slopes (and split betas, when ``rel.splits`` is set) with Adam.

    ``rel.pre`` must already hold valid pre-activation bounds (e.g. from ``crown``). Each row's best
    bound over the iterations (and ``start``, e.g. the CROWN bound) is returned; every iterate is a
    valid bound, so the result is never looser than ``start``. With
    ``optimise_intermediate`` the intermediate bounds are re-computed each step with their own slopes
    and the tightest ones seen are kept in ``rel.pre``.
    """
    import time

    batch, m = c.shape[0], c.shape[1]
    for k in net.relu_layers():
        if k in rel.pre and k not in rel.alphas:
            init = net.layers[k].default_alpha(*rel.pre[k])  # type: ignore[attr-defined]
            rel.alphas[k] = init.unsqueeze(1).expand(batch, m, -1).clone()
        if k in rel.splits and k not in rel.betas:
            rel.betas[k] = torch.zeros(batch, m, rel.pre[k][0].shape[1], dtype=c.dtype)
    params = [t.requires_grad_(True) for t in list(rel.alphas.values()) + list(rel.betas.values())]
    inter: dict[int, dict[int, Tensor]] = {}
    rows: dict[int, tuple[Tensor, Tensor]] = {}
    base_pre = dict(rel.pre)
    best = torch.full((batch, m), -torch.inf, dtype=c.dtype) if start is None else start.detach().clone()
    optimiser = None
    for step in range(iters + 1):
        if optimise_intermediate:
            rel.pre = {k: (v[0].detach(), v[1].detach()) for k, v in base_pre.items()}
            intermediate_bounds(net, low, high, rel, inter_alphas=inter, rows_cache=rows)
            if step == 0:
                params += [t for d in inter.values() for t in d.values()]
        lb, _ = backward(net, len(net.layers), c, rel, low, high)
        best = torch.maximum(best, lb.detach())
        if optimise_intermediate:
            base_pre = {
                k: (
                    torch.maximum(base_pre[k][0], v[0].detach()),
                    torch.minimum(base_pre[k][1], v[1].detach()),
                )
                for k, v in rel.pre.items()
            }
        if step == iters or not params or (deadline is not None and time.monotonic() > deadline):
            break
        optimiser = optimiser or Adam(params, lr=lr)
        optimiser.step(-lb.sum())
        with torch.no_grad():
            for t in rel.alphas.values():
                t.clamp_(0.0, 1.0)
            for d in inter.values():
                for t in d.values():
                    t.clamp_(0.0, 1.0)
            for t in rel.betas.values():
                t.clamp_(min=0.0)
    rel.pre = {k: (v[0].detach(), v[1].detach()) for k, v in base_pre.items()}
    rel.alphas = {k: v.detach() for k, v in rel.alphas.items()}
    rel.betas = {k: v.detach() for k, v in rel.betas.items()}
    return best, rel


class Adam:
    """Minimal Adam (torch.optim imports torch._dynamo, seconds of start-up the verifier cannot spare)."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params, self.lr, self.betas, self.t = params, lr, betas, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, loss: Tensor) -> None:
        """One descent step on ``loss``."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
                if g is None:
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = self.lr * (m / (1 - b1**self.t)) / ((v / (1 - b2**self.t)).sqrt() + 1e-8)
                p.sub_(step)
