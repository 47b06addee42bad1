"""The picture of a goal's explanations for the dossier, as PNG bytes (matplotlib's object API, no
pyplot state): one panel per goal (``panel_png``), a cell per sample and method, heat-map overlays for
images and top-feature bars for tables. One figure per goal keeps the dossier short and the step fast."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nnassay.schemas.explain import AttributionMethodName, ExplainedSample
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


PANEL_TOP = 5  # features drawn per method in a table's panel row


def panel_png(
    samples: Sequence[ExplainedSample],
    folder: Path,
    *,
    kind: str,
    layout: Layout,
    value_range: tuple[float, float],
    feature_names: Sequence[str] = (),
    label: Callable[[int], str] = str,
) -> bytes:
    """One goal's explained samples in one figure, a cell per sample (failures, then contrast) in two
    columns of cells: the input and each method's overlay for an image, each method's top-feature bars
    for a table."""
    from matplotlib.figure import Figure

    rows = list(dict.fromkeys(s.sample_index for s in samples))
    methods = list(dict.fromkeys(s.method for s in samples))
    by_key = {(s.sample_index, s.method): s for s in samples}
    if kind != "image":
        return _table_panel(rows, methods, by_key, folder, feature_names, label)
    per_cell = len(methods) + 1  # subplots per sample: the input, then each method's overlay
    blocks = 2 if len(rows) > 3 else 1
    height = -(-len(rows) // blocks)
    cell_w, cell_h = 1.25, 1.3
    fig = Figure(figsize=(blocks * (per_cell * cell_w + 1.1), height * cell_h + 0.3))
    outer = fig.add_gridspec(
        1,
        blocks,
        left=0.1,
        right=0.99,
        top=0.96,
        bottom=0.02,
        wspace=0.35,
    )
    for b in range(blocks):
        grid = outer[0, b].subgridspec(height, per_cell, wspace=0.06, hspace=0.3)
        for r, index in enumerate(rows[b * height : (b + 1) * height]):
            cells = [by_key.get((index, m)) for m in methods]
            first = next(c for c in cells if c is not None)
            tag = "contrast" if first.role == "contrast" else "failure"
            text = (
                f"row {index} ({tag})\nchose {label(first.predicted_class)}, true {label(first.true_class)}"
            )
            x = np.load(folder / first.input_file, allow_pickle=False)
            low, high = value_range
            img = np.clip((to_hwc(x, layout) - low) / ((high - low) or 1.0), 0, 1)
            ax = fig.add_subplot(grid[r, 0])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(text, fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title("input", fontsize=7)
            for c, (method, sample) in enumerate(zip(methods, cells, strict=True)):
                ax = fig.add_subplot(grid[r, c + 1])
                name = method.replace("_", " ")
                if sample is None:
                    ax.axis("off")
                    continue
                attribution = np.load(folder / sample.attribution_file, allow_pickle=False)
                heat = to_hwc(attribution, layout)
                heat = heat.sum(axis=-1) if heat.ndim == 3 else heat
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                ax.imshow(_rgba(heat, float(np.abs(heat).max()) or 1.0))
                ax.axis("off")
                if r == 0:
                    ax.set_title(name, fontsize=7)
    return _png(fig)


def _short(name: str, width: int = 18) -> str:
    """A feature name cut to ``width`` characters, with an ellipsis when cut."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _table_panel(
    rows: list[int],
    methods: list[AttributionMethodName],
    by_key: dict[tuple[int, AttributionMethodName], ExplainedSample],
    folder: Path,
    feature_names: Sequence[str],
    label: Callable[[int], str],
) -> bytes:
    """The table branch of ``panel_png``: per sample and method, the top features' attribution bars.
    Constrained layout leaves room for the (cut to 18 characters) feature names, the wrapped titles
    and every row's x tick labels."""
    from matplotlib.figure import Figure

    blocks = 2 if len(rows) > 3 else 1
    height = -(-len(rows) // blocks)
    columns = blocks * len(methods)
    fig = Figure(figsize=(columns * 3.0, height * 1.9 + 0.2), layout="constrained")
    axes = fig.subplots(height, columns, squeeze=False)
    for ax in axes.reshape(-1):
        ax.axis("off")
    for position, index in enumerate(rows):
        b, r = divmod(position, height)
        cells = [by_key.get((index, m)) for m in methods]
        first = next(c for c in cells if c is not None)
        tag = "contrast" if first.role == "contrast" else "failure"
        text = f"row {index} ({tag}): chose {label(first.predicted_class)}, true {label(first.true_class)}"
        for c, (method, sample) in enumerate(zip(methods, cells, strict=True)):
            if sample is None:
                continue
            ax = axes[r, b * len(methods) + c]
            ax.axis("on")
            flat = np.load(folder / sample.attribution_file, allow_pickle=False).reshape(-1)
            names = (
                list(feature_names)
                if len(feature_names) == len(flat)
                else [f"f{i}" for i in range(len(flat))]
            )
            order = np.argsort(-np.abs(flat), kind="stable")[:PANEL_TOP][::-1]
            values = [float(flat[i]) for i in order]
            ax.barh(range(len(order)), values, color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
            ax.set_yticks(range(len(order)), [_short(str(names[i])) for i in order])
            ax.axvline(0.0, color="black", linewidth=0.5)
            ax.tick_params(labelsize=6)
            ax.set_title(textwrap.fill(f"{text}; {method.replace('_', ' ')}", 40), fontsize=6.5, loc="left")
    return _png(fig)
