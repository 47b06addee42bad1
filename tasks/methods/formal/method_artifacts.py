"""Evidence files of the formal methods: counterexamples as npz, and pictures of image counterexamples."""

from __future__ import annotations

import io

import numpy as np

from nnassay.schemas.goals import Layout
from nnassay.schemas.results import ArtifactRef
from nnassay.tasks.methods.registry import RunContext

MAX_PICTURES = 8  # counterexample pictures saved per test


def save_counterexamples(
    ctx: RunContext, found: list[tuple[int, int, np.ndarray, bool]]
) -> list[ArtifactRef]:
    """One npz of every counterexample (``x_adv``, ``index``, ``label``) and PNG pictures for images.

    ``found``: (row index, label, counterexample in data space, trivial) where trivial means the
    clean sample itself is misclassified (saved in the npz, not pictured).
    """
    if not found:
        return []
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_adv=np.stack([f[2] for f in found]),
        index=np.array([f[0] for f in found]),
        label=np.array([f[1] for f in found]),
    )
    refs = [
        ctx.save_artifact(
            "counterexamples.npz",
            buffer.getvalue(),
            "application/x-npz",
            f"{len(found)} counterexamples in data space (x_adv, index, label)",
        )
    ]
    if ctx.data.kind == "image":
        for index, label, x_adv, _ in [f for f in found if not f[3]][:MAX_PICTURES]:
            png = picture(ctx, ctx.data.x[index], x_adv)
            refs.append(
                ctx.save_artifact(
                    f"counterexample_{index}.png",
                    png,
                    "image/png",
                    f"sample {index} (class {label}): original, counterexample, difference",
                )
            )
    return refs


def picture(ctx: RunContext, x: np.ndarray, x_adv: np.ndarray) -> bytes:
    """Original, counterexample and amplified difference side by side, as PNG."""
    from matplotlib.figure import Figure

    def hwc(v: np.ndarray) -> np.ndarray:
        img = np.moveaxis(v, 0, -1) if ctx.model.layout == Layout.NCHW and v.ndim == 3 else v
        img = img.reshape(img.shape[0], -1) if img.ndim == 1 else img
        return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img

    low, high = ctx.model.value_range
    diff = x_adv - x
    span = float(np.abs(diff).max()) or 1.0
    fig = Figure(figsize=(6, 2.2))
    pred = ctx.model.predict(np.stack([x, x_adv]))
    panels = (
        (hwc(x), f"original (class {pred[0]})", (low, high)),
        (hwc(x_adv), f"counterexample (class {pred[1]})", (low, high)),
        (hwc(diff / span * 0.5 + 0.5), f"difference x{0.5 / span:.3g}", (0, 1)),
    )
    for k, (img, title, (vmin, vmax)) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        shown = (img - vmin) / (vmax - vmin) if img.ndim == 3 else img
        ax.imshow(
            np.clip(shown, 0, 1) if img.ndim == 3 else shown,
            cmap="gray",
            vmin=vmin if img.ndim == 2 else None,
            vmax=vmax if img.ndim == 2 else None,
        )
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, metadata={"Software": None})
    return out.getvalue()
