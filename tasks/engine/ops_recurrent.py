"""Executor handlers for the ONNX recurrent ops RNN, GRU and LSTM (what torch exports for nn.RNN,
nn.GRU and nn.LSTM), unrolled over time in torch so that gradients flow through every step.

Each follows the ONNX operator definition (onnx.ai/onnx/operators, opsets 7 to 22): gate order
z, r, h (GRU) and i, o, f, c (LSTM), forward/reverse/bidirectional, ``layout`` 0 ([T, N, F]) or 1
([N, T, F]), ``linear_before_reset``, ``clip``, peepholes, and the default activations or any of
Sigmoid, Tanh, Relu, HardSigmoid named in ``activations``. Sequence lengths shorter than the input
are refused with a message (the masking they need changes every output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nnassay.tasks.engine.onnx_torch import Node, RunContext

Tensor = torch.Tensor
Cell = Callable[[Tensor, tuple[Tensor, ...], int], tuple[Tensor, ...]]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Relu": torch.relu,
    "HardSigmoid": lambda x: torch.clamp(0.2 * x + 0.5, 0.0, 1.0),
}
DEFAULTS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh")}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _activations(node: Node, directions: int) -> list[tuple[Callable[[Tensor], Tensor], ...]]:
    """The activation functions of each direction (defaults, or the node's ``activations``)."""
    per = DEFAULTS[node.op_type]
    names = list(node.attr("activations") or []) or list(per) * directions
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    unknown = sorted({n for n in names if n not in ACTIVATIONS})
    if unknown or len(names) != len(per) * directions:
        raise ValueError(
            f"node {node.name!r}: {node.op_type} activations {names} are not supported; expected "
            f"{len(per)} per direction from {sorted(ACTIVATIONS)}"
        )
    k = len(per)
    return [tuple(ACTIVATIONS[n] for n in names[d * k : (d + 1) * k]) for d in range(directions)]


def _check_lengths(node: Node, xs: list[Any], steps: int) -> None:
    lengths = xs[4] if len(xs) > 4 else None
    if lengths is not None and lengths.numel() and bool((lengths != steps).any()):
        raise ValueError(
            f"node {node.name!r}: {node.op_type} with sequence_lens shorter than the input ({steps} steps) "
            "is not supported; pad the sequences to one length or export without sequence_lens"
        )
    if node.attr("input_forget", 0):
        raise ValueError(f"node {node.name!r}: LSTM input_forget=1 is not supported")


def _initial(xs: list[Any], index: int, shape: tuple[int, int, int], like: Tensor) -> Tensor:
    given = xs[index] if len(xs) > index else None
    return given.to(like.dtype) if given is not None else torch.zeros(shape, dtype=like.dtype)


def _recurrent(node: Node, xs: list[Any], ctx: RunContext) -> tuple[Tensor, ...]:
    """Y [T, D, N, H] (or [N, T, D, H] with layout 1), Y_h and (LSTM) Y_c [D, N, H] (or [N, D, H])."""
    op, layout = node.op_type, int(node.attr("layout", 0))
    x = xs[0].transpose(0, 1) if layout else xs[0]  # [T, N, F]
    steps, batch = x.shape[0], x.shape[1]
    w, r = xs[1].to(x.dtype), xs[2].to(x.dtype)
    directions, hidden = w.shape[0], int(node.attr("hidden_size", r.shape[-1]))
    bias = xs[3] if len(xs) > 3 and xs[3] is not None else None
    bias = (
        bias.to(x.dtype)
        if bias is not None
        else torch.zeros(directions, 2 * GATES[op] * hidden, dtype=x.dtype)
    )
    _check_lengths(node, xs, steps)
    h0 = _initial(xs, 5, (directions, batch, hidden), x)
    c0 = _initial(xs, 6, (directions, batch, hidden), x) if op == "LSTM" else None
    peep = xs[7].to(x.dtype) if op == "LSTM" and len(xs) > 7 and xs[7] is not None else None
    acts = _activations(node, directions)
    clip = node.attr("clip")
    reverse = node.attr("direction", "forward") in ("reverse", b"reverse")
    ys, hs, cs = [], [], []
    for d in range(directions):
        backwards = reverse or d == 1
        order = range(steps - 1, -1, -1) if backwards else range(steps)
        state: tuple[Tensor, ...] = (h0[d],) if c0 is None else (h0[d], c0[d])
        xw = x @ w[d].T + bias[d, : GATES[op] * hidden]  # input part of every gate, all steps at once
        rb = bias[d, GATES[op] * hidden :]
        outs: list[Tensor] = [x.new_zeros(0)] * steps
        for t in order:
            state = _step(node, xw[t], state, r[d], rb, acts[d], clip, None if peep is None else peep[d])
            outs[t] = state[0]
        ys.append(torch.stack(outs))  # [T, N, H]
        hs.append(state[0])
        if op == "LSTM":
            cs.append(state[1])
    y = torch.stack(ys, 1)  # [T, D, N, H]
    y_h, y_c = torch.stack(hs), torch.stack(cs) if cs else None
    if layout:
        y, y_h = y.permute(2, 0, 1, 3), y_h.transpose(0, 1)
        y_c = y_c.transpose(0, 1) if y_c is not None else None
    return (y, y_h) if y_c is None else (y, y_h, y_c)


def _step(
    node: Node,
    xw: Tensor,
    state: tuple[Tensor, ...],
    r: Tensor,
    rb: Tensor,
    acts: tuple[Callable[[Tensor], Tensor], ...],
    clip: float | None,
    peep: Tensor | None,
) -> tuple[Tensor, ...]:
    """One time step of the node's cell: the new hidden state (and LSTM cell state)."""

    def gate(v: Tensor) -> Tensor:
        return v if clip is None else torch.clamp(v, -float(clip), float(clip))

    h = state[0]
    hidden = h.shape[-1]
    if node.op_type == "RNN":
        return (acts[0](gate(xw + h @ r.T + rb)),)
    if node.op_type == "GRU":
        xz, xr, xh = xw.split(hidden, -1)
        rz, rr, rh = r.split(hidden, 0)
        bz, br, bh = rb.split(hidden, -1)
        z = acts[0](gate(xz + h @ rz.T + bz))
        reset = acts[0](gate(xr + h @ rr.T + br))
        if node.attr("linear_before_reset", 0):
            cand = acts[1](gate(xh + reset * (h @ rh.T + bh)))
        else:
            cand = acts[1](gate(xh + (reset * h) @ rh.T + bh))
        return ((1 - z) * cand + z * h,)
    c = state[1]
    pre = xw + h @ r.T + rb
    pi, po, pf, pc = pre.split(hidden, -1)
    p_i, p_o, p_f = peep.split(hidden, -1) if peep is not None else (0.0, 0.0, 0.0)
    i = acts[0](gate(pi + p_i * c))
    f = acts[0](gate(pf + p_f * c))
    c_new = f * c + i * acts[1](gate(pc))
    o = acts[0](gate(po + p_o * c_new))
    return o * acts[2](c_new), c_new


HANDLERS: dict[str, Callable[[Node, list[Any], RunContext], Any]] = {
    "GRU": _recurrent,
    "LSTM": _recurrent,
    "RNN": _recurrent,
}
