"""Steps for tests/test_memory_plan.py that measure peak memory in a fresh spawn child.

A fresh process gives a clean figure: memory freed earlier in a long-lived one is reused unseen.
"""

from __future__ import annotations

import numpy as np

from nnassay.tasks.engine.memory import peak_rss_during


def ort_peak(path: str, batch: int) -> int:
    """Peak resident growth of one ONNX Runtime batch (session created and warmed up at batch 1 first)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    session.run(None, {name: np.zeros(shape, np.float32)})
    x = np.random.default_rng(0).random((batch, *shape[1:]), dtype=np.float32)
    return peak_rss_during(lambda: session.run(None, {name: x})) + x.nbytes


def autograd_peak(path: str, batch: int) -> int:
    """Peak resident growth of a forward and backward pass of the torch executor (input gradient)."""
    import torch

    from nnassay.tasks.engine.onnx_torch import load_onnx_module

    torch.set_num_threads(1)
    module = load_onnx_module(path)
    warm = torch.zeros(1, *module.sample_shape, requires_grad=True)
    module(warm).sum().backward()
    x = torch.rand(batch, *module.sample_shape, requires_grad=True)

    def step() -> None:
        module(x).logsumexp(1).sum().backward()

    return peak_rss_during(step) + x.nelement() * 4


def crown_peak(path: str) -> tuple[int, list[tuple[int, int, bool]]]:
    """Peak resident growth of CROWN on one box (radius 0.1 around 0.5) and the layer widths."""
    import torch

    from nnassay.tasks.engine.onnx_torch import load_onnx_module
    from nnassay.tasks.methods.formal.bounds import crown
    from nnassay.tasks.methods.formal.ops import network_from_module

    torch.set_num_threads(1)
    net = network_from_module(load_onnx_module(path), path)
    low = torch.full((1, net.n_inputs), 0.4, dtype=torch.float64)
    high = torch.full((1, net.n_inputs), 0.6, dtype=torch.float64)
    c = torch.eye(net.n_outputs, dtype=torch.float64)[1:].unsqueeze(0)
    peak = peak_rss_during(lambda: crown(net, c, low, high))
    return peak, [(layer.n_in, layer.n_out, layer.nonlinear) for layer in net.layers]


def ibp_unstable(net: object, x: np.ndarray, eps: float) -> dict[int, int]:
    """Per nonlinear layer, the neurons IBP leaves unstable on the eps box around ``x`` in [0, 1]."""
    import torch

    low = torch.tensor(np.clip(x - eps, 0, 1), dtype=torch.float64)[None]
    high = torch.tensor(np.clip(x + eps, 0, 1), dtype=torch.float64)[None]
    unstable: dict[int, int] = {}
    for k, layer in enumerate(net.layers):  # type: ignore[attr-defined]
        if layer.nonlinear:
            keep = getattr(layer, "keep", 0)
            unstable[k] = int(((low[:, keep:] < 0) & (high[:, keep:] > 0)).sum())
        low, high = layer.ibp(low, high)
    return unstable


def resnet_crown(path: str, eps: float) -> None:
    """The verifier's CROWN rung on the first digit image, as ``verifier._prove_region`` runs it."""
    import torch
    import zoo_models

    from nnassay.tasks.engine.onnx_torch import load_onnx_module
    from nnassay.tasks.methods.formal.bounds import crown
    from nnassay.tasks.methods.formal.falsify import Spec
    from nnassay.tasks.methods.formal.ops import network_from_module
    from nnassay.tasks.methods.formal.property import local_robustness

    x, y = zoo_models.digits_images(n=1)
    net = network_from_module(load_onnx_module(path), path)
    region = local_robustness(x[0].reshape(-1), int(y[0]), eps, 10, 0.0, 1.0).regions[0]
    low = torch.tensor(region.box.lower, dtype=torch.float64)[None]
    high = torch.tensor(region.box.upper, dtype=torch.float64)[None]
    crown(net, Spec.of(region, 10).c.unsqueeze(0), low, high, method="crown")
