"""Charts for the dossier, drawn from stored Series only (never recomputed). SVG keeps text as text.

Conventions for ``Series.kind``:
- ``line``: y against x, with an interval band when ``y_low``/``y_high`` are given.
- ``bar``: one bar per x value (categories).
- ``histogram``: ``y`` are counts; ``x`` are the bin upper edges (len(x) == len(y)) or all edges
  (len(x) == len(y) + 1). Bins may be unequal (e.g. log-spaced); a log x axis is used when the
  edges span more than two decades.
- ``heatmap``: each series of a group is one row named ``name``; ``x`` are the column positions
  and ``y`` the cell values (colour, labelled ``y_label``). Cell values are printed in the cells.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from nnassay.schemas.results import Series


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "nnassay"}
    )
    return plt


def _svg_uri(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def chart_svg(series: list[Series], title: str) -> str:
    """One chart of the series of a group (same x axis and kind), as an SVG data URI."""
    if series[0].kind == "heatmap":
        return heatmap_svg(series, title)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    try:
        bars = [s for s in series if s.kind == "bar"]
        for s in series:
            if s.kind == "bar":
                _draw_bars(ax, s, bars.index(s), len(bars))
            else:
                _draw(ax, s)
        first = series[0]
        ax.set_xlabel(category_axis(first)[0] if first.kind == "bar" else first.x_label)
        labels = list(dict.fromkeys(s.y_label for s in series))
        ax.set_ylabel(
            labels[0]
            if len(labels) == 1
            else " / ".join(labels)
            if len(" / ".join(labels)) <= 45
            else "value"
        )
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if bars:
            top = max((max(s.y) for s in bars if s.y), default=1.0) or 1.0
            ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
            ax.legend(fontsize=8, loc="upper center", ncol=min(len(series), 3))
        elif len(series) > 1 or first.kind == "line":
            ax.legend(fontsize=8, loc="best")
        if first.kind == "line" and all(float(x).is_integer() for s in series for x in s.x):
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # e.g. severities 1 to 5
        fig.tight_layout()
        return _svg_uri(fig)
    finally:
        plt.close(fig)


def _draw_bars(ax: Any, s: Series, index: int, count: int) -> None:
    """Bars of several series side by side (grouped) at categorical positions, never on top of
    each other; categories are named when the x label carries their names."""
    _, names = category_axis(s)
    width = 0.8 / count
    positions = [i - 0.4 + width * (index + 0.5) for i in range(len(s.x))]
    ax.bar(positions, s.y, width=width, alpha=0.85, label=s.name)
    ax.set_xticks(range(len(s.x)), [names.get(v, f"{v:g}") for v in s.x])
    if names and len(s.x) > 4:
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def histogram_edges(s: Series) -> list[float]:
    """All bin edges of a histogram series (lower edge of the first bin inferred when not given)."""
    if len(s.x) == len(s.y) + 1:
        return list(s.x)
    upper = list(s.x[: len(s.y)])
    if len(upper) >= 2 and upper[0] > 0 and upper[1] / upper[0] > 1.5 and upper[1] - upper[0] > 0:
        first = upper[0] * upper[0] / upper[1]  # log-spaced bins: same ratio
    else:
        first = upper[0] - (upper[1] - upper[0] if len(upper) >= 2 else 1.0)
    return [first, *upper]


def _draw(ax: Any, s: Series) -> None:
    if s.kind == "histogram":
        edges = histogram_edges(s)
        ax.stairs(s.y, edges, fill=True, alpha=0.6, label=s.name)
        if edges[0] > 0 and edges[-1] / edges[0] > 100:
            ax.set_xscale("log")
    else:
        ax.plot(s.x, s.y, marker="o", markersize=3, label=s.name)
        if s.y_low and s.y_high and len(s.y_low) == len(s.x) == len(s.y_high):
            ax.fill_between(s.x, s.y_low, s.y_high, alpha=0.2)


def category_axis(s: Series) -> tuple[str, dict[float, str]]:
    """A bar chart's x label 'case (0=nan, 1=pos_inf, ...)' split into 'case' and the category
    names by code, so the bars are labelled by name; other labels are returned unchanged."""
    import re

    found = re.fullmatch(
        r"\s*(.*?)\s*\(((?:\s*-?\d+\s*=\s*[^,()=]+,)*\s*-?\d+\s*=\s*[^,()=]+)\)\s*", s.x_label
    )
    if not found:
        return s.x_label, {}
    names = {}
    for item in found.group(2).split(","):
        code, name = item.split("=", 1)
        names[float(code)] = name.strip()
    if not set(s.x) <= set(names):
        return s.x_label, {}
    return found.group(1) or "category", names


def heatmap_svg(rows: list[Series], title: str) -> str:
    """A heat map: one row per series, one column per x value, values printed in the cells."""
    import numpy as np

    plt = _pyplot()
    columns = sorted({x for s in rows for x in s.x})
    grid = np.full((len(rows), len(columns)), np.nan)
    for i, s in enumerate(rows):
        for x, y in zip(s.x, s.y, strict=False):
            grid[i, columns.index(x)] = y
    fig, ax = plt.subplots(figsize=(6.0, max(1.6, 0.35 * len(rows) + 1.2)))
    try:
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(columns)), [f"{c:g}" for c in columns])
        ax.set_yticks(range(len(rows)), [s.name for s in rows])
        if grid.size <= 120:
            mid = np.nanmean(grid) if np.isfinite(grid).any() else 0.0
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.3g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value < mid else "black",
                    )
        ax.set_xlabel(rows[0].x_label)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, label=rows[0].y_label)
        fig.tight_layout()
        return _svg_uri(fig)
    finally:
        plt.close(fig)


def group_series(series: list[Series]) -> list[list[Series]]:
    """Series that share an x axis and kind go into one chart."""
    groups: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        groups.setdefault((s.x_label, s.kind), []).append(s)
    return list(groups.values())
