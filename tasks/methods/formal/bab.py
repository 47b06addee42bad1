"""Branch and bound: input splitting (low-dimensional inputs) and ReLU splitting (beta-CROWN style).

Both work on batches of sub-domains per bound computation. A sub-domain is closed only by a sound
lower bound (``bounds.sound_lower``) above zero; a counterexample is accepted only after the ORT
re-check. Every loop stops at the deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nnassay.tasks.methods.formal.bounds import (
    Relaxation,
    alpha_crown,
    backward,
    conjunction_lower,
    crown_linear,
    final_margin,
    refine_unstable,
    sound_lower,
)
from nnassay.tasks.methods.formal.falsify import OrtChecker, Spec, pgd
from nnassay.tasks.methods.formal.layers import Network, splittable

Tensor = torch.Tensor
# After a ReLU split, the intermediate bounds of the later layers are recomputed (the split neuron
# is exact now) on nets with at most this many splittable neurons. On larger nets (MNIST 256x4:
# 1024) the recomputation cost 7x the branches per second without a better margin in the same time,
# as beta-CROWN also finds; there the split constraints act through the beta multipliers only.
REFINE_MAX_NEURONS = 600
# Input splitting bisects the input with the largest |coefficient| * width in the open rows' linear
# bound. The coefficients miss inputs whose width only loosens the relaxation of unstable ReLUs: on
# ACAS Xu prop_1 the boxes became thin slabs along one input and 10 of 124 instances timed out at
# 116 s. With a guard (bisect the relatively widest input when it is more than SPLIT_WIDTH_GUARD
# times wider than the chosen one) all ten were proved within 60 s, but prop_2 instances that the
# plain rule proves in 2 s took up to 25 s. So ``bab_input_portfolio`` runs the plain rule first for
# a share of the time, then restarts with the guard (see BENCHMARKS.md for the measurements).
SPLIT_WIDTH_GUARD = 32.0
PLAIN_RULE_SHARE, PLAIN_RULE_MAX_S = 0.1, 10.0
# ReLU splitting keeps every open sub-domain (bounds, slopes, multipliers: 0.3-0.6 MB each on the
# OVAL21 nets; a 300 s run on the deep net held 15.7 GB). They may take this share of the memory
# available when it starts. Near that limit it takes the sub-domains closest to proved (their
# children mostly close) instead of the lowest ones, and stops with "unknown" if the open ones would
# still overflow.
POOL_MEMORY_SHARE = 0.5
# Adam iterations on the slopes and betas of each batch of ReLU-splitting sub-domains. On MNIST-FC
# 256x4 image 11 (eps 0.0495, derived from `prop_11_0.05`) 8 iterations proved it in 95-114 s with
# 29 332 branches, 12 in 69 s (11 652), 16 in 77 s (8 580), 24-32 in 120-142 s (about 9 000); with 16
# the competition instance `prop_11_0.05` itself is proved in 167 s (timeout at 300 s with 8).
BAB_ITERS = 16


@dataclass
class BabResult:
    """What a branch-and-bound run reached."""

    verdict: str  # "unsat" | "sat" | "unknown" | "timeout"
    margin: float  # lowest sound lower bound over the open or closed leaves
    branches: int
    counterexample: tuple[np.ndarray, np.ndarray] | None = None
    reason: str = ""


def _row_mask(spec: Spec, gap: Tensor) -> Tensor:
    """Rows (B, m) that belong to a clause not yet proved in each sub-domain."""
    mask = torch.zeros_like(gap, dtype=torch.bool)
    for rows in spec.clauses:
        open_clause = (gap[:, list(rows)] <= 0).all(1, keepdim=True)
        mask[:, list(rows)] = open_clause
    return mask


def _try_points(
    net: Network, spec: Spec, xs: Tensor, checker: OrtChecker, box: tuple[Tensor, Tensor]
) -> tuple[np.ndarray, np.ndarray] | None:
    """ORT-check the points (N, n) whose float64 objective is (nearly) violating."""
    with torch.no_grad():
        obj = spec.of_outputs(net.forward(xs))
    near = obj <= 1e-6 * (1 + obj.abs())
    if not near.any():
        return None
    cand = xs[near][obj[near].argsort()[:16]]
    return checker.confirm(cand.cpu().numpy(), box[0].cpu().numpy(), box[1].cpu().numpy())


def _corners(a: Tensor, gap: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Minimiser of the linear bound of the worst row in each sub-domain (a box corner)."""
    worst = gap.argmin(1)
    coef = a[torch.arange(a.shape[0]), worst]
    return torch.where(coef > 0, low, high)


def bab_input_portfolio(
    net: Network, spec: Spec, low: Tensor, high: Tensor, checker: OrtChecker, *, deadline: float
) -> BabResult:
    """``bab_input`` with the plain split rule for ``PLAIN_RULE_SHARE`` of the time (at most
    ``PLAIN_RULE_MAX_S``), then, if undecided, from scratch with the width guard until ``deadline``."""
    switch = time.monotonic() + min(PLAIN_RULE_SHARE * (deadline - time.monotonic()), PLAIN_RULE_MAX_S)
    first = bab_input(net, spec, low, high, checker, deadline=switch)
    if first.verdict != "timeout" or time.monotonic() >= deadline:
        return first
    second = bab_input(net, spec, low, high, checker, deadline=deadline, guard=SPLIT_WIDTH_GUARD)
    second.branches += first.branches
    return second


def bab_input(
    net: Network,
    spec: Spec,
    low: Tensor,
    high: Tensor,
    checker: OrtChecker,
    *,
    deadline: float,
    batch: int = 512,
    method: str = "inherit",
    guard: float = float("inf"),
) -> BabResult:
    """Split the input box on the dimension with the largest ``|coefficient| * width`` of the open rows
    (or the relatively widest one when it is more than ``guard`` times wider, see ``_split_dims``).

    Each batch of boxes is bounded by ``crown_linear(method=...)``. The default, "inherit", keeps
    each box's pre-activation bounds for its two halves, which compute CROWN bounds only for the
    neurons those leave unstable (1-6 of 50 per ACAS Xu layer): about a tenth of the cost of "crown"
    (CROWN on every neuron of narrow layers) per box for a few more boxes, half the time in all on
    five medium ACAS Xu instances. "hybrid" (forward linear bounds, then CROWN on the neurons they
    leave unstable) needed up to 4x more boxes than "crown"; where forward bounds cannot go (MaxPool)
    it falls back to "crown". Optimising the final slopes of open boxes with alpha-CROWN did not pay.
    The falsifier runs on the bound minimisers, the centres and, every few rounds, PGD from them.
    """
    box = (low, high)
    pend = _Boxes(low.unsqueeze(0), high.unsqueeze(0), {})
    branches, worst_closed, step = 0, float("inf"), 0
    while len(pend):
        if time.monotonic() > deadline:
            return BabResult(
                "timeout",
                _margin_min(worst_closed, None),
                branches,
                reason="deadline reached in input splitting",
            )
        lo, hi, pre = pend.pop(batch)
        try:
            lb, margin, a, pre = _box_bounds(net, spec, lo, hi, method, pre)
        except TypeError:  # forward bounds need elementwise activations with non-negative slopes
            if method not in ("hybrid", "forward"):
                raise
            method = "crown"
            lb, margin, a, pre = _box_bounds(net, spec, lo, hi, method, {})
        done = margin > 0
        gap = lb - spec.rhs
        if done.any():
            worst_closed = min(worst_closed, margin[done].min().item())
        open_ = ~done
        if not open_.any():
            continue
        lo, hi, a, gap = lo[open_], hi[open_], a[open_], gap[open_]
        pts = torch.cat([_corners(a, gap, lo, hi), (lo + hi) / 2])
        if step % 8 == 7:
            pts = torch.cat([pts, pgd(net.forward, spec, pts[:64], low, high, steps=10)])
        step += 1
        found = _try_points(net, spec, pts, checker, box)
        if found is not None:
            return BabResult("sat", float("-inf"), branches, found)
        score = (a.abs() * _row_mask(spec, gap).unsqueeze(-1)).sum(1) * (hi - lo)
        dim = _split_dims(score, lo, hi, low, high, guard)
        idx = torch.arange(len(dim))
        mid = (lo[idx, dim] + hi[idx, dim]) / 2
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[idx, dim], right_lo[idx, dim] = mid, mid
        kept = {k: (v[0][open_], v[1][open_]) for k, v in pre.items()} if method == "inherit" else {}
        pend.push(
            torch.cat([lo, right_lo]),
            torch.cat([left_hi, hi]),
            {k: (torch.cat([v[0], v[0]]), torch.cat([v[1], v[1]])) for k, v in kept.items()},
        )
        branches += len(dim)
    return BabResult("unsat", worst_closed, branches)


class _Boxes:
    """The open boxes of input splitting, a stack (the newest are bounded first) kept as a list of
    pushed chunks so that a push or pop never copies the whole stack. Each box carries the
    pre-activation bounds of the box it was split from (``pre``; empty when not kept)."""

    def __init__(self, low: Tensor, high: Tensor, pre: dict[int, tuple[Tensor, Tensor]]) -> None:
        self.chunks: list[tuple[Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]]] = []
        self.size = 0
        self.push(low, high, pre)

    def __len__(self) -> int:
        return self.size

    def push(self, low: Tensor, high: Tensor, pre: dict[int, tuple[Tensor, Tensor]]) -> None:
        """Add boxes (with their inherited bounds when kept)."""
        if len(low):
            self.chunks.append((low, high, pre))
            self.size += len(low)

    def pop(self, n: int) -> tuple[Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]]:
        """Remove and return the newest ``n`` boxes, oldest first; their bounds are dropped unless
        every box taken has them (they are only a speed-up)."""
        parts: list[tuple[Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]]] = []
        while n > 0 and self.chunks:
            low, high, pre = self.chunks.pop()
            cut = max(len(low) - n, 0)
            if cut:
                self.chunks.append(
                    (low[:cut], high[:cut], {k: (v[0][:cut], v[1][:cut]) for k, v in pre.items()})
                )
            parts.insert(0, (low[cut:], high[cut:], {k: (v[0][cut:], v[1][cut:]) for k, v in pre.items()}))
            n -= len(low) - cut
        self.size -= sum(len(p[0]) for p in parts)
        keys = parts[0][2].keys() if parts else {}
        same = all(p[2].keys() == keys for p in parts)
        pre = (
            {
                k: (torch.cat([p[2][k][0] for p in parts]), torch.cat([p[2][k][1] for p in parts]))
                for k in keys
            }
            if same
            else {}
        )
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), pre


def _box_bounds(
    net: Network, spec: Spec, lo: Tensor, hi: Tensor, method: str, pre: dict[int, tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]]:
    """Sound row bounds (B, m), the margin per box (``conjunction_lower`` on AND-clauses), the
    linear coefficients (B, m, n) and the pre-activation bounds of a batch of boxes; ``pre`` holds
    bounds valid on each box (from a box that contains it) or is empty."""
    c = spec.c.unsqueeze(0).expand(lo.shape[0], -1, -1)
    lin, lb_box, rel, a = crown_linear(net, c, lo, hi, Relaxation(pre=dict(pre)), method=method)
    with torch.no_grad():
        y_mid = net.forward((lo + hi) / 2)
    lin = lin - final_margin(lin, c, y_mid)
    lb = lin if lb_box is None else torch.maximum(lin, lb_box - final_margin(lb_box, c, y_mid))
    clause = spec.clause_gaps(lb)
    if any(len(rows) > 1 for rows in spec.clauses):
        clause = torch.maximum(clause, conjunction_lower(a, lin - spec.rhs, spec.clauses, lo, hi))
    return lb, clause.amin(1), a, rel.pre


def _split_dims(score: Tensor, lo: Tensor, hi: Tensor, low: Tensor, high: Tensor, guard: float) -> Tensor:
    """Per box, the input to bisect: the best ``score``, or the relatively widest input when it is more
    than ``guard`` times wider than that one (widths relative to the property's box)."""
    relative = (hi - lo) / (high - low).clamp(min=1e-300)
    best, widest = score.argmax(1), relative.argmax(1)
    rows = torch.arange(len(best))
    return torch.where(relative[rows, widest] > guard * relative[rows, best], widest, best)


def _margin_min(closed: float, open_margin: float | None) -> float:
    values = [v for v in (closed, open_margin) if v is not None and v != float("inf")]
    return min(values) if values else float("-inf")


@dataclass
class _Pool:
    """Open sub-domains of ReLU splitting, stacked along the first axis.

    ``rows`` (B, m) marks the specification rows of clauses not yet proved in each sub-domain: a
    clause proved on a domain holds on its sub-domains, so only the open rows are bounded again.
    """

    pre: dict[int, tuple[Tensor, Tensor]]
    splits: dict[int, Tensor]
    alphas: dict[int, Tensor]
    betas: dict[int, Tensor]
    margin: Tensor
    rows: Tensor
    scores: dict[int, Tensor] = field(default_factory=dict)  # per ReLU layer, the split scores (set by
    # the bounding round that opened the pool; not carried by rebuild)

    def __len__(self) -> int:
        return int(self.margin.shape[0])

    def tensors(self) -> list[Tensor]:
        """Every tensor, in a fixed order (see ``rebuild``)."""
        pre = [t for k in self.pre for t in self.pre[k]]
        return [
            *pre,
            *self.splits.values(),
            *self.alphas.values(),
            *self.betas.values(),
            self.margin,
            self.rows,
        ]

    def rebuild(self, tensors: list[Tensor]) -> _Pool:
        """A pool of the same layers from tensors in the order of ``tensors()``."""
        it = iter(tensors)
        pre = {k: (next(it), next(it)) for k in self.pre}
        splits, alphas, betas = (
            {k: next(it) for k in part} for part in (self.splits, self.alphas, self.betas)
        )
        return _Pool(pre, splits, alphas, betas, next(it), next(it))

    def select(self, idx: Tensor) -> _Pool:
        """The sub-domains at ``idx``."""
        return self.rebuild([t[idx] for t in self.tensors()])

    def join(self, *others: _Pool) -> _Pool:
        """These sub-domains followed by the ``others``'."""
        return self.rebuild(
            [torch.cat(ts) for ts in zip(self.tensors(), *(o.tensors() for o in others), strict=True)]
        )


class _Store:
    """The open sub-domains of ReLU splitting, in slots of fixed-size chunks of tensors.

    Taking the lowest-margin sub-domains and adding children copy only those: re-stacking the whole
    pool each round cost half the time of ReLU splitting on OVAL21 once a few thousand sub-domains
    (about 0.5 MB each on the wide net) were open, and growing one set of tensors by doubling still
    cost a sixth. ``limit`` is the most open sub-domains (the slots exceed it by less than a chunk).
    """

    CHUNK = 256

    def __init__(self, first: _Pool, limit: int) -> None:
        self.template, self.limit, self.count = first, limit, 0
        self.chunks: list[_Pool] = []
        self.live = torch.zeros(0, dtype=torch.bool)
        self.margin = torch.zeros(0, dtype=first.margin.dtype)
        self.add(first)

    def __len__(self) -> int:
        return self.count

    def worst(self) -> float:
        """The lowest margin of the open sub-domains (inf when there are none)."""
        return float(self.margin[self.live].min()) if self.count else float("inf")

    def take(self, n: int, lowest: bool = True) -> _Pool:
        """Remove and return the (at most) ``n`` open sub-domains with the lowest (else highest) margin."""
        key = torch.where(self.live, self.margin, torch.inf if lowest else -torch.inf)
        idx = key.topk(min(n, self.count), largest=not lowest).indices.sort().values
        self.live[idx] = False
        self.count -= len(idx)
        chunk = idx // self.CHUNK
        parts = [self.chunks[c].select(idx[chunk == c] % self.CHUNK) for c in chunk.unique().tolist()]
        return parts[0].join(*parts[1:])

    def add(self, pool: _Pool) -> None:
        """Put ``pool``'s sub-domains into free slots (adding chunks when there are too few)."""
        if self.count + len(pool) > self.limit:
            raise MemoryError(f"{self.count + len(pool)} open sub-domains, room for {self.limit}")
        while int((~self.live).sum()) < len(pool):
            self.chunks.append(
                self.template.rebuild(
                    [t.new_zeros((self.CHUNK, *t.shape[1:])) for t in self.template.tensors()]
                )
            )
            self.live = torch.cat([self.live, torch.zeros(self.CHUNK, dtype=torch.bool)])
            self.margin = torch.cat([self.margin, torch.zeros(self.CHUNK, dtype=self.margin.dtype)])
        slots = (~self.live).nonzero().reshape(-1)[: len(pool)]
        chunk = slots // self.CHUNK
        for c in chunk.unique().tolist():
            mine = chunk == c
            for dst, src in zip(self.chunks[c].tensors(), pool.tensors(), strict=True):
                dst[slots[mine] % self.CHUNK] = src[mine]
        self.live[slots] = True
        self.margin[slots] = pool.margin
        self.count += len(pool)


def bab_relu(
    net: Network,
    spec: Spec,
    low: Tensor,
    high: Tensor,
    root: Relaxation,
    checker: OrtChecker,
    *,
    deadline: float,
    batch: int = 64,
    iters: int = BAB_ITERS,
    memory: float | None = None,
) -> BabResult:
    """Split unstable ReLUs (BaBSR-like intercept score); splits are enforced through bounds and betas.

    ``root`` holds the pre-activation bounds and slopes of the whole box (from alpha-CROWN). The
    intermediate bounds are reused along the tree (a child's are its parent's with the split neuron
    fixed; on nets of at most ``REFINE_MAX_NEURONS`` ReLUs they are then recomputed by CROWN, the
    tighter of old and new kept and handed down), and the final bound of each batch is
    re-optimised over the slopes and betas. The open sub-domains may take ``memory`` bytes (default:
    ``POOL_MEMORY_SHARE`` of the available memory).
    """
    relus = [k for k in net.relu_layers() if k in root.pre]
    m = spec.c.shape[0]
    alphas = {
        k: root.alphas[k][:1].float()
        if k in root.alphas
        else net.layers[k].default_alpha(*root.pre[k]).unsqueeze(1).expand(1, m, -1).float()  # type: ignore[attr-defined]
        for k in relus
    }
    first = _Pool(
        {k: root.pre[k] for k in root.pre},
        {k: torch.zeros_like(root.pre[k][0], dtype=torch.int8) for k in relus},
        alphas,
        {k: torch.zeros_like(alphas[k]) for k in relus},
        torch.full((1,), -1.0, dtype=torch.float64),
        torch.ones(1, m, dtype=torch.bool),
    )
    per_domain = sum(t[0].numel() * t.element_size() for t in first.tensors())
    pool = _Store(
        first, max(int((memory or POOL_MEMORY_SHARE * available_memory()) // per_domain), 4 * batch)
    )
    branches, worst_closed = 0, float("inf")
    choice = _bound_batch(net, spec, low, high, pool.take(1), checker, iters, deadline)
    while True:
        if isinstance(choice, BabResult):
            return choice
        done_margin, open_pool = choice
        if done_margin is not None:
            worst_closed = min(worst_closed, done_margin)
        if open_pool is not None:
            children = _split(net, open_pool, relus)
            if children is None:
                return BabResult(
                    "unknown",
                    float(open_pool.margin.min()),
                    branches,
                    reason="a sub-domain with every ReLU split is still not proved",
                )
            try:
                pool.add(children)
            except MemoryError as full:
                return BabResult(
                    "unknown",
                    min(float(open_pool.margin.min()), pool.worst()),
                    branches,
                    reason=f"the open sub-domains would exceed the memory budget ({full}, "
                    f"{per_domain / 2**20:.3g} MiB each)",
                )
            branches += len(children)
        if len(pool) == 0:
            return BabResult("unsat", worst_closed, branches)
        if time.monotonic() > deadline:
            return BabResult(
                "timeout",
                min(worst_closed, pool.worst()),
                branches,
                reason=f"deadline reached in ReLU splitting with {len(pool)} open sub-domains",
            )
        lowest = len(pool) + 2 * batch <= 0.8 * pool.limit
        choice = _bound_batch(net, spec, low, high, pool.take(batch, lowest), checker, iters, deadline)


def _bound_batch(
    net: Network,
    spec: Spec,
    low: Tensor,
    high: Tensor,
    doms: _Pool,
    checker: OrtChecker,
    iters: int,
    deadline: float,
) -> BabResult | tuple[float | None, _Pool | None]:
    """Bound the open rows of a batch of sub-domains; return the closed ones' worst margin and the open ones."""
    n = len(doms)
    lo, hi = low.expand(n, -1), high.expand(n, -1)
    sel = doms.rows.to(torch.int8).argsort(dim=1, descending=True, stable=True)[
        :, : int(doms.rows.sum(1).max())
    ]
    c = spec.c[sel]  # (n, R, outputs): open rows first, then (padding) distinct closed ones

    def pick(v: Tensor) -> Tensor:
        return v.gather(1, sel.unsqueeze(-1).expand(-1, -1, v.shape[-1])).double()

    rel = Relaxation(
        pre=dict(doms.pre),
        alphas={k: pick(v) for k, v in doms.alphas.items()},
        splits={k: v.double() for k, v in doms.splits.items() if (v != 0).any()},
    )
    rel.betas = {k: pick(doms.betas[k]) for k in rel.splits}
    if rel.splits and sum(net.layers[k].n_out for k in net.relu_layers()) <= REFINE_MAX_NEURONS:
        refine_unstable(net, lo, hi, rel)
    lb, rel = alpha_crown(net, c, lo, hi, rel, iters=iters, lr=0.1, deadline=deadline)
    lb = sound_lower(net, c, lb, lo, hi)
    record: dict[int, Tensor] = {}
    with torch.no_grad():
        _, a = backward(net, len(net.layers), c, rel, lo, hi, record=record)
    closed = torch.full((n, spec.c.shape[0]), torch.inf, dtype=lb.dtype)  # rows of proved clauses never bind
    full = closed.scatter(1, sel, torch.where(doms.rows.gather(1, sel), lb, torch.inf))
    margin = spec.objective(full)
    gap = full - spec.rhs
    found = _try_points(net, spec, _corners(a, gap.gather(1, sel), lo, hi), checker, (low, high))
    if found is not None:
        return BabResult("sat", float("-inf"), 0, found)
    done = margin > 0
    done_margin = float(margin[done].min()) if done.any() else None
    if done.all():
        return done_margin, None
    keep = (~done).nonzero().reshape(-1)
    rows = _row_mask(spec, gap)

    def put(full_v: Tensor, k: int, part: dict[int, Tensor]) -> Tensor:
        if k not in part:
            return full_v[keep]
        index = sel.unsqueeze(-1).expand(-1, -1, full_v.shape[-1])
        return full_v.scatter(1, index, part[k].to(full_v.dtype))[keep]

    open_pool = _Pool(
        {k: (v[0][keep], v[1][keep]) for k, v in rel.pre.items()},
        {k: v[keep] for k, v in doms.splits.items()},
        {k: put(v, k, rel.alphas) for k, v in doms.alphas.items()},
        {k: put(v, k, rel.betas) for k, v in doms.betas.items()},
        margin[keep],
        rows[keep],
    )
    open_pool.scores = _scores(
        net, open_pool, {k: v[keep] for k, v in record.items()}, rows.gather(1, sel)[keep]
    )
    return done_margin, open_pool


def _scores(net: Network, pool: _Pool, record: dict[int, Tensor], rows: Tensor) -> dict[int, Tensor]:
    """BaBSR-like score per unstable, unsplit ReLU: the intercept its relaxation costs the open rows."""
    scores = {}
    for k, (low, high) in pool.pre.items():
        if k not in pool.splits:
            continue
        unstable = splittable(net.layers[k], low, high) & (pool.splits[k] == 0)
        a = record[k] * rows.unsqueeze(-1)
        intercept = -low * high / torch.where(unstable, high - low, torch.ones_like(low))
        score = (
            (a.clamp(max=0).abs().sum(1) * intercept)
            + 1e-4 * (a.abs().sum(1) * (high - low))
            + 1e-9 * (high - low)
        )
        scores[k] = torch.where(unstable, score, torch.full_like(score, -1.0))
    return scores


def _split(net: Network, pool: _Pool, relus: list[int]) -> _Pool | None:
    """Two children per sub-domain, on the neuron with the best score; None when nothing is left to split."""
    scores = pool.scores
    flat = torch.cat([scores[k] for k in relus], 1)
    best, where = flat.max(1)
    if (best < 0).any():
        return None
    sizes = [scores[k].shape[1] for k in relus]
    offsets = np.cumsum([0] + sizes)
    n = len(pool)
    idx = torch.arange(n)
    children = []
    for sign in (1, -1):
        pre = {k: (v[0].clone(), v[1].clone()) for k, v in pool.pre.items()}
        splits = {k: v.clone() for k, v in pool.splits.items()}
        for j, k in enumerate(relus):
            sel = (where >= offsets[j]) & (where < offsets[j + 1])
            if not sel.any():
                continue
            rows, cols = idx[sel], where[sel] - int(offsets[j])
            splits[k][rows, cols] = sign
            if sign > 0:
                pre[k][0][rows, cols] = 0.0
            else:
                pre[k][1][rows, cols] = 0.0
        children.append(
            _Pool(pre, splits, dict(pool.alphas), dict(pool.betas), pool.margin.clone(), pool.rows)
        )
    return children[0].join(children[1])


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; 4 GiB where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30
