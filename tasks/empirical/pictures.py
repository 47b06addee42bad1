"""Example pictures for the dossier: originals next to their perturbed versions (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from schemas.goals import Layout
from schemas.results import ArtifactRef
from tasks.empirical.images import to_unit
from tasks.registry import RunContext


def _show(ax: object, img: np.ndarray, title: str) -> None:
    grey = img.shape[-1] == 1
    ax.imshow(img[..., 0] if grey else np.clip(img[..., :3], 0, 1), cmap="gray" if grey else None,  # type: ignore[attr-defined]
              vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    ax.set_title(title, fontsize=7)  # type: ignore[attr-defined]
    ax.axis("off")  # type: ignore[attr-defined]


def side_by_side(original: np.ndarray, perturbed: np.ndarray, layout: Layout | str,
                 value_range: tuple[float, float], labels: Sequence[str]) -> bytes:  # fmt: skip
    """PNG with one row per sample: original, perturbed, amplified absolute difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = to_unit(original, layout, value_range), to_unit(perturbed, layout, value_range)
    rows = len(before)
    fig, axes = plt.subplots(rows, 3, figsize=(4.5, 1.6 * rows), squeeze=False)
    for i in range(rows):
        diff = np.abs(after[i] - before[i])
        peak = float(diff.max()) or 1.0
        _show(axes[i, 0], before[i], "original")
        _show(axes[i, 1], after[i], labels[i])
        _show(axes[i, 2], diff / peak, f"|difference| x{1 / peak:.1f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def save_examples(ctx: RunContext, name: str, caption: str, original: np.ndarray,
                  perturbed: np.ndarray, labels: Sequence[str], limit: int = 4) -> list[ArtifactRef]:  # fmt: skip
    """Save up to ``limit`` image examples as a PNG artifact (nothing for tabular data)."""
    if ctx.data.kind != "image" or not len(original) or original.ndim != 4:
        return []
    png = side_by_side(original[:limit], perturbed[:limit], ctx.model.layout, ctx.model.value_range,
                       list(labels)[:limit])  # fmt: skip
    return [ctx.save_artifact(name, png, "image/png", caption)]
