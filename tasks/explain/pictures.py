"""Pictures of explanations for the dossier, as PNG bytes (matplotlib's object API, no pyplot state):
a heat-map overlay for images and a ranked bar chart for tables."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnassay.schemas.explain import ExplainedSample
from nnassay.schemas.goals import Layout


def to_hwc(v: np.ndarray, layout: Layout) -> np.ndarray:
    """One image sample as (H, W) grey or (H, W, C) colour, whatever the model's layout."""
    img = np.moveaxis(v, 0, -1) if layout == Layout.NCHW and v.ndim == 3 else v
    return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def _rgba(heat: np.ndarray, span: float) -> np.ndarray:
    """Red (positive) / blue (negative) colours whose opacity grows with |attribution|, so the input
    shows through where the attribution is small."""
    from matplotlib import colormaps

    rgba = colormaps["bwr"](np.clip(heat / span * 0.5 + 0.5, 0, 1))
    rgba[..., 3] = np.clip(np.abs(heat) / span, 0, 1) * 0.9
    return np.asarray(rgba)


def _png(fig: object) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, metadata={"Software": None})  # type: ignore[attr-defined]
    return out.getvalue()


def heatmap_png(
    x: np.ndarray,
    attribution: np.ndarray,
    *,
    layout: Layout,
    value_range: tuple[float, float],
    title: str,
) -> bytes:
    """The input, and the input under a red (towards the chosen class) / blue (against) overlay."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    low, high = value_range
    img = np.clip((to_hwc(x, layout) - low) / ((high - low) or 1.0), 0, 1)
    heat = to_hwc(attribution, layout)
    heat = heat.sum(axis=-1) if heat.ndim == 3 else heat
    span = float(np.abs(heat).max()) or 1.0
    fig = Figure(figsize=(4.4, 2.4))
    fig.suptitle(title, fontsize=8)
    for k, overlay in enumerate((False, True)):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        if overlay:
            ax.imshow(_rgba(heat, span))
            scale = ScalarMappable(Normalize(-span, span), cmap="bwr")
            fig.colorbar(scale, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        ax.set_title("attribution" if overlay else "input", fontsize=8)
        ax.axis("off")
    return _png(fig)


def bar_chart_png(names: Sequence[str], scores: Sequence[float], *, title: str, top: int = 10) -> bytes:
    """Horizontal bars of the ``top`` features by |attribution|, strongest at the top."""
    from matplotlib.figure import Figure

    order = np.argsort(-np.abs(np.asarray(scores, np.float64)), kind="stable")[:top]
    values = [float(scores[i]) for i in order][::-1]
    labels = [str(names[i]) for i in order][::-1]
    fig = Figure(figsize=(5, 0.4 * len(values) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(labels, values, color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("attribution (towards the chosen class > 0)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def picture_for(
    sample: ExplainedSample,
    folder: Path,
    *,
    kind: str,
    layout: Layout,
    value_range: tuple[float, float],
    feature_names: Sequence[str] = (),
) -> bytes:
    """The dossier picture of one explained sample, from the arrays ``explain_goal`` wrote to folder:
    a heat map for an image, a bar chart of every feature's attribution for a table."""
    attribution = np.load(folder / sample.attribution_file, allow_pickle=False)
    versus = "true" if sample.contrast_class == sample.true_class else "runner-up"
    title = (
        f"sample {sample.sample_index} ({sample.role}): chose {sample.predicted_class}, attributed "
        f"against {versus} {sample.contrast_class}; {sample.method.replace('_', ' ')}"
    )
    if kind == "image":
        x = np.load(folder / sample.input_file, allow_pickle=False)
        return heatmap_png(x, attribution, layout=layout, value_range=value_range, title=title)
    flat = attribution.reshape(-1)
    names = (
        list(feature_names) if len(feature_names) == len(flat) else [f"feature {i}" for i in range(len(flat))]
    )
    return bar_chart_png(names, [float(v) for v in flat], title=title)
