"""Charts for the dossier, drawn from stored Series only (never recomputed). SVG keeps text as text."""

from __future__ import annotations

import base64
import io
from typing import Any

from schemas.results import Series


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9,
                         "svg.hashsalt": "nnassay"})  # fmt: skip
    return plt


def chart_svg(series: list[Series], title: str) -> str:
    """One chart of all line/bar series that share axes, as an SVG data URI."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    try:
        for s in series:
            _draw(ax, s)
        first = series[0]
        ax.set_xlabel(first.x_label)
        ax.set_ylabel(first.y_label if len({s.y_label for s in series}) == 1 else "value")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(series) > 1 or first.kind == "line":
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    finally:
        plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def _draw(ax: Any, s: Series) -> None:
    if s.kind == "histogram":
        widths = [b - a for a, b in zip(s.x, s.x[1:], strict=False)] or [1.0]
        ax.bar(s.x[: len(s.y)], s.y, width=widths[0], align="edge", alpha=0.7, label=s.name)
    elif s.kind == "bar":
        ax.bar([str(v) for v in s.x], s.y, alpha=0.8, label=s.name)
    else:
        ax.plot(s.x, s.y, marker="o", markersize=3, label=s.name)
        if s.y_low and s.y_high and len(s.y_low) == len(s.x) == len(s.y_high):
            ax.fill_between(s.x, s.y_low, s.y_high, alpha=0.2)


def group_series(series: list[Series]) -> list[list[Series]]:
    """Series that share an x axis and kind go into one chart."""
    groups: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        groups.setdefault((s.x_label, s.kind), []).append(s)
    return list(groups.values())
